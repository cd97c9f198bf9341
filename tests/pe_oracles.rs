//! PE assembly and Authenticode judged by binutils, sbverify and osslsigncode.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tools::{cache_dir, genkey, require_tool, run_ok};
use sbkit::keys::{DigestAlgorithm, FileSigner};
use sbkit::pe::authenticode;
use sbkit::pe::{append_sections, NewSection, PeLayout};

fn asset(rel: &str) -> PathBuf {
    let p = cache_dir().join("assets").join(rel);
    assert!(
        p.exists(),
        "test asset {} missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

fn stub254() -> Vec<u8> {
    fs::read(asset(
        "systemd-254/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    ))
    .unwrap()
}

fn sample_uki() -> Vec<u8> {
    let linux = fs::read(asset("vmlinuz")).unwrap();
    let sections = vec![
        NewSection {
            name: ".osrel",
            data: b"ID=test\n",
        },
        NewSection {
            name: ".cmdline",
            data: b"console=ttyS0 quiet",
        },
        NewSection {
            name: ".linux",
            data: &linux,
        },
    ];
    append_sections(&stub254(), &sections).unwrap()
}

fn sbverify(file: &Path, cert: &Path) -> bool {
    Command::new(require_tool("sbverify"))
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .unwrap()
        .status
        .success()
}

fn osslsigncode(file: &Path, cert: &Path) -> bool {
    Command::new(require_tool("osslsigncode"))
        .args(["verify", "-in"])
        .arg(file)
        .arg("-CAfile")
        .arg(cert)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn appended_sections_have_the_layout_firmware_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let uki = sample_uki();
    let path = tmp.path().join("uki.efi");
    fs::write(&path, &uki).unwrap();
    let out = run_ok(Command::new(require_tool("objdump")).arg("-h").arg(&path));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [".osrel", ".cmdline", ".linux"] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        let size = u64::from_str_radix(cols[2], 16).unwrap();
        let vma = u64::from_str_radix(cols[3], 16).unwrap();
        assert_eq!(vma % 4096, 0, "{name} VMA {vma:#x} not 4 KiB aligned");
        if name == ".cmdline" {
            assert_eq!(size, 19, "objdump shows the exact size");
        }
    }
    let layout = PeLayout::parse(&uki).unwrap();
    let cmdline = layout.section(".cmdline").unwrap();
    assert_eq!(layout.section_data(&uki, cmdline), b"console=ttyS0 quiet");
    let size_of_image = u32::from_le_bytes(
        uki[layout.optional_offset + 56..layout.optional_offset + 60]
            .try_into()
            .unwrap(),
    );
    let last = layout
        .sections
        .iter()
        .map(|s| s.virtual_address + s.virtual_size)
        .max()
        .unwrap();
    assert_eq!(size_of_image, last.div_ceil(4096) * 4096);
}

#[test]
fn signatures_verify_with_sbverify_and_osslsigncode_and_a_changed_byte_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &[]);
    let db = FileSigner::load(&keys.join("db.key")).unwrap();
    let db_der = fs::read(keys.join("db.der")).unwrap();
    let signed = authenticode::sign(&sample_uki(), &db, &db_der, DigestAlgorithm::Sha256).unwrap();
    let path = tmp.path().join("signed.efi");
    fs::write(&path, &signed).unwrap();
    let db_pem = keys.join("db.pem");
    assert!(sbverify(&path, &db_pem), "sbverify refuses our signature");
    assert!(
        osslsigncode(&path, &db_pem),
        "osslsigncode refuses our signature"
    );
    assert!(
        !sbverify(&path, &keys.join("KEK.pem")),
        "sbverify accepts the wrong certificate"
    );
    let info = authenticode::verify(&signed, Some(&db_der)).unwrap();
    assert!(info.digest_matches);

    // One byte of .cmdline changed after signing.
    let layout = PeLayout::parse(&signed).unwrap();
    let at = layout.section(".cmdline").unwrap().pointer_to_raw_data as usize;
    let mut tampered = signed.clone();
    tampered[at] ^= 0x20;
    let bad = tmp.path().join("tampered.efi");
    fs::write(&bad, &tampered).unwrap();
    assert!(
        !sbverify(&bad, &db_pem),
        "sbverify accepts a changed .cmdline"
    );
    assert!(
        !osslsigncode(&bad, &db_pem),
        "osslsigncode accepts a changed .cmdline"
    );
    assert!(
        !authenticode::verify(&tampered, Some(&db_der))
            .unwrap()
            .digest_matches
    );
}

#[test]
fn a_signed_stub_and_a_non_pe_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &[]);
    let db = FileSigner::load(&keys.join("db.key")).unwrap();
    let db_der = fs::read(keys.join("db.der")).unwrap();
    let signed_stub =
        authenticode::sign(&stub254(), &db, &db_der, DigestAlgorithm::Sha256).unwrap();
    let e = append_sections(
        &signed_stub,
        &[NewSection {
            name: ".osrel",
            data: &[1],
        }],
    )
    .unwrap_err();
    assert!(e.to_string().contains("already signed"), "{e}");
    let e = authenticode::sign(&signed_stub, &db, &db_der, DigestAlgorithm::Sha256).unwrap_err();
    assert!(e.to_string().contains("already signed"), "{e}");
    let e = append_sections(b"#!/bin/sh\necho not a PE\n", &[]).unwrap_err();
    assert!(e.to_string().contains("not a valid PE"), "{e}");
}
