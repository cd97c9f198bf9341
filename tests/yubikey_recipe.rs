//! The YubiKey recipe (issue #10), written once and run over each token
//! backend of the test house:
//!
//! - [`Backend::SoftHsm`]: SoftHSM2 tokens stand in for the two YubiKeys;
//!   genkey imports over PKCS#11 (C_CreateObject), and `pkcs11-tool` on
//!   SoftHSM2's module lists, reads and signs.
//! - [`Backend::VirtualPiv`]: virtual YubiKeys, PIV applets on vsmartcard's
//!   vpcd (see `tests/vpiv`); genkey speaks PIV to them, and Yubico's
//!   `ykman` and OpenSC's PKCS#11 module (with `pkcs11-tool`) judge.
//!
//! `openssl` verifies every signature, reads the certificates and opens the
//! backups. The scenarios: two tokens provisioned with the same key and
//! certificate (signatures, audit, then wrong PINs and the last try);
//! restore onto a replacement token; the refusals that come before a key
//! exists. What only one backend has (PIV preparation and ykman's view of
//! it, factory secrets, a PIN retry counter, SoftHSM2's object labels) is a
//! hook on [`House`], so every check is made wherever it applies.

mod common;
#[path = "vpiv/mod.rs"]
mod vpiv;

use std::path::{Path, PathBuf};
use std::process::Command;

use rstest::rstest;

use common::softhsm::{SoftHsm, USER_PIN};
use common::tools::{json_stdout, our_bin, output_text, require_tool, run_fails, run_ok};
use vpiv::applet::Piv;
use vpiv::VirtualPcsc;

const PASS: &str = "a backup passphrase long enough";
/// The PIN and PUK `genkey token prepare` gives the virtual cards.
const NEW_PIN: &str = "314159";
const NEW_PUK: &str = "27182818";
/// A PIN no token here has.
const WRONG_PIN: &str = "999999";

/// The token backends the recipe runs over.
#[derive(Clone, Copy, Debug)]
enum Backend {
    SoftHsm,
    VirtualPiv,
}

/// What holds the tokens.
enum Store {
    SoftHsm(SoftHsm),
    Piv(VirtualPcsc),
}

/// Tokens of one backend for the key labelled `mkosi`, named the way genkey
/// is told about them: SoftHSM2 serial numbers or PC/SC reader names.
struct House {
    store: Store,
    tokens: Vec<String>,
}

impl House {
    /// `n` tokens in their first state: SoftHSM2 tokens initialised with
    /// the user PIN; virtual cards factory-fresh (default PIN, PUK and
    /// management key), firmware 5.7 (AES-192 management key) and 5.4 (3DES).
    fn start(backend: Backend, dir: &Path, n: usize) -> House {
        match backend {
            Backend::SoftHsm => {
                let hsm = SoftHsm::create(&dir.join("hsm"), "mkosi");
                for _ in 1..n {
                    hsm.add_token("mkosi");
                }
                let tokens = hsm.serials("mkosi");
                assert_eq!(tokens.len(), n, "{tokens:?}");
                House {
                    store: Store::SoftHsm(hsm),
                    tokens,
                }
            }
            Backend::VirtualPiv => {
                let firmware = [[5, 7, 1], [5, 4, 3]];
                let cards = (0..n)
                    .map(|i| Piv::new(firmware[i], 31000001 + i as u32))
                    .collect();
                let pcsc = VirtualPcsc::start(&dir.join("pcsc"), cards);
                let tokens = pcsc.readers.clone();
                House {
                    store: Store::Piv(pcsc),
                    tokens,
                }
            }
        }
    }

    /// genkey for key work: the store's environment, the backup passphrase
    /// and the user PIN.
    fn genkey(&self, args: &[&str]) -> Command {
        let mut c = our_bin("genkey");
        match &self.store {
            Store::SoftHsm(hsm) => hsm.apply(&mut c),
            Store::Piv(pcsc) => {
                pcsc.apply(&mut c);
                // genkey finds OpenSC for the cards by itself; nothing of the
                // SoftHSM2 setup may leak in from the caller's environment.
                c.env_remove("SBKIT_PKCS11_MODULE")
                    .env("SBKIT_PKCS11_PIN", NEW_PIN);
            }
        }
        c.env("BACKUP_PASS", PASS).args(args);
        c
    }

    /// The user PIN of every token.
    fn pin(&self) -> &'static str {
        match self.store {
            Store::SoftHsm(_) => USER_PIN,
            Store::Piv(_) => NEW_PIN,
        }
    }

    /// genkey's arguments naming `tokens`.
    fn token_args(&self, tokens: &[String]) -> Vec<String> {
        tokens
            .iter()
            .flat_map(|t| match self.store {
                Store::SoftHsm(_) => [
                    "--token".to_string(),
                    format!("pkcs11:token=mkosi;serial={t}"),
                ],
                Store::Piv(_) => ["--piv".to_string(), t.clone()],
            })
            .collect()
    }

    /// The objects on `token` as pkcs11-tool lists them after a login.
    fn list_objects(&self, token: &str) -> String {
        let list = run_ok(self.pkcs11_tool(token).args([
            "--login",
            "--pin",
            self.pin(),
            "--list-objects",
        ]));
        String::from_utf8_lossy(&list.stdout).into_owned()
    }

    /// `pkcs11-tool` on `token`'s slot: SoftHSM2's module, or OpenSC's.
    fn pkcs11_tool(&self, token: &str) -> Command {
        match &self.store {
            Store::SoftHsm(hsm) => hsm.pkcs11_tool(token),
            Store::Piv(pcsc) => pcsc.pkcs11_tool(token),
        }
    }

    /// Every token the store holds, lost ones included.
    fn all_tokens(&self) -> Vec<String> {
        match &self.store {
            Store::SoftHsm(hsm) => hsm.serials("mkosi"),
            Store::Piv(pcsc) => pcsc.readers.clone(),
        }
    }

    /// Whether the key asks for the PIN at every signature without being
    /// told: PIV slot 9c does, a SoftHSM2 key only with --always-authenticate.
    fn always_authenticates_by_itself(&self) -> bool {
        matches!(self.store, Store::Piv(_))
    }

    /// The label line pkcs11-tool shows for the objects: ours on SoftHSM2;
    /// on PIV the driver fixes the labels.
    fn object_label_line(&self) -> &'static str {
        match self.store {
            Store::SoftHsm(_) => "label:      mkosi",
            Store::Piv(_) => "Certificate for Digital Signature",
        }
    }

    /// The refusal when the key's place on a token is taken.
    fn occupied_message(&self) -> &'static str {
        match self.store {
            Store::SoftHsm(_) => "already holds objects with id=%02",
            Store::Piv(_) => "already has a certificate in slot 9c",
        }
    }

    /// Where genkey writes the test signature of each token, known without
    /// asking genkey: `test-SERIAL` for SoftHSM2 tokens. A virtual card's
    /// serial as OpenSC shows it is not the reader name we hold, so None.
    fn signature_stems(&self, sigs: &Path) -> Option<Vec<PathBuf>> {
        match self.store {
            Store::SoftHsm(_) => Some(
                self.tokens
                    .iter()
                    .map(|s| sigs.join(format!("test-{s}")))
                    .collect(),
            ),
            Store::Piv(_) => None,
        }
    }

    /// The PIN tries left on token `i`, where the token counts them
    /// (SoftHSM2 never locks its PIN, so it has no counter to read).
    fn pin_retries(&self, i: usize) -> Option<u8> {
        match &self.store {
            Store::SoftHsm(_) => None,
            Store::Piv(pcsc) => Some(pcsc.cards[i].lock().unwrap().pin_retries()),
        }
    }

    /// PIV administration: genkey without a user PIN in the environment,
    /// with the new PIN and PUK for `prepare`.
    fn genkey_admin(pcsc: &VirtualPcsc, args: &[&str]) -> Command {
        let mut c = our_bin("genkey");
        pcsc.apply(&mut c);
        c.env("NEW_PIN", NEW_PIN)
            .env("NEW_PUK", NEW_PUK)
            .env("BACKUP_PASS", PASS)
            .env_remove("SBKIT_PKCS11_MODULE")
            .env_remove("SBKIT_PKCS11_PIN")
            .args(args);
        c
    }

    /// `genkey token status --json` of the cards in `readers`.
    fn piv_status(pcsc: &VirtualPcsc, readers: &[&str]) -> serde_json::Value {
        let mut args = vec!["token", "status", "--json"];
        for r in readers {
            args.extend(["--piv", r]);
        }
        json_stdout(&run_ok(&mut House::genkey_admin(pcsc, &args)))
    }

    /// `genkey token prepare` on one card; no default secret is left and
    /// the management key is stored PIN-protected.
    fn prepare_card(pcsc: &VirtualPcsc, reader: &str) {
        let p = json_stdout(&run_ok(&mut House::genkey_admin(
            pcsc,
            &[
                "token",
                "prepare",
                "--piv",
                reader,
                "--new-pin",
                "env:NEW_PIN",
                "--new-puk",
                "env:NEW_PUK",
                "--json",
            ],
        )));
        assert_eq!(p["after"]["pin_default"], false, "{p}");
        assert_eq!(p["after"]["puk_default"], false, "{p}");
        assert_eq!(p["after"]["mgmt_default"], false, "{p}");
        assert_eq!(p["after"]["mgmt_protected"], true, "{p}");
    }

    /// Makes every token ready to take a key. SoftHSM2 tokens are born
    /// ready (softhsm2-util set their PINs); cards are prepared by genkey.
    fn prepare(&self) {
        if let Store::Piv(pcsc) = &self.store {
            for r in &self.tokens {
                House::prepare_card(pcsc, r);
            }
        }
    }

    /// Cards are told apart by OpenSC (not our code): after genkey
    /// prepared them, each has a CHUID and so its own serial number (two
    /// factory cards without one would both be 00000000 and a URI could
    /// not pick one). SoftHSM2 tokens have serials of their own.
    fn check_distinct_serials(&self) {
        if let Store::Piv(pcsc) = &self.store {
            let mut l = Command::new(require_tool("pkcs11-tool"));
            pcsc.apply(&mut l);
            let list = run_ok(l.args(["--module", vpiv::OPENSC_MODULE, "-L"]));
            let text = String::from_utf8_lossy(&list.stdout).into_owned();
            let serials: Vec<&str> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("serial num"))
                .map(|l| l.trim_start_matches([' ', ':']).trim())
                .collect();
            assert_eq!(serials.len(), self.tokens.len(), "{text}");
            assert!(
                serials.iter().all(|s| *s != "00000000" && !s.is_empty()),
                "{text}"
            );
            let mut unique = serials.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                serials.len(),
                "two cards share a serial:\n{text}"
            );
        }
    }

    /// Before preparation, the factory state as genkey and ykman see it
    /// (cards only: a SoftHSM2 token has no factory secrets).
    fn check_factory_state(&self) {
        if let Store::Piv(pcsc) = &self.store {
            let (r0, r1) = (&self.tokens[0], &self.tokens[1]);
            let st = House::piv_status(pcsc, &[r0, r1]);
            assert_eq!(st[0]["pin_default"], true, "{st}");
            assert_eq!(st[0]["mgmt_algorithm"], "AES-192");
            assert_eq!(st[1]["mgmt_algorithm"], "3DES");
            assert_eq!(st[0]["pin_retries"], 3);
            let info = pcsc.ykman(r0, &["piv", "info"]);
            eprintln!("{}", output_text(&info));
            assert!(info.status.success(), "{}", output_text(&info));
        }
    }

    /// After preparation, ykman reads what genkey did: no default
    /// warnings, the management key's algorithm kept, and ykman itself can
    /// use the PIN-protected management key.
    fn check_prepared_state(&self) {
        if let Store::Piv(pcsc) = &self.store {
            let (r0, r1) = (&self.tokens[0], &self.tokens[1]);
            let info = output_text(&pcsc.ykman(r0, &["piv", "info"]));
            eprintln!("{info}");
            assert!(info.contains("AES192"), "{info}");
            assert!(!info.to_lowercase().contains("default pin"), "{info}");
            let chuid = pcsc.ykman(r0, &["piv", "objects", "generate", "chuid", "-P", NEW_PIN]);
            assert!(
                chuid.status.success(),
                "ykman cannot use the stored management key: {}",
                output_text(&chuid)
            );
            let info1 = output_text(&pcsc.ykman(r1, &["piv", "info"]));
            assert!(info1.contains("TDES") || info1.contains("3DES"), "{info1}");
        }
    }

    /// Loading a key onto a card that still has its factory secrets is
    /// refused before any key exists (cards only).
    fn check_factory_refusal(&self, backup: &Path) {
        if let Store::Piv(pcsc) = &self.store {
            let err = run_fails(&mut House::genkey_admin(
                pcsc,
                &[
                    "token",
                    "create",
                    "--backup",
                    backup.to_str().unwrap(),
                    "--passphrase",
                    "env:BACKUP_PASS",
                    "--piv",
                    &self.tokens[0],
                ],
            ));
            assert!(
                err.contains("factory") && err.contains("PIN") && err.contains("management key"),
                "{err}"
            );
            assert!(!backup.exists());
        }
    }

    /// What an independent tool of the backend says about the key on
    /// `token` beyond PKCS#11: ykman shows the certificate in slot 9c.
    fn check_token_extra(&self, token: &str, cert_sha256: &str) {
        if let Store::Piv(pcsc) = &self.store {
            let info = output_text(&pcsc.ykman(token, &["piv", "info"]));
            assert!(info.contains("CN=mkosi"), "{info}");
            assert!(
                info.to_lowercase().contains(cert_sha256),
                "ykman shows another certificate:\n{info}"
            );
        }
    }

    /// Audit lines only the backend has: the card's PIN and management key.
    fn audit_lines(&self) -> &'static [&'static str] {
        match self.store {
            Store::SoftHsm(_) => &[],
            Store::Piv(_) => &[
                "[PASS] Virtual PCD 00 00 #31000001: PIN changed from the default",
                "management key stored PIN-protected",
            ],
        }
    }

    /// Token `i` is lost; returns the name of a ready replacement.
    /// SoftHSM2: a new token in the store (the lost one stays in it).
    /// Card: the same reader's card wiped by `ykman piv reset`, i.e.
    /// factory-fresh, then prepared.
    fn replace_lost(&mut self, i: usize) -> String {
        match &self.store {
            Store::SoftHsm(hsm) => {
                let before = hsm.serials("mkosi");
                hsm.add_token("mkosi");
                let fresh: Vec<String> = hsm
                    .serials("mkosi")
                    .into_iter()
                    .filter(|s| !before.contains(s))
                    .collect();
                assert_eq!(fresh.len(), 1);
                self.tokens[i] = fresh[0].clone();
                fresh[0].clone()
            }
            Store::Piv(pcsc) => {
                let r = self.tokens[i].clone();
                let reset = pcsc.ykman(&r, &["piv", "reset", "--force"]);
                assert!(reset.status.success(), "{}", output_text(&reset));
                let st = House::piv_status(pcsc, &[&r]);
                assert_eq!(st[0]["pin_default"], true);
                assert_eq!(st[0]["slot_9c_certificate"], false);
                House::prepare_card(pcsc, &r);
                r
            }
        }
    }
}

fn openssl() -> Command {
    Command::new(require_tool("openssl"))
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// The certificate's public key as PEM, extracted by openssl.
fn public_key_of(crt: &Path, out: &Path) {
    run_ok(
        openssl()
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(crt)
            .arg("-out")
            .arg(out),
    );
}

/// `openssl dgst -DIGEST -verify` of `sig` over `msg`.
fn openssl_verify(digest: &str, pubkey: &Path, sig: &Path, msg: &Path) -> Command {
    let mut c = openssl();
    c.args(["dgst", &format!("-{digest}"), "-verify"])
        .arg(pubkey)
        .arg("-signature")
        .arg(sig)
        .arg(msg);
    c
}

/// The test signature files genkey reports for a token: (stem, signature, message).
fn test_signature_files(t: &serde_json::Value) -> (PathBuf, PathBuf, PathBuf) {
    let f = &t["test_signature"]["files"];
    let sig = PathBuf::from(f["signature"].as_str().unwrap());
    let msg = PathBuf::from(f["message"].as_str().unwrap());
    (sig.with_extension(""), sig, msg)
}

/// The recipe: two tokens take one P-384 key and its certificate; every
/// token signs, the backup opens with openssl, the audit judges, and then
/// wrong PINs are shown, never retried, and the last try is kept.
#[rstest]
#[case::softhsm(Backend::SoftHsm)]
#[case::virtual_piv(Backend::VirtualPiv)]
fn two_tokens_take_one_p384_key_checked_by_independent_tools(#[case] backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let house = House::start(backend, d, 2);
    house.check_factory_state();
    house.prepare();
    house.check_distinct_serials();
    house.check_prepared_state();
    let keydir = d.join("keys");
    std::fs::create_dir(&keydir).unwrap();
    let backup = keydir.join("mkosi.key.enc");
    let crt = keydir.join("mkosi.crt");
    let sigs = d.join("sigs");

    let out = run_ok(
        house
            .genkey(&[
                "token",
                "create",
                "--backup",
                backup.to_str().unwrap(),
                "--backup-format",
                "openssl-enc",
                "--passphrase",
                "env:BACKUP_PASS",
                "--cert-out",
                crt.to_str().unwrap(),
                "--signature-dir",
                sigs.to_str().unwrap(),
                "--json",
            ])
            .args(house.token_args(&house.tokens)),
    );
    let r = json_stdout(&out);
    assert_eq!(r["algorithm"], "p384");
    let tokens = r["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    for t in tokens {
        // OpenSC names a card's token after the certificate's CN; SoftHSM2's
        // is the label it was initialised with.
        assert_eq!(t["token_label"], "mkosi", "{t}");
        assert_eq!(
            t["always_authenticate"],
            house.always_authenticates_by_itself(),
            "slot 9c wants the PIN for every signature, an imported key only when asked"
        );
        for c in t["checks"].as_array().unwrap() {
            assert_eq!(c["result"], "pass", "{c}");
        }
    }
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["result"], "pass", "{c}");
    }
    let block = r["mkosi"]["validation_block"].as_str().unwrap();
    assert!(
        block.contains("SecureBootKey=pkcs11:token=mkosi;id=%%02;type=private\n"),
        "{block}"
    );
    assert!(
        block.contains("SecureBootKeySource=provider:pkcs11\n"),
        "{block}"
    );
    assert_eq!(
        r["mkosi"]["key_uri"],
        "pkcs11:token=mkosi;id=%02;type=private"
    );

    // The certificate, read by openssl: CN=mkosi, P-384; its fingerprint is
    // the one genkey reports.
    let text = output_text(&run_ok(
        openssl().args(["x509", "-noout", "-text", "-in"]).arg(&crt),
    ));
    assert!(text.contains("CN = mkosi"), "{text}");
    assert!(
        text.contains("NIST CURVE: P-384") || text.contains("secp384r1"),
        "{text}"
    );
    let der = d.join("cert.der");
    run_ok(
        openssl()
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&crt)
            .arg("-out")
            .arg(&der),
    );
    let fp = sha256_of(&der);
    assert_eq!(r["cert_sha256"], fp.as_str());
    let pubkey = d.join("pub.pem");
    public_key_of(&crt, &pubkey);

    // genkey's test signature of every token, verified by openssl against
    // the certificate's key, in the files it names (where we know the
    // names ourselves, those).
    let stems: Vec<PathBuf> = tokens.iter().map(|t| test_signature_files(t).0).collect();
    if let Some(mut expected) = house.signature_stems(&sigs) {
        let mut got = stems.clone();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }
    for t in tokens {
        let (_, sig, msg) = test_signature_files(t);
        let v = run_ok(&mut openssl_verify("sha384", &pubkey, &sig, &msg));
        assert!(String::from_utf8_lossy(&v.stdout).contains("Verified OK"));
    }

    let msg = d.join("test.txt");
    std::fs::write(&msg, "a test file for the signing check\n".repeat(10)).unwrap();
    let hash = d.join("test.sha384");
    run_ok(
        openssl()
            .args(["dgst", "-sha384", "-binary", "-out"])
            .arg(&hash)
            .arg(&msg),
    );
    for (i, token) in house.tokens.iter().enumerate() {
        // pkcs11-tool sees the key and the certificate under ID 02.
        let l = house.list_objects(token);
        assert!(l.contains("Private Key Object; EC"), "{l}");
        assert!(l.contains("Certificate Object"), "{l}");
        assert!(l.contains(house.object_label_line()), "{l}");
        assert!(l.contains("ID:         02"), "{l}");
        // OpenSC says "never extractable" of a card's key; any other
        // mention of "extractable" is the CKA_EXTRACTABLE flag.
        assert!(
            !l.replace("never extractable", "").contains("extractable"),
            "the key must not be extractable:\n{l}"
        );

        // The same certificate on every token, byte for byte.
        let onto = d.join(format!("cert-{i}.der"));
        run_ok(
            house
                .pkcs11_tool(token)
                .args(["--read-object", "--type", "cert", "--id", "02", "-o"])
                .arg(&onto),
        );
        assert_eq!(sha256_of(&onto), fp);

        // Signing with pkcs11-tool the right way (hash first, then raw
        // ECDSA over the hash, DER output) verifies…
        // Raw ECDSA (DER output) over `input` by pkcs11-tool, into `sig`.
        let ecdsa_sign = |input: &Path, sig: &Path| {
            run_ok(
                house
                    .pkcs11_tool(token)
                    .args(["--login", "--pin", house.pin(), "--sign", "--id", "02"])
                    .args(["-m", "ECDSA", "--signature-format", "openssl"])
                    .arg("--input-file")
                    .arg(input)
                    .arg("-o")
                    .arg(sig),
            );
        };
        let sig = d.join(format!("pkcs11-{i}.sig"));
        ecdsa_sign(&hash, &sig);
        run_ok(&mut openssl_verify("sha384", &pubkey, &sig, &msg));
        // …and the recipe's raw `-m ECDSA` over the file never does.
        let raw = d.join(format!("raw-{i}.sig"));
        ecdsa_sign(&msg, &raw);
        run_fails(&mut openssl_verify("sha384", &pubkey, &raw, &msg));

        house.check_token_extra(token, &fp);
    }

    // The backup opens with the recipe's openssl command to the tokens' key.
    let dec = d.join("dec.pem");
    run_ok(
        openssl()
            .args(["enc", "-d", "-aes-256-cbc", "-pbkdf2", "-in"])
            .arg(&backup)
            .arg("-out")
            .arg(&dec)
            .args(["-pass", &format!("pass:{PASS}")]),
    );
    let from_backup = run_ok(openssl().args(["pkey", "-pubout", "-in"]).arg(&dec));
    assert_eq!(from_backup.stdout, std::fs::read(&pubkey).unwrap());

    // The audit passes on this state…
    let audit = |key_type: &str, extra: &[&str]| {
        house
            .genkey(&[
                "token",
                "audit",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--key-dir",
                keydir.to_str().unwrap(),
                "--key-type",
                key_type,
            ])
            .args(house.token_args(&house.tokens))
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = audit("p384", &[]);
    let text = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for needle in [
        "[PASS] backup present",
        "[PASS] backup opens to a key",
        "[PASS] same certificate on every token",
        "[PASS] same key on every token",
        "[PASS] backup holds the same key as the tokens",
        "[PASS] no plaintext private key in the key directory",
        "test signature through PKCS#11 verifies with OpenSSL",
        "audit passed",
    ]
    .iter()
    .chain(house.audit_lines())
    {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    assert!(!text.contains("[FAIL]"), "{text}");

    // …and fails, naming the file, once a plaintext key lies in the key directory.
    std::fs::copy(&dec, keydir.join("mkosi.key")).unwrap();
    let bad = audit("p384", &["--json"]);
    assert!(!bad.status.success());
    let a = json_stdout(&bad);
    let line = a["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["check"] == "no plaintext private key in the key directory")
        .unwrap();
    assert_eq!(line["result"], "fail");
    assert!(
        line["detail"].as_str().unwrap().contains("mkosi.key"),
        "{line}"
    );
    // An algorithm other than the one asked for fails too.
    std::fs::remove_file(keydir.join("mkosi.key")).unwrap();
    let wrong = audit("rsa2048", &[]);
    assert!(!wrong.status.success());
    let w = String::from_utf8_lossy(&wrong.stdout).into_owned();
    assert!(w.contains("[FAIL]") && w.contains("key algorithm"), "{w}");

    wrong_pins_are_shown_never_retried_and_the_last_try_kept(&house, &backup, &fp);
}

/// Restoring `backup` onto the second token with wrong PINs: each is
/// refused once, not retried; where the token counts tries, the count is
/// shown, exactly one try is spent per run and the last one is never spent
/// unless allowed. The right PIN then restores the same certificate.
fn wrong_pins_are_shown_never_retried_and_the_last_try_kept(
    house: &House,
    backup: &Path,
    fp: &str,
) {
    let restore = |pin: &str, allow_final: bool| {
        let mut c = house.genkey(&[
            "token",
            "restore",
            "--backup",
            backup.to_str().unwrap(),
            "--passphrase",
            "env:BACKUP_PASS",
            "--replace",
            "--json",
        ]);
        c.args(house.token_args(&house.tokens[1..2]))
            .env("SBKIT_PKCS11_PIN", pin);
        if allow_final {
            c.env("SBKIT_PKCS11_ALLOW_FINAL_PIN_TRY", "1");
        }
        c.output().unwrap()
    };
    let first = restore(WRONG_PIN, false);
    assert!(!first.status.success());
    let e = output_text(&first);
    assert!(e.contains("wrong PIN"), "{e}");
    if house.pin_retries(1).is_some() {
        let retries = || house.pin_retries(1).unwrap();
        assert!(e.contains("2 tries left"), "{e}");
        assert_eq!(retries(), 2, "exactly one try spent");
        let e = output_text(&restore(WRONG_PIN, false));
        assert!(e.contains("1 tries left"), "{e}");
        let e = output_text(&restore(WRONG_PIN, false));
        assert!(
            e.contains("ONE try left") && e.contains("did not try"),
            "{e}"
        );
        assert_eq!(retries(), 1, "the last try was spent");
    } else {
        // No counter to read: the message must still say it was not retried.
        assert!(e.contains("not retried"), "{e}");
    }
    // With the right PIN and the final try allowed explicitly, the restore goes through.
    let ok = restore(house.pin(), true);
    assert!(ok.status.success(), "{}", output_text(&ok));
    if let Some(n) = house.pin_retries(1) {
        assert_eq!(n, 3);
    }
    let rr = json_stdout(&ok);
    assert_eq!(rr["cert_sha256"], fp);
}

/// An RSA key that asks for the PIN at every signature goes onto two
/// tokens with an age backup; one token is lost, and the backup restores
/// the same key onto its replacement.
#[rstest]
#[case::softhsm(Backend::SoftHsm)]
#[case::virtual_piv(Backend::VirtualPiv)]
fn rsa2048_always_authenticate_then_restore_onto_a_replacement_token(#[case] backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut house = House::start(backend, d, 2);
    house.prepare();
    house.check_distinct_serials();
    let backup = d.join("mkosi.key.age");
    let crt = d.join("mkosi.crt");
    let out = run_ok(
        house
            .genkey(&[
                "token",
                "create",
                "--key-type",
                "rsa2048",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--cert-out",
                crt.to_str().unwrap(),
                "--always-authenticate",
                "--json",
            ])
            .args(house.token_args(&house.tokens)),
    );
    let r = json_stdout(&out);
    assert_eq!(r["algorithm"], "rsa2048");
    assert_eq!(r["backup"]["format"], "age");
    for t in r["tokens"].as_array().unwrap() {
        assert_eq!(t["always_authenticate"], true, "{t}");
    }
    assert!(std::fs::read(&backup)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n"));
    for token in &house.tokens {
        let l = house.list_objects(token);
        assert!(l.contains("Private Key Object; RSA"), "{l}");
        assert!(l.contains("always authenticate"), "{l}");
    }

    // The second token is lost; its replacement gets the backup.
    let fresh = house.replace_lost(1);
    let sigs = d.join("sigs");
    let out = run_ok(
        house
            .genkey(&[
                "token",
                "restore",
                "--backup",
                backup.to_str().unwrap(),
                "--passphrase",
                "env:BACKUP_PASS",
                "--signature-dir",
                sigs.to_str().unwrap(),
                "--json",
            ])
            .args(house.token_args(std::slice::from_ref(&fresh))),
    );
    let r2 = json_stdout(&out);
    assert_eq!(r2["cert_sha256"], r["cert_sha256"]);
    assert_eq!(r2["public_key_sha256"], r["public_key_sha256"]);
    let t = &r2["tokens"][0];
    assert_eq!(t["cert_sha256"], r["cert_sha256"]);
    assert_eq!(t["algorithm"], "rsa2048");
    for c in t["checks"].as_array().unwrap() {
        assert_eq!(c["result"], "pass", "{c}");
    }
    let (stem, sig, msg) = test_signature_files(t);
    if let Some(expected) = house.signature_stems(&sigs) {
        assert_eq!(stem, expected[1]);
    }
    let pubkey = d.join("pub.pem");
    public_key_of(&crt, &pubkey);
    run_ok(&mut openssl_verify("sha256", &pubkey, &sig, &msg));
    // Every token in the store now verifies as one key.
    let v = run_ok(
        house
            .genkey(&["token", "verify", "--cert", crt.to_str().unwrap(), "--json"])
            .args(house.token_args(&house.all_tokens())),
    );
    let rv = json_stdout(&v);
    assert!(rv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["check"] == "same key on every token" && l["result"] == "pass"));
}

/// Everything that can refuse does so before a key exists: factory secrets
/// on a card, a secret on the command line, no token, a weak passphrase,
/// a taken place on the token, an existing backup.
#[rstest]
#[case::softhsm(Backend::SoftHsm)]
#[case::virtual_piv(Backend::VirtualPiv)]
fn refusals_happen_before_a_key_exists(#[case] backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let house = House::start(backend, d, 1);
    let backup = d.join("b.age");
    house.check_factory_refusal(&backup);
    house.prepare();
    let create = |extra: &[&str]| {
        let mut c = house.genkey(&[
            "token",
            "create",
            "--backup",
            backup.to_str().unwrap(),
            "--passphrase",
            "env:BACKUP_PASS",
        ]);
        c.args(house.token_args(&house.tokens)).args(extra);
        c
    };
    // A secret on the command line is refused without being echoed.
    let x = d.join("x.age");
    let err = run_fails(
        house
            .genkey(&[
                "token",
                "create",
                "--backup",
                x.to_str().unwrap(),
                "--passphrase",
                "hunter2hunter2",
            ])
            .args(house.token_args(&house.tokens)),
    );
    assert!(
        err.contains("file:") && !err.contains("hunter2hunter2"),
        "{err}"
    );
    // No token: refused.
    let y = d.join("y.age");
    let err = run_fails(&mut house.genkey(&["token", "create", "--backup", y.to_str().unwrap()]));
    assert!(err.contains("no token given"), "{err}");
    // A weak passphrase: refused, nothing written.
    let err = run_fails(create(&[]).env("BACKUP_PASS", "short"));
    assert!(err.contains("at least 12"), "{err}");
    assert!(!backup.exists());
    run_ok(&mut create(&[]));
    // The key's place is taken now: refused before generating, the backup is not touched.
    std::fs::remove_file(&backup).unwrap();
    let err = run_fails(&mut create(&[]));
    assert!(err.contains(house.occupied_message()), "{err}");
    assert!(!backup.exists(), "a backup was written for a refused run");
    // An existing backup is never overwritten.
    std::fs::write(&backup, b"precious").unwrap();
    let err = run_fails(&mut create(&["--replace"]));
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&backup).unwrap(), b"precious");
}
