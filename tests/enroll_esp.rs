//! `enroll esp`: systemd-boot's auto-enroll layout. The `.auth` files land byte for byte
//! in `loader/keys/NAME/`, `loader.conf` gets its `secure-boot-enroll` line (other lines
//! kept), the value matches the systemd-boot on the ESP (if-safe needs 253+), and a bad
//! key directory or an unwritable ESP changes nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::guest::Assets;
use common::tools::{genkey, our_bin, run_fails, run_ok};
use serde_json::Value;

fn esp_cmd(esp: &Path, keys: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = our_bin("enroll");
    c.arg("esp").arg(esp).arg("-k").arg(keys).args(extra);
    c
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn esp_with_sdboot(work: &Path, name: &str, generation: Option<u32>) -> PathBuf {
    let esp = work.join(name);
    fs::create_dir_all(esp.join("EFI/systemd")).unwrap();
    if let Some(g) = generation {
        fs::copy(
            Assets::locate().systemd_boot(g),
            esp.join("EFI/systemd/systemd-bootx64.efi"),
        )
        .unwrap();
    }
    esp
}

#[test]
fn writes_the_auto_enroll_files_and_the_loader_conf_line() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);

    // A fresh ESP with systemd-boot 254: if-safe by default.
    let esp = esp_with_sdboot(w, "esp254", Some(254));
    let r: Value =
        serde_json::from_slice(&run_ok(&mut esp_cmd(&esp, &keys, &["--json"])).stdout).unwrap();
    assert_eq!(r["secure_boot_enroll"], "if-safe", "{r:#}");
    assert!(r["systemd_boot"].as_str().unwrap().contains("254"), "{r:#}");
    for f in ["PK", "KEK", "db"] {
        assert!(
            fs::read(esp.join(format!("loader/keys/auto/{f}.auth"))).unwrap()
                == fs::read(keys.join(format!("{f}.auth"))).unwrap(),
            "{f}.auth must be copied byte for byte"
        );
    }
    assert_eq!(
        fs::read_to_string(esp.join("loader/loader.conf")).unwrap(),
        "secure-boot-enroll if-safe\n"
    );
    assert!(
        !tree(&esp).iter().any(|p| p.contains("sbkit-tmp")),
        "no staging files left: {:?}",
        tree(&esp)
    );

    // An existing loader.conf: the line is replaced in place, the rest kept; a named set.
    fs::write(
        esp.join("loader/loader.conf"),
        "default norole.conf\ntimeout 5\nsecure-boot-enroll off\neditor no\n",
    )
    .unwrap();
    run_ok(&mut esp_cmd(
        &esp,
        &keys,
        &["--name", "acme", "--secure-boot-enroll", "force"],
    ));
    assert_eq!(
        fs::read_to_string(esp.join("loader/loader.conf")).unwrap(),
        "default norole.conf\ntimeout 5\nsecure-boot-enroll force\neditor no\n"
    );
    assert!(esp.join("loader/keys/acme/db.auth").is_file());
    // Without --secure-boot-enroll an existing line stays.
    let r: Value =
        serde_json::from_slice(&run_ok(&mut esp_cmd(&esp, &keys, &["--json"])).stdout).unwrap();
    assert_eq!(r["secure_boot_enroll"], "force");
    assert_eq!(r["kept_existing_line"], true);

    // systemd-boot 252 does not know if-safe: default manual, and if-safe is refused.
    let old = esp_with_sdboot(w, "esp252", Some(252));
    let err = run_fails(&mut esp_cmd(
        &old,
        &keys,
        &["--secure-boot-enroll", "if-safe"],
    ));
    assert!(
        err.contains("needs systemd-boot 253") && err.contains("252"),
        "{err}"
    );
    assert_eq!(
        tree(&old),
        ["EFI", "EFI/systemd", "EFI/systemd/systemd-bootx64.efi"]
    );
    run_ok(&mut esp_cmd(&old, &keys, &[]));
    assert_eq!(
        fs::read_to_string(old.join("loader/loader.conf")).unwrap(),
        "secure-boot-enroll manual\n"
    );
}

#[test]
fn bad_keys_and_unwritable_esps_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let esp = esp_with_sdboot(w, "esp", None);

    // Keys missing.
    let partial = w.join("partial");
    fs::create_dir(&partial).unwrap();
    fs::copy(keys.join("db.auth"), partial.join("db.auth")).unwrap();
    let err = run_fails(&mut esp_cmd(&esp, &partial, &[]));
    assert!(err.contains("lacks PK.auth, KEK.auth"), "{err}");
    // A tampered db.auth (one byte of the list): its KEK signature no longer holds.
    let tampered = w.join("tampered");
    fs::create_dir(&tampered).unwrap();
    for f in ["PK.auth", "KEK.auth", "db.auth"] {
        fs::copy(keys.join(f), tampered.join(f)).unwrap();
    }
    let mut db = fs::read(tampered.join("db.auth")).unwrap();
    let last = db.len() - 1;
    db[last] ^= 0x80;
    fs::write(tampered.join("db.auth"), db).unwrap();
    let err = run_fails(&mut esp_cmd(&esp, &tampered, &[]));
    assert!(
        err.contains("db.auth is not signed by any certificate in KEK"),
        "{err}"
    );
    assert_eq!(tree(&esp), ["EFI", "EFI/systemd"], "nothing written");

    // An ESP that takes no files (procfs, even for root), and one that is not there.
    let err = run_fails(&mut esp_cmd(Path::new("/proc/sys"), &keys, &[]));
    assert!(
        err.contains("is not writable") && err.contains("Nothing on the ESP was changed"),
        "{err}"
    );
    let err = run_fails(&mut esp_cmd(&w.join("nowhere"), &keys, &[]));
    assert!(err.contains("is not a directory"), "{err}");
    let err = run_fails(&mut esp_cmd(&esp, &keys, &["--name", "../x"]));
    assert!(err.contains("--name"), "{err}");
    assert_eq!(tree(&esp), ["EFI", "EFI/systemd"], "nothing written");
}
