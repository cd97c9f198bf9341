//! `audit`: the recipe's checklist run against the real state, one line
//! per item, each passed or failed:
//!
//! - the key algorithm is the one asked for;
//! - every token holds the same key and certificate;
//! - the backup is present and opens (with the passphrase) to that key and certificate;
//! - no plaintext private key file lies in the key directory;
//! - on PIV cards, PIN, PUK and management key are not the factory defaults;
//! - PKCS#11 lists the objects with the expected label and ID;
//! - a test signature through PKCS#11 verifies with OpenSSL.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::check::{self, CheckLine, Expected, TokenReport, Verdict};
use super::{check_uri, files, piv, Placement, ProvisionError, Target};
use crate::backup;
use crate::keys::{KeyAlgorithm, Signer};
use crate::secret::{harden_process, SecretSource};

/// What to audit.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Tokens, ID, label.
    pub placement: Placement,
    /// The algorithm the key must have.
    pub algorithm: Option<KeyAlgorithm>,
    /// The certificate every token must hold (else the backup's, else the first token's).
    pub certificate: Option<PathBuf>,
    /// The backup that must exist.
    pub backup: Option<PathBuf>,
    /// Its passphrase; without it the backup is only checked to exist and be a backup.
    pub passphrase: Option<SecretSource>,
    /// A key directory that must hold no plaintext private key.
    pub key_dir: Option<PathBuf>,
}

/// The checklist.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// Every line, in order.
    pub lines: Vec<CheckLine>,
    /// The per-token details.
    pub tokens: Vec<TokenReport>,
}

impl AuditReport {
    /// Whether no line failed.
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.result != Verdict::Fail)
    }

    /// The lines as printed.
    pub fn render(&self) -> String {
        let mut s: String = self.lines.iter().map(|l| l.render() + "\n").collect();
        let failed = self
            .lines
            .iter()
            .filter(|l| l.result == Verdict::Fail)
            .count();
        s.push_str(&if failed == 0 {
            format!("audit passed ({} checks)\n", self.lines.len())
        } else {
            format!("audit FAILED: {failed} of {} checks\n", self.lines.len())
        });
        s
    }
}

/// Runs the audit.
pub fn audit(opts: &AuditOptions) -> Result<AuditReport, ProvisionError> {
    harden_process();
    let mut lines = Vec::new();
    let mut cert_der: Option<Vec<u8>> = match &opts.certificate {
        Some(p) => Some(
            crate::store::signing::read_certificate(p)
                .map_err(|e| ProvisionError::Refused(e.to_string()))?,
        ),
        None => None,
    };
    let mut backup_key: Option<Vec<u8>> = None;
    let mut algorithm = opts.algorithm;

    // The backup.
    if let Some(b) = &opts.backup {
        match files::read(b) {
            Err(e) => lines.push(CheckLine::new("backup present", false, e.to_string())),
            Ok(data) => {
                let format = backup::BackupFormat::detect(&data);
                lines.push(CheckLine::new(
                    "backup present",
                    format.is_some(),
                    match format {
                        Some(f) => format!("{} ({f})", b.display()),
                        None => format!("{} is not an age or openssl-enc file", b.display()),
                    },
                ));
                if let Some(source) = &opts.passphrase {
                    let pass = source.read("backup passphrase", false)?;
                    match backup::open_key_backup(&data, &pass, &b.display().to_string()) {
                        Ok(k) => {
                            let kb = k.key.public_key_der();
                            let mut detail = format!(
                                "{} key, public key sha256 {}",
                                k.key.algorithm(),
                                k.public_key_sha256()
                            );
                            let mut ok = true;
                            if let (Some(c), Some(bc)) = (&cert_der, &k.cert_der) {
                                ok = c == bc;
                                detail.push_str(if ok {
                                    ", same certificate as given"
                                } else {
                                    ", but a DIFFERENT certificate than given"
                                });
                            }
                            lines.push(CheckLine::new("backup opens to a key", ok, detail));
                            if cert_der.is_none() {
                                cert_der = k.cert_der.clone();
                            }
                            algorithm.get_or_insert(k.key.algorithm());
                            backup_key = Some(kb);
                        }
                        Err(e) => lines.push(CheckLine::new(
                            "backup opens to a key",
                            false,
                            e.to_string(),
                        )),
                    }
                } else {
                    lines.push(CheckLine::not_applicable(
                        "backup opens to a key",
                        "no --passphrase given, the backup was not opened",
                    ));
                }
            }
        }
    } else {
        lines.push(CheckLine::new(
            "backup present",
            false,
            "no --backup given: the recipe keeps an encrypted offline backup",
        ));
    }

    // The tokens.
    let mut tokens = Vec::new();
    for t in &opts.placement.targets {
        if let Target::Piv(reader) = t {
            match piv::Card::open(reader).and_then(|mut c| c.status()) {
                Ok(st) => lines.extend(st.default_checks()),
                Err(e) => lines.push(CheckLine::new(
                    format!("PIV card {reader:?} reachable"),
                    false,
                    e.to_string(),
                )),
            }
        }
        let uri = check_uri(t, opts.placement.piv_module.as_deref());
        // Without a certificate to compare with, take the token's own and
        // let the cross checks find disagreement between tokens.
        let exp_cert = match &cert_der {
            Some(c) => c.clone(),
            None => match super::p11::open_token(&uri, false, false)
                .ok()
                .and_then(|ts| super::p11::certificate(&ts, &opts.placement.id))
            {
                Some(c) => c,
                None => {
                    lines.push(CheckLine::new(
                        format!("token {} holds a certificate", t.describe()),
                        false,
                        "no certificate with the ID on the token, and none given",
                    ));
                    continue;
                }
            },
        };
        let exp_alg = algorithm.unwrap_or_else(|| {
            openssl::x509::X509::from_der(&exp_cert)
                .ok()
                .and_then(|x| x.public_key().ok())
                .and_then(|k| k.public_key_to_der().ok())
                .and_then(|d| check::algorithm_of_spki(&d))
                .unwrap_or(KeyAlgorithm::P384)
        });
        let expected = Expected {
            cert_der: exp_cert,
            algorithm: exp_alg,
            label: match t {
                Target::Piv(_) => None,
                Target::Pkcs11(_) => Some(opts.placement.label.clone()),
            },
            id: opts.placement.id.clone(),
        };
        match check::verify_token(&uri, &expected, opts.placement.signature_dir.as_deref()) {
            Ok(r) => {
                let name = format!("{} #{}", r.token_label, r.token_serial);
                for c in &r.checks {
                    lines.push(CheckLine {
                        check: format!("{name}: {}", c.check),
                        ..c.clone()
                    });
                }
                tokens.push(r);
            }
            Err(e) => lines.push(CheckLine::new(
                format!("token {} reachable", t.describe()),
                false,
                e.to_string(),
            )),
        }
    }
    let backup_sha = cert_der.as_ref().filter(|_| backup_key.is_some()).map(|c| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(c))
    });
    lines.extend(check::cross_checks(&tokens, backup_sha.as_deref()));
    if let Some(bk) = &backup_key {
        let bsha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(bk))
        };
        lines.push(CheckLine::new(
            "backup holds the same key as the tokens",
            !tokens.is_empty()
                && tokens
                    .iter()
                    .all(|t| t.public_key_sha256.as_deref() == Some(bsha.as_str())),
            format!("backup public key sha256 {bsha}"),
        ));
    }

    // The key directory.
    match &opts.key_dir {
        Some(dir) => {
            let found = plaintext_keys(dir);
            lines.push(CheckLine::new(
                "no plaintext private key in the key directory",
                found.is_empty(),
                if found.is_empty() {
                    format!("{} holds none", dir.display())
                } else {
                    format!(
                        "plaintext keys: {}",
                        found
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            ));
        }
        None => lines.push(CheckLine::not_applicable(
            "no plaintext private key in the key directory",
            "no --key-dir given",
        )),
    }
    Ok(AuditReport { lines, tokens })
}

/// Files under `dir` that hold an unencrypted private key: PEM `PRIVATE
/// KEY` / `RSA PRIVATE KEY` / `EC PRIVATE KEY` blocks, or DER that OpenSSL
/// reads as a private key.
pub fn plaintext_keys(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
                continue;
            }
            if !meta.is_file() || meta.len() > 1 << 20 {
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let pem_key = [
                concat!("BEGIN ", "PRIVATE KEY"),
                concat!("BEGIN RSA ", "PRIVATE KEY"),
                concat!("BEGIN EC ", "PRIVATE KEY"),
            ]
            .iter()
            .any(|m| text.contains(m));
            let der_key = bytes.first() == Some(&0x30)
                && openssl::pkey::PKey::private_key_from_der(&bytes).is_ok();
            if pem_key || der_key {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}
