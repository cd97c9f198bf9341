//! Signed-UKI guests for the enroll tests: a busybox rootfs whose `/init` loads efivarfs
//! and reports SetupMode and SecureBoot like the kernel guests of `guest.rs` do (so
//! `BootOutcome::assert_user_mode` works), UKIs built from it by our `build-uki`, and a
//! boot of a UKI as the removable-media loader of an ESP directory.
//!

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::common::guest::Assets;
use crate::common::qemu::{self, BootOutcome, BootSpec, Firmware, Matched, Media};
use crate::common::rootfs::busybox_rootfs;
use crate::common::tools::{our_bin, run_ok};

/// The rootfs `/init`: mounts efivarfs (a module on Debian kernels), prints
/// `SBKIT-EFIVAR SetupMode=…` and `SecureBoot=…`, then the pass marker.
pub const EFIVAR_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
insmod /sbkit/efivarfs.ko 2>/dev/null
mount -t efivarfs efivarfs /sys/firmware/efi/efivars || echo "SBKIT-GUEST: efivarfs mount failed"
for v in SetupMode SecureBoot; do
  if cat /sys/firmware/efi/efivars/$v-8be4df61-93ca-11d2-aa0d-00e098032b8c >/tmp/v 2>/dev/null; then
    echo "SBKIT-EFIVAR $v=$(od -An -v -tx1 -j4 /tmp/v | tr -d ' \n')"
  else
    echo "SBKIT-EFIVAR $v=absent"
  fi
done
echo "SBKIT-BOOT uki"
echo "SBKIT-GUEST: PASS"
poweroff -f
"#;

/// Builds the rootfs in `root`: busybox, the kernel, [`EFIVAR_INIT`], efivarfs.ko.
pub fn efivar_rootfs(root: &Path) {
    busybox_rootfs(root, EFIVAR_INIT);
    let assets = Assets::locate();
    symlink("busybox", root.join("bin/insmod")).expect("insmod link");
    fs::create_dir_all(root.join("sbkit")).expect("sbkit dir");
    fs::copy(
        assets.module("kernel/fs/efivarfs/efivarfs.ko"),
        root.join("sbkit/efivarfs.ko"),
    )
    .expect("copying efivarfs.ko");
}

/// `build-uki dir:ROOT -t uki` signed with `keys` (systemd 254 stub); returns the UKI.
pub fn build_uki(root: &Path, keys: &Path, out: &Path) -> PathBuf {
    build_uki_on(root, keys, out, 254)
}

/// [`build_uki`] on the systemd `generation` stub (252 or 254).
pub fn build_uki_on(root: &Path, keys: &Path, out: &Path, generation: u32) -> PathBuf {
    run_ok(
        our_bin("build-uki")
            .arg(format!("dir:{}", root.display()))
            .args(["-t", "uki", "--cmdline", "console=ttyS0 panic=-1", "-d"])
            .arg(out)
            .arg("-k")
            .arg(keys)
            .arg("--stub")
            .arg(Assets::locate().stub(generation)),
    );
    let uki = out.join("norole.efi");
    assert!(uki.is_file(), "build-uki wrote no {}", uki.display());
    uki
}

/// Boots `efi` as `EFI/BOOT/BOOTX64.EFI` of an ESP directory with a copy of `vars`
/// (the original stays as it was). `name` tells the serial logs apart.
pub fn boot_efi(work: &Path, name: &str, efi: &Path, vars: &Path) -> BootOutcome {
    let esp = work.join(format!("esp-{name}"));
    fs::create_dir_all(esp.join("EFI/BOOT")).expect("ESP dir");
    fs::copy(efi, esp.join("EFI/BOOT/BOOTX64.EFI")).expect("copying the UKI");
    let run_vars = work.join(format!("vars-{name}.fd"));
    fs::copy(vars, &run_vars).expect("copying the variable store");
    let serial = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.serial.log"));
    qemu::boot(&BootSpec::new(
        Firmware::ovmf_secboot(),
        &run_vars,
        Media::EspDir(esp),
        &serial,
    ))
}

/// Panics unless the firmware refused the image ("Access Denied").
pub fn assert_refused(outcome: &BootOutcome, what: &str) {
    match &outcome.matched {
        Some(Matched::Failure(line)) if line.contains("Access Denied") => {}
        _ => panic!("the firmware must refuse {what} with Access Denied\n{outcome}"),
    }
}

/// The image with its Authenticode signature removed (certificate table entry zeroed and cut).
pub fn strip_signature(signed: &[u8]) -> Vec<u8> {
    let layout = sbkit::pe::PeLayout::parse(signed).expect("a PE image");
    let (offset, _) = layout
        .certificate_table(signed)
        .expect("a signed image has a certificate table");
    let dir = layout.directory_offset(4).expect("data directory 4");
    let mut out = signed[..offset as usize].to_vec();
    out[dir..dir + 8].fill(0);
    out
}

/// A variable store (Secure Boot on) with `keys`' PK, KEK and db enrolled under
/// the manifest's owner GUID, written by virt-fw-vars to `work/vars.fd`.
pub fn enrolled_store(work: &Path, keys: &Path) -> PathBuf {
    let owner = crate::common::tools::owner_guid(keys);
    let vars = work.join("vars.fd");
    qemu::VarStore {
        pk: Some(qemu::Enrolled::new(&owner, &keys.join("PK.pem"))),
        kek: vec![qemu::Enrolled::new(&owner, &keys.join("KEK.pem"))],
        db: vec![qemu::Enrolled::new(&owner, &keys.join("db.pem"))],
        secure_boot: true,
    }
    .write(&Firmware::ovmf_secboot(), &vars);
    vars
}

/// `build-uki dir:ROOT -t iso` into `out` with the 254 stub and systemd-boot, a
/// serial console and no menu delay, plus `extra`; returns `out/norole.iso`.
pub fn build_test_iso(root: &Path, keys: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let assets = Assets::locate();
    run_ok(
        our_bin("build-uki")
            .arg(format!("dir:{}", root.display()))
            .args([
                "-t",
                "iso",
                "--cmdline",
                "console=ttyS0 panic=-1",
                "--loader-timeout",
                "0",
                "-d",
            ])
            .arg(out)
            .arg("-k")
            .arg(keys)
            .arg("--stub")
            .arg(assets.stub(254))
            .arg("--sdboot")
            .arg(assets.systemd_boot(254))
            .args(extra),
    );
    out.join("norole.iso")
}
