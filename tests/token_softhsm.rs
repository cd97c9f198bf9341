//! Token signing against a real PKCS#11 module (SoftHSM2), judged by tools
//! we did not write: keys are made by `openssl` and put on the token by
//! `softhsm2-util` / `pkcs11-tool`; signatures are checked by `openssl dgst`
//! and `openssl cms`.
//!
//! SoftHSM2 reads SOFTHSM2_CONF once, at C_Initialize, and sbkit keeps a
//! module initialised for the life of the process, so every test runs in a
//! child process of this test binary with its own token directory and
//! environment (see [`isolated`]).

mod common;

use common::der::content_info;
use common::tools::{require_tool, run_ok};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sbkit::keys::cert::{issue_self_signed, CertProfile, CertRequest};
use sbkit::keys::signed_data::sign_detached;
use sbkit::keys::{DigestAlgorithm, KeyAlgorithm, Signer};
use sbkit::token::{
    open_signer, Pkcs11Options, Pkcs11Signer, TokenError, UriError, ALLOW_FINAL_TRY_ENV,
    MODULE_ENV, PIN_ENV, PIN_EVERY_SIGNATURE_ENV, PIN_FILE_ENV,
};

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const USER_PIN: &str = "1234";
const SO_PIN: &str = "5678";
const INSTALL_SCRIPT: &str = "scripts/install-deps.sh";
/// Set in the child: the directory of its private SoftHSM2 token store.
const CHILD_DIR: &str = "SBKIT_TOKEN_TEST_DIR";

fn require_module() -> &'static str {
    assert!(
        Path::new(SOFTHSM_MODULE).is_file(),
        "SoftHSM2's PKCS#11 module {SOFTHSM_MODULE} is missing: run {INSTALL_SCRIPT} (tests never skip)"
    );
    SOFTHSM_MODULE
}

/// Runs `body` in a child process of this test binary (only the test
/// `name`), with a fresh token directory, SOFTHSM2_CONF, SBKIT_PKCS11_MODULE
/// and, if given, SBKIT_PKCS11_PIN; no other sbkit token variable leaks in.
fn isolated(name: &str, pin: Option<&str>, body: impl FnOnce(&Hsm)) {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let hsm = Hsm::create(PathBuf::from(dir));
        body(&hsm);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, tmp.path())
        .env("SOFTHSM2_CONF", tmp.path().join("softhsm2.conf"))
        .env(MODULE_ENV, require_module())
        .env_remove(PIN_ENV)
        .env_remove(PIN_FILE_ENV)
        .env_remove(ALLOW_FINAL_TRY_ENV)
        .env_remove(PIN_EVERY_SIGNATURE_ENV);
    if let Some(pin) = pin {
        cmd.env(PIN_ENV, pin);
    }
    let out = run_ok(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A misspelt name would filter out every test and "pass".
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test named {name}:\n{stdout}"
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
}

/// A private SoftHSM2 token store with one initialised token, "mkosi".
struct Hsm {
    dir: PathBuf,
}

impl Hsm {
    fn create(dir: PathBuf) -> Self {
        let tokens = dir.join("tokens");
        fs::create_dir_all(&tokens).unwrap();
        fs::write(
            dir.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        run_ok(Command::new(require_tool("softhsm2-util")).args([
            "--init-token",
            "--free",
            "--label",
            "mkosi",
            "--pin",
            USER_PIN,
            "--so-pin",
            SO_PIN,
        ]));
        Hsm { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A new key from openssl: `rsa2048` or `p384`. Returns the key file.
    fn openssl_key(&self, name: &str, kind: &str) -> PathBuf {
        let key = self.path(&format!("{name}.pem"));
        let opts: &[&str] = match kind {
            "rsa2048" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "p384" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            other => panic!("no key kind {other}"),
        };
        run_ok(
            Command::new(require_tool("openssl"))
                .arg("genpkey")
                .args(opts)
                .arg("-out")
                .arg(&key),
        );
        key
    }

    /// The public key of a key file as PEM (written next to it) and DER.
    fn public_key(&self, key: &Path) -> (PathBuf, Vec<u8>) {
        let pem = key.with_extension("pub.pem");
        run_ok(
            Command::new(require_tool("openssl"))
                .args(["pkey", "-pubout", "-in"])
                .arg(key)
                .arg("-out")
                .arg(&pem),
        );
        let der = run_ok(
            Command::new(require_tool("openssl"))
                .args(["pkey", "-pubin", "-outform", "DER", "-in"])
                .arg(&pem),
        )
        .stdout;
        (pem, der)
    }

    /// `softhsm2-util --import`: private and public key objects.
    fn import(&self, key: &Path, label: &str, id_hex: &str) {
        run_ok(
            Command::new(require_tool("softhsm2-util"))
                .arg("--import")
                .arg(key)
                .args([
                    "--label", label, "--id", id_hex, "--token", "mkosi", "--pin", USER_PIN,
                ]),
        );
    }

    fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = run_ok(
            Command::new(require_tool("pkcs11-tool"))
                .args(["--module", require_module(), "--token-label", "mkosi"])
                .args(args),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn list_objects(&self) -> String {
        self.pkcs11_tool(&["--login", "--pin", USER_PIN, "--list-objects"])
    }
}

fn write(hsm: &Hsm, name: &str, bytes: &[u8]) -> PathBuf {
    let p = hsm.path(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// `openssl dgst -<digest> -verify pub.pem -signature sig msg`.
fn openssl_dgst_verifies(digest: &str, public_pem: &Path, sig: &Path, msg: &Path) -> bool {
    let out = Command::new(require_tool("openssl"))
        .args(["dgst", &format!("-{digest}"), "-verify"])
        .arg(public_pem)
        .arg("-signature")
        .arg(sig)
        .arg(msg)
        .output()
        .unwrap();
    let ok = out.status.success();
    assert_eq!(
        ok,
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "openssl's exit status and its message disagree"
    );
    ok
}

/// A certificate for the token key, a detached SignedData over `msg`, and
/// `openssl cms -verify` on it (and on a tampered message).
fn full_stack_check(hsm: &Hsm, signer: &dyn Signer, digest: DigestAlgorithm, tag: &str) {
    let cert = issue_self_signed(
        signer,
        &CertRequest {
            common_name: "Token db",
            organization: "sbkit test",
            profile: CertProfile::CodeSigning,
            not_before: time::OffsetDateTime::now_utc(),
            days: 30,
        },
    )
    .unwrap();
    let msg = b"the bytes of an authenticated variable".to_vec();
    let p7 = sign_detached(signer, &cert, digest, &msg).unwrap();
    let cert_pem = write(
        hsm,
        &format!("{tag}-cert.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE", cert)).as_bytes(),
    );
    let p7_path = write(hsm, &format!("{tag}-p7.der"), &content_info(&p7));
    let verify = |content: &[u8]| {
        let content_path = write(hsm, &format!("{tag}-content.bin"), content);
        Command::new(require_tool("openssl"))
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
            .arg(&p7_path)
            .arg("-content")
            .arg(&content_path)
            .arg("-certfile")
            .arg(&cert_pem)
            .arg("-out")
            .arg("/dev/null")
            .output()
            .unwrap()
    };
    let out = verify(&msg);
    assert!(
        out.status.success(),
        "openssl cms -verify refused the token-signed SignedData ({tag}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !verify(b"the bytes of an authenticated variablE")
            .status
            .success(),
        "a tampered message must not verify ({tag})"
    );
}

#[test]
fn rsa2048_key_signs_and_openssl_dgst_verifies() {
    isolated(
        "rsa2048_key_signs_and_openssl_dgst_verifies",
        Some(USER_PIN),
        |hsm| {
            let key = hsm.openssl_key("db", "rsa2048");
            let (public_pem, public_der) = hsm.public_key(&key);
            hsm.import(&key, "db", "02");
            let listing = hsm.list_objects();
            assert!(
                listing.contains("Private Key Object; RSA"),
                "pkcs11-tool sees the private key:\n{listing}"
            );
            assert!(listing.contains("label:      db"), "{listing}");
            assert!(listing.contains("ID:         02"), "{listing}");

            let uri = "pkcs11:token=mkosi;id=%02;type=private";
            let signer = Pkcs11Signer::open(uri, &Pkcs11Options::default()).unwrap();
            assert_eq!(signer.algorithm(), KeyAlgorithm::Rsa2048);
            assert!(!signer.always_authenticate());
            assert_eq!(signer.public_key_der(), public_der, "SPKI from the token");
            assert_eq!(signer.describe(), uri);

            let msg = write(hsm, "msg", b"an EFI image, say");
            for i in 0..2 {
                let sig = signer
                    .sign(DigestAlgorithm::Sha256, &fs::read(&msg).unwrap())
                    .unwrap();
                let sig_path = write(hsm, &format!("sig{i}"), &sig);
                assert!(openssl_dgst_verifies(
                    "sha256",
                    &public_pem,
                    &sig_path,
                    &msg
                ));
                let other = write(hsm, "other", b"an EFI image, sax");
                assert!(!openssl_dgst_verifies(
                    "sha256",
                    &public_pem,
                    &sig_path,
                    &other
                ));
            }

            // The same key through the entry point the CLIs use.
            let boxed = open_signer("pkcs11:object=db").unwrap();
            assert_eq!(boxed.public_key_der(), public_der);
            let sig = boxed.sign(DigestAlgorithm::Sha256, b"x").unwrap();
            let sig_path = write(hsm, "sig-boxed", &sig);
            let x = write(hsm, "x", b"x");
            assert!(openssl_dgst_verifies("sha256", &public_pem, &sig_path, &x));
        },
    );
}

#[test]
fn p384_signs_the_hash_and_the_raw_message_recipe_fails() {
    isolated(
        "p384_signs_the_hash_and_the_raw_message_recipe_fails",
        Some(USER_PIN),
        |hsm| {
            let key = hsm.openssl_key("ec", "p384");
            let (public_pem, public_der) = hsm.public_key(&key);
            hsm.import(&key, "sb-ec", "03");
            let listing = hsm.list_objects();
            assert!(listing.contains("label:      sb-ec"), "{listing}");
            assert!(listing.contains("ID:         03"), "{listing}");

            let signer =
                Pkcs11Signer::open("pkcs11:token=mkosi;object=sb-ec", &Pkcs11Options::default())
                    .unwrap();
            assert_eq!(signer.algorithm(), KeyAlgorithm::P384);
            assert_eq!(signer.public_key_der(), public_der);
            let msg = write(hsm, "msg", b"a unified kernel image, say");
            let sig = signer
                .sign(DigestAlgorithm::Sha384, &fs::read(&msg).unwrap())
                .unwrap();
            let sig_path = write(hsm, "sig", &sig);
            assert!(openssl_dgst_verifies(
                "sha384",
                &public_pem,
                &sig_path,
                &msg
            ));

            // The recipe that circulates: CKM_ECDSA over the message itself.
            // CKM_ECDSA signs whatever it gets as if it were the hash, so
            // this can never verify as a SHA-384 signature...
            let raw_sig = hsm.path("raw-recipe.sig");
            hsm.pkcs11_tool(&[
                "--login",
                "--pin",
                USER_PIN,
                "--sign",
                "-m",
                "ECDSA",
                "--id",
                "03",
                "--signature-format",
                "openssl",
                "--input-file",
                msg.to_str().unwrap(),
                "--output-file",
                raw_sig.to_str().unwrap(),
            ]);
            assert!(!openssl_dgst_verifies(
                "sha384",
                &public_pem,
                &raw_sig,
                &msg
            ));
            // ...while hashing first, as sbkit does, does.
            let hash = write(
                hsm,
                "msg.sha384",
                &DigestAlgorithm::Sha384.digest(&fs::read(&msg).unwrap()),
            );
            let hashed_sig = hsm.path("hashed-recipe.sig");
            hsm.pkcs11_tool(&[
                "--login",
                "--pin",
                USER_PIN,
                "--sign",
                "-m",
                "ECDSA",
                "--id",
                "03",
                "--signature-format",
                "openssl",
                "--input-file",
                hash.to_str().unwrap(),
                "--output-file",
                hashed_sig.to_str().unwrap(),
            ]);
            assert!(openssl_dgst_verifies(
                "sha384",
                &public_pem,
                &hashed_sig,
                &msg
            ));
        },
    );
}

#[test]
fn uris_matching_nothing_say_what_is_there() {
    isolated(
        "uris_matching_nothing_say_what_is_there",
        Some(USER_PIN),
        |hsm| {
            let key = hsm.openssl_key("db", "rsa2048");
            hsm.import(&key, "db", "02");
            let opts = Pkcs11Options::default();

            let e = Pkcs11Signer::open("pkcs11:token=mkosi;object=nope", &opts).unwrap_err();
            assert!(matches!(e, TokenError::NoKey { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains("private key: object=db;id=%02"), "{text}");
            assert!(text.contains("public key: object=db;id=%02"), "{text}");

            // id=02 is the two characters '0' '2', not the byte 2.
            let e = Pkcs11Signer::open("pkcs11:id=02", &opts)
                .unwrap_err()
                .to_string();
            assert!(e.contains("write id=%02"), "{e}");

            let e = Pkcs11Signer::open("pkcs11:token=yubikey;id=%02", &opts).unwrap_err();
            assert!(matches!(e, TokenError::NoToken { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains("token=mkosi;manufacturer=SoftHSM"), "{text}");
            assert!(text.contains("libsofthsm2.so"), "{text}");

            let e = Pkcs11Signer::open("pkcs11:object=db;type=cert", &opts).unwrap_err();
            assert!(matches!(e, TokenError::NotPrivate { .. }), "{e}");
            let e = Pkcs11Signer::open("pkcs11:object=db;lable=x", &opts).unwrap_err();
            assert!(
                matches!(e, TokenError::Uri(UriError::Unknown { .. })),
                "{e}"
            );
            assert!(e.to_string().contains("\"lable\""), "{e}");
            let e = Pkcs11Signer::open("pkcs11:object=db?module-path=/nonexistent.so", &opts)
                .unwrap_err()
                .to_string();
            assert!(e.contains("/nonexistent.so"), "{e}");
        },
    );
}

#[test]
fn uri_matching_two_keys_says_which_attribute_to_add() {
    isolated(
        "uri_matching_two_keys_says_which_attribute_to_add",
        Some(USER_PIN),
        |hsm| {
            let a = hsm.openssl_key("a", "rsa2048");
            let b = hsm.openssl_key("b", "rsa2048");
            hsm.import(&a, "dup", "04");
            hsm.import(&b, "dup", "05");
            let listing = hsm.list_objects();
            assert_eq!(listing.matches("label:      dup").count(), 4, "{listing}");

            let e = Pkcs11Signer::open("pkcs11:token=mkosi;object=dup", &Pkcs11Options::default())
                .unwrap_err();
            assert!(matches!(e, TokenError::SeveralKeys { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains("object=dup;id=%04"), "{text}");
            assert!(text.contains("object=dup;id=%05"), "{text}");
            assert!(text.contains("add id="), "{text}");

            let (_, b_der) = hsm.public_key(&b);
            let s = Pkcs11Signer::open(
                "pkcs11:token=mkosi;object=dup;id=%05",
                &Pkcs11Options::default(),
            )
            .unwrap();
            assert_eq!(s.public_key_der(), b_der);
        },
    );
}

#[test]
fn wrong_pin_is_a_clear_error_with_the_retry_state() {
    // No SBKIT_PKCS11_PIN: the PINs come from pin-source files in the URI.
    isolated(
        "wrong_pin_is_a_clear_error_with_the_retry_state",
        None,
        |hsm| {
            let key = hsm.openssl_key("db", "rsa2048");
            hsm.import(&key, "db", "02");
            let opts = Pkcs11Options::default();
            let flags = |hsm: &Hsm| {
                hsm.pkcs11_tool(&["--list-token-slots"])
                    .lines()
                    .find(|l| l.contains("token flags"))
                    .unwrap_or_default()
                    .to_string()
            };
            assert!(!flags(hsm).contains("count low"), "{}", flags(hsm));

            // No PIN anywhere and no terminal: say how to give one.
            let e = Pkcs11Signer::open("pkcs11:object=db", &opts)
                .unwrap_err()
                .to_string();
            assert!(e.contains(PIN_ENV) && e.contains(PIN_FILE_ENV), "{e}");

            let wrong = write(hsm, "wrong-pin", b"9999\n");
            let e = Pkcs11Signer::open(
                &format!("pkcs11:object=db?pin-source=file:{}", wrong.display()),
                &opts,
            )
            .unwrap_err();
            assert!(matches!(e, TokenError::PinIncorrect { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains("CKR_PIN_INCORRECT"), "{text}");
            assert!(text.contains("wrong-pin"), "names the PIN's origin: {text}");
            assert!(!text.contains("9999"), "never prints the PIN: {text}");
            // SoftHSM2 sets CKF_USER_PIN_COUNT_LOW after a wrong PIN (it never
            // sets FINAL_TRY or LOCKED: it does not count tries).
            assert!(text.contains("retry counter is low"), "{text}");
            assert!(flags(hsm).contains("user PIN count low"), "{}", flags(hsm));

            // The right PIN, from a plain-path pin-source; a correct login
            // clears the flag.
            let right = write(hsm, "right-pin", format!("{USER_PIN}\n").as_bytes());
            let s = Pkcs11Signer::open(
                &format!("pkcs11:object=db?pin-source={}", right.display()),
                &opts,
            )
            .unwrap();
            assert!(s.sign(DigestAlgorithm::Sha256, b"m").is_ok());
            assert!(!flags(hsm).contains("count low"), "{}", flags(hsm));
        },
    );
}

#[test]
fn always_authenticate_keys_sign_via_context_specific_login() {
    isolated(
        "always_authenticate_keys_sign_via_context_specific_login",
        Some(USER_PIN),
        |hsm| {
            // RSA written with pkcs11-tool --always-auth: only a private key
            // object, so the public key comes from its modulus and exponent.
            let key = hsm.openssl_key("aa", "rsa2048");
            let (public_pem, public_der) = hsm.public_key(&key);
            hsm.pkcs11_tool(&[
                "--login",
                "--pin",
                USER_PIN,
                "--write-object",
                key.to_str().unwrap(),
                "--type",
                "privkey",
                "--id",
                "09",
                "--label",
                "aa",
                "--always-auth",
            ]);
            // P-384 generated on the token with CKA_ALWAYS_AUTHENTICATE.
            hsm.pkcs11_tool(&[
                "--login",
                "--pin",
                USER_PIN,
                "--keypairgen",
                "--key-type",
                "EC:secp384r1",
                "--id",
                "0a",
                "--label",
                "aa-ec",
                "--always-auth",
            ]);
            let listing = hsm.list_objects();
            assert_eq!(
                listing.matches("always authenticate").count(),
                2,
                "{listing}"
            );

            // SoftHSM2 enforces the attribute: a plain C_SignInit + C_Sign
            // after the user login is refused.
            assert_plain_sign_is_refused(b"aa");

            let rsa = Pkcs11Signer::open("pkcs11:object=aa", &Pkcs11Options::default()).unwrap();
            assert!(rsa.always_authenticate());
            assert_eq!(rsa.public_key_der(), public_der);
            let msg = write(hsm, "msg", b"signed twice");
            for i in 0..2 {
                let sig = rsa.sign(DigestAlgorithm::Sha256, b"signed twice").unwrap();
                let sig_path = write(hsm, &format!("aa-sig{i}"), &sig);
                assert!(openssl_dgst_verifies(
                    "sha256",
                    &public_pem,
                    &sig_path,
                    &msg
                ));
            }

            let ec = Pkcs11Signer::open("pkcs11:object=aa-ec", &Pkcs11Options::default()).unwrap();
            assert!(ec.always_authenticate());
            assert_eq!(ec.algorithm(), KeyAlgorithm::P384);
            let ec_pem = write(
                hsm,
                "aa-ec.pub.pem",
                pem::encode(&pem::Pem::new("PUBLIC KEY", ec.public_key_der())).as_bytes(),
            );
            for i in 0..2 {
                let sig = ec.sign(DigestAlgorithm::Sha384, b"signed twice").unwrap();
                let sig_path = write(hsm, &format!("aa-ec-sig{i}"), &sig);
                assert!(openssl_dgst_verifies("sha384", &ec_pem, &sig_path, &msg));
            }
            // A certificate and a SignedData: two more context logins.
            full_stack_check(hsm, &ec, DigestAlgorithm::Sha384, "aa-ec");
        },
    );
}

/// Signs with cryptoki directly, without the context-specific login, and
/// expects CKR_USER_NOT_LOGGED_IN: proof that SoftHSM2 enforces
/// CKA_ALWAYS_AUTHENTICATE, so the passing signatures above are owed to
/// sbkit's C_Login(CKU_CONTEXT_SPECIFIC).
fn assert_plain_sign_is_refused(label: &[u8]) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error, RvError};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let ctx = Pkcs11::new(SOFTHSM_MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx.get_slots_with_initialized_token().unwrap()[0];
    let session = ctx.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
        .unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.to_vec()),
        ])
        .unwrap()[0];
    let mut data = DigestAlgorithm::Sha256.digest_info_prefix().to_vec();
    data.extend(DigestAlgorithm::Sha256.digest(b"x"));
    let r = session.sign(&Mechanism::RsaPkcs, key, &data);
    assert!(
        matches!(r, Err(Error::Pkcs11(RvError::UserNotLoggedIn, _))),
        "{r:?}"
    );
    session.logout().unwrap();
    drop(session);
    // Leave the module initialised: sbkit shares it (C_Initialize again is
    // tolerated as CKR_CRYPTOKI_ALREADY_INITIALIZED).
}

#[test]
fn token_keys_issue_certificates_and_signed_data_that_openssl_cms_verifies() {
    isolated(
        "token_keys_issue_certificates_and_signed_data_that_openssl_cms_verifies",
        Some(USER_PIN),
        |hsm| {
            let rsa = hsm.openssl_key("db", "rsa2048");
            hsm.import(&rsa, "db", "02");
            let ec = hsm.openssl_key("ec", "p384");
            hsm.import(&ec, "sb-ec", "03");
            // Two signers on one token in one process share the module and
            // its login.
            let rsa_signer = open_signer("pkcs11:token=mkosi;id=%02").unwrap();
            let ec_signer = open_signer("pkcs11:token=mkosi;id=%03").unwrap();
            full_stack_check(hsm, rsa_signer.as_ref(), DigestAlgorithm::Sha256, "rsa");
            full_stack_check(hsm, ec_signer.as_ref(), DigestAlgorithm::Sha384, "ec");
        },
    );
}

#[test]
fn pin_value_in_a_uri_is_refused_before_touching_the_token() {
    // No module environment is needed: the URI is refused while parsing.
    let e = open_signer("pkcs11:token=mkosi;id=%02?pin-value=1234")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("pin-value") && e.contains(PIN_ENV), "{e}");
    assert!(!e.contains("1234"), "{e}");
}
