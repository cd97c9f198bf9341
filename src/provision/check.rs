//! Verifying a token the way the build will use it: open the key through
//! PKCS#11 with the same [`Pkcs11Signer`] build-uki uses, compare what is on
//! the token with what was expected (certificate fingerprint, public key,
//! algorithm, label and ID), and make a test signature that OpenSSL verifies.
//!
//! The test signature hashes first and signs the hash (SHA-384 then
//! `CKM_ECDSA` for P-384): a token's `CKM_ECDSA` signs whatever bytes it is
//! given *as if they were the digest*. The common recipe
//! `pkcs11-tool --sign -m ECDSA --input-file test.txt` therefore signs the
//! first 48 bytes of the file (and outputs raw `r||s`, not DER), while
//! `openssl dgst -sha384 -verify` hashes the file and expects DER: it can
//! never verify. Correct by hand: `pkcs11-tool --sign -m ECDSA-SHA384
//! --signature-format openssl …`, or hash with `openssl dgst -sha384 -binary`
//! first and sign that with `-m ECDSA --signature-format openssl`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

use super::p11::{self, ObjectEntry};
use crate::keys::{KeyAlgorithm, Signer};
use crate::token::uri::{encode_id, encode_text, Pkcs11Uri};
use crate::token::{Pkcs11Options, Pkcs11Signer};

/// What every token must hold.
#[derive(Clone, Debug)]
pub struct Expected {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The key algorithm asked for.
    pub algorithm: KeyAlgorithm,
    /// CKA_LABEL of the objects, when the token lets us choose it (not PIV).
    pub label: Option<String>,
    /// CKA_ID.
    pub id: Vec<u8>,
}

impl Expected {
    /// SHA-256 of the certificate, hex.
    pub fn cert_sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(&self.cert_der))
    }

    /// The certificate's SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Option<Vec<u8>> {
        openssl::x509::X509::from_der(&self.cert_der)
            .ok()?
            .public_key()
            .ok()?
            .public_key_to_der()
            .ok()
    }
}

/// One line of a check list: passed, failed, or not applicable.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CheckLine {
    /// What was checked.
    pub check: String,
    /// `pass`, `fail` or `n/a`.
    pub result: Verdict,
    /// What was found.
    pub detail: String,
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// It holds.
    Pass,
    /// It does not.
    Fail,
    /// It does not apply here.
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl CheckLine {
    /// A line that passed when `ok`, failed otherwise.
    pub fn new(check: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        CheckLine {
            check: check.into(),
            result: if ok { Verdict::Pass } else { Verdict::Fail },
            detail: detail.into(),
        }
    }

    /// A line that does not apply.
    pub fn not_applicable(check: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckLine {
            check: check.into(),
            result: Verdict::NotApplicable,
            detail: detail.into(),
        }
    }

    /// The line as printed: `[PASS] check: detail`.
    pub fn render(&self) -> String {
        let tag = match self.result {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "n/a ",
        };
        format!("[{tag}] {}: {}", self.check, self.detail)
    }
}

/// The test signature made through PKCS#11.
#[derive(Clone, Debug, Serialize)]
pub struct TestSignature {
    /// The digest used (`sha384` for P-384, `sha256` otherwise).
    pub digest: String,
    /// Whether OpenSSL verified it against the expected certificate's key.
    pub verified: bool,
    /// Files written for checking by hand, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<TestSignatureFiles>,
}

/// The files of a test signature, for `openssl dgst -verify`.
#[derive(Clone, Debug, Serialize)]
pub struct TestSignatureFiles {
    /// The signed message.
    pub message: PathBuf,
    /// The DER signature.
    pub signature: PathBuf,
    /// The public key, PEM.
    pub public_key: PathBuf,
    /// The command that checks it.
    pub command: String,
}

/// What one token holds and whether it is right.
#[derive(Clone, Debug, Serialize)]
pub struct TokenReport {
    /// Token label as the PKCS#11 module shows it.
    pub token_label: String,
    /// Token serial number.
    pub token_serial: String,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// URI of the private key (this token exactly).
    pub private_key_uri: String,
    /// URI of the certificate (this token exactly).
    pub certificate_uri: String,
    /// Keys and certificates on the token.
    pub objects: Vec<ObjectEntry>,
    /// Algorithm of the key found.
    pub algorithm: Option<KeyAlgorithm>,
    /// SHA-256 of the key's public key (DER SPKI).
    pub public_key_sha256: Option<String>,
    /// SHA-256 of the certificate with the ID.
    pub cert_sha256: Option<String>,
    /// Whether the key wants the PIN for every signature.
    pub always_authenticate: Option<bool>,
    /// The test signature.
    pub test_signature: Option<TestSignature>,
    /// The checks.
    pub checks: Vec<CheckLine>,
}

impl TokenReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.result != Verdict::Fail)
    }
}

/// Adds the module-path and pin-source of `base` to a URI path.
fn with_query(path: &str, base: &Pkcs11Uri, module: &Path) -> String {
    let mut q = vec![format!(
        "module-path={}",
        module.display().to_string().replace(' ', "%20")
    )];
    if let Some(p) = &base.pin_source {
        q.push(format!("pin-source={}", p.replace(' ', "%20")));
    }
    format!("{path}?{}", q.join("&"))
}

/// Verifies one token against `expected`. `token_uri` selects the token
/// (`pkcs11:token=…` or `pkcs11:slot-description=…`, with `module-path`
/// when not the default). When `sig_dir` is given, the test signature's
/// files are written there for checking by hand.
pub fn verify_token(
    token_uri: &str,
    expected: &Expected,
    sig_dir: Option<&Path>,
) -> Result<TokenReport, p11::P11Error> {
    let base = Pkcs11Uri::parse(token_uri)?;
    // Resolve the exact token first, without a PIN.
    let probe = p11::open_token(token_uri, false, false)?;
    let exact = probe.token_attributes();
    let id_enc = encode_id(&expected.id);
    let private_key_uri = format!("pkcs11:{exact};id={id_enc};type=private");
    let certificate_uri = format!("pkcs11:{exact};id={id_enc};type=cert");
    let mut checks = Vec::new();
    let mut report = TokenReport {
        token_label: probe.label.clone(),
        token_serial: probe.serial.clone(),
        module: probe.module_path.clone(),
        private_key_uri: private_key_uri.clone(),
        certificate_uri,
        objects: Vec::new(),
        algorithm: None,
        public_key_sha256: None,
        cert_sha256: None,
        always_authenticate: None,
        test_signature: None,
        checks: Vec::new(),
    };

    // The signer logs in (PIN from the usual sources); the probe session
    // shares the login, so it then also lists the private objects.
    let signer = Pkcs11Signer::open(
        &with_query(&private_key_uri, &base, &probe.module_path),
        &Pkcs11Options::from_env(),
    );
    let signer = match signer {
        Ok(s) => Some(s),
        Err(e) => {
            checks.push(CheckLine::new(
                "private key opens through PKCS#11",
                false,
                e.to_string(),
            ));
            None
        }
    };
    report.objects = p11::list_objects(&probe);
    let token_cert = p11::certificate(&probe, &expected.id);
    report.cert_sha256 = token_cert
        .as_ref()
        .map(|c| hex::encode(sha2::Sha256::digest(c)));

    // Label and ID, as the URIs will name them.
    let with_id = |kind: &str| {
        report
            .objects
            .iter()
            .filter(|o| o.kind == kind && o.id == hex::encode(&expected.id))
            .collect::<Vec<_>>()
    };
    for kind in ["private", "cert"] {
        let found = with_id(kind);
        let label_ok = match &expected.label {
            Some(l) => found.iter().any(|o| &o.label == l),
            None => !found.is_empty(),
        };
        checks.push(CheckLine::new(
            format!("PKCS#11 lists the {kind} object with id={id_enc}"),
            found.len() == 1 && label_ok,
            match found.as_slice() {
                [] => format!("no {kind} object with id={id_enc}"),
                [o] => format!("{} (label {:?})", o.uri, o.label),
                many => format!("{} objects with id={id_enc}", many.len()),
            },
        ));
    }
    report.always_authenticate = with_id("private")
        .first()
        .and_then(|o| o.always_authenticate);
    if let Some(o) = with_id("private").first() {
        checks.push(CheckLine::new(
            "private key cannot be extracted",
            o.extractable != Some(true),
            format!("CKA_EXTRACTABLE={:?}", o.extractable),
        ));
    }

    let expected_sha = expected.cert_sha256();
    checks.push(CheckLine::new(
        "certificate fingerprint matches",
        report.cert_sha256.as_deref() == Some(expected_sha.as_str()),
        format!(
            "token {} / expected {expected_sha}",
            report.cert_sha256.as_deref().unwrap_or("(none)")
        ),
    ));

    if let Some(signer) = &signer {
        let alg = signer.algorithm();
        report.algorithm = Some(alg);
        let spki = signer.public_key_der();
        report.public_key_sha256 = Some(hex::encode(sha2::Sha256::digest(&spki)));
        checks.push(CheckLine::new(
            "key algorithm",
            alg == expected.algorithm,
            format!("token {alg} / asked {}", expected.algorithm),
        ));
        checks.push(CheckLine::new(
            "key belongs to the certificate",
            expected.public_key_der().as_deref() == Some(&spki[..]),
            "public key of the token's key vs. the certificate's".to_string(),
        ));
        let ts = test_signature(signer, expected, &report, sig_dir);
        checks.push(CheckLine::new(
            "test signature through PKCS#11 verifies with OpenSSL",
            ts.as_ref().map(|t| t.verified).unwrap_or(false),
            match &ts {
                Ok(t) => format!("{} then ECDSA/RSA on the token", t.digest),
                Err(e) => e.clone(),
            },
        ));
        report.test_signature = ts.ok();
    }
    report.checks = checks;
    Ok(report)
}

fn test_signature(
    signer: &Pkcs11Signer,
    expected: &Expected,
    report: &TokenReport,
    sig_dir: Option<&Path>,
) -> Result<TestSignature, String> {
    let digest = expected.algorithm.default_digest();
    let message = format!(
        "sbkit test signature\ntoken {} serial {}\ntime {}\n",
        report.token_label,
        report.token_serial,
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let sig = signer
        .sign(digest, message.as_bytes())
        .map_err(|e| e.to_string())?;
    // Verified against the *expected* certificate, as `openssl dgst` would.
    let public = openssl::x509::X509::from_der(&expected.cert_der)
        .and_then(|c| c.public_key())
        .map_err(|e| e.to_string())?;
    let mut v =
        openssl::sign::Verifier::new(digest.openssl_md(), &public).map_err(|e| e.to_string())?;
    v.update(message.as_bytes()).map_err(|e| e.to_string())?;
    let verified = v.verify(&sig).unwrap_or(false);
    let files = match sig_dir {
        None => None,
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let stem = format!(
                "test-{}",
                report
                    .token_serial
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
            );
            let m = dir.join(format!("{stem}.txt"));
            let s = dir.join(format!("{stem}.sig"));
            let k = dir.join(format!("{stem}.pub.pem"));
            let pem = public.public_key_to_pem().map_err(|e| e.to_string())?;
            for (p, b) in [(&m, message.as_bytes()), (&s, &sig[..]), (&k, &pem[..])] {
                std::fs::write(p, b).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Some(TestSignatureFiles {
                command: format!(
                    "openssl dgst -{} -verify {} -signature {} {}",
                    digest.name(),
                    k.display(),
                    s.display(),
                    m.display()
                ),
                message: m,
                signature: s,
                public_key: k,
            })
        }
    };
    Ok(TestSignature {
        digest: digest.name().into(),
        verified,
        files,
    })
}

/// Checks across tokens (and the backup): the same certificate and key everywhere.
pub fn cross_checks(reports: &[TokenReport], backup_cert_sha256: Option<&str>) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let certs: Vec<_> = reports.iter().map(|r| r.cert_sha256.clone()).collect();
    let keys: Vec<_> = reports
        .iter()
        .map(|r| r.public_key_sha256.clone())
        .collect();
    let same = |v: &[Option<String>]| v.iter().all(|x| x.is_some() && *x == v[0]);
    if reports.len() > 1 {
        out.push(CheckLine::new(
            "same certificate on every token",
            same(&certs),
            certs
                .iter()
                .zip(reports)
                .map(|(c, r)| format!("{} {}", r.token_serial, c.as_deref().unwrap_or("(none)")))
                .collect::<Vec<_>>()
                .join(", "),
        ));
        out.push(CheckLine::new(
            "same key on every token",
            same(&keys),
            format!("{} tokens", reports.len()),
        ));
    }
    if let Some(b) = backup_cert_sha256 {
        out.push(CheckLine::new(
            "backup holds the same certificate",
            certs.iter().all(|c| c.as_deref() == Some(b)),
            format!("backup {b}"),
        ));
    }
    out
}

/// `pkcs11:token=LABEL;id=%XX;type=T` for a token label, as other tools take it.
pub fn plain_uri(token_label: &str, id: &[u8], kind: &str) -> String {
    format!(
        "pkcs11:token={};id={};type={kind}",
        encode_text(token_label),
        encode_id(id)
    )
}

/// The [`KeyAlgorithm`] of a DER SubjectPublicKeyInfo, if it is one we make.
pub fn algorithm_of_spki(spki: &[u8]) -> Option<KeyAlgorithm> {
    let k = openssl::pkey::PKey::public_key_from_der(spki).ok()?;
    match k.id() {
        openssl::pkey::Id::RSA => match k.bits() {
            2048 => Some(KeyAlgorithm::Rsa2048),
            3072 => Some(KeyAlgorithm::Rsa3072),
            4096 => Some(KeyAlgorithm::Rsa4096),
            _ => None,
        },
        openssl::pkey::Id::EC => match k.ec_key().ok()?.group().curve_name()? {
            openssl::nid::Nid::X9_62_PRIME256V1 => Some(KeyAlgorithm::P256),
            openssl::nid::Nid::SECP384R1 => Some(KeyAlgorithm::P384),
            _ => None,
        },
        _ => None,
    }
}
