//! `enroll ovmf` writes OVMF variable stores with our own writer; independent judges:
//! virt-firmware's `virt-fw-vars` reads exactly our keys back, our reader reads what
//! virt-fw-vars writes (and re-serialises it byte for byte), and OVMF itself boots a
//! UKI signed by our db key with Secure Boot enforced while refusing one signed by
//! another key set. Refusals: a template that is not a store, a full store, keys missing.
//!
//! Needs scripts/install-deps.sh (QEMU, OVMF, virt-fw-vars) and scripts/fetch-assets.sh.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::qemu::{Enrolled, Firmware, VarStore};
use common::tools::{genkey, our_bin, owner_guid, require_tool, run_fails, run_ok};
use sbkit::efi::varstore::VarStore as OurStore;
use serde_json::Value;

const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";

/// `enroll ovmf --template OVMF_VARS -k keys -o out` plus extra arguments.
fn enroll_ovmf(keys: &Path, out: &Path, extra: &[&str]) -> Value {
    let o = run_ok(
        our_bin("enroll")
            .args(["ovmf", "--json", "--template", OVMF_VARS, "-k"])
            .arg(keys)
            .arg("-o")
            .arg(out)
            .args(extra),
    );
    serde_json::from_slice(&o.stdout).expect("--json report")
}

/// virt-fw-vars' JSON dump of a store: variable name -> its JSON object.
fn virt_fw_vars_json(vars: &Path) -> serde_json::Map<String, Value> {
    let o = run_ok(
        Command::new(require_tool("virt-fw-vars"))
            .arg("--input")
            .arg(vars)
            .args(["--output-json", "-"]),
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("virt-fw-vars JSON");
    v["variables"]
        .as_array()
        .expect("variables array")
        .iter()
        .map(|var| (var["name"].as_str().unwrap().to_string(), var.clone()))
        .collect()
}

fn status_json(vars: &Path) -> Value {
    let o = run_ok(
        our_bin("enroll")
            .args(["status", "--json", "--vars"])
            .arg(vars),
    );
    serde_json::from_slice(&o.stdout).expect("status JSON")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn keys(work: &Path, name: &str) -> PathBuf {
    let dir = work.join(name.replace(' ', "-"));
    genkey(name, &dir, &[]);
    dir
}

#[test]
fn virt_fw_vars_reads_our_store_and_we_read_its() {
    let started = std::time::Instant::now();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let acme = keys(w, "Acme Corp");

    // Ours, read by virt-fw-vars.
    let ours = w.join("ours.fd");
    let report = enroll_ovmf(&acme, &ours, &[]);
    assert_eq!(report["setup_mode"], false);
    let vars = virt_fw_vars_json(&ours);
    for (name, guid) in [
        ("PK", "8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        ("KEK", "8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        ("db", "d719b2cb-3d3a-4596-a3bc-dad00e67656f"),
    ] {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("virt-fw-vars finds no {name} in our store: {vars:?}"));
        let esl = fs::read(acme.join(format!("{name}.esl"))).unwrap();
        assert_eq!(
            v["data"].as_str(),
            Some(hex::encode(&esl).as_str()),
            "{name} value"
        );
        assert_eq!(v["guid"], guid, "{name} vendor GUID");
        assert_eq!(v["attr"], 0x27, "{name} attributes");
        // EFI_TIME 2010-01-01T00:00:00Z: earlier than any update made for these keys.
        assert_eq!(v["time"], "da070101000000000000000000000000", "{name} time");
    }
    // OVMF's Secure Boot switches, as virt-fw-vars --secure-boot writes them.
    assert_eq!(vars["SecureBootEnable"]["data"], "01");
    assert_eq!(vars["SecureBootEnable"]["attr"], 3);
    assert_eq!(
        vars["SecureBootEnable"]["guid"],
        "f0a30bc7-af08-4556-99c4-001009c93a44"
    );
    assert_eq!(vars["CustomMode"]["data"], "00");
    assert_eq!(
        vars["CustomMode"]["guid"],
        "c076ec0c-7028-4399-a072-71ee5c448b9f"
    );
    // No dbx.esl in the key directory: the placeholder OVMF and virt-fw-vars write.
    let dbx = vars["dbx"]["data"].as_str().unwrap();
    assert!(
        dbx.contains("a3a8baa01d04a848bc87c36d121b5e3d") && dbx.ends_with(&sha256_hex(b"")),
        "dbx placeholder: {dbx}"
    );
    let names: Vec<&String> = vars.keys().collect();
    assert_eq!(
        names.len(),
        6,
        "exactly PK, KEK, db, dbx, SecureBootEnable, CustomMode: {names:?}"
    );
    let printout = run_ok(
        Command::new(require_tool("virt-fw-vars"))
            .arg("-i")
            .arg(&ours)
            .args(["--print", "--verbose"]),
    );
    let printout = String::from_utf8_lossy(&printout.stdout);
    for cn in [
        "Acme Corp PK",
        "Acme Corp KEK",
        "Acme Corp db",
        "Microsoft Corporation UEFI CA 2011",
    ] {
        assert!(
            printout.contains(&format!("subject CN={cn}")),
            "{cn}:\n{printout}"
        );
    }

    // virt-fw-vars' store (its writer, known certificates), read by us.
    let owner = owner_guid(&acme);
    let theirs = w.join("theirs.fd");
    VarStore {
        pk: Some(Enrolled::new(&owner, &acme.join("PK.pem"))),
        kek: vec![Enrolled::new(&owner, &acme.join("KEK.pem"))],
        db: vec![Enrolled::new(&owner, &acme.join("db.pem"))],
        secure_boot: true,
    }
    .write(&Firmware::ovmf_secboot(), &theirs);
    let status = status_json(&theirs);
    assert_eq!(status["setup_mode"], false, "{status:#}");
    assert_eq!(status["secure_boot"], true, "{status:#}");
    assert_eq!(status["secure_boot_enable"], true, "{status:#}");
    assert_eq!(status["custom_mode"], false, "{status:#}");
    for (i, role) in ["PK", "KEK", "db"].iter().enumerate() {
        let v = &status["variables"][i];
        assert_eq!(v["name"], *role);
        let entries = v["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{role}: {v:#}");
        let der = fs::read(acme.join(format!("{role}.der"))).unwrap();
        assert_eq!(entries[0]["sha256"], sha256_hex(&der), "{role}");
        assert_eq!(entries[0]["owner"], owner, "{role}");
        assert!(
            entries[0]["subject"]
                .as_str()
                .unwrap()
                .contains(&format!("CN=Acme Corp {role}")),
            "{role}: {v:#}"
        );
        assert_eq!(v["attributes"], 0x27);
    }
    assert_eq!(status["variables"][3]["name"], "dbx");
    assert_eq!(
        status["variables"][3]["present"], true,
        "virt-fw-vars --secure-boot adds a dbx"
    );

    // Our writer lays out virt-fw-vars' variables byte for byte as virt-fw-vars does.
    let image = fs::read(&theirs).unwrap();
    let parsed = OurStore::parse(image.clone()).unwrap();
    assert!(
        parsed.to_bytes().unwrap() == image,
        "re-serialising virt-fw-vars' store changed bytes"
    );

    // And virt-fw-vars' writer, fed our store, yields the same variables to our reader.
    let rewritten = w.join("rewritten.fd");
    run_ok(
        Command::new(require_tool("virt-fw-vars"))
            .arg("-i")
            .arg(&ours)
            .arg("-o")
            .arg(&rewritten),
    );
    let a = OurStore::parse(fs::read(&ours).unwrap()).unwrap();
    let b = OurStore::parse(fs::read(&rewritten).unwrap()).unwrap();
    let mut va = a.variables().to_vec();
    let mut vb = b.variables().to_vec();
    va.sort_by(|x, y| x.name.cmp(&y.name));
    vb.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(va, vb);

    // --setup-mode: no PK, the rest as before; both readers agree.
    let setup = w.join("setup.fd");
    let report = enroll_ovmf(&acme, &setup, &["--setup-mode"]);
    assert_eq!(report["setup_mode"], true);
    let vars = virt_fw_vars_json(&setup);
    assert!(
        !vars.contains_key("PK"),
        "setup-mode store has a PK: {vars:?}"
    );
    assert!(vars.contains_key("KEK") && vars.contains_key("db"));
    let status = status_json(&setup);
    assert_eq!(status["setup_mode"], true);
    assert_eq!(status["secure_boot"], false);
    eprintln!("virt-fw-vars round trips: {:.1?}", started.elapsed());
}

#[test]
fn bad_templates_full_stores_and_missing_keys_are_refused_with_nothing_written() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let acme = keys(w, "Acme Corp");
    let out = w.join("out.fd");
    let enroll = |template: &Path, keys: &Path| {
        let mut c = our_bin("enroll");
        c.arg("ovmf")
            .arg("--template")
            .arg(template)
            .arg("-k")
            .arg(keys)
            .arg("-o")
            .arg(&out);
        c
    };

    // The firmware code image is a firmware volume, but not the variable store.
    let err = run_fails(&mut enroll(Path::new(OVMF_CODE), &acme));
    assert!(err.contains("not a variable store"), "{err}");
    let junk = w.join("junk.fd");
    fs::write(&junk, vec![0x5a; 64 * 1024]).unwrap();
    let err = run_fails(&mut enroll(&junk, &acme));
    assert!(err.contains("not an edk2 variable store"), "{err}");
    assert!(!out.exists());

    // A store with room for 4 KiB of variables: our db alone is bigger.
    let mut small = fs::read(OVMF_VARS).unwrap();
    let header_length = u16::from_le_bytes([small[48], small[49]]) as usize;
    small[header_length + 16..header_length + 20].copy_from_slice(&0x1000u32.to_le_bytes());
    let small_path = w.join("small.fd");
    fs::write(&small_path, &small).unwrap();
    let err = run_fails(&mut enroll(&small_path, &acme));
    assert!(
        err.contains("variable store is full") && err.contains("bytes too many"),
        "{err}"
    );
    assert!(!out.exists());

    // A key directory without db.esl.
    let partial = w.join("partial");
    fs::create_dir(&partial).unwrap();
    for f in ["PK.esl", "KEK.esl", "manifest.json"] {
        fs::copy(acme.join(f), partial.join(f)).unwrap();
    }
    let err = run_fails(&mut enroll(Path::new(OVMF_VARS), &partial));
    assert!(
        err.contains("lacks db.esl") && err.contains("genkey"),
        "{err}"
    );
    let err = run_fails(&mut enroll(Path::new(OVMF_VARS), &w.join("nowhere")));
    assert!(err.contains("does not exist"), "{err}");
    assert!(!out.exists());
}

#[test]
fn ovmf_with_our_store_boots_our_signed_uki_and_refuses_another_key_sets() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let acme = keys(w, "Acme Corp");
    let other = keys(w, "Other Corp");
    let root = w.join("rootfs");
    common::uki_guest::efivar_rootfs(&root);
    let ours = common::uki_guest::build_uki(&root, &acme, &w.join("build-acme"));
    let foreign = common::uki_guest::build_uki(&root, &other, &w.join("build-other"));
    let vars = w.join("vars.fd");
    enroll_ovmf(&acme, &vars, &[]);

    let booted = common::uki_guest::boot_efi(w, "enroll_ovmf.signed", &ours, &vars);
    booted.assert_success();
    booted.assert_user_mode(true);
    assert!(booted.log.contains("SBKIT-BOOT uki"), "{booted}");
    eprintln!(
        "signed UKI: marker after {:.1?}",
        booted.marker_after.unwrap_or_default()
    );

    let refused = common::uki_guest::boot_efi(w, "enroll_ovmf.foreign", &foreign, &vars);
    common::uki_guest::assert_refused(&refused, "a UKI signed by another key set");
    eprintln!(
        "foreign UKI: refused after {:.1?}",
        refused.marker_after.unwrap_or_default()
    );
}
