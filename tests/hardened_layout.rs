//! `genkey --layout hardened`: the repository's files, its encrypted keys
//! (opened by the `age` tool), and that build-uki's key loading and enroll
//! read it.

mod common;

use std::fs;
use std::path::Path;

use common::pty::age_on_pty;
use common::tools::{our_bin, require_tool, run_fails, run_ok};

const PASS: &str = "repository passphrase 42";

fn hardened(dir: &Path) {
    run_ok(
        our_bin("genkey")
            .args([
                "Acme Corp",
                "--layout",
                "hardened",
                "--passphrase",
                "env:KEYPASS",
                "-o",
            ])
            .arg(dir)
            .env("KEYPASS", PASS),
    );
}

#[test]
fn hardened_repository_has_no_plaintext_key_and_is_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    hardened(&dir);

    for f in [
        "README.md",
        "manifest.json",
        "secureboot/pk/PK.key.age",
        "secureboot/pk/PK.pem",
        "secureboot/pk/PK.esl",
        "secureboot/pk/PK.auth",
        "secureboot/kek/KEK.key.age",
        "secureboot/kek/KEK.auth",
        "secureboot/db/db.key.age",
        "secureboot/db/db.der",
        "secureboot/pcr/tpm2-pcr-private.pem.age",
        "secureboot/pcr/tpm2-pcr-public.pem",
        "fingerprints/SHA256SUMS",
        "fingerprints/db.sha256",
        "revoked/README.md",
        "rotation/README.md",
        "backups/storage-locations.md",
        "backups/recovery-playbook.md",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // No plaintext key anywhere (the audit's own scan, and by name).
    assert_eq!(
        sbkit::provision::audit::plaintext_keys(&dir),
        Vec::<std::path::PathBuf>::new()
    );
    for f in ["PK.key", "KEK.key", "db.key", "tpm2-pcr-private.pem"] {
        assert!(!dir.join(f).exists(), "{f} exists in plaintext");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir.join("secureboot/db/db.key.age"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // README carries the dates; the manifest says hardened.
    let readme = fs::read_to_string(dir.join("README.md")).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["layout"], "hardened");
    let not_after = manifest["keys"][0]["certificate"]["not_after"]
        .as_str()
        .unwrap();
    assert!(readme.contains(not_after), "{readme}");
    assert!(readme.contains("Created "), "{readme}");

    // The fingerprint file matches the certificate, as sha256sum computes it.
    let sums = run_ok(
        std::process::Command::new(require_tool("sha256sum"))
            .arg("db.der")
            .current_dir(dir.join("secureboot/db")),
    );
    let fp = fs::read_to_string(dir.join("fingerprints/db.sha256")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sums.stdout)
            .split_whitespace()
            .next(),
        fp.split_whitespace().next()
    );

    // The age tool opens an encrypted key; openssl reads what comes out.
    let out = tmp.path().join("db.pem");
    let (ok, tty) = age_on_pty(
        &[
            "-d",
            "-o",
            out.to_str().unwrap(),
            dir.join("secureboot/db/db.key.age").to_str().unwrap(),
        ],
        &[PASS],
    );
    assert!(ok, "{tty}");
    let from_key = run_ok(
        std::process::Command::new(require_tool("openssl"))
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&out),
    )
    .stdout;
    let from_cert = run_ok(
        std::process::Command::new(require_tool("openssl"))
            .args(["x509", "-inform", "DER", "-noout", "-pubkey", "-in"])
            .arg(dir.join("secureboot/db/db.der")),
    )
    .stdout;
    let pem = pem::parse(&from_cert).unwrap();
    assert_eq!(from_key, pem.contents());

    // build-uki's key loading decrypts in memory with the passphrase.
    std::env::set_var("SBKIT_KEY_PASSPHRASE", PASS);
    let keys = sbkit::store::signing::SigningKeys::from_key_dir(&dir).unwrap();
    assert_eq!(keys.secure_boot.public_key_der(), from_key);
    assert!(keys.pcr.is_some());
    std::env::set_var("SBKIT_KEY_PASSPHRASE", "not the passphrase");
    let e = sbkit::store::signing::SigningKeys::from_key_dir(&dir)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("wrong passphrase"), "{e}");
    std::env::remove_var("SBKIT_KEY_PASSPHRASE");

    // enroll reads the repository through its flat-name links.
    let vars = tmp.path().join("vars.fd");
    run_ok(
        our_bin("enroll")
            .args(["ovmf", "--template"])
            .arg(common::qemu::Firmware::ovmf_secboot().vars_template)
            .arg("-k")
            .arg(&dir)
            .arg("-o")
            .arg(&vars),
    );
    let store = fs::read(&vars).unwrap();
    let db_der = fs::read(dir.join("secureboot/db/db.der")).unwrap();
    // Verify-only commands get the certificate without the passphrase.
    assert_eq!(
        sbkit::store::signing::secure_boot_certificate(&dir).unwrap(),
        db_der
    );
    assert!(
        store.windows(db_der.len()).any(|w| w == db_der),
        "our db certificate is not in the variable store"
    );

    // A second run refuses; --reuse-keys with the passphrase remakes the lists.
    let err = run_fails(
        our_bin("genkey")
            .args([
                "Acme Corp",
                "--layout",
                "hardened",
                "--passphrase",
                "env:KEYPASS",
                "-o",
            ])
            .arg(&dir)
            .env("KEYPASS", PASS),
    );
    assert!(err.contains("already holds a key set"), "{err}");
    run_ok(
        our_bin("genkey")
            .args(["Acme Corp", "--layout", "hardened", "--reuse-keys"])
            .args(["--passphrase", "env:KEYPASS", "-o"])
            .arg(&dir)
            .env("KEYPASS", PASS),
    );
    // The same db key, re-encrypted, still opens and matches the new certificate.
    let again =
        sbkit::store::hardened::load_key(&dir.join("secureboot/db/db.key.age"), PASS.as_bytes())
            .unwrap();
    assert_eq!(sbkit::keys::Signer::public_key_der(&again), from_key);
    assert_eq!(sbkit::provision::audit::plaintext_keys(&dir).len(), 0);
}
