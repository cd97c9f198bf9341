#!/usr/bin/env bash
# Benchmark (not a test): build-uki against the standard pipeline on the same large rootfs.
#
#   ours:   build-uki dir:ROOTFS -t uki -d OUT -k KEYS --compression zstd:LEVEL
#   theirs: cd ROOTFS && find . | cpio -o -H newc | zstd -T0 -LEVEL  > initrd
#           ukify 254 build (systemd-measure 254 for .pcrsig, sbsign for Secure Boot)
#
# Both get the same kernel, stub (the rootfs's), os-release, command line, PCR key and
# db key. Every command runs under /usr/bin/time -v (wall time, peak RSS); each variant
# runs --runs times, interleaved, and the medians are printed. Exit status is non-zero
# only when something fails to run: slower or larger is a finding, not a failure.
#
# Usage: scripts/bench-build-uki.sh [--level N] [--runs N] [--no-diag] [--rebuild] [--prepare-only]
#   --level N       zstd level for both sides, 1-19 (default 3: build-uki's and zstd's default)
#   --runs N        runs per variant; the median is reported (default 3)
#   --no-diag       skip the diagnostic rows (uncompressed initrd on both sides,
#                   build-uki given the cpio|zstd initrd)
#   --rebuild       run `cargo build --release --locked` even when the binaries exist
#   --prepare-only  only prepare the rootfs, keys, tools and binaries
#
# Prepared once, under ${SBKIT_CACHE:-<repo>/.cache}/bench (idempotent):
#   rootfs/  debootstrap --variant=minbase bookworm with a kernel, systemd and systemd-boot-efi
#   keys/    genkey "bench"
# Outputs and /usr/bin/time reports of the last run: .../bench/last/ (table in table.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cache=${SBKIT_CACHE:-$top/.cache}
bench=$cache/bench
rootfs=$bench/rootfs
keys=$bench/keys
last=$bench/last
assets=$cache/assets
ukify=$assets/systemd-254/lib/systemd/ukify
measure_dir=$assets/systemd-254/lib/systemd
measure_libs=$assets/systemd-254/usr/lib/x86_64-linux-gnu/systemd
build_uki=$top/target/release/build-uki
genkey=$top/target/release/genkey

# What the rootfs holds. A kernel (modules included: most of the size), systemd and the
# stub make it a realistic "whole OS in the initrd" image of several hundred MB.
# Changing this list rebuilds the rootfs (the stamp records it).
suite=bookworm
include=linux-image-amd64,systemd,systemd-boot-efi
# The command line given to both sides: build-uki's default would add rdinit= (the rootfs
# has no /init), ukify has no default, so an explicit one keeps .cmdline identical.
cmdline="console=tty1 console=ttyS0 rdinit=/sbin/init"

level=3 runs=3 diag=1 rebuild=0 prepare_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --level) level=${2:?--level needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --no-diag) diag=0; shift ;;
    --rebuild) rebuild=1; shift ;;
    --prepare-only) prepare_only=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "bench-build-uki: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# Levels 20-22 need zstd --ultra and build-uki refuses them (the kernel would need a
# 128 MiB window at boot), so both sides are limited to 1-19.
case $level in ''|*[!0-9]*) echo "bench-build-uki: --level must be 1-19" >&2; exit 2 ;; esac
if [ "$level" -lt 1 ] || [ "$level" -gt 19 ]; then echo "bench-build-uki: --level must be 1-19" >&2; exit 2; fi
case $runs in ''|0|*[!0-9]*) echo "bench-build-uki: --runs must be a positive integer" >&2; exit 2 ;; esac

die() { echo "bench-build-uki: $*" >&2; exit 1; }
say() { echo "bench-build-uki: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

mkdir -p "$bench"
# Two benchmarks at once would share the rootfs build and skew each other's timings.
exec 9>"$bench/lock"
flock -n 9 || die "another bench-build-uki run holds $bench/lock"

# --- tools ------------------------------------------------------------------------------
# command → Debian package; installed only when missing.
need_pkgs=()
for pair in debootstrap:debootstrap /usr/bin/time:time zstd:zstd cpio:cpio \
            sbsign:sbsigntool sbverify:sbsigntool /usr/bin/python3:python3 jq:jq; do
  command -v "${pair%%:*}" >/dev/null || need_pkgs+=("${pair#*:}")
done
# ukify imports pefile.
/usr/bin/python3 -c 'import pefile' 2>/dev/null || need_pkgs+=(python3-pefile)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  # Refresh the lists only when a package has no candidate (fresh machine, stale lists).
  for p in "${need_pkgs[@]}"; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then as_root apt-get update -qq; break; fi
  done
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# ukify and systemd-measure 254 are unpacked test assets, not installed on the host.
if [ ! -f "$ukify" ] || [ ! -x "$measure_dir/systemd-measure" ]; then
  say "fetching systemd 254 assets (scripts/fetch-assets.sh)"
  bash "$top/scripts/fetch-assets.sh" >/dev/null
fi

# The release binaries, built only when missing (or --rebuild): other work may have the
# tree mid-edit, and a benchmark should not be the thing that finds out.
if [ "$rebuild" = 1 ] || [ ! -x "$build_uki" ] || [ ! -x "$genkey" ]; then
  say "cargo build --release --locked"
  (cd "$top" && cargo build --release --locked --bin build-uki --bin genkey)
fi

# --- rootfs -----------------------------------------------------------------------------
# The Debian mirror the host already uses (as scripts/install-deps.sh finds it): the
# sandbox reaches only its configured mirrors, and no host name belongs in the repo.
debian_mirror() {
  local srcs=() f m
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && srcs+=("$f")
  done
  m=$( { grep -hoE '^(URIs:|deb) +[a-z]+://[^ ]+' "${srcs[@]}" 2>/dev/null || true; } \
    | awk '{print $2}' | grep -v -e security -e nodesource -e google | head -n1 || true)
  [ -n "$m" ] || die "no Debian mirror found in /etc/apt"
  echo "$m"
}

# Unmounts whatever is mounted below $1 (deepest first): an interrupted debootstrap leaves
# proc and sys mounted in the target, and rm -rf must never walk into those.
umount_below() {
  local d
  d=$(realpath -m "$1")
  awk -v d="$d/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r \
    | while read -r m; do as_root umount -l "$m" || true; done
}

want_stamp="debootstrap --variant=minbase --include=$include $suite"
if [ -d "$rootfs" ] && [ "$(cat "$rootfs.stamp" 2>/dev/null)" = "$want_stamp" ]; then
  say "rootfs: cached ($rootfs)"
else
  mirror=$(debian_mirror)
  say "rootfs: $want_stamp (mirror from /etc/apt); takes minutes"
  t0=$(date +%s)
  # Built aside and renamed into place, so an interrupted run never looks finished.
  umount_below "$rootfs.new"
  rm -rf --one-file-system "$rootfs.new"
  as_root debootstrap --variant=minbase --include="$include" "$suite" "$rootfs.new" "$mirror" \
    >"$bench/debootstrap.log" 2>&1 || { umount_below "$rootfs.new"; die "debootstrap failed; see $bench/debootstrap.log"; }
  umount_below "$rootfs.new"
  # Downloaded .debs are not part of an OS image.
  rm -f "$rootfs.new"/var/cache/apt/archives/*.deb
  umount_below "$rootfs"
  rm -rf --one-file-system "$rootfs"
  mv "$rootfs.new" "$rootfs"
  echo "$want_stamp" >"$rootfs.stamp"
  echo "$(($(date +%s) - t0))" >"$bench/prepare-seconds"
  say "rootfs: built in $(cat "$bench/prepare-seconds") s"
fi
rootfs_size=$(du -sh --one-file-system "$rootfs" | cut -f1)
rootfs_bytes=$(du -sb --one-file-system "$rootfs" | cut -f1)
if [ "$rootfs_bytes" -lt $((300 * 1000 * 1000)) ]; then
  say "warning: rootfs is only $rootfs_size; add packages to \$include for a meaningful benchmark"
fi

# The inputs both sides share: the newest kernel in /boot, the rootfs's stub and os-release.
kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' -type f | sort -V | tail -n1)
[ -n "$kernel" ] || die "no /boot/vmlinuz-* in $rootfs"
stub=$rootfs/usr/lib/systemd/boot/efi/linuxx64.efi.stub
[ -f "$stub" ] || die "no $stub (systemd-boot-efi not in the rootfs?)"
# /etc/os-release is a relative symlink into usr/lib; take its target so nothing resolves
# against the host's /.
osrel=$rootfs/usr/lib/os-release
[ -f "$osrel" ] || die "no $osrel"

if [ ! -f "$keys/manifest.json" ]; then
  say "keys: genkey \"bench\" -o $keys"
  "$genkey" "bench" -o "$keys" >/dev/null
fi
for f in db.key db.pem tpm2-pcr-private.pem tpm2-pcr-public.pem; do
  [ -f "$keys/$f" ] || die "missing $keys/$f"
done

prep_note=$(cat "$bench/prepare-seconds" 2>/dev/null || echo "?")
say "rootfs $rootfs_size ($rootfs_bytes bytes), built in $prep_note s; kernel ${kernel##*/}"
[ "$prepare_only" = 1 ] && exit 0

# --- measuring --------------------------------------------------------------------------
rm -rf "$last"
mkdir -p "$last/m"

# timed NAME RUN CMD...: runs CMD under /usr/bin/time -v, keeps the report and the
# command's output in $last, and records wall and CPU seconds and peak RSS (KiB) under NAME.
# GNU time's peak RSS is the largest single process of the tree (ru_maxrss of the
# children), not the sum of a pipeline's concurrent processes.
timed() {
  local name=$1 run=$2; shift 2
  local rep=$last/$name.$run.time
  if ! /usr/bin/time -v -o "$rep" "$@" >"$last/$name.$run.out" 2>"$last/$name.$run.err"; then
    cat "$last/$name.$run.err" >&2
    die "$name (run $run) failed: $*"
  fi
  record "$name" "$rep"
}

# record NAME REPORT: appends a /usr/bin/time -v report's wall time, peak RSS and CPU time.
record() {
  awk '/Elapsed \(wall clock\)/ {n = split($NF, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' \
    "$2" >>"$last/m/$1.wall"
  awk '/Maximum resident set size/ {print $NF}' "$2" >>"$last/m/$1.rss"
  # CPU seconds (user + system, the whole process tree): on a shared machine it moves
  # far less with other load than wall time does.
  awk '/User time \(seconds\)/ {u = $NF} /System time \(seconds\)/ {s = $NF} END {print u + s}' \
    "$2" >>"$last/m/$1.cpu"
}

# The standard pipeline as one timed unit, each step timed inside it with the same tool.
# Args: NAME RUN LEVEL|none OUTDIR. Exported: the outer /usr/bin/time runs it in a new bash.
theirs_pipeline() {
  local name=$1 run=$2 lvl=$3 out=$4 initrd
  rm -rf "$out"; mkdir -p "$out"
  # Step 1: the initrd, the way hand-written build scripts make one from a whole rootfs.
  # The pipeline runs in its own bash so that one /usr/bin/time covers all of it; its
  # arguments are positional parameters of that bash, hence single quotes.
  if [ "$lvl" = none ]; then
    initrd=$out/initrd.cpio
    # shellcheck disable=SC2016
    /usr/bin/time -v -o "$BENCH_LAST/$name-initrd.$run.time" bash -c \
      'set -o pipefail; cd "$1" && find . | cpio -o -H newc --quiet >"$2"' _ "$BENCH_ROOTFS" "$initrd"
  else
    initrd=$out/initrd.zst
    # shellcheck disable=SC2016
    /usr/bin/time -v -o "$BENCH_LAST/$name-initrd.$run.time" bash -c \
      'set -o pipefail; cd "$1" && find . | cpio -o -H newc --quiet | zstd -q -T0 -"$2" >"$3"' \
      _ "$BENCH_ROOTFS" "$lvl" "$initrd"
  fi
  # Step 2: ukify assembles, runs systemd-measure sign (all four banks and the four
  # default phases, like build-uki) and signs with sbsign. The Debian kernel is already
  # signed, so ukify does not re-sign it (it checks with sbverify --list).
  /usr/bin/time -v -o "$BENCH_LAST/$name-ukify.$run.time" \
    env LD_LIBRARY_PATH="$BENCH_MEASURE_LIBS" /usr/bin/python3 "$BENCH_UKIFY" build \
      --linux="$BENCH_KERNEL" --initrd="$initrd" --stub="$BENCH_STUB" \
      --os-release=@"$BENCH_OSREL" --cmdline="$BENCH_CMDLINE" \
      --pcr-private-key="$BENCH_KEYS/tpm2-pcr-private.pem" \
      --pcr-public-key="$BENCH_KEYS/tpm2-pcr-public.pem" \
      --tools="$BENCH_MEASURE_DIR" \
      --signtool=sbsign --secureboot-private-key="$BENCH_KEYS/db.key" \
      --secureboot-certificate="$BENCH_KEYS/db.pem" \
      --output="$out/uki.efi"
}
export -f theirs_pipeline
export BENCH_LAST=$last BENCH_ROOTFS=$rootfs BENCH_KERNEL=$kernel BENCH_STUB=$stub \
  BENCH_OSREL=$osrel BENCH_CMDLINE=$cmdline BENCH_KEYS=$keys BENCH_UKIFY=$ukify \
  BENCH_MEASURE_DIR=$measure_dir BENCH_MEASURE_LIBS=$measure_libs

# run_theirs NAME RUN LEVEL|none: the pipeline, its whole and per-step figures.
run_theirs() {
  timed "$1" "$2" bash -c 'set -euo pipefail; theirs_pipeline "$@"' _ "$1" "$2" "$3" "$last/out-$1"
  record "$1-initrd" "$last/$1-initrd.$2.time"
  record "$1-ukify" "$last/$1-ukify.$2.time"
}

# run_ours NAME RUN COMPRESSION: build-uki from the rootfs.
run_ours() {
  rm -rf "$last/out-$1"
  timed "$1" "$2" "$build_uki" "dir:$rootfs" -t uki -d "$last/out-$1" -k "$keys" \
    --compression "$3" --cmdline "$cmdline" --json
}

# run_ours_asm NAME RUN INITRD: build-uki doing only ukify's job, on the same inputs.
run_ours_asm() {
  rm -rf "$last/out-$1"
  timed "$1" "$2" "$build_uki" --kernel "$kernel" --initrd "$3" --os-release "$osrel" \
    --stub "$stub" --cmdline "$cmdline" -t uki -d "$last/out-$1" -k "$keys" --json
}

# All variants see a warm page cache (24 GiB of RAM holds the rootfs many times over):
# the first timed run would otherwise pay for the disk alone. Dropping caches instead
# would disturb everything else on a shared machine.
say "warming the page cache"
find "$rootfs" -xdev -type f -print0 | xargs -0 cat >/dev/null

say "zstd level $level, $runs runs per variant, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$runs"); do
  # Interleaved, so that drift in machine load spreads over every variant.
  say "run $run/$runs: build-uki"
  run_ours ours "$run" "zstd:$level"
  say "run $run/$runs: cpio | zstd + ukify"
  run_theirs theirs "$run" "$level"
  if [ "$diag" = 1 ]; then
    # build-uki doing only ukify's job (the initrd from step 1 given with --initrd):
    # separates our assembly and signing from our packing and compressing.
    say "run $run/$runs: build-uki --initrd (their initrd)"
    run_ours_asm ours-asm "$run" "$last/out-theirs/initrd.zst"
    say "run $run/$runs: both, uncompressed initrd"
    run_ours ours-none "$run" none
    run_theirs theirs-none "$run" none
    run_ours_asm ours-none-asm "$run" "$last/out-theirs-none/initrd.cpio"
  fi
done

# --- report -----------------------------------------------------------------------------
# median NAME KIND: median of the recorded values (mean of the middle two for even counts).
median() {
  sort -g "$last/m/$1.$2" | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
size() { stat -c %s "$1"; }

# Both UKIs must be validly signed by the bench db key, or the comparison means nothing.
for f in "$last/out-ours/norole.efi" "$last/out-theirs/uki.efi"; do
  sbverify --cert "$keys/db.pem" "$f" >/dev/null 2>&1 || say "warning: $f does not verify against $keys/db.pem"
done

ours_uki=$(size "$last/out-ours/norole.efi")
theirs_uki=$(size "$last/out-theirs/uki.efi")
ours_initrd=$(jq -r '.initrd.compressed_bytes' "$last/ours.$runs.out")
theirs_initrd=$(size "$last/out-theirs/initrd.zst")

# row LABEL OURS THEIRS: one row. OURS and THEIRS name recorded measurements; empty
# prints "-"; OURS "~A,B" is the difference of two medians (an estimate, no RSS).
row() {
  local ow="-" tw="-" oc="-" tc="-" orss="-" trss="-" a b
  case $2 in
    "") ;;
    "~"*) a=${2#"~"}; b=${a#*,}; a=${a%,*}
          ow=$(awk -v x="$(median "$a" wall)" -v y="$(median "$b" wall)" 'BEGIN {print x - y}')
          oc=$(awk -v x="$(median "$a" cpu)" -v y="$(median "$b" cpu)" 'BEGIN {print x - y}') ;;
    *) ow=$(median "$2" wall); oc=$(median "$2" cpu); orss=$(median "$2" rss) ;;
  esac
  if [ -n "$3" ]; then tw=$(median "$3" wall); tc=$(median "$3" cpu); trss=$(median "$3" rss); fi
  awk -v l="$1" -v ow="$ow" -v tw="$tw" -v oc="$oc" -v tc="$tc" -v orss="$orss" -v trss="$trss" \
      -v est="${2:0:1}" -v fmt="$row_fmt" '
    # A difference of two noisy medians can come out at or below zero: show "~0", no ratio.
    function sec(x) { return x == "-" ? x : (est == "~" && x < 0.05) ? "~0" : sprintf("%s%.2f", (est == "~" ? "~" : ""), x) }
    function ratio(o, t) { return (o == "-" || t == "-" || o < 0.05) ? "-" : sprintf("%.2fx", t / o) }
    function mib(k) { return k == "-" ? k : sprintf("%.0f MiB", k / 1024) }
    BEGIN {
      t = (tw == "-") ? tw : sprintf("%.2f", tw); c = (tc == "-") ? tc : sprintf("%.2f", tc)
      printf fmt, l, sec(ow), t, ratio(ow, tw), sec(oc), c, ratio(oc, tc), mib(orss), mib(trss)
    }'
}
row_fmt='%-44s %8s %7s %6s  %8s %7s %6s  %9s %9s\n'

{
  echo "build-uki vs cpio|zstd + ukify 254 (+ systemd-measure 254, sbsign)"
  echo "rootfs $rootfs_size ($rootfs_bytes bytes), kernel ${kernel##*/}, zstd level $level, median of $runs runs,"
  echo "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end, build-uki $("$build_uki" --version | awk '{print $2}') built $(date -r "$build_uki" '+%F %T'), HEAD $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  # shellcheck disable=SC2059  # the format is ours, shared with row()
  printf "$row_fmt" "" "wall s" "" "" "CPU s" "" "" "peak RSS" ""
  # shellcheck disable=SC2059
  printf "$row_fmt" "step" "ours" "theirs" "ratio" "ours" "theirs" "ratio" "ours" "theirs"
  if [ "$diag" = 1 ]; then
    # Ours has no separate initrd command: its initrd time is estimated as the whole run
    # minus the run that is given an initrd (marked ~).
    row "1. initrd: pack + zstd -$level (cpio|zstd)" "~ours,ours-asm" theirs-initrd
    row "2. UKI from initrd: --initrd / ukify" ours-asm theirs-ukify
  else
    row "1. initrd: find | cpio | zstd -T0 -$level" "" theirs-initrd
    row "2. UKI from initrd: ukify+measure+sbsign" "" theirs-ukify
  fi
  row "whole: rootfs -> signed UKI, zstd -$level" ours theirs
  if [ "$diag" = 1 ]; then
    row "whole, uncompressed initrd (diagnostic)" ours-none theirs-none
    row "  1. initrd: pack only (find | cpio)" "~ours-none,ours-none-asm" theirs-none-initrd
    row "  2. UKI from initrd: --initrd / ukify" ours-none-asm theirs-none-ukify
  fi
  echo "(ratio: theirs/ours, above 1 means build-uki is faster. ~: the whole run minus the"
  echo " --initrd run, an estimate. CPU: user+system of the whole process tree. RSS: the"
  echo " largest single process, as /usr/bin/time reports it; a pipeline's processes are not summed.)"
  echo
  printf '%-44s %14s %14s %14s\n' "size (bytes)" "ours" "theirs" "theirs-ours"
  printf '%-44s %14d %14d %+14d\n' "UKI (.efi), zstd -$level" "$ours_uki" "$theirs_uki" $((theirs_uki - ours_uki))
  printf '%-44s %14d %14d %+14d\n' "initrd (compressed)" "$ours_initrd" "$theirs_initrd" $((theirs_initrd - ours_initrd))
  if [ "$diag" = 1 ]; then
    ours_none=$(size "$last/out-ours-none/norole.efi")
    theirs_none=$(size "$last/out-theirs-none/uki.efi")
    printf '%-44s %14d %14d %+14d\n' "UKI (.efi), uncompressed initrd" "$ours_none" "$theirs_none" $((theirs_none - ours_none))
  fi
  [ "$ours_uki" -le "$theirs_uki" ] || echo "NOTE: our UKI is larger than ukify's by $((ours_uki - theirs_uki)) bytes"
  echo
  awk -v o="$(median ours wall)" -v t="$(median theirs wall)" -v oc="$(median ours cpu)" \
      -v tc="$(median theirs cpu)" -v l="$level" 'BEGIN {
    printf "overall: rootfs -> signed UKI (zstd -%s): build-uki %.2f s, cpio|zstd + ukify %.2f s: theirs/ours = %.2fx wall, %.2fx CPU\n", l, o, t, t / o, tc / oc
  }'
} | tee "$last/table.txt"
