//! Encrypted backups judged by the tools users open them with: `openssl enc
//! -d -aes-256-cbc -pbkdf2` and `age -d` open ours, and ours open theirs;
//! a wrong passphrase is a clear error in both formats.
//!
//! `age` reads passphrases only from a terminal, so it runs on a
//! pseudo-terminal here (`common::pty`).

mod common;

use std::path::Path;
use std::process::Command;

use common::pty::age_on_pty;
use common::tools::{require_tool, run_fails, run_ok};
use sbkit::backup::{self, BackupError, BackupFormat};
use sbkit::keys::cert::{issue_self_signed, CertProfile, CertRequest};
use sbkit::keys::{FileSigner, KeyAlgorithm, Signer};

const PASS: &str = "correct horse battery staple";

fn key_and_cert(alg: KeyAlgorithm) -> (FileSigner, Vec<u8>) {
    let key = FileSigner::generate(alg).unwrap();
    let cert = issue_self_signed(
        &key,
        &CertRequest {
            common_name: "mkosi",
            organization: "mkosi",
            profile: CertProfile::CodeSigning,
            not_before: time::OffsetDateTime::now_utc(),
            days: 3650,
        },
    )
    .unwrap();
    (key, cert)
}

fn assert_pem_opens_to(plain: &Path, key: &FileSigner, cert: &[u8]) {
    // The decrypted file is directly usable by openssl: key, then certificate.
    let pubkey = run_ok(
        Command::new(require_tool("openssl"))
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(plain),
    )
    .stdout;
    assert_eq!(
        pubkey,
        key.public_key_der(),
        "public key of the backup's key"
    );
    let cert_der = run_ok(
        Command::new(require_tool("openssl"))
            .args(["x509", "-outform", "DER", "-in"])
            .arg(plain),
    )
    .stdout;
    assert_eq!(cert_der, cert);
}

#[test]
fn openssl_enc_backup_opens_with_openssl_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = key_and_cert(KeyAlgorithm::P384);
    let plain = backup::key_backup_plaintext(&key, &cert).unwrap();
    let sealed = backup::encrypt(BackupFormat::OpensslEnc, &plain, PASS.as_bytes()).unwrap();
    assert_eq!(&sealed[..8], b"Salted__");
    let enc = dir.path().join("mkosi.key.enc");
    std::fs::write(&enc, &sealed).unwrap();
    let passfile = dir.path().join("pass");
    std::fs::write(&passfile, PASS).unwrap();

    // Ours → openssl.
    let out = dir.path().join("dec.pem");
    run_ok(
        Command::new(require_tool("openssl"))
            .args(["enc", "-d", "-aes-256-cbc", "-pbkdf2", "-in"])
            .arg(&enc)
            .arg("-out")
            .arg(&out)
            .arg("-pass")
            .arg(format!("file:{}", passfile.display())),
    );
    assert_pem_opens_to(&out, &key, &cert);

    // openssl → ours (the recipe's own command).
    let theirs = dir.path().join("theirs.enc");
    run_ok(
        Command::new(require_tool("openssl"))
            .args(["enc", "-aes-256-cbc", "-pbkdf2", "-salt", "-in"])
            .arg(&out)
            .arg("-out")
            .arg(&theirs)
            .arg("-pass")
            .arg(format!("file:{}", passfile.display())),
    );
    let opened =
        backup::open_key_backup(&std::fs::read(&theirs).unwrap(), PASS.as_bytes(), "theirs")
            .unwrap();
    assert_eq!(opened.format, BackupFormat::OpensslEnc);
    assert_eq!(opened.key.public_key_der(), key.public_key_der());
    assert_eq!(opened.cert_der.as_deref(), Some(&cert[..]));

    // Wrong passphrase: a clear error, from us and from openssl.
    let e = backup::open_key_backup(&sealed, b"not the passphrase at all", "mkosi.key.enc")
        .err()
        .unwrap();
    assert!(matches!(e, BackupError::WrongPassphrase { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("wrong passphrase") && msg.contains("mkosi.key.enc"),
        "{msg}"
    );
    run_fails(
        Command::new(require_tool("openssl"))
            .args(["enc", "-d", "-aes-256-cbc", "-pbkdf2", "-in"])
            .arg(&enc)
            .args([
                "-pass",
                "pass:not the passphrase at all",
                "-out",
                "/dev/null",
            ]),
    );
}

#[test]
fn age_backup_opens_with_age_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = key_and_cert(KeyAlgorithm::Rsa2048);
    let plain = backup::key_backup_plaintext(&key, &cert).unwrap();
    let sealed = backup::encrypt(BackupFormat::Age, &plain, PASS.as_bytes()).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    let file = dir.path().join("mkosi.key.age");
    std::fs::write(&file, &sealed).unwrap();

    // Ours → age.
    let out = dir.path().join("dec.pem");
    let (ok, tty) = age_on_pty(
        &["-d", "-o", out.to_str().unwrap(), file.to_str().unwrap()],
        &[PASS],
    );
    assert!(ok, "age -d failed:\n{tty}");
    assert_pem_opens_to(&out, &key, &cert);

    // age → ours.
    let theirs = dir.path().join("theirs.age");
    let (ok, tty) = age_on_pty(
        &["-p", "-o", theirs.to_str().unwrap(), out.to_str().unwrap()],
        &[PASS, PASS],
    );
    assert!(ok, "age -p failed:\n{tty}");
    let opened =
        backup::open_key_backup(&std::fs::read(&theirs).unwrap(), PASS.as_bytes(), "theirs")
            .unwrap();
    assert_eq!(opened.format, BackupFormat::Age);
    assert_eq!(opened.key.public_key_der(), key.public_key_der());

    // Wrong passphrase: clear errors from both.
    let e = backup::open_key_backup(&sealed, b"not the passphrase at all", "mkosi.key.age")
        .err()
        .unwrap();
    assert!(matches!(e, BackupError::WrongPassphrase { .. }), "{e}");
    let (ok, tty) = age_on_pty(
        &["-d", "-o", "/dev/null", file.to_str().unwrap()],
        &["not the passphrase at all"],
    );
    assert!(!ok, "age accepted a wrong passphrase:\n{tty}");

    // One changed byte is detected (authenticated format).
    let mut tampered = sealed.clone();
    let n = tampered.len() - 10;
    tampered[n] ^= 0x01;
    let e = backup::open_key_backup(&tampered, PASS.as_bytes(), "t")
        .err()
        .unwrap();
    assert!(e.to_string().contains("damaged"), "{e}");
}

#[test]
fn restore_with_a_wrong_passphrase_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = common::softhsm::SoftHsm::create(dir.path(), "spare");
    let (key, cert) = key_and_cert(KeyAlgorithm::P384);
    let plain = backup::key_backup_plaintext(&key, &cert).unwrap();
    for format in [BackupFormat::Age, BackupFormat::OpensslEnc] {
        let file = dir.path().join(format!("b.{}", format.extension()));
        std::fs::write(
            &file,
            backup::encrypt(format, &plain, PASS.as_bytes()).unwrap(),
        )
        .unwrap();
        let mut cmd = common::tools::our_bin("genkey");
        hsm.apply(&mut cmd);
        let err = run_fails(
            cmd.args(["token", "restore", "--backup"])
                .arg(&file)
                .args([
                    "--passphrase",
                    "env:WRONG_PASS",
                    "--token",
                    "pkcs11:token=spare",
                ])
                .env("WRONG_PASS", "this is not the passphrase"),
        );
        assert!(err.contains("wrong passphrase"), "{format}: {err}");
        assert!(err.contains(file.to_str().unwrap()), "{err}");
    }
    // Nothing reached the token.
    let listing = run_ok(
        hsm.command("pkcs11-tool")
            .args([
                "--module",
                common::softhsm::MODULE,
                "--token-label",
                "spare",
            ])
            .args([
                "--login",
                "--pin",
                common::softhsm::USER_PIN,
                "--list-objects",
            ]),
    );
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(!text.contains("Private Key Object"), "{text}");
}
