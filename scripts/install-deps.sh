#!/usr/bin/env bash
# Installs what sbkit's build and tests need on a Debian 12 host: apt packages
# (the oracles: efitools, sbsigntool, osslsigncode, OVMF, QEMU from
# bookworm-backports, busybox), and a Python venv with virt-firmware.
# Idempotent; nothing of the host's own systemd is replaced.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cache=${SBKIT_CACHE:-$top/.cache}
mkdir -p "$cache"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# bookworm-backports carries the QEMU that matches the preinstalled qemu-utils
# and systemd 254 (stub, systemd-measure). Reuse the mirror the host already uses.
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  srcs=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && srcs+=("$f")
  done
  mirror=$( { grep -hoE '^(URIs:|deb) +[a-z]+://[^ ]+' "${srcs[@]}" 2>/dev/null || true; } \
    | awk '{print $2}' | grep -v -e security -e nodesource -e google || true)
  mirror=$(printf '%s\n' "$mirror" | head -n1)
  [ -n "$mirror" ] || { echo "install-deps: no Debian mirror found in /etc/apt; add bookworm-backports by hand" >&2; exit 1; }
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
    | as_root tee /etc/apt/sources.list.d/sbkit-backports.sources >/dev/null
  rm -f "$cache/apt-updated"  # the new suite's index must be fetched
fi

stamp=$cache/apt-updated
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +720)" ]; then
  as_root apt-get update -qq
  touch "$stamp"
fi

pkgs=(
  pkg-config libssl-dev
  efitools sbsigntool osslsigncode openssl
  ovmf busybox-static cpio zstd xz-utils
  python3-venv
  swtpm e2fsprogs
  binutils python3-pefile lz4
  softhsm2 opensc
  libtss2-esys-3.0.2-0 libtss2-rc0 libtss2-mu0
  xorriso mtools dosfstools
  debootstrap jq
  docker-registry skopeo apache2-utils
  age pcscd libpcsclite-dev vsmartcard-vpcd yubikey-manager strace
  # tests/sealed_disk.rs: a LUKS2 volume made on the host and enrolled by
  # systemd-cryptenroll against swtpm (tss2's swtpm TCTI; swtpm_setup picks the banks).
  cryptsetup-bin systemd libtss2-tcti-swtpm0 libtss2-tcti-device0 swtpm-tools
)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
fi

# virt-firmware (virt-fw-vars) in a venv of our own.
venv=$cache/venv
if [ ! -x "$venv/bin/virt-fw-vars" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q virt-firmware
fi
# cargo-fuzz for the libFuzzer targets in fuzz/ (scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
echo "install-deps: done (venv: $venv)"
