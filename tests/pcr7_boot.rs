//! PCR 7 predicted before the boot equals what the firmware measured: OVMF with
//! Secure Boot enforced and swtpm, variable stores written by our `enroll ovmf`
//! and by virt-fw-vars, UKIs on the systemd 252 and 254 stubs; the guest reads
//! its own PCR 7 from the TPM and prints it on the serial console.
//!
//! Three boots cover the matrix: our keys only (252 stub, our store writer), whose
//! guest then appends a second db certificate through efivarfs (an append `.auth`
//! made by efitools, not by us); the same store booted again, whose PCR 7 must equal
//! the value predicted *before* the append was written; and our keys plus
//! Microsoft's (254 stub, virt-fw-vars' store).

mod common;

use std::fs;
use std::path::Path;

use common::guest::Assets;
use common::qemu::{self, BootOutcome, BootSpec, Firmware, Media, Tpm};
use common::rootfs::busybox_rootfs;
use common::tools::{genkey, our_bin, run_ok};
use common::uki_guest::build_uki_on;
use sbkit::efi::varstore::VarStore;
use sbkit::keys::algorithm::DigestAlgorithm;
use sbkit::tpm::pcr7::{self, SecureBootVariables};

const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Prints PCR 7 (sha256); then, for each of `/sbkit/append-db.bin` and
/// `/sbkit/append-dbx.bin` the rootfs carries (efivarfs attributes + an append
/// `.auth`), writes it to that variable and prints the write's exit code; then
/// powers off.
const PCR7_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
if [ -r /sys/class/tpm/tpm0/pcr-sha256/7 ]; then
  echo "SBKIT-PCR pcr7=$(cat /sys/class/tpm/tpm0/pcr-sha256/7)"
else
  echo "SBKIT-PCR pcr7=none"
fi
if [ -r /sbkit/efivarfs.ko ]; then
  insmod /sbkit/efivarfs.ko 2>/dev/null
  E=/sys/firmware/efi/efivars
  mount -t efivarfs efivarfs $E || echo "SBKIT-GUEST: efivarfs mount failed"
  for v in db dbx; do
    [ -r /sbkit/append-$v.bin ] || continue
    F=$E/$v-d719b2cb-3d3a-4596-a3bc-dad00e67656f
    # efivarfs marks the variables immutable; the append must reach the firmware.
    [ -e "$F" ] && chattr -i "$F"
    dd if=/sbkit/append-$v.bin of="$F" bs=1M 2>/dev/null
    echo "SBKIT-APPEND-$v rc=$?"
  done
fi
echo "SBKIT-GUEST: PASS"
poweroff -f
"#;

/// Adds `efivarfs.ko`, the host's `chattr` (with its libraries) and the append
/// payloads `(variable, efivarfs bytes)` to the rootfs at `root`.
fn add_append_writer(root: &Path, appends: &[(&str, Vec<u8>)]) {
    let assets = Assets::locate();
    fs::create_dir_all(root.join("sbkit")).unwrap();
    fs::copy(
        assets.module("kernel/fs/efivarfs/efivarfs.ko"),
        root.join("sbkit/efivarfs.ko"),
    )
    .unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/insmod")).unwrap();
    common::guest::copy_host_binary(&qemu::require_tool("chattr"), root);
    for (variable, payload) in appends {
        fs::write(root.join(format!("sbkit/append-{variable}.bin")), payload).unwrap();
    }
}

/// Boots `efi` as the removable-media loader with `vars` and a fresh swtpm.
fn boot(work: &Path, name: &str, efi: &Path, vars: &Path) -> BootOutcome {
    let esp = work.join(format!("esp-{name}"));
    fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    fs::copy(efi, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    let run_vars = work.join(format!("run-{name}.fd"));
    fs::copy(vars, &run_vars).unwrap();
    let serial =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pcr7_boot.{name}.serial.log"));
    let mut spec = BootSpec::new(
        Firmware::ovmf_secboot(),
        &run_vars,
        Media::EspDir(esp),
        &serial,
    );
    let state = work.join(format!("tpm-{name}"));
    fs::create_dir_all(&state).unwrap();
    spec.tpm = Some(Tpm { state_dir: state });
    let started = std::time::Instant::now();
    let outcome = qemu::boot(&spec);
    eprintln!("boot {name}: {:.1} s", started.elapsed().as_secs_f64());
    outcome
}

/// The prediction for booting `efi` with the variables of the store `vars`.
fn predict_from_store(vars: &Path, efi: &Path) -> pcr7::Pcr7Prediction {
    let store = VarStore::parse(fs::read(vars).unwrap()).expect("our reader parses the store");
    let variables = SecureBootVariables::from_varstore(&store, true);
    let authority = pcr7::authority_for_image(
        variables.db.as_deref().expect("db in the store"),
        &fs::read(efi).unwrap(),
    )
    .expect("db parses")
    .expect("a db certificate authorises the UKI");
    pcr7::predict(&variables, &[authority])
}

fn assert_guest_pcr7(outcome: &BootOutcome, predicted: &pcr7::Pcr7Prediction, what: &str) {
    outcome.assert_success();
    let measured = outcome.value("SBKIT-PCR", "pcr7").unwrap_or_default();
    assert_eq!(
        measured.to_lowercase(),
        predicted.value(DigestAlgorithm::Sha256).unwrap(),
        "{what}: the guest's PCR 7 (left) differs from the prediction (right); events: {:#?}\n{outcome}",
        predicted.events
    );
}

#[test]
fn predicted_pcr7_equals_the_guests_for_both_stubs_and_both_store_writers() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = w.join("rootfs");
    busybox_rootfs(&root, PCR7_INIT);

    // Our keys only, 252 stub, the store written by our `enroll ovmf`.
    let ours = w.join("ours");
    genkey("Acme Corp", &ours, &["--microsoft", "none"]);
    let efi252 = build_uki_on(&root, &ours, &w.join("build252"), 252);
    let vars_ours = w.join("vars-ours.fd");
    run_ok(
        our_bin("enroll")
            .args(["ovmf", "--template", OVMF_VARS, "-k"])
            .arg(&ours)
            .arg("-o")
            .arg(&vars_ours),
    );
    let predicted = predict_from_store(&vars_ours, &efi252);
    // The key directory's lists are exactly what the store holds for PK, KEK and db
    // (`enroll ovmf` adds only OVMF's placeholder dbx when the directory has none).
    let mut from_dir = SecureBootVariables::from_key_dir(&ours).unwrap();
    let store = VarStore::parse(fs::read(&vars_ours).unwrap()).unwrap();
    let in_store = SecureBootVariables::from_varstore(&store, true);
    assert_eq!(
        (&from_dir.pk, &from_dir.kek, &from_dir.db),
        (&in_store.pk, &in_store.kek, &in_store.db),
        "key directory vs. enrolled store"
    );
    assert!(from_dir.dbx.is_none() && in_store.dbx.is_some());
    from_dir.dbx = in_store.dbx.clone();
    let authority = pcr7::authority_for_image(
        &fs::read(ours.join("db.esl")).unwrap(),
        &fs::read(&efi252).unwrap(),
    )
    .unwrap()
    .expect("our db authorises our UKI");
    assert_eq!(
        pcr7::predict(&from_dir, &[authority]).banks,
        predicted.banks
    );
    // A second db certificate and a dbx entry revoking one UKI, appended from
    // inside the guest with `genkey append` updates signed by our KEK (their bytes
    // equal efitools' in lifecycle_append.rs). PCR 7 for the next boot is predicted
    // from the store as it is now plus the planned appends, before anything is written.
    let other = w.join("other");
    genkey("Other Corp", &other, &["--microsoft", "none"]);
    let new_esl = w.join("db-append.esl");
    let append_auth = w.join("db-append.auth");
    run_ok(
        our_bin("genkey")
            .args(["append", "db", "-k"])
            .arg(&ours)
            .arg("--cert")
            .arg(other.join("db.pem"))
            .arg("-o")
            .arg(&append_auth),
    );
    let revoked = build_uki_on(&root, &ours, &w.join("build-revoked"), 254);
    let dbx_auth = w.join("dbx-append.auth");
    run_ok(
        our_bin("genkey")
            .args(["append", "dbx", "-k"])
            .arg(&ours)
            .arg("--image")
            .arg(&revoked)
            .arg("-o")
            .arg(&dbx_auth),
    );

    // The plan through the command line, from the efitools `.auth` itself.
    let pcrlock = w.join("after.pcrlock");
    let out = run_ok(
        our_bin("enroll")
            .args(["pcr7", "--json", "--vars"])
            .arg(&vars_ours)
            .arg("--image")
            .arg(&efi252)
            .arg("--append-db")
            .arg(&append_auth)
            .arg("--append-dbx")
            .arg(&dbx_auth)
            .arg("--pcrlock")
            .arg(&pcrlock),
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json report");
    let sha256 = |p: &serde_json::Value| -> String {
        p["banks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b[0] == "sha256")
            .map(|b| b[1].as_str().unwrap().to_string())
            .expect("a sha256 bank")
    };
    assert_eq!(
        plan["changes"], true,
        "a db append must change PCR 7\n{plan}"
    );
    assert_eq!(
        sha256(&plan["before"]),
        predicted.value(DigestAlgorithm::Sha256).unwrap()
    );
    let predicted_after = sha256(&plan["after"]);
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(&pcrlock).unwrap()).unwrap();
    assert_eq!(lock["records"].as_array().map(Vec::len), Some(7), "{lock}");
    let mut planned = in_store.clone();
    planned.db = Some(
        pcr7::append_signature_lists(
            "db",
            in_store.db.as_deref().unwrap(),
            &fs::read(&new_esl).unwrap(),
        )
        .unwrap(),
    );

    let appender = w.join("rootfs-append");
    busybox_rootfs(&appender, PCR7_INIT);
    // DB_ATTRIBUTES | EFI_VARIABLE_APPEND_WRITE, then the .auth, as efivarfs takes it.
    let payload = |auth: &Path| common::guest::efivarfs_payload(0x67, &fs::read(auth).unwrap());
    add_append_writer(
        &appender,
        &[("db", payload(&append_auth)), ("dbx", payload(&dbx_auth))],
    );
    let efi_append = build_uki_on(&appender, &ours, &w.join("build-append"), 252);
    let first = boot(w, "append-1", &efi_append, &vars_ours);
    assert_guest_pcr7(&first, &predicted, "before the append");
    for variable in ["db", "dbx"] {
        assert_eq!(
            first
                .value(&format!("SBKIT-APPEND-{variable}"), "rc")
                .as_deref(),
            Some("0"),
            "the firmware must take our KEK-signed {variable} append\n{first}"
        );
    }
    let after_vars = w.join("run-append-1.fd");
    let second = boot(w, "append-2", &efi_append, &after_vars);
    second.assert_success();
    assert_eq!(
        second.value("SBKIT-PCR", "pcr7").unwrap_or_default().to_lowercase(),
        predicted_after,
        "after the append: the guest's PCR 7 (left) differs from `enroll pcr7`'s prediction made before it\n{second}"
    );
    // The firmware's db now equals the planned value, byte for byte.
    let store_after = VarStore::parse(fs::read(w.join("run-append-2.fd")).unwrap()).unwrap();
    assert_eq!(
        SecureBootVariables::from_varstore(&store_after, true).db,
        planned.db,
        "db after the append vs. the planned value"
    );
    // The UKI whose digest went into dbx is refused now; the other one booted above.
    common::uki_guest::assert_refused(
        &boot(w, "revoked", &revoked, &w.join("run-append-2.fd")),
        "a UKI whose Authenticode digest was appended to dbx",
    );

    // Our keys plus Microsoft's, 254 stub, the store written by virt-fw-vars.
    let with_ms = w.join("with-ms");
    genkey("Acme Corp", &with_ms, &[]);
    let efi254 = build_uki_on(&root, &with_ms, &w.join("build254"), 254);
    let vars_ms = common::uki_guest::enrolled_store(w, &with_ms);
    let predicted_ms = predict_from_store(&vars_ms, &efi254);
    assert_ne!(
        predicted_ms.banks, predicted.banks,
        "different key sets must predict different PCR 7 values"
    );
    let outcome = boot(w, "ms-254", &efi254, &vars_ms);
    assert_guest_pcr7(&outcome, &predicted_ms, "virt-fw-vars store, 254 stub");
}
