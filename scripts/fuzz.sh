#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time and
# fails on any crash (a panic, an overflow with debug assertions, an
# out-of-memory or a timeout).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# CI runs a smoke of a few seconds per target (scripts/test.sh); developers
# run longer, e.g. `scripts/fuzz.sh 600` or `scripts/fuzz.sh 3600 pe_read`.
# Seeds come from the test fixtures (the systemd 252/254 stubs, OVMF variable
# stores, signature lists and .auth files made with efitools from the shipped
# Microsoft certificates, a tar layer, small JSON documents); findings land in
# fuzz/artifacts/TARGET, the growing corpus in fuzz/corpus/TARGET (both ignored
# by git). A crash input reproduces with
# `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-…`.
#
# The stable toolchain builds libFuzzer targets with RUSTC_BOOTSTRAP=1. No
# sanitizer (`-s none`): sbkit's parsers are safe Rust, so the bugs to find
# are panics, overflows (debug assertions are on), hangs and allocations,
# and ASan would double the build time CI pays for.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"

secs=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=1
cache=${SBKIT_CACHE:-$top/.cache}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing: run scripts/install-deps.sh" >&2
  exit 1
fi

started=$(date +%s)
cargo fuzz build -s none --debug-assertions
built=$(date +%s)
echo "fuzz: instrumented build took $((built - started)) s"

mapfile -t all < <(cargo fuzz list)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
bin=fuzz/target/x86_64-unknown-linux-gnu/release

# ---- seeds from the fixtures (small; regenerated each run, never committed) ----
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seed() { # seed TARGET FILE...
  local dir=fuzz/corpus/$1
  shift
  mkdir -p "$dir"
  for f in "$@"; do
    [ -s "$f" ] && cp "$f" "$dir/seed-$(basename "$f")"
  done
  return 0
}
stub252=$cache/assets/systemd-252/usr/lib/systemd/boot/efi/linuxx64.efi.stub
stub254=$cache/assets/systemd-254/usr/lib/systemd/boot/efi/linuxx64.efi.stub
for t in pe_read pe_append authenticode stub_inspect; do seed "$t" "$stub252" "$stub254"; done
seed varstore /usr/share/OVMF/OVMF_VARS.fd /usr/share/OVMF/OVMF_VARS.ms.fd
if command -v cert-to-efi-sig-list >/dev/null; then
  for c in data/microsoft/ms-uefi-2023.pem data/microsoft/ms-kek-2023.pem; do
    cert-to-efi-sig-list -g 77fa9abd-0359-4d32-bd60-28f4e78f784b "$c" "$work/$(basename "$c" .pem).esl"
  done
  cat "$work"/*.esl >"$work/two-lists.esl"
  seed siglist "$work"/*.esl
  openssl req -new -x509 -newkey rsa:2048 -nodes -subj /CN=fuzz-kek/ -days 1 \
    -keyout "$work/kek.key" -out "$work/kek.pem" 2>/dev/null
  sign-efi-sig-list -t "2024-01-01 00:00:00" -k "$work/kek.key" -c "$work/kek.pem" \
    db "$work/ms-uefi-2023.esl" "$work/db.auth" >/dev/null
  seed authvar "$work/db.auth"
fi
python3 - "$work/eventlog.bin" <<'EOF'
import struct, sys
spec = b"Spec ID Event03\0" + struct.pack("<I", 0) + bytes([0, 2, 0, 2]) + struct.pack("<I", 2)
spec += struct.pack("<HH", 0x0004, 20) + struct.pack("<HH", 0x000b, 32) + b"\0"
log = struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(spec)) + spec
path = bytes([2, 1, 12, 0]) + struct.pack("<II", 0x0a0341d0, 0) + bytes([1, 1, 6, 0, 0, 2]) + bytes([0x7f, 0xff, 4, 0])
data = struct.pack("<QQQQ", 0, 4096, 0, len(path)) + path
log += struct.pack("<III", 2, 0x80000004, 2) + struct.pack("<H", 4) + bytes(20) + struct.pack("<H", 0x0b) + bytes(32)
log += struct.pack("<I", len(data)) + data
open(sys.argv[1], "wb").write(log)
EOF
seed eventlog "$work/eventlog.bin"
mkdir -p "$work/layer/etc" && echo "ID=fuzz" >"$work/layer/etc/os-release"
ln -s os-release "$work/layer/etc/link" && touch "$work/layer/etc/.wh.gone"
tar -C "$work/layer" -cf "$work/layer.tar" .
seed tar_layer "$work/layer.tar"
cat >"$work/manifest.json" <<'EOF'
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:5555555555555555555555555555555555555555555555555555555555555555","size":10}]}
EOF
cat >"$work/index.json" <<'EOF'
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:6666666666666666666666666666666666666666666666666666666666666666","size":300,"platform":{"architecture":"amd64","os":"linux"}}]}
EOF
echo '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}' >"$work/config.json"
seed oci "$work/manifest.json" "$work/index.json" "$work/config.json"
echo '{"auths":{"registry.example":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"u","password":"p"}}}' >"$work/docker.json"
seed docker_config "$work/docker.json"
printf 'fuzz key backup' | openssl enc -aes-256-cbc -pbkdf2 -iter 1000 -salt -pass pass:x -out "$work/backup.enc"
printf 'age-encryption.org/v1\n-> scrypt c2FsdHNhbHRzYWx0c2FsdA 10\nAAAA\n--- AAAA\n' >"$work/backup.age"
seed backup_decrypt "$work/backup.enc" "$work/backup.age"
printf 'pkcs11:token=mkosi;id=%%02;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so' >"$work/uri1"
printf 'pkcs11:model=PKCS%%2315%%20emulated;manufacturer=piv_II;serial=00000000;token=PIV_II;object=SIGN%%20key' >"$work/uri2"
seed pkcs11_uri "$work/uri1" "$work/uri2"
printf 'norole\001Kairos\001console=ttyS0 quiet\001rd.debug\001nomodeset\001Recovery: rd.recovery' >"$work/entries1"
seed loader_entries "$work/entries1"

# ---- runs ----
status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=fuzz/artifacts/$t/last-run.log
  set +e
  "$bin/$t" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=262144 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ $rc -ne 0 ]; then
    status=1
    summary+=("$t: CRASH after ${execs:-?} executions (rc $rc), see $log and fuzz/artifacts/$t/")
    tail -40 "$log" >&2
  else
    summary+=("$t: ${execs:-?} executions in ${secs} s, no crash")
  fi
done
echo "fuzz: results (${secs} s per target):"
printf '  %s\n' "${summary[@]}"
exit $status
