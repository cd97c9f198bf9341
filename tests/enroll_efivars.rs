//! `enroll efivars`: a real guest in setup mode (a store from `enroll ovmf --setup-mode`
//! holding another key set's KEK and db) runs our `enroll` binary from its initramfs; the
//! next boot with the same variable store is in user mode with Secure Boot on and holds
//! exactly our PK, KEK and db, refuses a second enrollment, boots a UKI signed by our db
//! key and refuses an unsigned one. The option-ROM guard is judged on TCG event logs
//! built here byte by byte from the PC Client spec; the refusals and the report of a
//! write failing midway run against stand-in efivarfs directories.
//!
//! Needs scripts/install-deps.sh (QEMU, OVMF, virt-fw-vars) and scripts/fetch-assets.sh.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::guest::{Assets, Initramfs};
use common::qemu::{self, BootSpec, Firmware, Media};
use common::tools::{genkey, our_bin, require_tool, run_fails, run_ok};
use serde_json::Value;

const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
const SECURITY_DB: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

// TCG PC Client Platform Firmware Profile constants.
const EV_NO_ACTION: u32 = 0x3;
const EV_SEPARATOR: u32 = 0x4;
const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
const TPM_ALG_SHA1: u16 = 0x0004;
const TPM_ALG_SHA256: u16 = 0x000b;

/// The log header: a `TCG_PCClientPCREvent` (SHA-1 format) of type EV_NO_ACTION whose
/// data is `TCG_EfiSpecIdEvent` "Spec ID Event03" declaring the SHA-1 and SHA-256 banks.
fn log_header() -> Vec<u8> {
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
    spec.extend_from_slice(&[0, 2, 0]); // specVersionMinor 0, Major 2, errata 0
    spec.push(2); // uintnSize: UINT64
    spec.extend_from_slice(&2u32.to_le_bytes()); // numberOfAlgorithms
    for (alg, size) in [(TPM_ALG_SHA1, 20u16), (TPM_ALG_SHA256, 32)] {
        spec.extend_from_slice(&alg.to_le_bytes());
        spec.extend_from_slice(&size.to_le_bytes());
    }
    spec.push(0); // vendorInfoSize
    let mut out = Vec::new();
    out.extend_from_slice(&0u32.to_le_bytes()); // PCRIndex
    out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
    out.extend_from_slice(&[0; 20]); // SHA-1 digest: zero
    out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    out.extend_from_slice(&spec);
    out
}

/// Appends a `TCG_PCR_EVENT2` with SHA-1 and SHA-256 digests.
fn push_event(log: &mut Vec<u8>, pcr: u32, event_type: u32, sha256: [u8; 32], data: &[u8]) {
    log.extend_from_slice(&pcr.to_le_bytes());
    log.extend_from_slice(&event_type.to_le_bytes());
    log.extend_from_slice(&2u32.to_le_bytes()); // TPML_DIGEST_VALUES.count
    log.extend_from_slice(&TPM_ALG_SHA1.to_le_bytes());
    log.extend_from_slice(&[0x11; 20]);
    log.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
    log.extend_from_slice(&sha256);
    log.extend_from_slice(&(data.len() as u32).to_le_bytes());
    log.extend_from_slice(data);
}

/// `UEFI_IMAGE_LOAD_EVENT` of a driver from a PCI option ROM:
/// PciRoot(0x0)/Pci(0x2,0x0)/Offset(0x10000,0x1ffff).
fn option_rom_image_load() -> Vec<u8> {
    let mut path = Vec::new();
    path.extend_from_slice(&[2, 1, 12, 0]); // ACPI device path, 12 bytes
    path.extend_from_slice(&0x0a03_41d0u32.to_le_bytes()); // HID PNP0A03
    path.extend_from_slice(&0u32.to_le_bytes()); // UID 0
    path.extend_from_slice(&[1, 1, 6, 0, 0, 2]); // PCI: function 0, device 2
    path.extend_from_slice(&[4, 8, 24, 0]); // relative offset range
    path.extend_from_slice(&0u32.to_le_bytes());
    path.extend_from_slice(&0x10000u64.to_le_bytes());
    path.extend_from_slice(&0x1ffffu64.to_le_bytes());
    path.extend_from_slice(&[0x7f, 0xff, 4, 0]); // end
    let mut data = Vec::new();
    data.extend_from_slice(&0x7e00_0000u64.to_le_bytes()); // ImageLocationInMemory
    data.extend_from_slice(&0x1_0000u64.to_le_bytes()); // ImageLengthInMemory
    data.extend_from_slice(&0u64.to_le_bytes()); // ImageLinkTimeAddress
    data.extend_from_slice(&(path.len() as u64).to_le_bytes()); // LengthOfDevicePath
    data.extend_from_slice(&path);
    data
}

/// A log of a boot without option ROMs (separators and a boot application), and the
/// same with a boot-services driver loaded from a PCI option ROM.
fn event_logs(dir: &Path) -> (PathBuf, PathBuf) {
    let mut clean = log_header();
    for pcr in 0..8 {
        push_event(&mut clean, pcr, EV_SEPARATOR, [0x22; 32], &[0; 4]);
    }
    push_event(
        &mut clean,
        4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        [0x33; 32],
        &option_rom_image_load(),
    );
    let mut with_rom = log_header();
    push_event(
        &mut with_rom,
        2,
        EV_EFI_BOOT_SERVICES_DRIVER,
        [0xab; 32],
        &option_rom_image_load(),
    );
    for pcr in 0..8 {
        push_event(&mut with_rom, pcr, EV_SEPARATOR, [0x22; 32], &[0; 4]);
    }
    let (a, b) = (dir.join("clean.log"), dir.join("rom.log"));
    fs::write(&a, clean).unwrap();
    fs::write(&b, with_rom).unwrap();
    (a, b)
}

/// A stand-in efivarfs directory with SetupMode set to `setup_mode`.
fn fake_efivarfs(dir: &Path, setup_mode: u8) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join(format!("SetupMode-{GLOBAL}")),
        [0x06, 0, 0, 0, setup_mode],
    )
    .unwrap();
    fs::write(dir.join(format!("SecureBoot-{GLOBAL}")), [0x06, 0, 0, 0, 0]).unwrap();
    dir.to_path_buf()
}

fn efivars(keys: &Path, efivarfs: &Path, eventlog: &Path, extra: &[&str]) -> Command {
    let mut c = our_bin("enroll");
    c.arg("efivars")
        .arg("-k")
        .arg(keys)
        .arg("--efivarfs")
        .arg(efivarfs)
        .arg("--eventlog")
        .arg(eventlog)
        .args(extra);
    c
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).expect("--json report")
}

/// Names of the key variables in a directory (stand-in efivarfs).
fn written_vars(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("SetupMode") && !n.starts_with("SecureBoot"))
        .collect();
    names.sort();
    names
}

#[test]
fn option_rom_guard_follows_the_event_log_and_the_microsoft_ca() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (clean, rom) = event_logs(w);
    let bare = w.join("bare");
    genkey("Bare Corp", &bare, &["--microsoft", "none"]);
    let with_ms = w.join("ms");
    genkey("MS Corp", &with_ms, &["--microsoft", "option-rom"]);
    let efi = fake_efivarfs(&w.join("efivars"), 1);

    // Option ROMs loaded, no Microsoft CA in db: refused, with the driver named.
    let err = run_fails(&mut efivars(&bare, &efi, &rom, &[]));
    assert!(
        err.contains("refusing to enroll")
            && err.contains("EV_EFI_BOOT_SERVICES_DRIVER")
            && err.contains("PciRoot(0x0)/Pci(0x2,0x0)/Offset(0x10000,0x1ffff)")
            && err.contains(&"ab".repeat(32))
            && err.contains("--yes-this-might-brick-my-machine"),
        "{err}"
    );
    assert!(written_vars(&efi).is_empty(), "nothing may be written");
    // No log at all: nothing is known, so refused too.
    let err = run_fails(&mut efivars(&bare, &efi, &w.join("no.log"), &["--dry-run"]));
    assert!(
        err.contains("cannot tell whether the firmware loads option ROMs"),
        "{err}"
    );
    // A truncated log is not evidence either.
    let cut = w.join("cut.log");
    let rom_bytes = fs::read(&rom).unwrap();
    fs::write(&cut, &rom_bytes[..rom_bytes.len() - 7]).unwrap();
    let err = run_fails(&mut efivars(&bare, &efi, &cut, &["--dry-run"]));
    assert!(err.contains("malformed TPM event log"), "{err}");

    // No option ROMs in the log: passes.
    let o = run_ok(&mut efivars(&bare, &efi, &clean, &["--dry-run", "--json"]));
    assert_eq!(json(&o)["option_roms"]["verdict"], "no-option-roms");
    // Option ROMs, but db keeps Microsoft's option-ROM CAs: passes.
    let o = run_ok(&mut efivars(&with_ms, &efi, &rom, &["--dry-run", "--json"]));
    let r = json(&o);
    assert_eq!(r["option_roms"]["verdict"], "microsoft-ca-in-db", "{r:#}");
    assert_eq!(r["option_roms"]["drivers"].as_array().unwrap().len(), 1);
    // The frightening flag overrides, with a warning.
    let o = run_ok(&mut efivars(
        &bare,
        &efi,
        &rom,
        &["--dry-run", "--json", "--yes-this-might-brick-my-machine"],
    ));
    assert_eq!(json(&o)["option_rom_guard_overridden"], true);
    assert!(String::from_utf8_lossy(&o.stderr).contains("overridden"));
    assert!(written_vars(&efi).is_empty(), "a dry run writes nothing");
}

#[test]
fn refusals_and_a_write_failing_midway_say_what_state_the_machine_is_in() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (clean, _) = event_logs(w);
    let acme = w.join("acme");
    genkey("Acme Corp", &acme, &[]);

    // Not in setup mode.
    let user = fake_efivarfs(&w.join("user"), 0);
    let err = run_fails(&mut efivars(&acme, &user, &clean, &[]));
    assert!(
        err.contains("not in setup mode") && err.contains("Nothing was written"),
        "{err}"
    );
    assert!(written_vars(&user).is_empty());
    // efivarfs absent: an empty directory, and no directory.
    let empty = w.join("empty");
    fs::create_dir(&empty).unwrap();
    let err = run_fails(&mut efivars(&acme, &empty, &clean, &[]));
    assert!(err.contains("no SetupMode variable"), "{err}");
    let err = run_fails(&mut efivars(&acme, &w.join("missing"), &clean, &[]));
    assert!(
        err.contains("does not exist") && err.contains("mount -t efivarfs"),
        "{err}"
    );
    let err = run_fails(our_bin("enroll").args(["status", "--efivarfs"]).arg(&empty));
    assert!(err.contains("no SetupMode variable"), "{err}");

    let setup = fake_efivarfs(&w.join("setup"), 1);
    // Keys missing.
    let partial = w.join("partial");
    fs::create_dir(&partial).unwrap();
    fs::copy(acme.join("PK.auth"), partial.join("PK.auth")).unwrap();
    let err = run_fails(&mut efivars(&partial, &setup, &clean, &[]));
    assert!(err.contains("lacks KEK.auth, db.auth"), "{err}");
    // A db.auth that KEK did not sign (another key set's): setup mode would take it
    // silently, and every later db update would then fail.
    let other = w.join("other");
    genkey("Other Corp", &other, &[]);
    let mixed = w.join("mixed");
    fs::create_dir(&mixed).unwrap();
    for f in ["PK.auth", "KEK.auth", "PK.esl", "KEK.esl"] {
        fs::copy(acme.join(f), mixed.join(f)).unwrap();
    }
    fs::copy(other.join("db.auth"), mixed.join("db.auth")).unwrap();
    let err = run_fails(&mut efivars(&mixed, &setup, &clean, &[]));
    assert!(
        err.contains("db.auth is not signed by any certificate in KEK"),
        "{err}"
    );
    // One changed byte in the signed list.
    let tampered = w.join("tampered");
    fs::create_dir(&tampered).unwrap();
    for f in ["PK.auth", "KEK.auth", "db.auth"] {
        fs::copy(acme.join(f), tampered.join(f)).unwrap();
    }
    let mut kek = fs::read(tampered.join("KEK.auth")).unwrap();
    let last = kek.len() - 1;
    kek[last] ^= 1;
    fs::write(tampered.join("KEK.auth"), kek).unwrap();
    let err = run_fails(&mut efivars(&tampered, &setup, &clean, &[]));
    assert!(
        err.contains("KEK.auth is not signed by any certificate in PK"),
        "{err}"
    );
    assert!(written_vars(&setup).is_empty());

    // A full run into the stand-in: db, KEK, PK, each 0x27 + the .auth file.
    let o = run_ok(&mut efivars(&acme, &setup, &clean, &["--json"]));
    assert_eq!(json(&o)["written"], serde_json::json!(["db", "KEK", "PK"]));
    for (name, guid) in [("PK", GLOBAL), ("KEK", GLOBAL), ("db", SECURITY_DB)] {
        let mut expected = vec![0x27, 0, 0, 0];
        expected.extend(fs::read(acme.join(format!("{name}.auth"))).unwrap());
        assert!(
            fs::read(setup.join(format!("{name}-{guid}"))).unwrap() == expected,
            "{name}: efivarfs payload must be attributes 0x27 then the .auth file"
        );
    }
    let status = json(&run_ok(
        our_bin("enroll")
            .args(["status", "--json", "--efivarfs"])
            .arg(&setup),
    ));
    assert_eq!(status["setup_mode"], true);
    assert_eq!(status["secure_boot"], false);

    // KEK cannot be written (a directory stands in its way): db is in, KEK and PK are not.
    let midway = fake_efivarfs(&w.join("midway"), 1);
    fs::create_dir(midway.join(format!("KEK-{GLOBAL}"))).unwrap();
    let err = run_fails(&mut efivars(&acme, &midway, &clean, &[]));
    assert!(
        err.contains("writing KEK failed")
            && err.contains("written: db; KEK NOT written; not attempted: PK")
            && err.contains("still in setup mode")
            && err.contains("run `enroll efivars` again"),
        "{err}"
    );
    assert!(midway.join(format!("db-{SECURITY_DB}")).is_file());
    assert!(!midway.join(format!("PK-{GLOBAL}")).exists());
}

/// The guest: on the setup-mode boot, enroll through efivarfs and report; on the
/// user-mode boot, try again (must be refused) and report the status.
const GUEST_SCRIPT: &str = r#"
E=/sys/firmware/efi/efivars
efivar_hex() {
  if cat "$E/$1-8be4df61-93ca-11d2-aa0d-00e098032b8c" >/tmp/efivar 2>/dev/null; then
    od -An -v -tx1 -j4 /tmp/efivar | tr -d ' \n'
  else
    echo absent
  fi
}
if [ "$(efivar_hex SetupMode)" = 01 ]; then
  enroll status
  enroll efivars -k /keys
  echo "SBKIT-TEST enroll rc=$? setupmode=$(efivar_hex SetupMode)"
else
  enroll efivars -k /keys --dry-run 2>/tmp/err
  rc=$?
  cat /tmp/err
  grep -q "not in setup mode" /tmp/err && refused=yes || refused=no
  echo "SBKIT-TEST again rc=$rc refused=$refused"
  enroll status
fi
"#;

#[test]
fn a_guest_in_setup_mode_enrolls_through_efivarfs_and_the_firmware_enforces_it() {
    let started = std::time::Instant::now();
    let assets = Assets::locate();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let acme = w.join("acme");
    genkey("Acme Corp", &acme, &[]);
    let other = w.join("other");
    genkey("Other Corp", &other, &[]);

    // Setup mode, with another key set's KEK and db in place: our writes must replace them.
    let vars = w.join("vars.fd");
    run_ok(
        our_bin("enroll")
            .args(["ovmf", "--setup-mode", "--template"])
            .arg(Firmware::ovmf_secboot().vars_template)
            .arg("-k")
            .arg(&other)
            .arg("-o")
            .arg(&vars),
    );

    // Our enroll, stripped of debug info, with its libraries; the key files in /keys.
    let bin_dir = w.join("bin");
    fs::create_dir(&bin_dir).unwrap();
    let enroll_bin = bin_dir.join("enroll");
    run_ok(
        Command::new(require_tool("strip"))
            .arg("-o")
            .arg(&enroll_bin)
            .arg(env!("CARGO_BIN_EXE_enroll")),
    );
    let mut ramfs = Initramfs::guest(&assets, GUEST_SCRIPT);
    ramfs.host_binary(&enroll_bin);
    for f in ["PK.auth", "KEK.auth", "db.auth", "manifest.json"] {
        ramfs.host_file(&format!("keys/{f}"), &acme.join(f), 0o644);
    }
    let initrd = w.join("initrd.gz");
    ramfs.write_gz(&initrd);

    let boot = |name: &str| {
        let serial = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("enroll_efivars.{name}.serial.log"));
        let mut spec = BootSpec::new(
            Firmware::ovmf_secboot(),
            &vars,
            Media::guest_kernel(&assets, &initrd),
            &serial,
        );
        // Let the guest's writes reach the flash file before QEMU stops.
        spec.stop_on_marker = false;
        qemu::boot(&spec)
    };

    let first = boot("setup");
    first.assert_success();
    assert_eq!(first.efivar("SetupMode").as_deref(), Some("01"), "{first}");
    assert_eq!(first.efivar("SecureBoot").as_deref(), Some("00"), "{first}");
    assert_eq!(
        first.value("SBKIT-TEST enroll", "rc").as_deref(),
        Some("0"),
        "enroll efivars in the guest\n{first}"
    );
    assert_eq!(
        first.value("SBKIT-TEST enroll", "setupmode").as_deref(),
        Some("00"),
        "writing PK ends setup mode at once\n{first}"
    );

    let second = boot("user");
    second.assert_success();
    second.assert_user_mode(true);
    assert_eq!(
        second.value("SBKIT-TEST again", "refused").as_deref(),
        Some("yes"),
        "a second enrollment must be refused outside setup mode\n{second}"
    );

    // The store holds exactly our lists, per our reader and per virt-fw-vars.
    let store = sbkit::efi::varstore::VarStore::parse(fs::read(&vars).unwrap()).unwrap();
    for (name, guid) in [("PK", GLOBAL), ("KEK", GLOBAL), ("db", SECURITY_DB)] {
        let esl = fs::read(acme.join(format!("{name}.esl"))).unwrap();
        let var = store
            .get(name, guid.parse().unwrap())
            .unwrap_or_else(|| panic!("{name} missing from the store"));
        assert!(
            var.data == esl,
            "{name} in the store differs from {name}.esl"
        );
        assert_eq!(var.attributes, 0x27, "{name}");
        // The firmware keeps the .auth file's timestamp for the next update's check.
        let auth = sbkit::efi::AuthenticatedVariable::parse(
            &fs::read(acme.join(format!("{name}.auth"))).unwrap(),
        )
        .unwrap();
        assert_eq!(var.time(), Some(auth.timestamp), "{name} timestamp");
    }
    let vfv = run_ok(
        Command::new(require_tool("virt-fw-vars"))
            .arg("-i")
            .arg(&vars)
            .args(["--output-json", "-"]),
    );
    let vfv: Value = serde_json::from_slice(&vfv.stdout).unwrap();
    let pk = vfv["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "PK")
        .expect("virt-fw-vars sees a PK");
    assert_eq!(
        pk["data"].as_str().unwrap(),
        hex::encode(fs::read(acme.join("PK.esl")).unwrap())
    );
    let status: Value = serde_json::from_slice(
        &run_ok(
            our_bin("enroll")
                .args(["status", "--json", "--vars"])
                .arg(&vars),
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(status["setup_mode"], false, "{status:#}");
    assert_eq!(status["secure_boot"], true, "{status:#}");
    let kek_subjects: Vec<&str> = status["variables"][1]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    assert!(
        kek_subjects.iter().any(|s| s.contains("CN=Acme Corp KEK"))
            && !kek_subjects.iter().any(|s| s.contains("Other Corp")),
        "KEK must be ours only: {kek_subjects:?}"
    );

    // And the firmware now enforces our db: our signed UKI boots, an unsigned one does not.
    let root = w.join("rootfs");
    common::uki_guest::efivar_rootfs(&root);
    let uki = common::uki_guest::build_uki(&root, &acme, &w.join("build"));
    let signed = common::uki_guest::boot_efi(w, "enroll_efivars.signed", &uki, &vars);
    signed.assert_success();
    signed.assert_user_mode(true);
    let unsigned = w.join("unsigned.efi");
    fs::write(
        &unsigned,
        common::uki_guest::strip_signature(&fs::read(&uki).unwrap()),
    )
    .unwrap();
    common::uki_guest::assert_refused(
        &common::uki_guest::boot_efi(w, "enroll_efivars.unsigned", &unsigned, &vars),
        "an unsigned UKI",
    );
    eprintln!(
        "boots: setup {:.1?}, user {:.1?}; test total {:.1?}",
        first.elapsed,
        second.elapsed,
        started.elapsed()
    );
}
