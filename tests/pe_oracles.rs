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

/// The stubs of the default matrix: Debian bookworm's 252 (SectionAlignment
/// 0x200) and bookworm-backports' 254 (0x1000).
const STUBS: [u32; 2] = [252, 254];

fn stub(generation: u32) -> Vec<u8> {
    fs::read(asset(&format!(
        "systemd-{generation}/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    )))
    .unwrap()
}

fn stub254() -> Vec<u8> {
    stub(254)
}

fn sample_uki() -> Vec<u8> {
    sample_uki_on(254)
}

fn sample_uki_on(generation: u32) -> Vec<u8> {
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
    append_sections(&stub(generation), &sections).unwrap()
}

/// Section (name, VirtualAddress, VirtualSize) and the optional header's
/// SectionAlignment, SizeOfImage and DllCharacteristics, as Python's pefile reads them.
fn pefile_view(path: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, pefile
pe = pefile.PE(sys.argv[1], fast_load=True)
o = pe.OPTIONAL_HEADER
print(json.dumps({
  "section_alignment": o.SectionAlignment,
  "size_of_image": o.SizeOfImage,
  "dll_characteristics": o.DllCharacteristics,
  "sections": [[s.Name.rstrip(b"\0").decode(), s.VirtualAddress, s.Misc_VirtualSize] for s in pe.sections],
}))
"#;
    let python = require_tool("python3");
    let venv_python = cache_dir().join("venv/bin/python3");
    let python = if venv_python.is_file() {
        venv_python
    } else {
        python
    };
    let out = run_ok(Command::new(python).arg("-c").arg(script).arg(path));
    serde_json::from_slice(&out.stdout).expect("pefile JSON")
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
    for generation in STUBS {
        let base = PeLayout::parse(&stub(generation)).unwrap();
        let uki = sample_uki_on(generation);
        let path = tmp.path().join(format!("uki{generation}.efi"));
        fs::write(&path, &uki).unwrap();
        // Independent reader 1: binutils.
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
            let image_base = base.image_base;
            assert_eq!(
                (vma - image_base) % 4096,
                0,
                "stub {generation}: {name} VMA {vma:#x} not 4 KiB aligned"
            );
            if name == ".cmdline" {
                assert_eq!(size, 19, "objdump shows the exact size");
            }
        }
        // Independent reader 2: pefile, for every section we added.
        let view = pefile_view(&path);
        let sections = view["sections"].as_array().unwrap();
        assert_eq!(sections.len(), base.sections.len() + 3);
        let mut last_end = 0u64;
        for s in &sections[base.sections.len()..] {
            let (name, va, vsize) = (
                s[0].as_str().unwrap(),
                s[1].as_u64().unwrap(),
                s[2].as_u64().unwrap(),
            );
            assert_eq!(
                va % 4096,
                0,
                "stub {generation}: pefile sees {name} at {va:#x}"
            );
            last_end = last_end.max(va + vsize);
        }
        // The declared SectionAlignment stays the stub's (252: 0x200); the
        // image size is a whole number of pages and covers every section.
        assert_eq!(
            view["section_alignment"].as_u64().unwrap(),
            u64::from(base.section_alignment)
        );
        let size_of_image = view["size_of_image"].as_u64().unwrap();
        assert_eq!(size_of_image, last_end.div_ceil(4096) * 4096);
        assert_eq!(
            size_of_image % view["section_alignment"].as_u64().unwrap(),
            0
        );

        let layout = PeLayout::parse(&uki).unwrap();
        let cmdline = layout.section(".cmdline").unwrap();
        assert_eq!(layout.section_data(&uki, cmdline), b"console=ttyS0 quiet");
        assert_eq!(layout.size_of_image as u64, size_of_image);
    }
    // The 252 stub really is the case that needed the fix.
    assert_eq!(
        PeLayout::parse(&stub(252)).unwrap().section_alignment,
        0x200
    );
}

/// NX_COMPAT survives only when the stub and the kernel both declare it
/// (systemd 258's rule), read back by objdump.
#[test]
fn nx_compat_only_when_stub_and_kernel_declare_it() {
    use sbkit::uki::assemble::{assemble, UkiPayload};
    let tmp = tempfile::tempdir().unwrap();
    let linux = fs::read(asset("vmlinuz")).unwrap();
    let kernel = PeLayout::parse(&linux).unwrap();
    assert!(kernel.nx_compat(), "the test kernel declares NX_COMPAT");
    let mut linux_no_nx = linux.clone();
    let off = kernel.dll_characteristics_offset();
    linux_no_nx[off + 1] &= !0x01; // 0x0100 is NX_COMPAT, the high byte's low bit
    let nx = |generation: u32, linux: &[u8]| -> bool {
        let payload = UkiPayload {
            linux,
            initrd: b"initrd",
            osrel: b"ID=test\n",
            cmdline: "quiet",
            uname: None,
            splash: None,
            dtb: None,
        };
        let uki = assemble(&stub(generation), &payload, &[], None)
            .unwrap()
            .image;
        let path = tmp.path().join("nx.efi");
        fs::write(&path, &uki).unwrap();
        let out = run_ok(Command::new(require_tool("objdump")).arg("-p").arg(&path));
        String::from_utf8_lossy(&out.stdout).contains("NX_COMPAT")
    };
    assert!(nx(254, &linux), "254 stub + NX kernel: NX_COMPAT kept");
    assert!(
        !nx(254, &linux_no_nx),
        "254 stub + kernel without NX: cleared"
    );
    assert!(
        !nx(252, &linux),
        "252 stub (no NX) + NX kernel: not invented"
    );
}

/// The 252 stub's own `.sdmagic` sits at 0x19100: inspection warns, naming
/// the risk, and `build-uki inspect`'s report carries the alignment facts.
#[test]
fn unaligned_stub_sections_are_reported() {
    let info = sbkit::uki::stub::inspect(&stub(252)).unwrap();
    assert!(!info.alignment.page_aligned);
    let warning = info
        .notes
        .iter()
        .find(|n| n.contains("4 KiB"))
        .unwrap_or_else(|| panic!("no alignment warning in {:?}", info.notes));
    assert!(warning.contains(".sdmagic at 0x19100") && warning.contains("memory protection"));
    let ok = sbkit::uki::stub::inspect(&stub(254)).unwrap();
    assert!(ok.alignment.page_aligned && ok.alignment.nx_compat);
    assert!(
        !ok.notes.iter().any(|n| n.contains("4 KiB")),
        "{:?}",
        ok.notes
    );
    let report = sbkit::build_uki::inspect::inspect(&sample_uki_on(252), None).unwrap();
    assert_eq!(report.alignment.section_alignment, 0x200);
    assert_eq!(report.alignment.unaligned_sections, [".sdmagic at 0x19100"]);
    let text = sbkit::build_uki::inspect::render(&report);
    assert!(
        text.contains("NOT 4 KiB aligned: .sdmagic at 0x19100"),
        "{text}"
    );
}

#[test]
fn signatures_verify_with_sbverify_and_osslsigncode_and_a_changed_byte_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &[]);
    let db = FileSigner::load(&keys.join("db.key")).unwrap();
    let db_der = fs::read(keys.join("db.der")).unwrap();
    let db_pem = keys.join("db.pem");
    for generation in STUBS {
        let signed = authenticode::sign(
            &sample_uki_on(generation),
            &db,
            &db_der,
            DigestAlgorithm::Sha256,
        )
        .unwrap();
        let path = tmp.path().join(format!("signed{generation}.efi"));
        fs::write(&path, &signed).unwrap();
        assert!(
            sbverify(&path, &db_pem),
            "sbverify refuses our signature ({generation})"
        );
        assert!(
            osslsigncode(&path, &db_pem),
            "osslsigncode refuses our signature ({generation})"
        );
    }
    let signed = authenticode::sign(&sample_uki(), &db, &db_der, DigestAlgorithm::Sha256).unwrap();
    let path = tmp.path().join("signed.efi");
    fs::write(&path, &signed).unwrap();
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
