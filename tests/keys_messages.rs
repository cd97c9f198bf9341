//! What genkey says when its input is wrong: a clear sentence, said once,
//! exit status 1 (never a panic's 101), and never any part of a secret.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::tools::{our_bin, require_tool, run_ok};

fn fails(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?} must fail with status 1 (not panic): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out, stderr)
}

#[test]
fn source_date_epoch_out_of_range_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Near the end of year 9999: the validity would end after it.
    let (_, err) = fails(
        our_bin("genkey")
            .args(["Acme Corp", "-o"])
            .arg(tmp.path().join("late"))
            .env("SOURCE_DATE_EPOCH", "253402000000"),
    );
    assert!(
        err.contains("out of range") && err.contains("9999") && err.contains("SOURCE_DATE_EPOCH"),
        "{err}"
    );
    // Negative: out of range too, not an ASN.1 encoding error.
    let (_, err) = fails(
        our_bin("genkey")
            .args(["Acme Corp", "-o"])
            .arg(tmp.path().join("early"))
            .env("SOURCE_DATE_EPOCH", "-100"),
    );
    assert!(err.contains("out of range"), "{err}");
    assert!(!err.contains("DER"), "{err}");
    assert!(!tmp.path().join("late").exists() && !tmp.path().join("early").exists());
}

#[test]
fn a_truncated_der_certificate_is_reported_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    fs::create_dir(&export).unwrap();
    // A real certificate from openssl, cut short.
    let der = tmp.path().join("c.der");
    run_ok(
        Command::new(require_tool("openssl"))
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=vendor",
                "-days",
                "10",
                "-outform",
                "DER",
                "-keyout",
            ])
            .arg(tmp.path().join("c.key"))
            .arg("-out")
            .arg(&der),
    );
    let bytes = fs::read(&der).unwrap();
    fs::write(export.join("db.der"), &bytes[..bytes.len() / 2]).unwrap();
    let (_, err) = fails(
        our_bin("genkey")
            .args(["Acme Corp", "-o"])
            .arg(tmp.path().join("keys"))
            .arg("--custom-cert-dir")
            .arg(&export),
    );
    assert!(
        err.contains("db.der") && err.contains("truncated DER certificate"),
        "{err}"
    );
    assert!(
        !err.contains("signature list") && !err.contains("SignatureSize"),
        "{err}"
    );
}

#[test]
fn a_refused_passphrase_is_never_echoed() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "Zq7hunter2Xw9";
    let (out, err) = fails(
        our_bin("genkey")
            .args([
                "Acme Corp",
                "--layout",
                "hardened",
                "--passphrase",
                secret,
                "-o",
            ])
            .arg(tmp.path().join("keys")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for part in ["Zq7", "hunter2", "Xw9"] {
        assert!(
            !err.contains(part) && !stdout.contains(part),
            "{part}: {err}"
        );
    }
    assert!(err.contains("not shown") && err.contains("env:"), "{err}");
}

#[test]
fn an_error_says_its_sentence_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-export");
    let (_, err) = fails(
        our_bin("genkey")
            .args(["Acme Corp", "-o"])
            .arg(tmp.path().join("keys"))
            .arg("--custom-cert-dir")
            .arg(&missing),
    );
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "said once: {err}"
    );
    assert_eq!(err.matches("cannot read").count(), 1, "said once: {err}");

    // A hardened key directory opened with the wrong passphrase by build-uki.
    let keys = tmp.path().join("hard");
    run_ok(
        our_bin("genkey")
            .args([
                "Acme Corp",
                "--layout",
                "hardened",
                "--passphrase",
                "env:P",
                "-o",
            ])
            .arg(&keys)
            .env("P", "the right passphrase 1"),
    );
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    let (_, err) = fails(
        our_bin("build-uki")
            .args(["-k"])
            .arg(&keys)
            .arg(format!("dir:{}", rootfs.display()))
            .arg("-d")
            .arg(tmp.path().join("out"))
            .env("SBKIT_KEY_PASSPHRASE", "a wrong passphrase 22"),
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    let first_line = err.lines().next().unwrap_or_default().to_string();
    let sentences: Vec<&str> = first_line.split(": ").collect();
    let mut seen = std::collections::BTreeSet::new();
    for s in &sentences {
        assert!(seen.insert(*s), "{s:?} said twice in: {first_line}");
    }
}
