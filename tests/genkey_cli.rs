//! genkey's behaviour as a user meets it: refusals, replacement, imports, output forms.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::tools::{genkey, our_bin, owner_guid, require_tool, run_fails, run_ok};

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            for (k, v) in snapshot(&p) {
                out.insert(format!("{}/{k}", e.file_name().to_string_lossy()), v);
            }
        } else {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            );
        }
    }
    out
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("--json prints JSON on stdout")
}

#[test]
fn writes_the_kairos_file_set_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &[]);
    let mut names: Vec<_> = snapshot(&keys).into_keys().collect();
    names.sort();
    let mut expected: Vec<String> = ["PK", "KEK", "db"]
        .iter()
        .flat_map(|r| ["auth", "der", "esl", "key", "pem"].map(|e| format!("{r}.{e}")))
        .collect();
    expected.extend(
        [
            "manifest.json",
            "tpm2-pcr-private.pem",
            "tpm2-pcr-public.pem",
        ]
        .map(String::from),
    );
    expected.sort();
    assert_eq!(names, expected);
    for f in ["PK.key", "KEK.key", "db.key", "tpm2-pcr-private.pem"] {
        let mode = fs::metadata(keys.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert_eq!(
        fs::metadata(keys.join("db.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    assert_eq!(
        fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn refuses_to_overwrite_a_key_set_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &[]);
    let before = snapshot(&keys);
    let err = run_fails(our_bin("genkey").arg("Acme Corp").arg("-o").arg(&keys));
    assert!(
        err.contains("already holds a key set") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(snapshot(&keys), before, "nothing may change");
}

#[test]
fn force_moves_the_old_set_aside_and_keeps_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    genkey("Acme Corp", &keys, &[]);
    let old_pk = fs::read(keys.join("PK.key")).unwrap();
    let guid = owner_guid(&keys);
    let out = genkey("Acme Corp", &keys, &["--force", "--json"]);
    let report = json(&out);
    let backup = report["commit"]["replaced_into"]
        .as_str()
        .expect("replaced_into");
    assert_eq!(
        fs::read(Path::new(backup).join("PK.key")).unwrap(),
        old_pk,
        "old key kept"
    );
    assert_ne!(
        fs::read(keys.join("PK.key")).unwrap(),
        old_pk,
        "new key made"
    );
    assert_eq!(owner_guid(&keys), guid, "owner GUID reused");
}

#[test]
fn bad_names_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "x".repeat(61);
    for (name, needle) in [
        ("", "empty"),
        ("   ", "empty"),
        (long.as_str(), "61 characters"),
        ("a\nb", "control"),
    ] {
        let keys = tmp.path().join("keys");
        let err = run_fails(our_bin("genkey").arg(name).arg("-o").arg(&keys));
        assert!(
            err.contains("invalid NAME") && err.contains(needle),
            "{name:?}: {err}"
        );
        assert!(!keys.exists(), "{name:?} created the directory");
    }
}

#[test]
fn unknown_key_type_and_unusable_outputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let err = run_fails(
        our_bin("genkey")
            .args(["Acme", "--key-type", "ed25519", "-o"])
            .arg(&keys),
    );
    assert!(err.contains("ed25519") && err.contains("rsa2048"), "{err}");
    assert!(!keys.exists());

    let file = tmp.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let err = run_fails(our_bin("genkey").args(["Acme", "-o"]).arg(&file));
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"x");

    // /proc refuses new files even for root.
    let err = run_fails(our_bin("genkey").args(["Acme", "-o", "/proc/sbkit-test-keys"]));
    assert!(err.contains("not writable"), "{err}");

    let err = run_fails(
        our_bin("genkey")
            .args(["Acme", "--expiration-in-days", "0", "-o"])
            .arg(&keys),
    );
    assert!(err.contains("expiration-in-days"), "{err}");
    assert!(!keys.exists());
}

#[test]
fn microsoft_selection_and_the_kairos_skip_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let entries = |out: &std::process::Output, var: &str| -> u64 {
        json(out)["lists"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["variable"] == var)
            .unwrap()["entries"]
            .as_u64()
            .unwrap()
    };
    let all = genkey("Acme", &tmp.path().join("all"), &["--json"]);
    assert_eq!((entries(&all, "KEK"), entries(&all, "db")), (3, 6));
    let y2023 = genkey(
        "Acme",
        &tmp.path().join("y2023"),
        &["--json", "--microsoft", "2023"],
    );
    assert_eq!((entries(&y2023, "KEK"), entries(&y2023, "db")), (2, 4));
    let rom = genkey(
        "Acme",
        &tmp.path().join("rom"),
        &["--json", "--microsoft", "option-rom"],
    );
    assert_eq!((entries(&rom, "KEK"), entries(&rom, "db")), (1, 3));
    let none = genkey(
        "Acme",
        &tmp.path().join("none"),
        &["--json", "--skip-microsoft-certs-I-KNOW-WHAT-IM-DOING"],
    );
    assert_eq!((entries(&none, "KEK"), entries(&none, "db")), (1, 1));
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        stderr.contains("option ROMs"),
        "the skip flag explains the risk:\n{stderr}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(tmp.path().join("none/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["microsoft"], "none");
}

/// Writes one X.509 signature list by hand (the format, not our code).
fn esl_x509(owner_le: &[u8; 16], der: &[u8]) -> Vec<u8> {
    let x509: [u8; 16] = [
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ];
    let mut v = x509.to_vec();
    v.extend(((28 + 16 + der.len()) as u32).to_le_bytes());
    v.extend(0u32.to_le_bytes());
    v.extend(((16 + der.len()) as u32).to_le_bytes());
    v.extend_from_slice(owner_le);
    v.extend_from_slice(der);
    v
}

fn esl_sha256(owner_le: &[u8; 16], hashes: &[[u8; 32]]) -> Vec<u8> {
    let sha: [u8; 16] = [
        0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43,
        0x28,
    ];
    let mut v = sha.to_vec();
    v.extend(((28 + 48 * hashes.len()) as u32).to_le_bytes());
    v.extend(0u32.to_le_bytes());
    v.extend(48u32.to_le_bytes());
    for h in hashes {
        v.extend_from_slice(owner_le);
        v.extend_from_slice(h);
    }
    v
}

#[test]
fn custom_cert_dir_merges_vendor_entries_and_dbx_and_reports_them() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    fs::create_dir(&export).unwrap();
    // An OEM certificate, made with openssl.
    run_ok(
        Command::new(require_tool("openssl"))
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=OEM db CA",
                "-days",
                "30",
                "-outform",
                "DER",
                "-keyout",
            ])
            .arg(tmp.path().join("oem.key"))
            .arg("-out")
            .arg(tmp.path().join("oem.der")),
    );
    let oem_der = fs::read(tmp.path().join("oem.der")).unwrap();
    // OEM owner 11111111-2222-3333-4455-66778899aabb, stored mixed-endian.
    let oem_owner: [u8; 16] = [
        0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
        0xbb,
    ];
    // db as efivarfs exports it: 4 attribute bytes, then the lists.
    let mut db = vec![0x27, 0, 0, 0];
    db.extend(esl_x509(&oem_owner, &oem_der));
    db.extend(esl_sha256(&oem_owner, &[[0xab; 32]]));
    fs::write(export.join("db"), db).unwrap();
    // dbx as a raw list of hashes.
    fs::write(
        export.join("dbx.esl"),
        esl_sha256(&oem_owner, &[[1; 32], [2; 32], [3; 32]]),
    )
    .unwrap();
    // KEK as another vendor's .auth file, PK as a DER certificate.
    let other = tmp.path().join("other");
    genkey("Other Vendor", &other, &[]);
    fs::copy(other.join("KEK.auth"), export.join("KEK.auth")).unwrap();
    fs::copy(tmp.path().join("oem.der"), export.join("PK.der")).unwrap();

    let keys = tmp.path().join("keys");
    let out = genkey(
        "Acme Corp",
        &keys,
        &["--custom-cert-dir", export.to_str().unwrap(), "--json"],
    );
    let report = json(&out);
    let notes: Vec<String> = report["import_notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let all = notes.join("\n");
    assert!(
        all.contains("PK:") && all.contains("not enrolled"),
        "PK entry reported:\n{all}"
    );
    assert!(all.contains("dbx: merged 3 sha256"), "{all}");
    assert!(
        all.contains("KEK: merged 1 x509"),
        "the other vendor's KEK merged:\n{all}"
    );
    assert!(
        all.contains("kept once"),
        "Microsoft duplicates reported:\n{all}"
    );

    // efitools lists the OEM owner in db, and dbx.auth exists, signed by our KEK.
    let certs = tmp.path().join("certs");
    fs::create_dir(&certs).unwrap();
    let listing = run_ok(
        Command::new(require_tool("sig-list-to-certs"))
            .arg(keys.join("db.esl"))
            .arg(certs.join("c")),
    );
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.contains("11111111-2222-3333-4455-66778899aabb"),
        "OEM owner kept:\n{text}"
    );
    let db_esl = fs::read(keys.join("db.esl")).unwrap();
    assert!(
        db_esl.windows(32).any(|w| w == [0xab; 32]),
        "the OEM hash entry kept"
    );
    let dbx = fs::read(keys.join("dbx.esl")).unwrap();
    assert_eq!(dbx.len(), 28 + 3 * 48);
    assert!(keys.join("dbx.auth").exists());
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(keys.join("manifest.json")).unwrap()).unwrap();
    let dbx_entries = manifest["lists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["variable"] == "dbx")
        .unwrap();
    assert_eq!(dbx_entries["signed_by"], "KEK");
    assert_eq!(dbx_entries["entries"].as_array().unwrap().len(), 3);
}

#[test]
fn a_malformed_export_names_the_file_and_offset_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    fs::create_dir(&export).unwrap();
    let mut bad = esl_sha256(&[0; 16], &[[1; 32]]);
    bad[16] = 0xff; // ListSize runs past the end
    fs::write(export.join("db.esl"), bad).unwrap();
    let keys = tmp.path().join("keys");
    let err = run_fails(
        our_bin("genkey")
            .args(["Acme", "--custom-cert-dir"])
            .arg(&export)
            .arg("-o")
            .arg(&keys),
    );
    assert!(
        err.contains("db.esl") && err.contains("byte offset 16"),
        "{err}"
    );
    assert!(snapshot(&keys).is_empty(), "nothing written");

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = run_fails(
        our_bin("genkey")
            .args(["Acme", "--custom-cert-dir"])
            .arg(&empty)
            .arg("-o")
            .arg(&keys),
    );
    assert!(err.contains("no file named PK, KEK, db or dbx"), "{err}");
}

#[test]
fn human_summary_says_when_keys_expire_and_what_to_do_next() {
    let tmp = tempfile::tempdir().unwrap();
    let out = genkey(
        "Acme Corp",
        &tmp.path().join("keys"),
        &["--expiration-in-days", "30"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("expires") && stdout.contains("Next steps"),
        "{stdout}"
    );
    assert!(
        stderr.contains("only 30 days"),
        "short validity warned:\n{stderr}"
    );
}
