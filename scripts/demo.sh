#!/usr/bin/env bash
# The main job on a built-in default, end to end, container-first:
#   1. set up (apt packages, test assets), build sbkit, build its images
#      offline (debootstrap base + `sbkit images build`);
#   2. sbkit genkey: a Secure Boot key hierarchy for "sbkit demo";
#   3. a demo OS: a busybox root filesystem with a Debian kernel;
#   4. sbkit build-uki -t iso: signed UKI, signed systemd-boot (the build-uki
#      image's own stub and systemd-boot), hybrid ISO;
#   5. sbkit test-boot (in the sbkit-qemu image): OVMF with our keys enrolled,
#      Secure Boot enforced, a TPM; the verdict ends the run (exit 0 = booted
#      with Secure Boot on).
# Outputs go to demo/ (SBKIT_DEMO_DIR). Re-runs reuse the keys.
# SBKIT_DEMO_NATIVE=1 runs the tools on the host instead of in containers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"

bash scripts/install-deps.sh
bash scripts/fetch-assets.sh
cargo build --release --locked
sbkit=$top/target/release/sbkit
assets=${SBKIT_CACHE:-$top/.cache}/assets
out=${SBKIT_DEMO_DIR:-$top/demo}
mkdir -p "$out"
cd "$out"

native=()
extra=()
if [ "${SBKIT_DEMO_NATIVE:-0}" = 1 ]; then
  native=(--native)
  # On the host there is no build image: take the stub and systemd-boot from the assets.
  extra=(--stub "$assets/systemd-254/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
         --sdboot "$assets/systemd-254/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
else
  echo "== 0/4 images (offline, from the debootstrap base)"
  (cd "$top" && bash scripts/base-image.sh && "$sbkit" images build)
fi

echo "== 1/4 keys"
if [ -f keys/manifest.json ]; then
  "$sbkit" "${native[@]}" genkey "sbkit demo" -o keys --reuse-keys
else
  "$sbkit" "${native[@]}" genkey "sbkit demo" -o keys
fi

echo "== 2/4 demo OS"
rm -rf rootfs
mkdir -p rootfs/{bin,boot,etc,proc,sys,dev,tmp,run}
cp "$assets/busybox" rootfs/bin/busybox
for applet in sh mount cat echo poweroff sleep uname; do ln -s busybox "rootfs/bin/$applet"; done
cp "$assets/vmlinuz" "rootfs/boot/vmlinuz-$(cat "$assets/kernel-release")"
printf 'PRETTY_NAME="sbkit demo OS"\nNAME="sbkit demo OS"\nID=sbkit-demo\nVERSION_ID=1\n' > rootfs/etc/os-release
cat > rootfs/init <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "sbkit demo: booted $(uname -r), PCR 11 = $(cat /sys/class/tpm/tpm0/pcr-sha256/11 2>/dev/null || echo no-tpm)"
poweroff -f
INIT
chmod 755 rootfs/init

echo "== 3/4 signed ISO"
"$sbkit" "${native[@]}" build-uki dir:rootfs -t iso -d build -k keys \
  --cmdline "console=ttyS0 panic=-1" --loader-timeout 1 "${extra[@]}"

echo "== 4/4 test boot (OVMF, Secure Boot enforced, TPM; about a minute under TCG)"
"$sbkit" "${native[@]}" test-boot build/norole.iso --keys keys --tpm \
  --expect "sbkit demo: booted" --serial-log serial.log
