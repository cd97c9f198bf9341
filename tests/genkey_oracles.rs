//! genkey's output judged by tools we did not write: efitools, openssl.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::der::content_info;
use common::tools::{genkey, owner_guid, require_tool, run_ok};

const SDE: &str = "1700000000";
const SDE_TEXT: &str = "2023-11-14 22:13:20";

/// The bytes an authenticated write signs, rebuilt here from the UEFI spec
/// (not from sbkit's code): name UTF-16LE | vendor GUID | attributes | EFI_TIME | data.
fn signed_bytes(name: &str, vendor_guid_le: &[u8; 16], auth: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let time = &auth[..16];
    let dw_length = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
    assert_eq!(
        &auth[20..24],
        &[0x00, 0x02, 0xf1, 0x0e],
        "wRevision 0x0200, WIN_CERT_TYPE_EFI_GUID"
    );
    let pkcs7 = auth[16 + 24..16 + dw_length].to_vec();
    let data = &auth[16 + dw_length..];
    let mut m = Vec::new();
    for u in name.encode_utf16() {
        m.extend_from_slice(&u.to_le_bytes());
    }
    m.extend_from_slice(vendor_guid_le);
    m.extend_from_slice(&0x27u32.to_le_bytes());
    m.extend_from_slice(time);
    m.extend_from_slice(data);
    (m, pkcs7)
}

const GLOBAL: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];
const SECURITY_DB: [u8; 16] = [
    0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f,
];

fn openssl_verifies(dir: &Path, signed: &[u8], pkcs7: &[u8], signer_pem: &Path) -> bool {
    let openssl = require_tool("openssl");
    fs::write(dir.join("p7.der"), content_info(pkcs7)).unwrap();
    fs::write(dir.join("signed.bin"), signed).unwrap();
    Command::new(openssl)
        .args([
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-noverify",
            "-nointern",
        ])
        .arg("-in")
        .arg(dir.join("p7.der"))
        .arg("-content")
        .arg(dir.join("signed.bin"))
        .arg("-certfile")
        .arg(signer_pem)
        .arg("-out")
        .arg("/dev/null")
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn esl_equals_cert_to_efi_sig_list_and_lists_give_the_certificates_back() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &[]);
    let guid = owner_guid(&keys);
    let reference = tmp.path().join("pk-ref.esl");
    run_ok(
        Command::new(require_tool("cert-to-efi-sig-list"))
            .args(["-g", &guid])
            .arg(keys.join("PK.pem"))
            .arg(&reference),
    );
    assert_eq!(
        fs::read(&reference).unwrap(),
        fs::read(keys.join("PK.esl")).unwrap(),
        "PK.esl differs from efitools' output"
    );

    let out = tmp.path().join("db-certs");
    fs::create_dir(&out).unwrap();
    let listing = run_ok(
        Command::new(require_tool("sig-list-to-certs"))
            .arg(keys.join("db.esl"))
            .arg(out.join("c")),
    );
    let text = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(
        fs::read(out.join("c-0.der")).unwrap(),
        fs::read(keys.join("db.der")).unwrap(),
        "our db certificate comes first"
    );
    assert!(text.contains(&guid), "our owner GUID is listed:\n{text}");
    // The other five are Microsoft's, with Microsoft's owner, as shipped.
    assert_eq!(
        text.matches("77fa9abd-0359-4d32-bd60-28f4e78f784b").count(),
        5,
        "{text}"
    );
    for i in 1..=5 {
        let sub = run_ok(
            Command::new(require_tool("openssl"))
                .args(["x509", "-inform", "DER", "-noout", "-subject", "-in"])
                .arg(out.join(format!("c-{i}.der"))),
        );
        assert!(
            String::from_utf8_lossy(&sub.stdout).contains("Microsoft")
                || String::from_utf8_lossy(&sub.stdout).contains("Windows")
        );
    }
    assert!(
        !out.join("c-6.der").exists(),
        "exactly six certificates in db"
    );
}

#[test]
fn auth_files_equal_efitools_sign_efi_sig_list_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    run_ok(
        common::tools::our_bin("genkey")
            .args(["Acme Corp", "-o"])
            .arg(&keys)
            .env("SOURCE_DATE_EPOCH", SDE),
    );
    for (var, signer) in [("PK", "PK"), ("KEK", "PK"), ("db", "KEK")] {
        let reference = tmp.path().join(format!("{var}.ref.auth"));
        run_ok(
            Command::new(require_tool("sign-efi-sig-list"))
                .args(["-t", SDE_TEXT, "-k"])
                .arg(keys.join(format!("{signer}.key")))
                .arg("-c")
                .arg(keys.join(format!("{signer}.pem")))
                .arg(var)
                .arg(keys.join(format!("{var}.esl")))
                .arg(&reference),
        );
        assert_eq!(
            fs::read(&reference).unwrap(),
            fs::read(keys.join(format!("{var}.auth"))).unwrap(),
            "{var}.auth differs from sign-efi-sig-list's"
        );
    }
}

#[test]
fn every_auth_verifies_with_openssl_against_its_signer_and_one_changed_byte_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &[]);
    for (var, vendor, signer, wrong) in [
        ("PK", &GLOBAL, "PK", "KEK"),
        ("KEK", &GLOBAL, "PK", "db"),
        ("db", &SECURITY_DB, "KEK", "PK"),
    ] {
        let auth = fs::read(keys.join(format!("{var}.auth"))).unwrap();
        let (signed, pkcs7) = signed_bytes(var, vendor, &auth);
        assert_eq!(
            &signed[signed.len() - fs::read(keys.join(format!("{var}.esl"))).unwrap().len()..],
            fs::read(keys.join(format!("{var}.esl")))
                .unwrap()
                .as_slice()
        );
        let signer_pem = keys.join(format!("{signer}.pem"));
        assert!(
            openssl_verifies(tmp.path(), &signed, &pkcs7, &signer_pem),
            "{var}.auth does not verify against {signer}.pem"
        );
        assert!(
            !openssl_verifies(
                tmp.path(),
                &signed,
                &pkcs7,
                &keys.join(format!("{wrong}.pem"))
            ),
            "{var}.auth verifies against {wrong}.pem"
        );
        let mut tampered = signed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(
            !openssl_verifies(tmp.path(), &tampered, &pkcs7, &signer_pem),
            "{var}.auth verifies with a changed byte"
        );
    }
}

#[test]
fn openssl_reads_keys_and_certificates_with_the_right_profiles_and_validity() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &["--expiration-in-days", "3650"]);
    let openssl = require_tool("openssl");
    for role in ["PK", "KEK", "db"] {
        let key = fs::read_to_string(keys.join(format!("{role}.key"))).unwrap();
        assert!(
            key.starts_with(concat!("-----BEGIN ", "PRIVATE KEY-----")),
            "{role}.key is PKCS#8 PEM"
        );
        let text = run_ok(
            Command::new(&openssl)
                .args(["pkey", "-noout", "-text", "-in"])
                .arg(keys.join(format!("{role}.key"))),
        );
        assert!(
            String::from_utf8_lossy(&text.stdout).contains("2048 bit"),
            "{role}: RSA-2048"
        );
        let der = run_ok(
            Command::new(&openssl)
                .args(["x509", "-outform", "DER", "-in"])
                .arg(keys.join(format!("{role}.pem"))),
        );
        assert_eq!(
            der.stdout,
            fs::read(keys.join(format!("{role}.der"))).unwrap(),
            "{role}.pem and .der hold one certificate"
        );
        // The certificate's public key is the private key's.
        let from_cert = run_ok(
            Command::new(&openssl)
                .args(["x509", "-noout", "-pubkey", "-in"])
                .arg(keys.join(format!("{role}.pem"))),
        );
        let from_key = run_ok(
            Command::new(&openssl)
                .args(["pkey", "-pubout", "-in"])
                .arg(keys.join(format!("{role}.key"))),
        );
        assert_eq!(
            from_cert.stdout, from_key.stdout,
            "{role}: certificate and key match"
        );
        let cert_text = String::from_utf8_lossy(
            &run_ok(
                Command::new(&openssl)
                    .args(["x509", "-noout", "-text", "-in"])
                    .arg(keys.join(format!("{role}.pem"))),
            )
            .stdout,
        )
        .into_owned();
        assert!(
            cert_text.contains(&format!("CN = Acme Corp {role}, O = Acme Corp")),
            "{role} subject:\n{cert_text}"
        );
        if role == "db" {
            assert!(
                cert_text.contains("Code Signing"),
                "db carries codeSigning:\n{cert_text}"
            );
            assert!(cert_text.contains("CA:FALSE"));
        } else {
            assert!(
                cert_text.contains("CA:TRUE"),
                "{role} is a CA:\n{cert_text}"
            );
        }
        let dates = String::from_utf8_lossy(
            &run_ok(
                Command::new(&openssl)
                    .args(["x509", "-noout", "-startdate", "-enddate", "-in"])
                    .arg(keys.join(format!("{role}.pem"))),
            )
            .stdout,
        )
        .into_owned();
        let epoch = |prefix: &str| -> i64 {
            let line = dates.lines().find(|l| l.starts_with(prefix)).unwrap();
            let value = line.split_once('=').unwrap().1;
            let out = run_ok(Command::new("date").args(["-u", "-d", value, "+%s"]));
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        assert_eq!(
            epoch("notAfter") - epoch("notBefore"),
            3650 * 86400,
            "{role} validity is 3650 days"
        );
    }
    let pcr = run_ok(
        Command::new(&openssl)
            .args(["pkey", "-pubin", "-noout", "-text", "-in"])
            .arg(keys.join("tpm2-pcr-public.pem")),
    );
    assert!(
        String::from_utf8_lossy(&pcr.stdout).contains("2048 bit"),
        "PCR key is RSA-2048"
    );
    let from_private = run_ok(
        Command::new(&openssl)
            .args(["pkey", "-pubout", "-in"])
            .arg(keys.join("tpm2-pcr-private.pem")),
    );
    assert_eq!(
        from_private.stdout,
        fs::read(keys.join("tpm2-pcr-public.pem")).unwrap()
    );
}

#[test]
fn same_keys_and_source_date_epoch_give_identical_lists_and_auth_files() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    run_ok(
        common::tools::our_bin("genkey")
            .args(["Acme Corp", "-o"])
            .arg(&a)
            .env("SOURCE_DATE_EPOCH", SDE),
    );
    fs::create_dir(&b).unwrap();
    for f in [
        "PK.key",
        "KEK.key",
        "db.key",
        "tpm2-pcr-private.pem",
        "manifest.json",
    ] {
        fs::copy(a.join(f), b.join(f)).unwrap();
    }
    run_ok(
        common::tools::our_bin("genkey")
            .args(["Acme Corp", "--reuse-keys", "-o"])
            .arg(&b)
            .env("SOURCE_DATE_EPOCH", SDE),
    );
    assert_eq!(
        owner_guid(&a),
        owner_guid(&b),
        "owner GUID reused from the manifest"
    );
    for f in [
        "PK.esl", "PK.auth", "KEK.esl", "KEK.auth", "db.esl", "db.auth", "PK.der", "db.pem",
    ] {
        assert_eq!(
            fs::read(a.join(f)).unwrap(),
            fs::read(b.join(f)).unwrap(),
            "{f} is not reproducible"
        );
    }
}

#[test]
fn ec_keys_warn_about_firmware_and_still_verify_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let out = genkey("Acme Corp", &keys, &["--key-type", "p384"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OVMF") && stderr.contains("warning"),
        "EC warning missing:\n{stderr}"
    );
    let auth = fs::read(keys.join("db.auth")).unwrap();
    let (signed, pkcs7) = signed_bytes("db", &SECURITY_DB, &auth);
    assert!(openssl_verifies(
        tmp.path(),
        &signed,
        &pkcs7,
        &keys.join("KEK.pem")
    ));
    let text = run_ok(
        Command::new(require_tool("openssl"))
            .args(["x509", "-noout", "-text", "-in"])
            .arg(keys.join("KEK.pem")),
    );
    assert!(String::from_utf8_lossy(&text.stdout).contains("secp384r1"));
}
