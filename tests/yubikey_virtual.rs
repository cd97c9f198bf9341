//! The YubiKey recipe end to end against two virtual YubiKeys (PIV applets
//! on vsmartcard's vpcd, see `tests/vpiv`), judged by ykman (Yubico's own
//! tool) and by OpenSC's PKCS#11 module with pkcs11-tool and openssl:
//! token preparation (PIN, PUK, PIN-protected random management key;
//! defaults refused), key import into slot 9c of both cards, the same
//! certificate on both, signing through PKCS#11 with context-specific
//! login, retries shown and the last try never spent, restore onto a card.

mod common;
#[path = "vpiv/mod.rs"]
mod vpiv;

use std::path::Path;
use std::process::{Command, Output};

use common::tools::{our_bin, require_tool, run_fails, run_ok};
use vpiv::applet::Piv;
use vpiv::VirtualPcsc;

const NEW_PIN: &str = "314159";
const NEW_PUK: &str = "27182818";
const PASS: &str = "backup passphrase for the cards";
const OPENSC: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

fn genkey(pcsc: &VirtualPcsc, args: &[&str]) -> Command {
    let mut c = our_bin("genkey");
    pcsc.apply(&mut c);
    c.env("NEW_PIN", NEW_PIN)
        .env("NEW_PUK", NEW_PUK)
        .env("BACKUP_PASS", PASS)
        .env_remove("SBKIT_PKCS11_MODULE")
        .env_remove("SBKIT_PKCS11_PIN")
        .args(args);
    c
}

fn ykman(pcsc: &VirtualPcsc, reader: &str, args: &[&str]) -> Output {
    let mut c = Command::new(require_tool("ykman"));
    pcsc.apply(&mut c);
    c.args(["--reader", reader]).args(args);
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

fn pkcs11_tool(pcsc: &VirtualPcsc, reader: &str) -> Command {
    assert!(
        Path::new(OPENSC).is_file(),
        "{OPENSC} missing: install opensc-pkcs11"
    );
    // The slot whose description is the reader.
    let mut l = Command::new(require_tool("pkcs11-tool"));
    pcsc.apply(&mut l);
    let list = run_ok(l.args(["--module", OPENSC, "-L"]));
    let t = String::from_utf8_lossy(&list.stdout).into_owned();
    let mut slot = None;
    for line in t.lines() {
        if line.starts_with("Slot ") && line.contains(reader) {
            slot = line
                .split_whitespace()
                .nth(2)
                .map(|s| s.trim_start_matches('(').trim_end_matches("):").to_string());
        }
    }
    let slot = slot.unwrap_or_else(|| panic!("no slot for {reader}:\n{t}"));
    let mut c = Command::new(require_tool("pkcs11-tool"));
    pcsc.apply(&mut c);
    c.args(["--module", OPENSC, "--slot", &slot]);
    c
}

#[test]
fn two_virtual_yubikeys_prepared_loaded_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Firmware 5.7 (AES-192 management key) and 5.4 (3DES).
    let pcsc = VirtualPcsc::start(
        &d.join("pcsc"),
        vec![Piv::new([5, 7, 1], 31000001), Piv::new([5, 4, 3], 31000002)],
    );
    let (r0, r1) = (pcsc.readers[0].clone(), pcsc.readers[1].clone());

    // Factory state, as we and ykman see it.
    let st = json(&run_ok(&mut genkey(
        &pcsc,
        &["token", "status", "--piv", &r0, "--piv", &r1, "--json"],
    )));
    assert_eq!(st[0]["pin_default"], true, "{st}");
    assert_eq!(st[0]["mgmt_algorithm"], "AES-192");
    assert_eq!(st[1]["mgmt_algorithm"], "3DES");
    assert_eq!(st[0]["pin_retries"], 3);
    let info = ykman(&pcsc, &r0, &["piv", "info"]);
    eprintln!("{}", text(&info));
    assert!(info.status.success(), "{}", text(&info));

    // Loading a key onto cards with factory secrets is refused, before any key exists.
    let backup = d.join("mkosi.key.age");
    let err = run_fails(&mut genkey(
        &pcsc,
        &[
            "token",
            "create",
            "--backup",
            backup.to_str().unwrap(),
            "--passphrase",
            "env:BACKUP_PASS",
            "--piv",
            &r0,
        ],
    ));
    assert!(
        err.contains("factory") && err.contains("PIN") && err.contains("management key"),
        "{err}"
    );
    assert!(!backup.exists());

    // Prepare both cards.
    for r in [&r0, &r1] {
        let p = json(&run_ok(&mut genkey(
            &pcsc,
            &[
                "token",
                "prepare",
                "--piv",
                r,
                "--new-pin",
                "env:NEW_PIN",
                "--new-puk",
                "env:NEW_PUK",
                "--json",
            ],
        )));
        assert_eq!(p["after"]["pin_default"], false, "{p}");
        assert_eq!(p["after"]["puk_default"], false, "{p}");
        assert_eq!(p["after"]["mgmt_default"], false, "{p}");
        assert_eq!(p["after"]["mgmt_protected"], true, "{p}");
    }
    // ykman reads what we did: no default warnings, key stored protected,
    // and ykman itself can use the PIN-protected management key.
    let info = text(&ykman(&pcsc, &r0, &["piv", "info"]));
    eprintln!("{info}");
    assert!(info.contains("AES192"), "{info}");
    assert!(!info.to_lowercase().contains("default pin"), "{info}");
    let chuid = ykman(
        &pcsc,
        &r0,
        &["piv", "objects", "generate", "chuid", "-P", NEW_PIN],
    );
    assert!(
        chuid.status.success(),
        "ykman cannot use the stored management key: {}",
        text(&chuid)
    );
    let info1 = text(&ykman(&pcsc, &r1, &["piv", "info"]));
    assert!(info1.contains("TDES") || info1.contains("3DES"), "{info1}");

    // The recipe: key in memory, backup, both cards' slot 9c, verified through OpenSC.
    let crt = d.join("mkosi.crt");
    let sigs = d.join("sigs");
    let out = genkey(
        &pcsc,
        &[
            "token",
            "create",
            "--backup",
            backup.to_str().unwrap(),
            "--passphrase",
            "env:BACKUP_PASS",
            "--cert-out",
            crt.to_str().unwrap(),
            "--signature-dir",
            sigs.to_str().unwrap(),
            "--piv",
            &r0,
            "--piv",
            &r1,
            "--json",
        ],
    )
    .env("SBKIT_PKCS11_PIN", NEW_PIN)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let r = json(&out);
    for t in r["tokens"].as_array().unwrap() {
        assert_eq!(
            t["token_label"], "mkosi",
            "OpenSC names the token after the certificate's CN"
        );
        assert_eq!(
            t["always_authenticate"], true,
            "slot 9c wants the PIN for every signature"
        );
        for c in t["checks"].as_array().unwrap() {
            assert_eq!(c["result"], "pass", "{c}");
        }
    }
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["result"], "pass", "{c}");
    }
    assert_eq!(
        r["mkosi"]["key_uri"],
        "pkcs11:token=mkosi;id=%02;type=private"
    );
    let fp = r["cert_sha256"].as_str().unwrap().to_string();

    // Independent checks per card: openssl verifies our test signatures;
    // pkcs11-tool (OpenSC) lists the objects and signs a hash that openssl
    // verifies; ykman shows the certificate in slot 9c.
    let pubkey = d.join("pub.pem");
    run_ok(
        Command::new(require_tool("openssl"))
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(&crt)
            .arg("-out")
            .arg(&pubkey),
    );
    for t in r["tokens"].as_array().unwrap() {
        let f = &t["test_signature"]["files"];
        run_ok(
            Command::new(require_tool("openssl"))
                .args(["dgst", "-sha384", "-verify"])
                .arg(&pubkey)
                .arg("-signature")
                .arg(f["signature"].as_str().unwrap())
                .arg(f["message"].as_str().unwrap()),
        );
    }
    let msg = d.join("file.txt");
    std::fs::write(&msg, "signed through OpenSC\n".repeat(20)).unwrap();
    let hash = d.join("file.sha384");
    run_ok(
        Command::new(require_tool("openssl"))
            .args(["dgst", "-sha384", "-binary", "-out"])
            .arg(&hash)
            .arg(&msg),
    );
    for (i, reader) in [&r0, &r1].into_iter().enumerate() {
        let list = text(&run_ok(pkcs11_tool(&pcsc, reader).arg("-O")));
        assert!(list.contains("ID:         02"), "{list}");
        assert!(list.contains("Certificate for Digital Signature"), "{list}");
        let sig = d.join(format!("opensc-{i}.sig"));
        run_ok(
            pkcs11_tool(&pcsc, reader)
                .args(["--login", "--pin", NEW_PIN, "--sign", "--id", "02"])
                .args([
                    "-m",
                    "ECDSA",
                    "--signature-format",
                    "openssl",
                    "--input-file",
                ])
                .arg(&hash)
                .arg("-o")
                .arg(&sig),
        );
        run_ok(
            Command::new(require_tool("openssl"))
                .args(["dgst", "-sha384", "-verify"])
                .arg(&pubkey)
                .arg("-signature")
                .arg(&sig)
                .arg(&msg),
        );
        let info = text(&ykman(&pcsc, reader, &["piv", "info"]));
        assert!(info.contains("CN=mkosi"), "{info}");
        assert!(
            info.to_lowercase().contains(&fp),
            "ykman shows another certificate:\n{info}"
        );
    }

    // The audit passes on both cards.
    let audit = run_ok(
        genkey(
            &pcsc,
            &[
                "token",
                "audit",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--key-type",
                "p384",
                "--piv",
                &r0,
                "--piv",
                &r1,
            ],
        )
        .env("SBKIT_PKCS11_PIN", NEW_PIN),
    );
    let a = text(&audit);
    assert!(
        a.contains("[PASS] Virtual PCD 00 00 #31000001: PIN changed from the default"),
        "{a}"
    );
    assert!(a.contains("management key stored PIN-protected"), "{a}");
    assert!(!a.contains("[FAIL]"), "{a}");

    // Wrong PINs: shown, never retried, the last try never spent.
    let restore = |pin: &str, allow_final: bool| {
        let mut c = genkey(
            &pcsc,
            &[
                "token",
                "restore",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--replace",
                "--piv",
                &r1,
                "--json",
            ],
        );
        c.env("SBKIT_PKCS11_PIN", pin);
        if allow_final {
            c.env("SBKIT_PKCS11_ALLOW_FINAL_PIN_TRY", "1");
        }
        c.output().unwrap()
    };
    let retries = || pcsc.cards[1].lock().unwrap().pin_retries();
    let e = text(&restore("999999", false));
    assert!(e.contains("wrong PIN") && e.contains("2 tries left"), "{e}");
    assert_eq!(retries(), 2, "exactly one try spent");
    let e = text(&restore("999999", false));
    assert!(e.contains("1 tries left"), "{e}");
    let e = text(&restore("999999", false));
    assert!(
        e.contains("ONE try left") && e.contains("did not try"),
        "{e}"
    );
    assert_eq!(retries(), 1, "the last try was spent");
    // With the right PIN and the final try allowed explicitly, the restore goes through.
    let ok = restore(NEW_PIN, true);
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(retries(), 3);
    let rr = json(&ok);
    assert_eq!(rr["cert_sha256"], fp.as_str());
}

#[test]
fn restore_onto_a_reset_replacement_card() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pcsc = VirtualPcsc::start(&d.join("pcsc"), vec![Piv::new([5, 7, 1], 31000003)]);
    let r0 = pcsc.readers[0].clone();
    let prepare = || {
        run_ok(&mut genkey(
            &pcsc,
            &[
                "token",
                "prepare",
                "--piv",
                &r0,
                "--new-pin",
                "env:NEW_PIN",
                "--new-puk",
                "env:NEW_PUK",
            ],
        ))
    };
    prepare();
    let backup = d.join("k.enc");
    let out = run_ok(
        genkey(
            &pcsc,
            &[
                "token",
                "create",
                "--key-type",
                "rsa2048",
                "--backup",
                backup.to_str().unwrap(),
                "--backup-format",
                "openssl-enc",
                "--passphrase",
                "env:BACKUP_PASS",
                "--piv",
                &r0,
                "--json",
            ],
        )
        .env("SBKIT_PKCS11_PIN", NEW_PIN),
    );
    let first = json(&out);
    assert_eq!(first["algorithm"], "rsa2048");
    // The card is lost: ykman resets the PIV application (a factory-fresh replacement).
    let reset = ykman(&pcsc, &r0, &["piv", "reset", "--force"]);
    assert!(reset.status.success(), "{}", text(&reset));
    let st = json(&run_ok(&mut genkey(
        &pcsc,
        &["token", "status", "--piv", &r0, "--json"],
    )));
    assert_eq!(st[0]["pin_default"], true);
    assert_eq!(st[0]["slot_9c_certificate"], false);
    prepare();
    let out = run_ok(
        genkey(
            &pcsc,
            &[
                "token",
                "restore",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--piv",
                &r0,
                "--json",
            ],
        )
        .env("SBKIT_PKCS11_PIN", NEW_PIN),
    );
    let r = json(&out);
    assert_eq!(r["cert_sha256"], first["cert_sha256"]);
    assert_eq!(r["tokens"][0]["algorithm"], "rsa2048");
    for c in r["tokens"][0]["checks"].as_array().unwrap() {
        assert_eq!(c["result"], "pass", "{c}");
    }
}
