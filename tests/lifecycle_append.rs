//! `genkey append` against efitools: the same KEK, entries and timestamp give
//! an append `.auth` byte-identical to `sign-efi-sig-list -a` (attributes 0x67
//! signed in), and the firmware's acceptance of ours is shown in pcr7_boot.rs.
//! Bad input: nothing written, a message that names the problem.

mod common;

use std::fs;
use std::process::Command;

use common::qemu::require_tool;
use common::tools::{genkey, our_bin, owner_guid, run_ok};

/// 2030-01-01T00:00:00Z.
const EPOCH: &str = "1893456000";

#[test]
fn append_auth_is_byte_identical_to_efitools_for_db_and_dbx() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ours = w.join("ours");
    genkey("Acme Corp", &ours, &["--microsoft", "none"]);
    let other = w.join("other");
    genkey("Other Corp", &other, &["--microsoft", "none"]);
    let owner = owner_guid(&ours);

    // db: a certificate.
    run_ok(
        our_bin("genkey")
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["append", "db", "-k"])
            .arg(&ours)
            .arg("--cert")
            .arg(other.join("db.pem"))
            .arg("-o")
            .arg(w.join("db-append.auth")),
    );
    run_ok(
        Command::new(require_tool("cert-to-efi-sig-list"))
            .args(["-g", &owner])
            .arg(other.join("db.pem"))
            .arg(w.join("ref-db.esl")),
    );
    let sign = |var: &str, esl: &str, out: &str| {
        run_ok(
            Command::new(require_tool("sign-efi-sig-list"))
                .args(["-a", "-t", "2030-01-01 00:00:00", "-k"])
                .arg(ours.join("KEK.key"))
                .arg("-c")
                .arg(ours.join("KEK.pem"))
                .arg(var)
                .arg(w.join(esl))
                .arg(w.join(out)),
        )
    };
    sign("db", "ref-db.esl", "ref-db.auth");
    assert_eq!(
        fs::read(w.join("db-append.esl")).unwrap(),
        fs::read(w.join("ref-db.esl")).unwrap(),
        "our .esl vs cert-to-efi-sig-list"
    );
    assert_eq!(
        fs::read(w.join("db-append.auth")).unwrap(),
        fs::read(w.join("ref-db.auth")).unwrap(),
        "our append .auth vs sign-efi-sig-list -a"
    );

    // dbx: the Authenticode digest of a signed image (sbsign'd stub), as
    // efitools' hash-to-efi-sig-list computes it. (For an unsigned image whose
    // size is not a multiple of 8, efitools hashes it as if padded; edk2 and we
    // hash the bytes as they are, so the two differ there by design.)
    let efi = w.join("signed.efi");
    run_ok(
        Command::new(require_tool("sbsign"))
            .arg("--key")
            .arg(ours.join("db.key"))
            .arg("--cert")
            .arg(ours.join("db.pem"))
            .arg("--output")
            .arg(&efi)
            .arg(common::guest::Assets::locate().stub(254)),
    );
    run_ok(
        our_bin("genkey")
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["append", "dbx", "-k"])
            .arg(&ours)
            .arg("--image")
            .arg(&efi)
            .arg("-o")
            .arg(w.join("dbx-append.auth")),
    );
    run_ok(
        Command::new(require_tool("hash-to-efi-sig-list"))
            .arg(&efi)
            .arg(w.join("ref-dbx-efitools.esl")),
    );
    // hash-to-efi-sig-list picks its own owner GUID and has no flag for it; put ours
    // in (bytes 28..44 of a one-entry list: the 28-byte header, then the owner).
    let mut reference = fs::read(w.join("ref-dbx-efitools.esl")).unwrap();
    assert_eq!(reference.len(), 28 + 16 + 32, "one SHA-256 entry");
    let guid = uuid::Uuid::parse_str(&owner).unwrap();
    reference[28..44].copy_from_slice(&guid.to_bytes_le());
    fs::write(w.join("ref-dbx.esl"), &reference).unwrap();
    sign("dbx", "ref-dbx.esl", "ref-dbx.auth");
    assert_eq!(
        fs::read(w.join("dbx-append.auth")).unwrap(),
        fs::read(w.join("ref-dbx.auth")).unwrap(),
        "our dbx append .auth vs sign-efi-sig-list -a over efitools' image hash"
    );
}

#[test]
fn bad_appends_name_the_problem_and_write_nothing() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ours = w.join("ours");
    genkey("Acme Corp", &ours, &["--microsoft", "none"]);
    let cases: [(&[&str], &str); 3] = [
        (&["--hash", "abcd"], "64 hexadecimal digits"),
        (&[], "no entries"),
        (&["--cert", "/dev/null"], "not an X.509 certificate"),
    ];
    for (extra, expected) in cases {
        let out = our_bin("genkey")
            .args(["append", "dbx", "-k"])
            .arg(&ours)
            .args(extra)
            .arg("-o")
            .arg(w.join("x.auth"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} must fail");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!w.join("x.auth").exists() && !w.join("x.esl").exists());
    }
    // An existing output is never overwritten.
    fs::write(w.join("x.auth"), b"keep").unwrap();
    let out = our_bin("genkey")
        .args(["append", "db", "-k"])
        .arg(&ours)
        .args(["--hash", &"ab".repeat(32), "-o"])
        .arg(w.join("x.auth"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwritten"));
    assert_eq!(fs::read(w.join("x.auth")).unwrap(), b"keep");
    assert!(!w.join("x.esl").exists());
}
