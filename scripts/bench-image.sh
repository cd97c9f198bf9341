#!/usr/bin/env bash
# Benchmark (not a test): a signed UKI from a container image, build-uki's streamed
# flattening against the usual pull + extract + cpio pipeline.
#
#   ours (registry):  build-uki 127.0.0.1:PORT/bench/debian:1 --allow-insecure-registries ...
#   ours (archive):   build-uki docker-archive:debian.tar ...
#   theirs (registry): docker pull 127.0.0.1:PORT/bench/debian:1; docker create; docker export | tar -x;
#                      find | cpio -o -H newc | zstd -T0 -LEVEL; ukify 254 build (systemd-measure, sbsign)
#   theirs (archive):  docker load -i debian.tar; then the same
#
# The image: the debootstrap rootfs of scripts/bench-build-uki.sh (bookworm minbase with a
# kernel, systemd and systemd-boot-efi, several hundred MB) imported into the engine, plus
# two `docker build` layers (a deletion and an addition), saved with `docker save` and
# pushed with skopeo (gzip layers) to a local docker-registry on 127.0.0.1 (plain HTTP).
# Every command runs under /usr/bin/time -v; each variant runs --runs times, interleaved;
# medians are printed with peak RSS. Both sides get the same kernel, stub, os-release,
# command line, PCR key and db key.
#
# Usage: scripts/bench-image.sh [--level N] [--runs N] [--rebuild]
#   --level N   zstd level for both sides (default 3)
#   --runs N    runs per variant (default 3)
#   --rebuild   rebuild the release binaries even when they exist
#
# Prepared once under ${SBKIT_CACHE:-<repo>/.cache}/bench/image (idempotent): debian.tar,
# the registry storage. Engine images are removed after each use so that every pull and
# load really transfers the layers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cache=${SBKIT_CACHE:-$top/.cache}
bench=$cache/bench
img=$bench/image
last=$img/last
keys=$bench/keys
assets=$cache/assets
ukify=$assets/systemd-254/lib/systemd/ukify
measure_dir=$assets/systemd-254/lib/systemd
measure_libs=$assets/systemd-254/usr/lib/x86_64-linux-gnu/systemd
build_uki=$top/target/release/build-uki
cmdline="console=tty1 console=ttyS0 rdinit=/sbin/init"

level=3 runs=3 rebuild=0
while [ $# -gt 0 ]; do
  case $1 in
    --level) level=${2:?}; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "bench-image: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "bench-image: $*" >&2; exit 1; }
say() { echo "bench-image: $*" >&2; }

for t in docker skopeo docker-registry /usr/bin/time zstd cpio sbsign jq; do
  command -v "$t" >/dev/null || die "missing $t (scripts/install-deps.sh)"
done
mkdir -p "$img"
exec 9>"$img/lock"
flock -n 9 || die "another bench-image run holds $img/lock"

# The rootfs and keys come from the other benchmark's preparation.
if [ ! -d "$bench/rootfs" ] || [ ! -f "$keys/manifest.json" ]; then
  say "preparing the rootfs and keys (scripts/bench-build-uki.sh --prepare-only)"
  bash "$here/bench-build-uki.sh" --prepare-only
fi
if [ "$rebuild" = 1 ] || [ ! -x "$build_uki" ]; then
  (cd "$top" && cargo build --release --locked --bin build-uki)
fi

tag=sbkit-bench/debian:1
# --- the image -------------------------------------------------------------------------
if [ ! -f "$img/debian.tar" ] || [ "$bench/rootfs.stamp" -nt "$img/debian.tar" ]; then
  say "image: docker import of the rootfs + two build layers"
  tar --numeric-owner -C "$bench/rootfs" -c . | docker import - sbkit-bench/debian:base >/dev/null
  ctx=$(mktemp -d)
  printf 'FROM sbkit-bench/debian:base\nRUN rm -rf /usr/share/doc /usr/share/man && echo bench > /etc/bench-layer\nRUN mkdir -p /opt/bench && cp -a /usr/bin/bash /opt/bench/bash && ln /opt/bench/bash /opt/bench/bash-link\n' >"$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
  docker save -o "$img/debian.tar.new" "$tag"
  mv "$img/debian.tar.new" "$img/debian.tar"
  docker rmi -f "$tag" sbkit-bench/debian:base >/dev/null
  rm -rf "$img/registry-storage"
fi

# --- the registry ----------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$img/registry-storage" "$host" >"$img/registry.yml"
docker-registry serve "$img/registry.yml" 2>"$img/registry.log" &
reg_pid=$!
cleanup() { kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
ref=$host/bench/debian:1
if [ ! -f "$img/registry-storage/.pushed" ]; then
  say "pushing to the local registry (skopeo, gzip layers)"
  skopeo copy --quiet --dest-tls-verify=false "docker-archive:$img/debian.tar" "docker://$ref"
  touch "$img/registry-storage/.pushed"
fi
image_bytes=$(stat -c %s "$img/debian.tar")

# --- measuring -------------------------------------------------------------------------
rm -rf "$last"; mkdir -p "$last/m"
record() {
  awk '/Elapsed \(wall clock\)/ {n = split($NF, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' "$2" >>"$last/m/$1.wall"
  awk '/Maximum resident set size/ {print $NF}' "$2" >>"$last/m/$1.rss"
}
timed() {
  local name=$1 run=$2; shift 2
  /usr/bin/time -v -o "$last/$name.$run.time" "$@" >"$last/$name.$run.out" 2>"$last/$name.$run.err" \
    || { cat "$last/$name.$run.err" >&2; die "$name failed: $*"; }
  record "$name" "$last/$name.$run.time"
}

ours() {  # NAME RUN SOURCE
  rm -rf "$last/out-$1"
  timed "$1" "$2" "$build_uki" "$3" --allow-insecure-registries "$host" -t uki -d "$last/out-$1" \
    -k "$keys" --compression "zstd:$level" --cmdline "$cmdline" --json
}

# theirs NAME RUN MODE(registry|archive): each step timed, then the sum.
theirs() {
  local name=$1 run=$2 mode=$3 out=$last/out-$1 root cid k t0 t1
  rm -rf "$out"; mkdir -p "$out"
  root=$out/rootfs; mkdir -p "$root"
  t0=$(date +%s.%N)
  if [ "$mode" = registry ]; then
    timed "$name-get" "$run" docker pull -q "$ref"
    k=$ref
  else
    timed "$name-get" "$run" docker load -q -i "$img/debian.tar"
    k=$tag
  fi
  cid=$(docker create "$k" /bin/sh)
  # shellcheck disable=SC2016  # positional parameters of the inner bash
  timed "$name-extract" "$run" bash -c 'set -o pipefail; docker export "$1" | tar --numeric-owner -xp -C "$2"' _ "$cid" "$root"
  docker rm "$cid" >/dev/null
  docker rmi -f "$k" >/dev/null
  # shellcheck disable=SC2016
  timed "$name-cpio" "$run" bash -c 'set -o pipefail; cd "$1" && find . | cpio -o -H newc --quiet | zstd -q -T0 -"$2" >"$3"' \
    _ "$root" "$level" "$out/initrd.zst"
  local kernel
  kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -type f | sort -V | tail -n1)
  timed "$name-ukify" "$run" env LD_LIBRARY_PATH="$measure_libs" /usr/bin/python3 "$ukify" build \
    --linux="$kernel" --initrd="$out/initrd.zst" --stub="$root/usr/lib/systemd/boot/efi/linuxx64.efi.stub" \
    --os-release=@"$root/usr/lib/os-release" --cmdline="$cmdline" \
    --pcr-private-key="$keys/tpm2-pcr-private.pem" --pcr-public-key="$keys/tpm2-pcr-public.pem" \
    --tools="$measure_dir" --signtool=sbsign --secureboot-private-key="$keys/db.key" \
    --secureboot-certificate="$keys/db.pem" --output="$out/uki.efi"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >>"$last/m/$name.wall"
  rm -rf "$root"
}

say "image $((image_bytes >> 20)) MiB (docker-archive), zstd -$level, $runs runs, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$runs"); do
  say "run $run/$runs: build-uki from the registry"; ours ours-reg "$run" "$ref"
  say "run $run/$runs: docker pull + export + cpio|zstd + ukify"; theirs theirs-reg "$run" registry
  say "run $run/$runs: build-uki from the docker-archive"; ours ours-arch "$run" "docker-archive:$img/debian.tar"
  say "run $run/$runs: docker load + export + cpio|zstd + ukify"; theirs theirs-arch "$run" archive
done

median() { sort -g "$last/m/$1.$2" | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
med_rss() { [ -f "$last/m/$1.rss" ] && awk -v k="$(median "$1" rss)" 'BEGIN {printf "%.0f MiB", k / 1024}' || echo "-"; }
line() { printf '%-52s %9.2f %12s\n' "$1" "$(median "$2" wall)" "$(med_rss "$2")"; }
{
  echo "UKI from a container image: build-uki (streamed) vs pull/load + export + cpio|zstd + ukify 254"
  echo "image $((image_bytes >> 20)) MiB uncompressed (docker save), 3 layers; zstd -$level; median of $runs runs;"
  echo "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end; HEAD $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  printf '%-52s %9s %12s\n' "variant / step" "wall (s)" "peak RSS"
  line "ours: registry -> signed UKI" ours-reg
  line "theirs: registry -> signed UKI (sum of steps)" theirs-reg
  line "  docker pull" theirs-reg-get
  line "  docker export | tar -x" theirs-reg-extract
  line "  find | cpio | zstd -T0" theirs-reg-cpio
  line "  ukify + systemd-measure + sbsign" theirs-reg-ukify
  line "ours: docker-archive -> signed UKI" ours-arch
  line "theirs: docker-archive -> signed UKI (sum of steps)" theirs-arch
  line "  docker load" theirs-arch-get
  line "  docker export | tar -x" theirs-arch-extract
  line "  find | cpio | zstd -T0" theirs-arch-cpio
  line "  ukify + systemd-measure + sbsign" theirs-arch-ukify
  echo
  ours_initrd=$(jq -r '.initrd.compressed_bytes' "$last/ours-arch.$runs.out")
  echo "initrd (compressed): ours $ours_initrd bytes, theirs $(stat -c %s "$last/out-theirs-arch/initrd.zst") bytes"
  echo "UKI: ours $(stat -c %s "$last/out-ours-arch/norole.efi") bytes, theirs $(stat -c %s "$last/out-theirs-arch/uki.efi") bytes"
  echo "extra disk used: ours none (layers stream; registry blobs are not stored), theirs the engine's image store + the extracted rootfs"
  echo "(RSS of 'theirs' steps is the largest single process of each step, as /usr/bin/time reports it.)"
} | tee "$last/table.txt"
