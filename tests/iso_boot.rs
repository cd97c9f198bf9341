//! build-uki -t iso judged by fsck.vfat, mtools and OVMF: the ISO boots as a
//! CD-ROM with Secure Boot enforced (systemd-boot → UKI → initramfs), an
//! unsigned systemd-boot is refused, and systemd-boot enrolls the keys from
//! the ISO in setup mode.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::guest::Assets;
use common::qemu::{self, BootOutcome, BootSpec, Firmware, Matched, Media};
use common::rootfs::{busybox_rootfs, MARKER_INIT};
use common::tools::{genkey, our_bin, require_tool, run_ok};

struct Fixture {
    _work: tempfile::TempDir,
    dir: PathBuf,
    keys: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    let keys = dir.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let root = dir.join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    Fixture {
        _work: work,
        dir,
        keys,
        root,
    }
}

fn build_iso(f: &Fixture, out: &str, extra: &[&str]) -> PathBuf {
    common::uki_guest::build_test_iso(&f.root, &f.keys, &f.dir.join(out), extra)
}

/// (first LBA, sectors) of the GPT partition of type EFI System.
fn esp_partition(iso: &[u8]) -> (u64, u64) {
    let header = &iso[512..1024];
    assert_eq!(&header[..8], b"EFI PART", "no GPT header at LBA 1");
    let entries_lba = u64::from_le_bytes(header[72..80].try_into().unwrap());
    let count = u32::from_le_bytes(header[80..84].try_into().unwrap()) as usize;
    let size = u32::from_le_bytes(header[84..88].try_into().unwrap()) as usize;
    // C12A7328-F81F-11D2-BA4B-00A0C93EC93B, stored mixed-endian.
    let esp_type = [
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ];
    for i in 0..count {
        let e = &iso[entries_lba as usize * 512 + i * size..][..size];
        if e[..16] == esp_type {
            let first = u64::from_le_bytes(e[32..40].try_into().unwrap());
            let last = u64::from_le_bytes(e[40..48].try_into().unwrap());
            return (first, last - first + 1);
        }
    }
    panic!("no EFI System Partition in the GPT");
}

fn boot_iso(f: &Fixture, name: &str, iso: &Path, vars: &Path, reboot: bool) -> BootOutcome {
    let run_vars = f.dir.join(format!("vars-{name}.fd"));
    fs::copy(vars, &run_vars).unwrap();
    let serial = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("iso_boot.{name}.serial.log"));
    let mut spec = BootSpec::new(
        Firmware::ovmf_secboot(),
        &run_vars,
        Media::Cdrom(iso.to_path_buf()),
        &serial,
    );
    spec.allow_reboot = reboot;
    qemu::boot(&spec)
}

#[test]
fn the_iso_is_well_formed_and_boots_from_cdrom_with_secure_boot_enforced() {
    let f = fixture();
    let iso = build_iso(&f, "iso", &[]);
    let bytes = fs::read(&iso).unwrap();
    assert_eq!(
        &bytes[0x8001..0x8006],
        b"CD001",
        "ISO 9660 primary volume descriptor"
    );
    assert_eq!(
        String::from_utf8_lossy(&bytes[0x8028..0x8028 + 15]),
        "UKI_ISO_INSTALL"
    );

    // The ESP: fsck-clean, with the Kairos layout (mtools reads it).
    let (first, sectors) = esp_partition(&bytes);
    let esp = f.dir.join("esp.img");
    fs::write(
        &esp,
        &bytes[first as usize * 512..(first + sectors) as usize * 512],
    )
    .unwrap();
    run_ok(Command::new(require_tool("fsck.vfat")).arg("-n").arg(&esp));
    let listing = |p: &str| {
        String::from_utf8_lossy(
            &run_ok(
                Command::new(require_tool("mdir"))
                    .args(["-b", "-i"])
                    .arg(&esp)
                    .arg(p),
            )
            .stdout,
        )
        .into_owned()
    };
    assert!(listing("::/EFI/BOOT").contains("BOOTX64.EFI"));
    assert!(listing("::/EFI/kairos").contains("norole.efi"));
    let auto = listing("::/loader/keys/auto");
    for k in ["PK.auth", "KEK.auth", "db.auth"] {
        assert!(auto.contains(k), "{k} missing:\n{auto}");
    }
    let conf = run_ok(
        Command::new(require_tool("mtype"))
            .arg("-i")
            .arg(&esp)
            .arg("::/loader/loader.conf"),
    );
    let conf = String::from_utf8_lossy(&conf.stdout);
    assert!(
        conf.contains("secure-boot-enroll if-safe"),
        "systemd-boot 254 gets if-safe by default:\n{conf}"
    );

    let vars = common::uki_guest::enrolled_store(&f.dir, &f.keys);
    let ours = boot_iso(&f, "enrolled", &iso, &vars, false);
    ours.assert_success();
    assert!(
        ours.log.contains("secureboot: Secure boot enabled"),
        "Secure Boot must be on\n{ours}"
    );
}

#[test]
fn an_iso_with_unsigned_systemd_boot_is_refused() {
    let f = fixture();
    let assets = Assets::locate();
    // The same layout, assembled by hand with an unsigned systemd-boot.
    let uki_dir = f.dir.join("uki");
    run_ok(
        our_bin("build-uki")
            .arg(format!("dir:{}", f.root.display()))
            .args(["-t", "uki", "--cmdline", "console=ttyS0 panic=-1", "-d"])
            .arg(&uki_dir)
            .arg("-k")
            .arg(&f.keys)
            .arg("--stub")
            .arg(assets.stub(254)),
    );
    let mut tree = sbkit::media::fat::FileTree::new();
    tree.insert(
        "EFI/BOOT/BOOTX64.EFI".into(),
        fs::read(assets.systemd_boot(254)).unwrap(),
    );
    tree.insert(
        "EFI/kairos/norole.efi".into(),
        fs::read(uki_dir.join("norole.efi")).unwrap(),
    );
    tree.insert(
        "loader/entries/norole.conf".into(),
        fs::read(uki_dir.join("norole.conf")).unwrap(),
    );
    tree.insert(
        "loader/loader.conf".into(),
        b"default norole.conf\ntimeout 0\n".to_vec(),
    );
    let esp = f.dir.join("efiboot.img");
    sbkit::media::fat::build_image(&tree, "EFIBOOT", 1, 0, &esp).unwrap();
    let root = f.dir.join("iso-root");
    fs::create_dir(&root).unwrap();
    let iso = f.dir.join("unsigned.iso");
    sbkit::media::iso::write_iso(&esp, &root, &iso, "UKI_ISO_INSTALL", 0).unwrap();
    let outcome = boot_iso(
        &f,
        "unsigned-sdboot",
        &iso,
        &common::uki_guest::enrolled_store(&f.dir, &f.keys),
        false,
    );
    match &outcome.matched {
        Some(Matched::Failure(line)) if line.contains("Access Denied") => {}
        _ => panic!("the firmware must refuse an unsigned systemd-boot\n{outcome}"),
    }
}

#[test]
fn systemd_boot_enrolls_the_keys_from_the_iso_in_setup_mode() {
    let f = fixture();
    let iso = build_iso(&f, "iso", &["--secure-boot-enroll", "force"]);
    // A fresh store: no PK, so the firmware is in setup mode.
    let setup = f.dir.join("setup.fd");
    fs::copy(Firmware::ovmf_secboot().vars_template, &setup).unwrap();
    let outcome = boot_iso(&f, "auto-enroll", &iso, &setup, true);
    outcome.assert_success();
    let log = &outcome.log;
    let enrolled_at = log
        .find("Enrolling")
        .unwrap_or_else(|| panic!("systemd-boot did not enroll\n{outcome}"));
    let enforced_at = log
        .rfind("secureboot: Secure boot enabled")
        .unwrap_or_else(|| panic!("Secure Boot is not on after enrollment\n{outcome}"));
    assert!(
        enforced_at > enrolled_at,
        "the enforced boot must follow the enrollment\n{outcome}"
    );
}
