#!/usr/bin/env bash
# Fetches the boot-test assets into ${SBKIT_CACHE:-<repo>/.cache}/assets:
#   vmlinuz, kernel-release, linux/       Debian bookworm kernel (package unpacked)
#   busybox                               static busybox for guest initramfs images
#   systemd-252/, systemd-254/            systemd-boot-efi (stub, systemd-boot) from
#                                         bookworm and bookworm-backports; 254 also has
#                                         the systemd and systemd-boot packages unpacked
#                                         (systemd-measure, ukify)
# Packages are fetched with `apt-get download` and unpacked with `dpkg -x`: nothing is
# installed over the host. Needs the apt lists that scripts/install-deps.sh sets up
# (bookworm-backports). Idempotent: an asset whose stamp names the resolved package
# version is not fetched again. Prints one line per asset.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cache=${SBKIT_CACHE:-$top/.cache}
assets=$cache/assets
debs=$cache/debs
mkdir -p "$assets" "$debs"

die() { echo "fetch-assets: $*" >&2; exit 1; }

# Newest version of package $1 whose version starts with $2 (madison lists newest first).
# Selecting by version prefix rather than by suite keeps working whatever pinning the
# host has, and picks up bookworm-security/-updates rebuilds of the same generation.
# One madison call for all packages: each apt-cache run costs ~0.5 s on a host with big lists.
madison=$(apt-cache madison systemd-boot-efi systemd systemd-boot libsystemd-shared busybox-static 2>/dev/null || true)
version_of() {
  awk -v n="$1" -v p="$2" '$1 == n && $3 ~ "^"p {print $3; exit}' <<<"$madison"
}

# Downloads package $1 at version $2 into $debs (once) and prints the .deb path.
download() {
  local pkg=$1 ver=$2 deb
  # apt names the file with the epoch's colon escaped as %3a.
  deb=$debs/${pkg}_${ver//:/%3a}_amd64.deb
  if [ ! -s "$deb" ]; then
    # Sandbox user root: the cache may be unreadable to _apt; apt would only warn.
    (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >/dev/null) \
      || die "apt-get download $pkg=$ver failed (run scripts/install-deps.sh to refresh apt lists)"
  fi
  [ -s "$deb" ] || die "expected $deb after apt-get download"
  echo "$deb"
}

# up_to_date STAMP VALUE: true when STAMP already records VALUE.
up_to_date() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# --- kernel -------------------------------------------------------------------------
# linux-image-amd64 is a metapackage; its candidate depends on the current ABI package.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
  | awk '/Depends: linux-image-[0-9].*-amd64$/ {print $2; exit}')
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 (apt lists missing? run scripts/install-deps.sh)"
kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')
if [ -z "$kver" ] || [ "$kver" = "(none)" ]; then die "no candidate for $kpkg"; fi
krel=${kpkg#linux-image-}
if ! up_to_date "$assets/linux.stamp" "$kpkg=$kver" || [ ! -s "$assets/vmlinuz" ]; then
  deb=$(download "$kpkg" "$kver")
  rm -rf "$assets/linux"
  dpkg -x "$deb" "$assets/linux"
  cp "$assets/linux/boot/vmlinuz-$krel" "$assets/vmlinuz"
  echo "$krel" >"$assets/kernel-release"
  echo "$kpkg=$kver" >"$assets/linux.stamp"
  # The .deb is large (~70 MB) and fully unpacked now.
  rm -f "$deb"
fi
echo "asset kernel $kpkg $kver: $assets/vmlinuz (modules: $assets/linux/lib/modules/$krel)"

# --- busybox ------------------------------------------------------------------------
# Prefer the host's busybox-static (install-deps installs it); otherwise unpack it.
# (Debian's plain busybox package is dynamically linked and useless in an initramfs.)
if [ -x /bin/busybox ] && dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  bb_src=/bin/busybox
  bb_ver=$(dpkg-query -W -f='${Version}' busybox-static)
else
  bb_ver=$(version_of busybox-static "")
  [ -n "$bb_ver" ] || die "no busybox-static package found"
  deb=$(download busybox-static "$bb_ver")
  rm -rf "$debs/busybox-static"
  dpkg -x "$deb" "$debs/busybox-static"
  bb_src=$debs/busybox-static/bin/busybox
fi
if ! up_to_date "$assets/busybox.stamp" "$bb_ver" || [ ! -x "$assets/busybox" ]; then
  install -m 0755 "$bb_src" "$assets/busybox"
  echo "$bb_ver" >"$assets/busybox.stamp"
fi
echo "asset busybox $bb_ver: $assets/busybox"

# --- systemd-boot-efi 252 (bookworm) and 254 (bookworm-backports) ---------------------
# fetch_systemd GEN PACKAGES...: unpacks each package at its newest GEN.* version into
# assets/systemd-GEN and records the versions in a stamp.
fetch_systemd() {
  local gen=$1; shift
  local dir=$assets/systemd-$gen want="" pkg ver pv deb
  for pkg in "$@"; do
    ver=$(version_of "$pkg" "$gen.")
    [ -n "$ver" ] || die "no $pkg $gen.x in apt lists (bookworm-backports missing? run scripts/install-deps.sh)"
    want+="$pkg=$ver "
  done
  if ! up_to_date "$dir.stamp" "$want"; then
    rm -rf "$dir"
    mkdir -p "$dir"
    for pv in $want; do
      deb=$(download "${pv%%=*}" "${pv#*=}")
      dpkg -x "$deb" "$dir"
    done
    echo "$want" >"$dir.stamp"
  fi
  local efi=$dir/usr/lib/systemd/boot/efi
  if [ ! -f "$efi/linuxx64.efi.stub" ] || [ ! -f "$efi/systemd-bootx64.efi" ]; then
    die "systemd-boot-efi $gen lacks linuxx64.efi.stub or systemd-bootx64.efi in $efi"
  fi
  echo "asset systemd-$gen ${want% }: $efi/{linuxx64.efi.stub,systemd-bootx64.efi}"
}
fetch_systemd 252 systemd-boot-efi
# systemd carries systemd-measure, which links libsystemd-shared-254.so (its own package
# since 253); Debian ships ukify in systemd-boot. bookworm's packages use /lib, not /usr/lib.
fetch_systemd 254 systemd-boot-efi systemd systemd-boot libsystemd-shared
measure=$assets/systemd-254/lib/systemd/systemd-measure
ukify=$assets/systemd-254/lib/systemd/ukify
[ -x "$measure" ] || die "systemd 254 package lacks $measure"
[ -f "$ukify" ] || die "systemd-boot 254 package lacks $ukify"
echo "asset systemd-254 tools: $measure $ukify"
