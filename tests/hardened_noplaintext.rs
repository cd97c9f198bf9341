//! The plaintext private key never reaches a file or a pipe.
//!
//! Method: the whole flow runs under `strace -f` recording every `openat`
//! and every write-type system call with full buffers (`-xx`, so every byte
//! is visible). Afterwards the key is recovered from the encrypted backup
//! (in this test process), and each of its encodings — the raw private
//! numbers (EC scalar; RSA d, p, q), their hex, PKCS#8 and SEC1/PKCS#1 DER,
//! their base64 and the PEM body lines that carry private bytes — is looked
//! for in (1) every buffer the process and its children wrote anywhere
//! (files, pipes, sockets, the terminal), (2) every file the process opened
//! for writing, and (3) every file left in the key directory, the
//! process's TMPDIR and the token store. A sanity check proves the trace
//! sees writes at all (the backup's ciphertext must appear in it).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::softhsm::SoftHsm;
use common::tools::{our_bin, require_tool, run_ok};
use sbkit::keys::FileSigner;

const PASS: &str = "no plaintext anywhere, please";

/// Runs `cmd` under strace; returns the trace file.
fn traced(cmd: &Command, trace: &Path) -> std::process::Output {
    let mut s = Command::new(require_tool("strace"));
    s.args(["-f", "-qq", "-xx", "-s", "4194304", "-o"])
        .arg(trace)
        .args([
            "-e",
            "trace=openat,open,creat,write,pwrite64,writev,pwritev,pwritev2,sendto,sendmsg,rename,renameat,renameat2,link,linkat",
        ])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    run_ok(&mut s)
}

/// Every buffer written in the trace, decoded, and the files opened for writing.
fn written(trace: &Path) -> (Vec<Vec<u8>>, BTreeSet<PathBuf>) {
    let text = fs::read_to_string(trace).unwrap();
    let mut buffers = Vec::new();
    let mut files = BTreeSet::new();
    for line in text.lines() {
        let Some(q) = line.find('"') else { continue };
        let rest = &line[q + 1..];
        let Some(end) = rest.find('"') else { continue };
        let body = &rest[..end];
        let mut bytes = Vec::with_capacity(body.len() / 4);
        let mut i = 0;
        let b = body.as_bytes();
        while i < b.len() {
            if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
                bytes.push(u8::from_str_radix(&body[i + 2..i + 4], 16).unwrap_or(0));
                i += 4;
            } else {
                bytes.push(b[i]);
                i += 1;
            }
        }
        if line.contains("openat(") || line.contains("open(") || line.contains("creat(") {
            let writable =
                line.contains("O_WRONLY") || line.contains("O_RDWR") || line.contains("O_CREAT");
            if writable && !line.contains("= -1") {
                files.insert(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()));
            }
        } else {
            buffers.push(bytes);
        }
    }
    (buffers, files)
}

/// The encodings of a private key that must never appear.
fn needles(key: &FileSigner) -> Vec<(String, Vec<u8>)> {
    let pkey = key.pkey();
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    let mut der = Vec::new();
    if let Ok(ec) = pkey.ec_key() {
        secrets.push(ec.private_key().to_vec());
        der.push(("SEC1 DER", ec.private_key_to_der().unwrap()));
    } else {
        let rsa = pkey.rsa().unwrap();
        secrets.push(rsa.d().to_vec());
        secrets.push(rsa.p().unwrap().to_vec());
        secrets.push(rsa.q().unwrap().to_vec());
        der.push(("PKCS#1 DER", rsa.private_key_to_der().unwrap()));
    }
    der.push(("PKCS#8 DER", pkey.private_key_to_pkcs8().unwrap()));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        // Windows of the raw number catch a number written in pieces.
        for (j, w) in s.chunks(24).filter(|w| w.len() >= 16).enumerate() {
            out.push((format!("private number {i} bytes, piece {j}"), w.to_vec()));
        }
        out.push((
            format!("private number {i} hex"),
            hex::encode(s).into_bytes(),
        ));
        out.push((
            format!("private number {i} HEX"),
            hex::encode_upper(s).into_bytes(),
        ));
        out.push((
            format!("private number {i} base64"),
            b64.encode(s).into_bytes(),
        ));
    }
    for (name, d) in der {
        out.push((name.to_string(), d.clone()));
        out.push((
            format!("{name} base64"),
            b64.encode(&d).as_bytes()[..40].to_vec(),
        ));
        // PEM body lines (48 bytes of DER each) that carry private bytes.
        for (k, chunk) in d.chunks(48).enumerate() {
            let private = secrets
                .iter()
                .any(|s| s.windows(16).any(|w| chunk.windows(16).any(|c| c == w)));
            if private && chunk.len() == 48 {
                out.push((
                    format!("{name} PEM line {k}"),
                    b64.encode(chunk).into_bytes(),
                ));
            }
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => files_under(&p, out),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// Where any encoding of any key in `keys` shows up: in the trace's
/// writes, in the files opened for writing, or in the files under `dirs`.
fn findings(keys: &[FileSigner], trace: &Path, dirs: &[&Path], sanity: &[u8]) -> Vec<String> {
    let (buffers, opened) = written(trace);
    let all: Vec<u8> = buffers.concat();
    assert!(
        find(&all, sanity),
        "the trace does not show the expected write: strace saw nothing?"
    );
    let mut files: Vec<PathBuf> = opened.into_iter().filter(|p| p.is_file()).collect();
    for d in dirs {
        files_under(d, &mut files);
    }
    assert!(!files.is_empty());
    let mut found = Vec::new();
    for key in keys {
        for (what, n) in needles(key) {
            if let Some(i) = buffers.iter().position(|b| find(b, &n)) {
                found.push(format!(
                    "{what} written by system call #{i} (see {})",
                    trace.display()
                ));
            } else if find(&all, &n) {
                found.push(format!("{what} in the concatenated writes"));
            }
            for f in &files {
                if find(&fs::read(f).unwrap_or_default(), &n) {
                    found.push(format!("{what} in file {}", f.display()));
                }
            }
        }
    }
    found
}

fn assert_nowhere(keys: &[FileSigner], trace: &Path, dirs: &[&Path], sanity: &[u8]) {
    let found = findings(keys, trace, dirs, sanity);
    assert!(
        found.is_empty(),
        "plaintext key material leaked:\n{}",
        found.join("\n")
    );
}

/// The method itself: the flat Kairos layout writes PK.key in plaintext,
/// and the same search must find it in the trace and in the file.
#[test]
fn the_search_finds_a_plaintext_key_when_there_is_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let keydir = d.join("keys");
    let trace = d.join("flat.trace");
    let mut cmd = our_bin("genkey");
    cmd.args(["Acme Corp", "--key-type", "p384", "-o"])
        .arg(&keydir);
    traced(&cmd, &trace);
    let pk = FileSigner::load(&keydir.join("PK.key")).unwrap();
    let found = findings(&[pk], &trace, &[&keydir], b"BEGIN CERTIFICATE");
    assert!(found.iter().any(|f| f.contains("system call")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("PK.key")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("PEM line")), "{found:?}");
}

#[test]
fn token_create_and_restore_write_no_plaintext_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let hsm = SoftHsm::create(&d.join("hsm"), "mkosi");
    let keydir = d.join("keys");
    let tmpdir = d.join("tmp");
    fs::create_dir_all(&keydir).unwrap();
    fs::create_dir_all(&tmpdir).unwrap();
    let backup = keydir.join("mkosi.key.age");
    let trace = d.join("create.trace");
    let mut cmd = our_bin("genkey");
    hsm.apply(&mut cmd);
    cmd.env("TMPDIR", &tmpdir)
        .env("BACKUP_PASS", PASS)
        .args(["token", "create", "--key-type", "p384", "--backup"])
        .arg(&backup)
        .args(["--passphrase", "env:BACKUP_PASS", "--cert-out"])
        .arg(keydir.join("mkosi.crt"))
        .arg("--signature-dir")
        .arg(d.join("sigs"))
        .args(["--token", "pkcs11:token=mkosi", "--json"]);
    let out = traced(&cmd, &trace);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"cert_sha256\""));
    let sealed = fs::read(&backup).unwrap();
    let key = sbkit::backup::open_key_backup(&sealed, PASS.as_bytes(), "backup")
        .unwrap()
        .key;
    assert_nowhere(
        std::slice::from_ref(&key),
        &trace,
        &[&keydir, &tmpdir, &d.join("hsm"), &d.join("sigs")],
        &sealed[..64],
    );

    // Restore onto a new token, also traced.
    run_ok(hsm.command("softhsm2-util").args([
        "--init-token",
        "--free",
        "--label",
        "spare",
        "--pin",
        common::softhsm::USER_PIN,
        "--so-pin",
        "13579135",
    ]));
    let trace2 = d.join("restore.trace");
    let mut cmd = our_bin("genkey");
    hsm.apply(&mut cmd);
    cmd.env("TMPDIR", &tmpdir)
        .env("BACKUP_PASS", PASS)
        .args(["token", "restore", "--backup"])
        .arg(&backup)
        .args([
            "--passphrase",
            "env:BACKUP_PASS",
            "--token",
            "pkcs11:token=spare",
        ]);
    traced(&cmd, &trace2);
    // The restore writes nothing of the backup; its sanity mark is the token label.
    assert_nowhere(
        std::slice::from_ref(&key),
        &trace2,
        &[&keydir, &tmpdir, &d.join("hsm")],
        b"pkcs11:token=",
    );
}

#[test]
fn hardened_genkey_writes_no_plaintext_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let keydir = d.join("keys");
    let tmpdir = d.join("tmp");
    fs::create_dir_all(&tmpdir).unwrap();
    let trace = d.join("genkey.trace");
    let mut cmd = our_bin("genkey");
    cmd.env("TMPDIR", &tmpdir)
        .env("KEYPASS", PASS)
        .args(["Acme Corp", "--layout", "hardened", "--key-type", "rsa2048"])
        .args(["--passphrase", "env:KEYPASS", "-o"])
        .arg(&keydir);
    traced(&cmd, &trace);
    let mut keys = Vec::new();
    for f in [
        "secureboot/pk/PK.key.age",
        "secureboot/kek/KEK.key.age",
        "secureboot/db/db.key.age",
        "secureboot/pcr/tpm2-pcr-private.pem.age",
    ] {
        keys.push(
            sbkit::store::hardened::load_key(&keydir.join(f), PASS.as_bytes())
                .unwrap_or_else(|e| panic!("{f}: {e}")),
        );
    }
    let sealed = fs::read(keydir.join("secureboot/db/db.key.age")).unwrap();
    assert_nowhere(&keys, &trace, &[&keydir, &tmpdir], &sealed[..64]);
}
