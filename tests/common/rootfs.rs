//! A tiny root filesystem for build-uki: busybox, a Debian kernel under
//! /boot, an os-release, and an /init script the test supplies.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::guest::Assets;

/// Applets the test /init scripts use.
const APPLETS: [&str; 12] = [
    "sh", "mount", "cat", "echo", "poweroff", "sleep", "ls", "sed", "od", "head", "dd", "tr",
];

/// Builds the rootfs in `root` (created) with `init` as `/init`.
pub fn busybox_rootfs(root: &Path, init: &str) {
    let assets = Assets::locate();
    for d in ["bin", "boot", "etc", "proc", "sys", "dev", "tmp", "run"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(assets.busybox(), root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    let release = assets.kernel_release();
    fs::copy(
        assets.kernel(),
        root.join(format!("boot/vmlinuz-{release}")),
    )
    .unwrap();
    fs::write(
        root.join("etc/os-release"),
        "PRETTY_NAME=\"sbkit test OS\"\nNAME=\"sbkit test OS\"\nID=sbkittest\nVERSION_ID=1.0\n",
    )
    .unwrap();
    let init_path = root.join("init");
    fs::write(&init_path, init).unwrap();
    fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// An /init that prints the boot marker, PCR 11 (sha256) and SecureBoot, then powers off.
pub const MARKER_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "SBKIT-BOOT cmdline=$(cat /proc/cmdline | tr ' ' '_')"
if [ -r /sys/class/tpm/tpm0/pcr-sha256/11 ]; then
  echo "SBKIT-PCR pcr11=$(cat /sys/class/tpm/tpm0/pcr-sha256/11)"
else
  echo "SBKIT-PCR pcr11=none"
fi
echo "SBKIT-GUEST: PASS"
poweroff -f
"#;
