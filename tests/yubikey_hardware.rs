//! The recipe on real YubiKeys. Opt-in, because it changes the keys:
//!
//! ```sh
//! SBKIT_TEST_YUBIKEY=1 \
//! SBKIT_TEST_YUBIKEY_READERS="Yubico YubiKey OTP+FIDO+CCID 00 00,Yubico YubiKey OTP+FIDO+CCID 01 00" \
//! SBKIT_TEST_YUBIKEY_RESET=1 \
//!   cargo test --test yubikey_hardware -- --ignored --nocapture
//! ```
//!
//! With `SBKIT_TEST_YUBIKEY_RESET=1` each key's PIV application is reset
//! first (`ykman piv reset --force`: ALL PIV KEYS AND CERTIFICATES ARE
//! LOST), then prepared with PIN 314159 / PUK 27182818, loaded with a new
//! P-384 key and checked with ykman, OpenSC (pkcs11-tool) and openssl.
//! Without the reset the keys must already be prepared with that PIN.
//! The test is `#[ignore]`d, so runs without hardware list it as ignored
//! (never as passed): it needs hardware a CI machine does not have, and
//! touching a developer's YubiKey unasked would be wrong.

mod common;

use std::process::Command;

use common::tools::{our_bin, require_tool, run_ok};

const PIN: &str = "314159";
const PUK: &str = "27182818";

#[test]
#[ignore = "needs real YubiKeys: SBKIT_TEST_YUBIKEY=1 SBKIT_TEST_YUBIKEY_READERS=… cargo test --test yubikey_hardware -- --ignored"]
fn real_yubikeys_when_asked() {
    assert_eq!(
        std::env::var("SBKIT_TEST_YUBIKEY").as_deref(),
        Ok("1"),
        "this test changes real YubiKeys: set SBKIT_TEST_YUBIKEY=1 and SBKIT_TEST_YUBIKEY_READERS (see tests/yubikey_hardware.rs)"
    );
    let readers: Vec<String> = std::env::var("SBKIT_TEST_YUBIKEY_READERS")
        .expect("SBKIT_TEST_YUBIKEY_READERS: comma-separated PC/SC reader names of the YubiKeys")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(!readers.is_empty());
    let ykman = require_tool("ykman");
    if std::env::var("SBKIT_TEST_YUBIKEY_RESET").as_deref() == Ok("1") {
        for r in &readers {
            run_ok(Command::new(&ykman).args(["--reader", r, "piv", "reset", "--force"]));
            run_ok(
                our_bin("genkey")
                    .args(["token", "prepare", "--piv", r])
                    .args(["--new-pin", "env:P", "--new-puk", "env:U"])
                    .env("P", PIN)
                    .env("U", PUK),
            );
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("mkosi.key.age");
    let mut c = our_bin("genkey");
    c.args(["token", "create", "--replace", "--backup"])
        .arg(&backup)
        .args(["--passphrase", "env:BP", "--json"])
        .env("BP", "hardware test backup passphrase")
        .env("SBKIT_PKCS11_PIN", PIN);
    for r in &readers {
        c.args(["--piv", r]);
    }
    let out = run_ok(&mut c);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for t in report["tokens"].as_array().unwrap() {
        for check in t["checks"].as_array().unwrap() {
            assert_eq!(check["result"], "pass", "{check}");
        }
    }
    for r in &readers {
        let info = run_ok(Command::new(&ykman).args(["--reader", r, "piv", "info"]));
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(text.contains("CN=mkosi"), "{text}");
        assert!(!text.contains("default PIN"), "{text}");
    }
}
