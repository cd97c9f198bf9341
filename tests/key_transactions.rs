//! Key directories, the files enroll writes and build-uki's outputs, under
//! attack and under interruption.
//!
//! - A `COMMIT.json` planted in a key directory's staging area is not
//!   trusted: names that leave the directory (`..`, absolute paths, paths
//!   through a symbolic link) are refused and the file they aim at is untouched.
//! - Every write step is interrupted in turn (`SBKIT_TEST_CRASH_AT=N` aborts
//!   the debug binary at its N-th write step, as a kill or power loss would):
//!   afterwards the state is exactly the old one or exactly the complete new
//!   one — compared byte for byte with an uninterrupted run of the same
//!   command — and no staging area is readable by others.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tools::{genkey, our_bin, run_fails, run_ok};

const EPOCH: &str = "1700000000";
const PASS: &str = "transaction test passphrase";

/// Every file (and link) under `dir`, relative, with its contents (a link's
/// target), leaving out replaced-* (named by the wall clock) and staging.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if rel.starts_with("replaced-")
                || rel.starts_with(".sbkit-staging")
                || rel.starts_with(".sbkit-stage-")
            {
                continue;
            }
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()).into_bytes());
            } else if meta.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn copy_tree(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// Asserts nothing under `dir` lets others into a secret: every staging
/// directory is 0700 and every private key file 0600.
fn assert_no_secret_readable_by_others(dir: &Path, what: &str) {
    fn walk(p: &Path, what: &str) {
        let Ok(entries) = fs::read_dir(p) else { return };
        for e in entries {
            let p = e.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                if name.contains("sbkit-staging") {
                    assert_eq!(mode & 0o077, 0, "{what}: {} is {mode:o}", p.display());
                }
                walk(&p, what);
            } else if meta.is_file()
                && (name.ends_with(".key")
                    || name.ends_with(".age")
                    || name == "tpm2-pcr-private.pem"
                    || name == "COMMIT.json")
            {
                assert_eq!(mode & 0o077, 0, "{what}: {} is {mode:o}", p.display());
            }
        }
    }
    walk(dir, what);
}

/// Runs `cmd` with the N-th write step aborting it; returns whether it ran to completion.
fn run_crashing_at(cmd: &mut Command, n: u32) -> bool {
    let out = cmd
        .env("SBKIT_TEST_CRASH_AT", n.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return true;
    }
    assert!(
        stderr.contains("SBKIT_TEST_CRASH_AT"),
        "crash point {n}: failed for another reason:\n{stderr}"
    );
    false
}

fn plant(dir: &Path, plan: &str, staged: &[(&str, &[u8])]) {
    let staging = dir.join(".sbkit-staging");
    fs::create_dir_all(&staging).unwrap();
    for (name, bytes) in staged {
        let p = staging.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
    fs::write(staging.join("COMMIT.json"), plan).unwrap();
}

#[test]
fn a_planted_commit_plan_cannot_reach_outside_the_key_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // tmp/a/victim is the file an attacker wants replaced; tmp/a/b/keys the key directory.
    let a = tmp.path().join("a");
    let keys = a.join("b/keys");
    genkey("Acme Corp", &keys, &[]);
    let victim = a.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let before = snapshot(&keys);

    // `..`: staging/../../victim is tmp/a/b/victim; keys/../../victim is tmp/a/victim.
    fs::write(a.join("b/victim"), b"attacker's").unwrap();
    plant(
        &keys,
        // (The backup directory two levels down keeps the victim, moved
        // aside, from landing back on the attacker's file: without the check
        // the victim's contents would become the attacker's.)
        r#"{"install":["../../victim"],"displace":[],"backup":"replaced-x/sub/deeper"}"#,
        &[],
    );
    let err = run_fails(
        our_bin("genkey")
            .args(["Acme Corp", "--reuse-keys", "-o"])
            .arg(&keys),
    );
    assert!(
        err.contains("COMMIT.json") && err.contains("../../victim") && err.contains("`..`"),
        "{err}"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(fs::read(a.join("b/victim")).unwrap(), b"attacker's");
    fs::remove_dir_all(keys.join(".sbkit-staging")).unwrap();

    // An absolute path, in install and in displace (which would move the victim away).
    for plan in [
        format!(
            r#"{{"install":["{}"],"displace":[],"backup":"replaced-x"}}"#,
            victim.display()
        ),
        format!(
            r#"{{"install":[],"displace":["{}"],"backup":"replaced-x"}}"#,
            victim.display()
        ),
        // A backup directory outside.
        r#"{"install":["PK.pem"],"displace":[],"backup":"../../x"}"#.to_string(),
    ] {
        plant(&keys, &plan, &[("PK.pem", b"attacker's")]);
        let err = run_fails(
            our_bin("genkey")
                .args(["Acme Corp", "--reuse-keys", "-o"])
                .arg(&keys),
        );
        assert!(err.contains("COMMIT.json"), "{plan}: {err}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "{plan}");
        fs::remove_dir_all(keys.join(".sbkit-staging")).unwrap();
    }

    // A name through a symbolic link in the key directory.
    std::os::unix::fs::symlink(&a, keys.join("link")).unwrap();
    plant(
        &keys,
        r#"{"install":["link/victim"],"displace":[],"backup":"replaced-x"}"#,
        &[("link/victim", b"attacker's")],
    );
    let err = run_fails(
        our_bin("genkey")
            .args(["Acme Corp", "--reuse-keys", "-o"])
            .arg(&keys),
    );
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    fs::remove_dir_all(keys.join(".sbkit-staging")).unwrap();
    fs::remove_file(keys.join("link")).unwrap();

    // A staging directory that is itself a link.
    std::os::unix::fs::symlink(&a, keys.join(".sbkit-staging")).unwrap();
    let err = run_fails(
        our_bin("genkey")
            .args(["Acme Corp", "--reuse-keys", "-o"])
            .arg(&keys),
    );
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(a.join("b").is_dir(), "nothing behind the link was removed");
    fs::remove_file(keys.join(".sbkit-staging")).unwrap();

    // The key directory itself never changed.
    assert_eq!(snapshot(&keys), before);
}

/// Interrupts `genkey ARGS -o DIR` (run over a copy of `old`) at write
/// steps 1, 1+stride, 1+2·stride, … until one run completes; after each
/// interruption and the recovery the next reader runs, the directory equals
/// the old set or the complete new one exactly (`.age` files: same names,
/// since age encryption is randomised; they are checked to open to the same keys).
fn genkey_interrupted_everywhere(
    old: &Path,
    args: &[&str],
    work: &Path,
    hardened: bool,
    stride: u32,
) {
    let strip_age = |s: BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        s.into_iter()
            .map(|(k, v)| {
                if k.ends_with(".age") {
                    (k, b"age".to_vec())
                } else {
                    (k, v)
                }
            })
            .collect()
    };
    let cmd = |dir: &Path| {
        let mut c = our_bin("genkey");
        c.args(args)
            .arg("-o")
            .arg(dir)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("SBKIT_KEY_PASSPHRASE", PASS);
        c
    };
    let complete = work.join("complete");
    copy_tree(old, &complete);
    run_ok(&mut cmd(&complete));
    let old_state = strip_age(snapshot(old));
    let new_state = strip_age(snapshot(&complete));
    assert_ne!(old_state, new_state, "the run must change something");

    let (mut saw_old, mut saw_new) = (0, 0);
    for n in (1..).step_by(stride as usize) {
        let dir = work.join(format!("run{n}"));
        copy_tree(old, &dir);
        let finished = run_crashing_at(&mut cmd(&dir), n);
        assert_no_secret_readable_by_others(&dir, &format!("crash point {n}"));
        // What the next reader does first.
        sbkit::store::atomic::recover(&dir).unwrap();
        assert!(!dir.join(".sbkit-staging").exists());
        let got = strip_age(snapshot(&dir));
        if got == old_state {
            saw_old += 1;
        } else if got == new_state {
            saw_new += 1;
            if hardened {
                // The encrypted keys open to the same keys as the complete run's.
                for role in ["pk/PK", "kek/KEK", "db/db"] {
                    let rel = format!("secureboot/{role}.key.age");
                    let open = |d: &Path| {
                        let (_, plain) = sbkit::backup::decrypt(
                            &fs::read(d.join(&rel)).unwrap(),
                            PASS.as_bytes(),
                            &rel,
                        )
                        .unwrap();
                        plain.to_vec()
                    };
                    assert_eq!(open(&dir), open(&complete), "crash point {n}: {rel}");
                }
            }
        } else {
            let diff: Vec<&String> = got
                .keys()
                .chain(new_state.keys())
                .filter(|k| got.get(*k) != new_state.get(*k) && got.get(*k) != old_state.get(*k))
                .collect();
            panic!("crash point {n}: a mix of old and new: {diff:?}");
        }
        fs::remove_dir_all(&dir).unwrap();
        if finished {
            break;
        }
    }
    assert!(
        saw_old >= 1 && saw_new >= 1,
        "old {saw_old}, new {saw_new}: both outcomes must occur"
    );
}

#[test]
fn genkey_interrupted_at_every_step_leaves_the_old_set_or_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    run_ok(
        our_bin("genkey")
            .args(["Acme Corp", "-o"])
            .arg(&old)
            .env("SOURCE_DATE_EPOCH", EPOCH),
    );
    // Same keys, new certificates, lists and .auth files (deterministic for
    // the same keys and SOURCE_DATE_EPOCH).
    genkey_interrupted_everywhere(
        &old,
        &["Beta Corp", "--reuse-keys", "--microsoft", "none"],
        tmp.path(),
        false,
        1,
    );
}

#[test]
fn hardened_genkey_interrupted_at_every_step_leaves_the_old_set_or_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    run_ok(
        our_bin("genkey")
            .args([
                "Acme Corp",
                "--layout",
                "hardened",
                "--passphrase",
                "env:SBKIT_KEY_PASSPHRASE",
                "-o",
            ])
            .arg(&old)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("SBKIT_KEY_PASSPHRASE", PASS),
    );
    genkey_interrupted_everywhere(
        &old,
        &[
            "Beta Corp",
            "--layout",
            "hardened",
            "--passphrase",
            "env:SBKIT_KEY_PASSPHRASE",
            "--reuse-keys",
            "--microsoft",
            "none",
        ],
        tmp.path(),
        true,
        // Every run decrypts and re-encrypts four keys (scrypt, seconds each):
        // every 23rd step, across staging, the marker and the installation
        // (the flat test above takes every step of the same transaction code).
        23,
    );
}

#[test]
fn enroll_esp_interrupted_at_every_step_leaves_the_old_key_set_or_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let (keys_a, keys_b) = (w.join("a"), w.join("b"));
    genkey("Acme Corp", &keys_a, &[]);
    genkey("Beta Corp", &keys_b, &["--microsoft", "none"]);
    let old = w.join("esp-old");
    fs::create_dir_all(old.join("EFI/systemd")).unwrap();
    run_ok(
        our_bin("enroll")
            .arg("esp")
            .arg(&old)
            .arg("-k")
            .arg(&keys_a),
    );
    let cmd = |esp: &Path| {
        let mut c = our_bin("enroll");
        c.arg("esp")
            .arg(esp)
            .arg("-k")
            .arg(&keys_b)
            .args(["--secure-boot-enroll", "force"]);
        c
    };
    let complete = w.join("esp-new");
    copy_tree(&old, &complete);
    run_ok(&mut cmd(&complete));
    let keys_of = |esp: &Path| snapshot(&esp.join("loader/keys/auto"));
    let conf_of = |esp: &Path| fs::read(esp.join("loader/loader.conf")).unwrap();
    let (old_keys, new_keys) = (keys_of(&old), keys_of(&complete));
    let (old_conf, new_conf) = (conf_of(&old), conf_of(&complete));
    assert_ne!(old_keys, new_keys);
    assert_ne!(old_conf, new_conf);

    let (mut saw_old, mut saw_new) = (0, 0);
    for n in 1.. {
        let esp = w.join(format!("esp{n}"));
        copy_tree(&old, &esp);
        let finished = run_crashing_at(&mut cmd(&esp), n);
        // As systemd-boot finds it, before any recovery: one whole key set.
        let keys = keys_of(&esp);
        let conf = conf_of(&esp);
        if keys == old_keys {
            saw_old += 1;
            assert_eq!(
                conf, old_conf,
                "crash point {n}: loader.conf switched before the keys"
            );
        } else if keys == new_keys {
            saw_new += 1;
            assert!(conf == old_conf || conf == new_conf, "crash point {n}");
        } else {
            panic!(
                "crash point {n}: loader/keys/auto is a mix: {:?}",
                keys.keys()
            );
        }
        // The next run clears what was left and completes.
        run_ok(&mut cmd(&esp));
        assert_eq!(keys_of(&esp), new_keys, "crash point {n}: rerun");
        assert_eq!(conf_of(&esp), new_conf, "crash point {n}: rerun");
        let leftovers: Vec<String> = snapshot(&esp.join("loader"))
            .into_keys()
            .filter(|k| k.contains("sbkit"))
            .collect();
        assert!(leftovers.is_empty(), "crash point {n}: {leftovers:?}");
        fs::remove_dir_all(&esp).unwrap();
        if finished {
            break;
        }
    }
    assert!(saw_old > 1 && saw_new >= 1, "old {saw_old}, new {saw_new}");
}

#[test]
fn enroll_ovmf_interrupted_at_every_step_leaves_the_old_store_or_the_new_one() {
    let template = PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd");
    assert!(
        template.is_file(),
        "OVMF_VARS_4M.fd missing: run scripts/install-deps.sh"
    );
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let (keys_a, keys_b) = (w.join("a"), w.join("b"));
    genkey("Acme Corp", &keys_a, &[]);
    genkey("Beta Corp", &keys_b, &[]);
    let cmd = |keys: &Path, out: &Path| {
        let mut c = our_bin("enroll");
        c.args(["ovmf", "--template"])
            .arg(&template)
            .arg("-k")
            .arg(keys)
            .arg("-o")
            .arg(out);
        c
    };
    let old = w.join("old.fd");
    run_ok(&mut cmd(&keys_a, &old));
    let new = w.join("new.fd");
    run_ok(&mut cmd(&keys_b, &new));
    let (old_bytes, new_bytes) = (fs::read(&old).unwrap(), fs::read(&new).unwrap());
    let (mut saw_old, mut saw_new) = (0, 0);
    for n in 1.. {
        let dir = w.join(format!("run{n}"));
        fs::create_dir(&dir).unwrap();
        let out = dir.join("vars.fd");
        fs::copy(&old, &out).unwrap();
        let finished = run_crashing_at(&mut cmd(&keys_b, &out), n);
        let got = fs::read(&out).unwrap();
        if got == old_bytes {
            saw_old += 1;
        } else {
            assert!(
                got == new_bytes,
                "crash point {n}: neither the old store nor the new"
            );
            saw_new += 1;
        }
        fs::remove_dir_all(&dir).unwrap();
        if finished {
            break;
        }
    }
    assert!(saw_old >= 1 && saw_new >= 1, "old {saw_old}, new {saw_new}");
}

/// Objects on the SoftHSM2 token, as pkcs11-tool (not our code) lists them:
/// (private keys, public keys, certificates).
fn token_objects(hsm: &common::softhsm::SoftHsm) -> (usize, usize, usize) {
    let out = run_ok(hsm.command("pkcs11-tool").args([
        "--module",
        common::softhsm::MODULE,
        "--token-label",
        "mkosi",
        "--login",
        "--pin",
        common::softhsm::USER_PIN,
        "--list-objects",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    (
        text.matches("Private Key Object").count(),
        text.matches("Public Key Object").count(),
        text.matches("Certificate Object").count(),
    )
}

/// Interrupts `genkey token create` and `genkey token restore` (SoftHSM2) at
/// every step. PKCS#11 has no transactions, so the guarantees are: a key
/// reaches the token only after its backup is complete, fsynced and opens
/// (an interrupted create never leaves a token key without a backup); the
/// backup is never half-written and never readable by others; and running
/// `restore` from that backup (no `--replace`: the objects on the token are
/// recognised as part of the same key) brings the token to the complete set,
/// while objects of another key under the ID are still refused.
#[test]
fn token_create_and_restore_interrupted_at_every_step_never_lose_the_backup() {
    use common::softhsm::SoftHsm;
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    const BACKUP_PASS: &str = "a backup passphrase long enough";
    // `genkey token ARGS --backup BACKUP --passphrase … --token …`
    let genkey_token = |hsm: &SoftHsm, args: &[&str], backup: &Path| {
        let mut c = our_bin("genkey");
        hsm.apply(&mut c);
        c.env("BACKUP_PASS", BACKUP_PASS)
            .arg("token")
            .args(args)
            .arg("--backup")
            .arg(backup)
            .args([
                "--passphrase",
                "env:BACKUP_PASS",
                "--token",
                "pkcs11:token=mkosi",
            ]);
        c
    };
    let backup_opens = |path: &Path| {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        sbkit::backup::open_key_backup(
            &fs::read(path).unwrap(),
            BACKUP_PASS.as_bytes(),
            &path.display().to_string(),
        )
        .is_ok()
    };
    let no_secret_leftovers = |dir: &Path, n: u32| {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            if p.is_file() && p.to_string_lossy().contains("sbkit-tmp") {
                assert_eq!(mode & 0o077, 0, "crash point {n}: {}", p.display());
            }
        }
    };

    // create
    let mut with_backup_only = 0;
    for n in 1.. {
        let d = w.join(format!("create{n}"));
        let hsm = SoftHsm::create(&d.join("hsm"), "mkosi");
        let out = d.join("out");
        fs::create_dir(&out).unwrap();
        let backup = out.join("mkosi.key.age");
        let finished = run_crashing_at(
            &mut genkey_token(&hsm, &["create", "--key-type", "rsa2048"], &backup),
            n,
        );
        no_secret_leftovers(&out, n);
        let objects = token_objects(&hsm);
        if backup.exists() {
            assert!(
                backup_opens(&backup),
                "crash point {n}: the backup must open"
            );
            if objects != (1, 1, 1) {
                with_backup_only += 1;
                // Finish from the backup: what is on the token is its key.
                run_ok(&mut genkey_token(&hsm, &["restore"], &backup));
                assert_eq!(
                    token_objects(&hsm),
                    (1, 1, 1),
                    "crash point {n}: after restore"
                );
            }
        } else {
            assert_eq!(
                objects,
                (0, 0, 0),
                "crash point {n}: a key on the token without its backup"
            );
        }
        if finished {
            assert_eq!(objects, (1, 1, 1));
            break;
        }
    }
    assert!(
        with_backup_only >= 1,
        "the interruptions must reach the token import"
    );

    // restore onto a fresh token
    let d = w.join("source");
    let hsm = SoftHsm::create(&d.join("hsm"), "mkosi");
    let backup = d.join("mkosi.key.age");
    run_ok(&mut genkey_token(
        &hsm,
        &["create", "--key-type", "rsa2048"],
        &backup,
    ));
    let mut partial = 0;
    for n in 1.. {
        let hsm = SoftHsm::create(&w.join(format!("restore{n}")), "mkosi");
        let finished = run_crashing_at(&mut genkey_token(&hsm, &["restore"], &backup), n);
        assert!(backup_opens(&backup), "the backup is only read");
        let objects = token_objects(&hsm);
        if objects != (0, 0, 0) && objects != (1, 1, 1) {
            partial += 1;
        }
        if objects != (1, 1, 1) {
            // A plain rerun completes the set.
            run_ok(&mut genkey_token(&hsm, &["restore"], &backup));
            assert_eq!(
                token_objects(&hsm),
                (1, 1, 1),
                "crash point {n}: after rerun"
            );
        }
        if finished {
            break;
        }
    }
    assert!(
        partial >= 1,
        "the interruptions must fall between token objects"
    );

    // Objects of another key under the same ID are never taken for ours.
    let other = SoftHsm::create(&w.join("other"), "mkosi");
    run_ok(&mut genkey_token(
        &other,
        &["create", "--key-type", "rsa2048"],
        &w.join("other.age"),
    ));
    let err = run_fails(&mut genkey_token(&other, &["restore"], &backup));
    assert!(
        err.contains("already holds objects") && err.contains("--replace"),
        "{err}"
    );
    assert_eq!(token_objects(&other), (1, 1, 1));
}

/// The inputs of an interrupted build-uki: keys, a kernel, a small initrd
/// (no rootfs: each of the many runs stays short) and an os-release.
struct UkiInputs {
    keys: PathBuf,
    initrd: PathBuf,
    os_release: PathBuf,
}

/// build-uki into `out` with `stub`, two entries (four outputs).
fn build_uki_with_stub(i: &UkiInputs, out: &Path, cmdline: &str, stub: &Path) -> Command {
    let mut c = our_bin("build-uki");
    c.arg("--kernel")
        .arg(common::guest::Assets::locate().kernel())
        .arg("--initrd")
        .arg(&i.initrd)
        .arg("--os-release")
        .arg(&i.os_release)
        .args(["-t", "uki", "--stub"])
        .arg(stub)
        .arg("-d")
        .arg(out)
        .arg("-k")
        .arg(&i.keys)
        .args([
            "--cmdline",
            cmdline,
            "--single-efi-cmdline",
            "Debug: rd.debug",
            // The loader entries then differ between the old and new run too.
            "--include-cmdline-in-config",
        ])
        .env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

/// [`build_uki_with_stub`] with the systemd 254 stub.
fn build_uki_cmd(i: &UkiInputs, out: &Path, cmdline: &str) -> Command {
    build_uki_with_stub(i, out, cmdline, &common::guest::Assets::locate().stub(254))
}

#[test]
fn build_uki_interrupted_at_every_step_leaves_the_old_outputs_or_the_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let inputs = UkiInputs {
        keys: w.join("keys"),
        initrd: w.join("initrd.img"),
        os_release: w.join("os-release"),
    };
    genkey("Acme Corp", &inputs.keys, &[]);
    fs::write(&inputs.initrd, b"a small initrd stand-in").unwrap();
    fs::write(&inputs.os_release, "NAME=Plain\n").unwrap();
    let old = w.join("old");
    fs::create_dir(&old).unwrap();
    fs::write(old.join("notes.txt"), b"not build-uki's").unwrap();
    run_ok(&mut build_uki_cmd(&inputs, &old, "console=ttyS0 old"));
    let complete = w.join("complete");
    copy_tree(&old, &complete);
    run_ok(&mut build_uki_cmd(&inputs, &complete, "console=ttyS0 new"));
    let (old_set, new_set) = (snapshot(&old), snapshot(&complete));
    assert_eq!(old_set.len(), 5, "{:?}", old_set.keys());
    assert_eq!(
        new_set.keys().collect::<Vec<_>>(),
        old_set.keys().collect::<Vec<_>>()
    );
    assert!(old_set
        .iter()
        .all(|(k, v)| k == "notes.txt" || new_set[k] != *v));

    let (mut saw_old, mut saw_new) = (0, 0);
    for n in 1.. {
        let out = w.join(format!("out{n}"));
        copy_tree(&old, &out);
        let finished = run_crashing_at(&mut build_uki_cmd(&inputs, &out, "console=ttyS0 new"), n);
        // Before any recovery: every output whole, old or new, nothing else
        // visible, and the staging area private.
        let seen = snapshot(&out);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            old_set.keys().collect::<Vec<_>>(),
            "crash point {n}"
        );
        for (name, bytes) in &seen {
            assert!(
                *bytes == old_set[name] || *bytes == new_set[name],
                "crash point {n}: {name} is neither the old nor the new output"
            );
        }
        for e in fs::read_dir(&out).unwrap().flatten() {
            let meta = fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                assert_eq!(meta.permissions().mode() & 0o077, 0, "crash point {n}");
            }
        }
        // The next run into the directory finishes or discards the
        // interrupted one first, even though it fails itself (its stub is
        // not a PE file): afterwards the set is whole.
        let not_a_stub = out.join("notes.txt");
        let err = run_fails(&mut build_uki_with_stub(
            &inputs,
            &out,
            "console=ttyS0 other",
            &not_a_stub,
        ));
        assert!(err.contains("notes.txt"), "crash point {n}: {err}");
        let after = snapshot(&out);
        if after == old_set {
            saw_old += 1;
        } else if after == new_set {
            saw_new += 1;
        } else {
            panic!("crash point {n}: the outputs are a mix after the next run");
        }
        let leftovers: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".sbkit"))
            .collect();
        assert!(leftovers.is_empty(), "crash point {n}: {leftovers:?}");
        fs::remove_dir_all(&out).unwrap();
        if finished {
            assert_eq!(after, new_set);
            break;
        }
    }
    // Crashes before the commit marker leave the old set, after it the new.
    assert!(saw_old > 1 && saw_new > 1, "old {saw_old}, new {saw_new}");
}
