//! build-uki with its keys inside a PKCS#11 token (SoftHSM2): the private
//! keys never leave the token, and the result equals the file-key build.

mod common;

use std::fs;

use common::guest::Assets;
use common::rootfs::{busybox_rootfs, MARKER_INIT};
use common::softhsm::SoftHsm;
use common::tools::{genkey, our_bin, require_tool, run_fails, run_ok};

const DB_URI: &str = "pkcs11:token=mkosi;id=%02;type=private";
const PCR_URI: &str = "pkcs11:token=mkosi;id=%03;type=private";

#[test]
fn token_keys_sign_the_uki_and_the_pcr_policy() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let root = w.join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    let hsm = SoftHsm::create(&w.join("hsm"), "mkosi");
    hsm.import(&keys.join("db.key"), "db", "02");
    hsm.import(&keys.join("tpm2-pcr-private.pem"), "pcr", "03");
    let stub = Assets::locate().stub(254);

    let mut token_build = our_bin("build-uki");
    token_build
        .arg(format!("dir:{}", root.display()))
        .args(["-t", "uki", "-d"])
        .arg(w.join("token"))
        .arg("--stub")
        .arg(&stub)
        .args(["--sb-key", DB_URI, "--sb-cert"])
        .arg(keys.join("db.pem"))
        .args(["--tpm-pcr-private-key", PCR_URI])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    hsm.apply(&mut token_build);
    run_ok(&mut token_build);

    let efi = w.join("token/norole.efi");
    run_ok(
        std::process::Command::new(require_tool("sbverify"))
            .arg("--cert")
            .arg(keys.join("db.pem"))
            .arg(&efi),
    );
    let inspect = run_ok(
        our_bin("build-uki")
            .args(["inspect", "--json", "--keys"])
            .arg(&keys)
            .arg(&efi),
    );
    let r: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(r["signature"]["valid"], true);
    assert_eq!(r["pcrsig"]["ok"], true, "{r}");

    // RSA PKCS#1 v1.5 is deterministic: the same keys in files give the same bytes.
    run_ok(
        our_bin("build-uki")
            .arg(format!("dir:{}", root.display()))
            .args(["-t", "uki", "-d"])
            .arg(w.join("file"))
            .arg("--stub")
            .arg(&stub)
            .arg("-k")
            .arg(&keys)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    assert_eq!(
        fs::read(&efi).unwrap(),
        fs::read(w.join("file/norole.efi")).unwrap(),
        "token build differs from file build"
    );
}

#[test]
fn a_wrong_pin_and_a_uri_that_matches_nothing_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let root = w.join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    let hsm = SoftHsm::create(&w.join("hsm"), "mkosi");
    hsm.import(&keys.join("db.key"), "db", "02");
    let base = |uri: &str| {
        let mut c = our_bin("build-uki");
        c.arg(format!("dir:{}", root.display()))
            .args(["-t", "uki", "-d"])
            .arg(w.join("out"))
            .arg("--stub")
            .arg(Assets::locate().stub(254))
            .args(["--sb-key", uri, "--sb-cert"])
            .arg(keys.join("db.pem"));
        hsm.apply(&mut c);
        c
    };
    let err = run_fails(base(DB_URI).env("SBKIT_PKCS11_PIN", "000000"));
    assert!(
        err.contains("CKR_PIN_INCORRECT") && !err.contains("000000"),
        "{err}"
    );
    let err = run_fails(&mut base("pkcs11:token=mkosi;id=%09;type=private"));
    assert!(
        err.contains("object=db;id=%02"),
        "the error lists what the token holds:\n{err}"
    );
    assert!(!w.join("out/norole.efi").exists());
}
