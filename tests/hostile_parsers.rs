//! Crafted PE/EFI input from the issue-14 review, each replayed against the
//! release paths (the `build-uki` binary and the library): a clear error that
//! names the problem and the offset, never a panic (exit 101), never a
//! multi-gigabyte allocation, never minutes of work.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::guest::Assets;
use common::rootfs::{busybox_rootfs, MARKER_INIT};
use common::tools::{genkey, our_bin};
use sbkit::keys::DigestAlgorithm;
use sbkit::pe::authenticode;
use sbkit::pe::{append_sections, NewSection, PeLayout};
use sbkit::uki::pcr::{predict_uki, read_pe_sections, PhasePath, ALL_BANKS};

/// A small UKI on the 254 stub (its `.linux` is a stand-in: nothing boots it).
fn small_uki() -> Vec<u8> {
    let stub = fs::read(Assets::locate().stub(254)).unwrap();
    append_sections(
        &stub,
        &[
            NewSection {
                name: ".osrel",
                data: b"ID=hostile\n",
            },
            NewSection {
                name: ".linux",
                data: &[0x90; 600],
            },
        ],
    )
    .unwrap()
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Runs a command that must fail cleanly: exit status 1 (not 101, a panic),
/// within `limit`, with every `needles` in stderr. Returns stderr.
fn fails_cleanly(cmd: &mut Command, limit: Duration, needles: &[&str]) -> String {
    let started = Instant::now();
    let out = cmd.output().expect("run");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?}: expected a clean failure (exit 1), got {:?}\nstderr:\n{stderr}",
        out.status
    );
    assert!(took < limit, "{cmd:?} took {took:?} (limit {limit:?})");
    for n in needles {
        assert!(stderr.contains(n), "{cmd:?}: stderr lacks {n:?}:\n{stderr}");
    }
    stderr
}

fn inspect(path: &Path) -> Command {
    let mut c = our_bin("build-uki");
    c.arg("inspect").arg(path);
    c
}

#[test]
fn certificate_tables_that_are_too_short_or_inside_the_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let uki = small_uki();
    let layout = PeLayout::parse(&uki).unwrap();
    let dir = layout.directory_offset(4).unwrap();
    for len in 1..=3u32 {
        let mut bad = uki.clone();
        let at = bad.len() as u32;
        bad.extend_from_slice(&[0xff; 3][..len as usize]);
        put_u32(&mut bad, dir, at);
        put_u32(&mut bad, dir + 4, len);
        let path = tmp.path().join(format!("short{len}.efi"));
        fs::write(&path, &bad).unwrap();
        fails_cleanly(
            &mut inspect(&path),
            Duration::from_secs(20),
            &[
                "certificate table",
                &format!("{at:#x}"),
                "shorter than one WIN_CERTIFICATE",
            ],
        );
        assert!(authenticode::verify(&bad, None).is_err());
        assert!(authenticode::image_digest(&bad, DigestAlgorithm::Sha256).is_err());
    }
    // A table that starts before the end of the data directories (the
    // digest's skip ranges would run backwards).
    let mut bad = uki.clone();
    put_u32(&mut bad, dir, 0x80);
    put_u32(&mut bad, dir + 4, 16);
    let path = tmp.path().join("inside.efi");
    fs::write(&path, &bad).unwrap();
    fails_cleanly(
        &mut inspect(&path),
        Duration::from_secs(20),
        &["certificate table at offset 0x80 lies inside the headers"],
    );
    assert!(authenticode::image_digest(&bad, DigestAlgorithm::Sha256).is_err());
    // An offset whose u32 sum with the size wraps.
    let mut bad = uki.clone();
    put_u32(&mut bad, dir, 0xffff_fff0);
    put_u32(&mut bad, dir + 4, 0x20);
    assert!(authenticode::verify(&bad, None).is_err());
    let e = PeLayout::parse(&bad).unwrap_err();
    assert!(e.0.contains("0xfffffff0"), "{e}");
}

#[test]
fn a_stub_whose_size_of_headers_exceeds_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut stub = fs::read(Assets::locate().stub(254)).unwrap();
    let layout = PeLayout::parse(&stub).unwrap();
    put_u32(&mut stub, layout.optional_offset + 60, 0x7fff_f000);
    let started = Instant::now();
    let e = append_sections(
        &stub,
        &[NewSection {
            name: ".osrel",
            data: b"x",
        }],
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "no 2 GB buffer");
    assert!(e.to_string().contains("SizeOfHeaders 0x7ffff000"), "{e}");
    let bad = tmp.path().join("stub.efi");
    fs::write(&bad, &stub).unwrap();
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    let keys = tmp.path().join("keys");
    genkey("Hostile Test", &keys, &[]);
    fails_cleanly(
        our_bin("build-uki")
            .arg(format!("dir:{}", root.display()))
            .args(["-t", "uki", "-d"])
            .arg(tmp.path().join("out"))
            .arg("-k")
            .arg(&keys)
            .arg("--stub")
            .arg(&bad),
        Duration::from_secs(60),
        &["SizeOfHeaders", "larger than the file"],
    );
}

#[test]
fn a_four_gib_virtual_size_is_never_materialised() {
    let tmp = tempfile::tempdir().unwrap();
    let uki = small_uki();
    let layout = PeLayout::parse(&uki).unwrap();
    let linux = layout.section(".linux").unwrap().clone();

    // 1 MiB of zero fill: hashed as the loader maps it, without a buffer.
    let mut modest = uki.clone();
    put_u32(&mut modest, linux.header_offset + 8, 600 + (1 << 20));
    let sections = read_pe_sections(&modest).unwrap();
    let s = sections.iter().find(|s| s.name == ".linux").unwrap();
    assert_eq!(s.size(), 600 + (1 << 20));
    let mut mapped = vec![0x90u8; 600];
    mapped.resize(600 + (1 << 20), 0);
    assert_eq!(
        s.digest(DigestAlgorithm::Sha384),
        DigestAlgorithm::Sha384.digest(&mapped)
    );

    // 4 GiB: refused by inspect and PCR prediction with the section named;
    // stub inspection (file bytes only) still works.
    let mut huge = uki.clone();
    put_u32(&mut huge, linux.header_offset + 8, u32::MAX);
    let started = Instant::now();
    let e = predict_uki(&huge, &[".linux"], &ALL_BANKS, &[PhasePath::empty()]).unwrap_err();
    assert!(e.to_string().contains("section .linux"), "{e}");
    assert!(sbkit::uki::stub::inspect(&huge).is_ok());
    assert!(started.elapsed() < Duration::from_secs(5));
    let path = tmp.path().join("huge.efi");
    fs::write(&path, &huge).unwrap();
    fails_cleanly(
        &mut inspect(&path),
        Duration::from_secs(20),
        &["section .linux", "zero fill"],
    );
}

#[test]
fn a_non_ascii_key_path_is_not_sliced_inside_a_character() {
    let tmp = tempfile::tempdir().unwrap();
    // "/tmp/ké…": byte 7 falls inside "é"; the file does not exist.
    let key = tmp.path().join("ké.pem");
    let cert = tmp.path().join("cert.pem");
    fs::write(&cert, "not a certificate").unwrap();
    let out = our_bin("build-uki")
        .arg("dir:/nonexistent")
        .args(["-t", "uki", "-d"])
        .arg(tmp.path().join("out"))
        .arg("--sb-key")
        .arg("/tmp/ké.pem")
        .arg("--sb-cert")
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!key.exists());
    assert!(!sbkit::token::is_pkcs11_uri("/tmp/ké.pem"));
}
