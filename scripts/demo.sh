#!/usr/bin/env bash
# The main job on a built-in default, end to end on this host:
#   1. set up (apt packages, test assets), build sbkit;
#   2. genkey: a Secure Boot key hierarchy for "sbkit demo";
#   3. a demo OS: a busybox root filesystem with a Debian kernel;
#   4. build-uki -t iso: signed UKI, signed systemd-boot, hybrid ISO;
#   5. sbkit test-boot: OVMF with our keys enrolled and Secure Boot enforced,
#      plus a TPM, boots the ISO; the verdict ends the run (exit 0 = booted
#      with Secure Boot on).
# Outputs go to demo/ (SBKIT_DEMO_DIR). Re-runs reuse the keys.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"

bash scripts/install-deps.sh
bash scripts/fetch-assets.sh
cargo build --release --locked
bin=$top/target/release
assets=${SBKIT_CACHE:-$top/.cache}/assets
out=${SBKIT_DEMO_DIR:-$top/demo}
mkdir -p "$out"

echo "== 1/4 keys"
if [ -f "$out/keys/manifest.json" ]; then
  "$bin/genkey" "sbkit demo" -o "$out/keys" --reuse-keys
else
  "$bin/genkey" "sbkit demo" -o "$out/keys"
fi

echo "== 2/4 demo OS"
root=$out/rootfs
rm -rf "$root"
mkdir -p "$root"/{bin,boot,etc,proc,sys,dev,tmp,run}
cp "$assets/busybox" "$root/bin/busybox"
for applet in sh mount cat echo poweroff sleep uname; do ln -s busybox "$root/bin/$applet"; done
cp "$assets/vmlinuz" "$root/boot/vmlinuz-$(cat "$assets/kernel-release")"
printf 'PRETTY_NAME="sbkit demo OS"\nNAME="sbkit demo OS"\nID=sbkit-demo\nVERSION_ID=1\n' > "$root/etc/os-release"
cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "sbkit demo: booted $(uname -r), PCR 11 = $(cat /sys/class/tpm/tpm0/pcr-sha256/11 2>/dev/null || echo no-tpm)"
poweroff -f
INIT
chmod 755 "$root/init"

echo "== 3/4 signed ISO"
"$bin/build-uki" "dir:$root" -t iso -d "$out/build" -k "$out/keys" \
  --stub "$assets/systemd-254/usr/lib/systemd/boot/efi/linuxx64.efi.stub" \
  --sdboot "$assets/systemd-254/usr/lib/systemd/boot/efi/systemd-bootx64.efi" \
  --cmdline "console=ttyS0 panic=-1" --loader-timeout 1

echo "== 4/4 test boot (OVMF, Secure Boot enforced, TPM; about a minute under TCG)"
"$bin/sbkit" --native test-boot "$out/build/norole.iso" --keys "$out/keys" --tpm \
  --expect "sbkit demo: booted" --serial-log "$out/serial.log"
