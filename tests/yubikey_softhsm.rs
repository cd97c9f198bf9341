//! The YubiKey recipe's workflow with SoftHSM2 tokens standing in for the
//! two YubiKeys (PKCS#11 import with C_CreateObject), judged by tools we did
//! not write: `pkcs11-tool` lists and signs, `openssl` verifies signatures,
//! reads certificates and opens the backup.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::softhsm::{SoftHsm, MODULE, USER_PIN};
use common::tools::{our_bin, require_tool, run_fails, run_ok};

const PASS: &str = "a backup passphrase long enough";

/// Serial numbers of the initialised tokens labelled `label`.
fn serials(hsm: &SoftHsm, label: &str) -> Vec<String> {
    let out = run_ok(hsm.command("softhsm2-util").arg("--show-slots"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut serials = Vec::new();
    let mut serial = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix("Serial number:") {
            serial = s.trim().to_string();
        }
        if let Some(l) = line.strip_prefix("Label:") {
            if l.trim() == label && !serial.is_empty() {
                serials.push(serial.clone());
            }
        }
    }
    serials
}

fn add_token(hsm: &SoftHsm, label: &str) {
    run_ok(hsm.command("softhsm2-util").args([
        "--init-token",
        "--free",
        "--label",
        label,
        "--pin",
        USER_PIN,
        "--so-pin",
        "13579135",
    ]));
}

fn genkey(hsm: &SoftHsm, args: &[&str]) -> Command {
    let mut c = our_bin("genkey");
    hsm.apply(&mut c);
    c.env("BACKUP_PASS", PASS).args(args);
    c
}

fn token_args(serials: &[String]) -> Vec<String> {
    serials
        .iter()
        .flat_map(|s| {
            [
                "--token".to_string(),
                format!("pkcs11:token=mkosi;serial={s}"),
            ]
        })
        .collect()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn openssl() -> Command {
    Command::new(require_tool("openssl"))
}

fn pkcs11_tool(hsm: &SoftHsm, serial: &str) -> Command {
    let mut c = hsm.command("pkcs11-tool");
    c.args(["--module", MODULE, "--token-label", "mkosi"]);
    // Two tokens share the label; pick by serial through the slot list.
    let slots = run_ok(hsm.command("pkcs11-tool").args(["--module", MODULE, "-L"]));
    let text = String::from_utf8_lossy(&slots.stdout).into_owned();
    let mut slot = None;
    let mut current = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Slot ") {
            current = rest
                .split_whitespace()
                .nth(1)
                .map(|s| s.trim_start_matches('(').trim_end_matches("):").to_string());
        }
        if line.contains("serial num") && line.contains(serial) {
            slot = current.clone();
        }
    }
    let slot = slot.unwrap_or_else(|| panic!("no slot with serial {serial} in\n{text}"));
    let mut c2 = hsm.command("pkcs11-tool");
    c2.args(["--module", MODULE, "--slot", &slot]);
    drop(c);
    c2
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn cert_der(dir: &Path, pem: &Path) -> PathBuf {
    let der = dir.join("cert.der");
    run_ok(
        openssl()
            .args(["x509", "-outform", "DER", "-in"])
            .arg(pem)
            .arg("-out")
            .arg(&der),
    );
    der
}

#[test]
fn p384_key_on_two_tokens_checked_by_pkcs11_tool_and_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let hsm = SoftHsm::create(&d.join("hsm"), "mkosi");
    add_token(&hsm, "mkosi");
    let serials = serials(&hsm, "mkosi");
    assert_eq!(serials.len(), 2, "{serials:?}");
    let keydir = d.join("keys");
    std::fs::create_dir(&keydir).unwrap();
    let backup = keydir.join("mkosi.key.enc");
    let crt = keydir.join("mkosi.crt");
    let sigs = d.join("sigs");

    let out = run_ok(
        genkey(
            &hsm,
            &[
                "token",
                "create",
                "--backup",
                backup.to_str().unwrap(),
                "--backup-format",
                "openssl-enc",
                "--passphrase",
                "env:BACKUP_PASS",
                "--cert-out",
                crt.to_str().unwrap(),
                "--signature-dir",
                sigs.to_str().unwrap(),
                "--json",
            ],
        )
        .args(token_args(&serials)),
    );
    let r = json(&out);
    assert_eq!(r["algorithm"], "p384");
    assert_eq!(r["tokens"].as_array().unwrap().len(), 2);
    for t in r["tokens"].as_array().unwrap() {
        for c in t["checks"].as_array().unwrap() {
            assert_eq!(c["result"], "pass", "{c}");
        }
    }
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["result"], "pass", "{c}");
    }
    let block = r["mkosi"]["validation_block"].as_str().unwrap();
    assert!(
        block.contains("SecureBootKey=pkcs11:token=mkosi;id=%%02;type=private\n"),
        "{block}"
    );
    assert!(
        block.contains("SecureBootKeySource=provider:pkcs11\n"),
        "{block}"
    );
    assert_eq!(
        r["mkosi"]["key_uri"],
        "pkcs11:token=mkosi;id=%02;type=private"
    );

    // The certificate, read by openssl: CN=mkosi, P-384, 10 years.
    let text = String::from_utf8_lossy(
        &run_ok(openssl().args(["x509", "-noout", "-text", "-in"]).arg(&crt)).stdout,
    )
    .into_owned();
    assert!(text.contains("CN = mkosi"), "{text}");
    assert!(
        text.contains("NIST CURVE: P-384") || text.contains("secp384r1"),
        "{text}"
    );
    let der = cert_der(d, &crt);
    let expected_fp = sha256_of(&der);
    assert_eq!(r["cert_sha256"], expected_fp.as_str());
    let pubkey = d.join("pub.pem");
    run_ok(
        openssl()
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(&crt)
            .arg("-out")
            .arg(&pubkey),
    );

    for serial in &serials {
        // Our test signature, verified by openssl dgst against the certificate's key.
        let stem = sigs.join(format!("test-{serial}"));
        let v = run_ok(
            openssl()
                .args(["dgst", "-sha384", "-verify"])
                .arg(&pubkey)
                .arg("-signature")
                .arg(stem.with_extension("sig"))
                .arg(stem.with_extension("txt")),
        );
        assert!(String::from_utf8_lossy(&v.stdout).contains("Verified OK"));

        // pkcs11-tool sees the objects with label and ID.
        let list = run_ok(pkcs11_tool(&hsm, serial).args([
            "--login",
            "--pin",
            USER_PIN,
            "--list-objects",
        ]));
        let l = String::from_utf8_lossy(&list.stdout).into_owned();
        assert!(l.contains("Private Key Object; EC"), "{l}");
        assert!(l.contains("Certificate Object"), "{l}");
        assert!(l.contains("label:      mkosi"), "{l}");
        assert!(l.contains("ID:         02"), "{l}");
        assert!(
            !l.contains("extractable"),
            "the key must not be extractable:\n{l}"
        );

        // The same certificate on both tokens, byte for byte.
        let onto = d.join(format!("cert-{serial}.der"));
        run_ok(
            pkcs11_tool(&hsm, serial)
                .args(["--read-object", "--type", "cert", "--id", "02", "-o"])
                .arg(&onto),
        );
        assert_eq!(sha256_of(&onto), expected_fp);

        // Signing with pkcs11-tool the right way (hash first, then raw
        // ECDSA over the hash, DER output) verifies…
        let msg = d.join("test.txt");
        std::fs::write(&msg, "a test file for the signing check\n".repeat(10)).unwrap();
        let hash = d.join("test.sha384");
        run_ok(
            openssl()
                .args(["dgst", "-sha384", "-binary", "-out"])
                .arg(&hash)
                .arg(&msg),
        );
        let sig = d.join(format!("pkcs11-{serial}.sig"));
        run_ok(
            pkcs11_tool(&hsm, serial)
                .args(["--login", "--pin", USER_PIN, "--sign", "--id", "02"])
                .args(["-m", "ECDSA", "--signature-format", "openssl"])
                .arg("--input-file")
                .arg(&hash)
                .arg("-o")
                .arg(&sig),
        );
        run_ok(
            openssl()
                .args(["dgst", "-sha384", "-verify"])
                .arg(&pubkey)
                .arg("-signature")
                .arg(&sig)
                .arg(&msg),
        );
        // …and the recipe's raw `-m ECDSA` over the file never does.
        let raw = d.join(format!("raw-{serial}.sig"));
        run_ok(
            pkcs11_tool(&hsm, serial)
                .args(["--login", "--pin", USER_PIN, "--sign", "--id", "02"])
                .args(["-m", "ECDSA", "--signature-format", "openssl"])
                .arg("--input-file")
                .arg(&msg)
                .arg("-o")
                .arg(&raw),
        );
        run_fails(
            openssl()
                .args(["dgst", "-sha384", "-verify"])
                .arg(&pubkey)
                .arg("-signature")
                .arg(&raw)
                .arg(&msg),
        );
    }

    // The backup opens with the recipe's openssl command to the tokens' key.
    let dec = d.join("dec.pem");
    run_ok(
        openssl()
            .args(["enc", "-d", "-aes-256-cbc", "-pbkdf2", "-in"])
            .arg(&backup)
            .arg("-out")
            .arg(&dec)
            .args(["-pass", &format!("pass:{PASS}")]),
    );
    let from_backup = run_ok(openssl().args(["pkey", "-pubout", "-in"]).arg(&dec));
    assert_eq!(from_backup.stdout, std::fs::read(&pubkey).unwrap());

    // The audit passes on this state…
    let audit = |key_type: &str, extra: &[&str]| {
        genkey(
            &hsm,
            &[
                "token",
                "audit",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--key-dir",
                keydir.to_str().unwrap(),
                "--key-type",
                key_type,
            ],
        )
        .args(token_args(&serials))
        .args(extra)
        .output()
        .unwrap()
    };
    let ok = audit("p384", &[]);
    let text = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for needle in [
        "[PASS] backup present",
        "[PASS] backup opens to a key",
        "[PASS] same certificate on every token",
        "[PASS] same key on every token",
        "[PASS] backup holds the same key as the tokens",
        "[PASS] no plaintext private key in the key directory",
        "test signature through PKCS#11 verifies with OpenSSL",
        "audit passed",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    assert!(!text.contains("[FAIL]"), "{text}");

    // …and fails, naming the file, once a plaintext key lies in the key directory.
    std::fs::copy(&dec, keydir.join("mkosi.key")).unwrap();
    let bad = audit("p384", &["--json"]);
    assert!(!bad.status.success());
    let r = json(&bad);
    let line = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["check"] == "no plaintext private key in the key directory")
        .unwrap();
    assert_eq!(line["result"], "fail");
    assert!(
        line["detail"].as_str().unwrap().contains("mkosi.key"),
        "{line}"
    );
    // An algorithm other than the one asked for fails too.
    std::fs::remove_file(keydir.join("mkosi.key")).unwrap();
    let wrong = audit("rsa2048", &[]);
    assert!(!wrong.status.success());
    let w = String::from_utf8_lossy(&wrong.stdout).into_owned();
    assert!(w.contains("[FAIL]") && w.contains("key algorithm"), "{w}");
}

#[test]
fn rsa2048_always_authenticate_then_restore_onto_a_replacement_token() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let hsm = SoftHsm::create(&d.join("hsm"), "mkosi");
    let first = serials(&hsm, "mkosi");
    let backup = d.join("mkosi.key.age");
    let crt = d.join("mkosi.crt");
    let out = run_ok(
        genkey(
            &hsm,
            &[
                "token",
                "create",
                "--key-type",
                "rsa2048",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--cert-out",
                crt.to_str().unwrap(),
                "--always-authenticate",
                "--json",
            ],
        )
        .args(token_args(&first)),
    );
    let r = json(&out);
    assert_eq!(r["algorithm"], "rsa2048");
    assert_eq!(r["backup"]["format"], "age");
    assert_eq!(r["tokens"][0]["always_authenticate"], true);
    assert!(std::fs::read(&backup)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n"));
    let list =
        run_ok(pkcs11_tool(&hsm, &first[0]).args(["--login", "--pin", USER_PIN, "--list-objects"]));
    let l = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(l.contains("Private Key Object; RSA"), "{l}");
    assert!(l.contains("always authenticate"), "{l}");

    // The first token is lost; a fresh one gets the backup.
    add_token(&hsm, "mkosi");
    let fresh: Vec<String> = serials(&hsm, "mkosi")
        .into_iter()
        .filter(|s| !first.contains(s))
        .collect();
    assert_eq!(fresh.len(), 1);
    let sigs = d.join("sigs");
    let out = run_ok(
        genkey(
            &hsm,
            &[
                "token",
                "restore",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--signature-dir",
                sigs.to_str().unwrap(),
                "--json",
            ],
        )
        .args(token_args(&fresh)),
    );
    let r2 = json(&out);
    assert_eq!(r2["cert_sha256"], r["cert_sha256"]);
    assert_eq!(r2["public_key_sha256"], r["public_key_sha256"]);
    assert_eq!(r2["tokens"][0]["cert_sha256"], r["cert_sha256"]);
    let stem = sigs.join(format!("test-{}", fresh[0]));
    let pubkey = d.join("pub.pem");
    run_ok(
        openssl()
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(&crt)
            .arg("-out")
            .arg(&pubkey),
    );
    run_ok(
        openssl()
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pubkey)
            .arg("-signature")
            .arg(stem.with_extension("sig"))
            .arg(stem.with_extension("txt")),
    );
    // Both tokens now verify as one key.
    let all: Vec<String> = serials(&hsm, "mkosi");
    let v = run_ok(
        genkey(
            &hsm,
            &["token", "verify", "--cert", crt.to_str().unwrap(), "--json"],
        )
        .args(token_args(&all)),
    );
    let rv = json(&v);
    assert!(rv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["check"] == "same key on every token" && l["result"] == "pass"));
}

#[test]
fn refusals_happen_before_a_key_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let hsm = SoftHsm::create(&d.join("hsm"), "mkosi");
    let s = serials(&hsm, "mkosi");
    let backup = d.join("b.age");
    let create = |extra: &[&str]| {
        let mut c = genkey(
            &hsm,
            &[
                "token",
                "create",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
            ],
        );
        c.args(token_args(&s)).args(extra);
        c
    };
    // A secret on the command line is refused without being echoed.
    let err = run_fails(
        genkey(
            &hsm,
            &[
                "token",
                "create",
                "--backup",
                "x.age",
                "--passphrase",
                "hunter2hunter2",
            ],
        )
        .args(token_args(&s)),
    );
    assert!(
        err.contains("file:") && !err.contains("hunter2hunter2"),
        "{err}"
    );
    // No token: refused.
    let err = run_fails(&mut genkey(&hsm, &["token", "create", "--backup", "y.age"]));
    assert!(err.contains("no token given"), "{err}");
    // A weak passphrase: refused, nothing written.
    let err = run_fails(create(&[]).env("BACKUP_PASS", "short"));
    assert!(err.contains("at least 12"), "{err}");
    assert!(!backup.exists());
    run_ok(&mut create(&[]));
    // The ID is taken now: refused before generating, the backup is not touched.
    std::fs::remove_file(&backup).unwrap();
    let err = run_fails(&mut create(&[]));
    assert!(err.contains("already holds objects with id=%02"), "{err}");
    assert!(!backup.exists(), "a backup was written for a refused run");
    // An existing backup is never overwritten.
    std::fs::write(&backup, b"precious").unwrap();
    let err = run_fails(&mut create(&["--replace"]));
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&backup).unwrap(), b"precious");
}
