//! `sbkit test-boot`: real OVMF verdicts on our media — a signed ISO boots
//! with Secure Boot on (exit 0), an unsigned UKI is refused (exit 2).

mod common;

use std::fs;

use common::guest::Assets;
use common::rootfs::{busybox_rootfs, MARKER_INIT};
use common::tools::{genkey, our_bin};

#[test]
fn verdicts_for_a_signed_iso_and_an_unsigned_uki() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let root = w.join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    let assets = Assets::locate();
    common::uki_guest::build_test_iso(&root, &keys, &w.join("build"), &[]);
    let out = our_bin("sbkit")
        .args([
            "--native",
            "test-boot",
            "--json",
            "--timeout",
            "200",
            "--expect",
            "SBKIT-GUEST: PASS",
            "--keys",
        ])
        .arg(&keys)
        .arg(w.join("build/norole.iso"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["result"]["verdict"]["verdict"], "booted");
    assert_eq!(report["result"]["verdict"]["secure_boot"], true);

    // An unsigned UKI: the stub plus sections, never signed.
    let stub = fs::read(assets.stub(254)).unwrap();
    let linux = fs::read(assets.kernel()).unwrap();
    let unsigned = sbkit::pe::append_sections(
        &stub,
        &[
            sbkit::pe::NewSection {
                name: ".cmdline",
                data: b"console=ttyS0",
            },
            sbkit::pe::NewSection {
                name: ".linux",
                data: &linux,
            },
        ],
    )
    .unwrap();
    let efi = w.join("unsigned.efi");
    fs::write(&efi, unsigned).unwrap();
    let out = our_bin("sbkit")
        .args(["--native", "test-boot", "--timeout", "200", "--keys"])
        .arg(&keys)
        .arg(&efi)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("refused by the firmware") && stdout.contains("Access Denied"),
        "{stdout}"
    );
}
