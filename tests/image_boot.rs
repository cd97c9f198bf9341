//! The end of the story: an OS image pushed to a private registry (basic
//! auth, credentials from `DOCKER_CONFIG`), pulled and flattened by
//! `build-uki IMAGE`, boots in OVMF with Secure Boot enforced and our keys
//! enrolled, running the image's /init from the streamed initramfs; that
//! /init checks in the guest what the kernel's unpacker made of the
//! top-down archive (hard links across layers and inside one, directories
//! re-emitted with their lower layer's owner and mode, a whiteout).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::guest::Assets;
use common::images::{base_rootfs, layer_tar, OciLayout, L, Z};
use common::qemu::{self, BootOutcome, BootSpec, Firmware, Media};
use common::registry::LocalRegistry;
use common::tools::{genkey, our_bin, run_ok};

/// The rootfs directory as a layer tar (owners and modes as on disk).
fn dir_layer(root: &Path) -> Vec<u8> {
    let out = run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(root)
            .args(["-c", "."]),
    );
    out.stdout
}

fn boot(work: &Path, efi: &[u8], vars: &Path) -> BootOutcome {
    let esp = work.join("esp");
    fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), efi).unwrap();
    let serial = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image_boot.serial.log");
    qemu::boot(&BootSpec::new(
        Firmware::ovmf_secboot(),
        vars,
        Media::EspDir(esp),
        &serial,
    ))
}

#[test]
fn uki_from_a_private_registry_image_boots_in_ovmf() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);

    // Two layers: the busybox OS, then an update that replaces /init and
    // os-release, whites out a file, links to a file of the base layer, makes
    // a link set inside itself, and writes below directories only the base
    // layer describes. The new /init reports what the kernel unpacked.
    let root = w.join("rootfs");
    base_rootfs(&root);
    fs::write(root.join("etc/obsolete"), b"removed by the update").unwrap();
    fs::create_dir_all(root.join("opt")).unwrap();
    fs::write(root.join("opt/lower-file"), b"from the base layer").unwrap();
    fs::create_dir_all(root.join("srv/data")).unwrap();
    fs::set_permissions(root.join("srv"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(root.join("srv/data"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(root.join("srv"), Some(5), Some(6)).unwrap();
    std::os::unix::fs::chown(root.join("srv/data"), Some(7), Some(0)).unwrap();
    let update = layer_tar(&[
        L::Owned("init", CHECK_INIT.as_bytes(), 0o755, 0, 0),
        L::Dir("etc/", 0o755, 0, 0),
        L::File("etc/.wh.obsolete", b""),
        L::File(
            "etc/os-release",
            b"PRETTY_NAME=\"Pulled OS 2\"\nNAME=\"Pulled OS\"\nID=pulled\nVERSION_ID=2\n",
        ),
        L::Dir("opt/", 0o755, 0, 0),
        L::Link("opt/upper-link", "opt/lower-file"),
        L::File("opt/w1", b"window"),
        L::Link("opt/w2", "opt/w1"),
        L::File("srv/data/new", b"under a lower directory"),
    ]);
    let dir = w.join("layout");
    let mut layout = OciLayout::new(&dir);
    let img = layout.image(&[dir_layer(&root), update], Z::Zstd, "amd64");
    layout.tag(&img, "v2");
    let reg = LocalRegistry::start(Some(("ci", "boot-pass")));
    reg.push(&format!("oci:{}:v2", dir.display()), "acme/os:2", false);
    let (config_dir, _) = reg.docker_config("ci", "boot-pass");

    let out = w.join("out");
    let spec = format!("{}/acme/os:2", reg.host);
    let o = run_ok(
        our_bin("build-uki")
            .arg(&spec)
            .args(["--allow-insecure-registries", &reg.host])
            .args([
                "-t",
                "uki",
                "--json",
                "--cmdline",
                "console=ttyS0 panic=-1",
                "-d",
            ])
            .arg(&out)
            .arg("-k")
            .arg(&keys)
            .arg("--stub")
            .arg(Assets::locate().stub(254))
            .env("DOCKER_CONFIG", config_dir.path()),
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kernel = report["kernel"].as_str().unwrap();
    assert!(
        kernel.starts_with(&format!("{spec}:/boot/vmlinuz-")),
        "the kernel is named inside the image: {kernel}"
    );
    assert_eq!(report["entries"][0]["entry"]["title"], "Pulled OS 2");

    let efi = fs::read(out.join("norole.efi")).unwrap();
    let vars = common::uki_guest::enrolled_store(w, &keys);
    let outcome = boot(w, &efi, &vars);
    outcome.assert_success();
    assert!(
        outcome
            .log
            .contains("SBKIT-BOOT cmdline=console=ttyS0_panic=-1"),
        "the image's /init ran\n{outcome}"
    );
    assert!(
        outcome.log.contains(
            "SBKIT-CHECK crosslink=same windowlink=same srv=700:5:6 data=750:7 whiteout=gone"
        ),
        "the kernel unpacked links, directories and whiteouts as the layers say\n{outcome}"
    );
}

/// The update's /init: the boot marker plus what the kernel made of the
/// layers (inode sharing, directory owners and modes, the whiteout).
const CHECK_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "SBKIT-BOOT cmdline=$(cat /proc/cmdline | tr ' ' '_')"
same() { [ "$(stat -c %i "$1")" = "$(stat -c %i "$2")" ] && echo same || echo differ; }
gone=gone; [ -e /etc/obsolete ] && gone=present
echo "SBKIT-CHECK crosslink=$(same /opt/lower-file /opt/upper-link) windowlink=$(same /opt/w1 /opt/w2) srv=$(stat -c %a:%u:%g /srv) data=$(stat -c %a:%u /srv/data) whiteout=$gone"
echo "SBKIT-GUEST: PASS"
poweroff -f
"#;
