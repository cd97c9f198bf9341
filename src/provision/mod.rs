//! The token-held signing key workflow (the mkosi / ParticleOS YubiKey
//! recipe, scripted and safe):
//!
//! 1. [`create`]: generate the key in memory (P-384 as the recipe, or RSA-2048,
//!    which firmware and TPM policies need), issue its self-signed
//!    certificate, write the encrypted backup (age by default, `openssl enc`
//!    on request) and check it opens, import the key into every token given
//!    (PKCS#11 `C_CreateObject`, or PIV slot 9c over PC/SC), wipe it, and
//!    verify every token.
//! 2. [`restore`]: decrypt a backup in memory and load it onto a replacement
//!    token, with the same checks.
//! 3. [`verify`]: the checks alone; [`audit`]: the recipe's whole checklist
//!    against the real state (tokens, backup, key directory, PIV defaults).
//!
//! The plaintext private key never reaches a file: it exists in OpenSSL's
//! secure heap and in [`LockedBytes`](crate::secret::LockedBytes), the
//! process has core dumps off, and every buffer is wiped. Token preparation
//! (PIN, PUK, management key) is [`piv::prepare`].

pub mod audit;
pub mod check;
pub mod files;
pub mod mkosi;
pub mod p11;
pub mod piv;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use sha2::Digest;
use time::OffsetDateTime;

use crate::backup::{self, BackupError, BackupFormat};
use crate::keys::cert::{self, CertError, CertProfile, CertRequest};
use crate::keys::{FileSigner, KeyAlgorithm, KeyFileError, Signer};
use crate::secret::{harden_for_private_keys, Hardening, LockedBytes, SecretError, SecretSource};
use crate::token::uri::{encode_text, Pkcs11Uri};

pub use check::{CheckLine, Expected, TokenReport, Verdict};

/// Where a key goes: a PKCS#11 token or a PIV card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Target {
    /// A PKCS#11 token selected by a `pkcs11:` URI (token=, serial=, module-path=…).
    Pkcs11(String),
    /// A PIV card (YubiKey) in the PC/SC reader whose name contains this text.
    Piv(String),
}

impl Target {
    /// The name for messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Pkcs11(u) => u.clone(),
            Target::Piv(r) => format!("PIV card in reader {r:?}"),
        }
    }
}

/// A provisioning step failed; nothing after it was done.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The backup failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Key generation or parsing failed.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The certificate failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A PKCS#11 step failed.
    #[error(transparent)]
    Pkcs11(#[from] p11::P11Error),
    /// A PIV step failed.
    #[error(transparent)]
    Piv(#[from] piv::PivError),
    /// A file could not be written or read.
    #[error(transparent)]
    File(#[from] files::FileError),
    /// Something the user must change first.
    #[error("{0}")]
    Refused(String),
}

/// The key and certificate the workflow makes.
#[derive(Clone, Debug)]
pub struct KeySpec {
    /// Certificate common name (the recipe's `mkosi`).
    pub common_name: String,
    /// Certificate organisation.
    pub organization: String,
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
    /// Validity in days (the recipe's 10 years = 3650).
    pub days: u32,
    /// Certificate start.
    pub not_before: OffsetDateTime,
}

/// Where the key goes on each token.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Tokens and cards.
    pub targets: Vec<Target>,
    /// CKA_LABEL for PKCS#11 tokens.
    pub label: String,
    /// CKA_ID (PIV slot 9c is 02 through OpenSC).
    pub id: Vec<u8>,
    /// CKA_ALWAYS_AUTHENTICATE for PKCS#11 tokens (PIV slot 9c always has it).
    pub always_authenticate: bool,
    /// Replace objects with the same ID (PKCS#11) or a key already in slot 9c (PIV).
    pub replace: bool,
    /// PKCS#11 module used to check PIV cards (default OpenSC).
    pub piv_module: Option<PathBuf>,
    /// Write each token's test signature files here.
    pub signature_dir: Option<PathBuf>,
}

/// The backup to write.
#[derive(Clone, Debug)]
pub struct BackupSpec {
    /// The file (refused if it exists).
    pub path: PathBuf,
    /// The format.
    pub format: BackupFormat,
    /// Where the passphrase comes from.
    pub passphrase: SecretSource,
}

/// The backup written.
#[derive(Clone, Debug, Serialize)]
pub struct BackupRecord {
    /// The file.
    pub path: PathBuf,
    /// The format.
    pub format: BackupFormat,
    /// How to open it without sbkit.
    pub open_command: String,
    /// Re-read and opened with the passphrase after writing.
    pub verified: bool,
}

/// What [`create`] and [`restore`] did.
#[derive(Clone, Debug, Serialize)]
pub struct ProvisionReport {
    /// Process hardening achieved.
    pub hardening: Hardening,
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// Certificate subject.
    pub subject: String,
    /// Certificate end of validity.
    pub not_after: String,
    /// SHA-256 of the certificate, hex.
    pub cert_sha256: String,
    /// SHA-256 of the public key, hex.
    pub public_key_sha256: String,
    /// The certificate file written, if any.
    pub certificate_file: Option<PathBuf>,
    /// The backup (written by create, read by restore).
    pub backup: Option<BackupRecord>,
    /// One report per token.
    pub tokens: Vec<TokenReport>,
    /// Checks across tokens and the backup.
    pub checks: Vec<CheckLine>,
    /// mkosi settings and plain URIs.
    pub mkosi: mkosi::MkosiConfig,
    /// Warnings.
    pub warnings: Vec<String>,
}

impl ProvisionReport {
    /// Whether every check on every token passed.
    pub fn passed(&self) -> bool {
        self.tokens.iter().all(|t| t.passed())
            && self.checks.iter().all(|c| c.result != Verdict::Fail)
    }
}

/// Parses a CKA_ID given as hex (`02`, `0x02`) or URI-encoded (`%02`).
pub fn parse_id(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim_start_matches("0x");
    if s.contains('%') {
        let u = Pkcs11Uri::parse(&format!("pkcs11:id={s}")).map_err(|e| e.to_string())?;
        return u.id.ok_or_else(|| "empty id".to_string());
    }
    hex::decode(t).map_err(|_| format!("id {s:?} is not hex (write 02 for the byte 0x02)"))
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if crate::token::is_pkcs11_uri(s) {
            Pkcs11Uri::parse(s).map_err(|e| e.to_string())?;
            Ok(Target::Pkcs11(s.to_string()))
        } else if let Some(r) = s.strip_prefix("piv:") {
            Ok(Target::Piv(r.to_string()))
        } else {
            Err(format!(
                "{s:?}: give a pkcs11: URI (e.g. pkcs11:token=mkosi) or piv:READER (e.g. piv:Yubico)"
            ))
        }
    }
}

/// Generates the key in memory and issues its self-signed certificate.
pub fn generate(spec: &KeySpec) -> Result<(FileSigner, Vec<u8>), ProvisionError> {
    let key = FileSigner::generate(spec.algorithm)?;
    let der = cert::issue_self_signed(
        &key,
        &CertRequest {
            common_name: &spec.common_name,
            organization: &spec.organization,
            profile: CertProfile::CodeSigning,
            not_before: spec.not_before,
            days: spec.days,
        },
    )?;
    Ok((key, der))
}

fn algorithm_warning(alg: KeyAlgorithm) -> Option<String> {
    match alg {
        KeyAlgorithm::P384 | KeyAlgorithm::P256 => Some(format!(
            "{alg}: {} For firmware (db) signing and TPM PCR policies use rsa2048.",
            alg.firmware_warning().unwrap_or_default()
        )),
        _ => alg.firmware_warning().map(str::to_string),
    }
}

/// The PKCS#11 URI that selects the token of a target, for checking.
pub fn check_uri(target: &Target, piv_module: Option<&Path>) -> String {
    match target {
        Target::Pkcs11(u) => u.clone(),
        Target::Piv(reader) => {
            let module = piv_module
                .map(Path::to_path_buf)
                .or_else(|| {
                    crate::token::module::select_module(&Pkcs11Uri::default())
                        .ok()
                        .map(|(p, _)| p)
                })
                .unwrap_or_default();
            let full = piv::resolve_reader(reader).unwrap_or_else(|_| reader.clone());
            format!(
                "pkcs11:slot-description={}?module-path={}",
                encode_text(&full),
                module.display()
            )
        }
    }
}

/// A target checked and opened by [`preflight`], ready to take the key.
pub enum Ready {
    /// A logged-in PKCS#11 session (the login lasts while it is open).
    Pkcs11(p11::TokenSession),
    /// A PIV card held exclusively, with its PIN (already verified once).
    Piv(piv::Card, LockedBytes),
}

/// Checks every target can take the key before anything is generated, and
/// keeps them open so the PIN is asked once: PKCS#11 tokens are found,
/// logged in and have the ID free; PIV cards have no default PIN, PUK or
/// management key left, slot 9c is free (or `replace`), and the PIN verifies.
/// With `resumable` (a restore: the key is known only after the backup is
/// opened) a PKCS#11 ID that is taken is judged at import instead, where
/// the objects of an interrupted import of the same key are completed.
pub fn preflight(placement: &Placement, resumable: bool) -> Result<Vec<Ready>, ProvisionError> {
    if placement.targets.is_empty() {
        return Err(ProvisionError::Refused(
            "no token given: add --token pkcs11:… or --piv READER (one per token; two YubiKeys = two --piv)".into(),
        ));
    }
    let mut ready = Vec::new();
    for t in &placement.targets {
        match t {
            Target::Pkcs11(uri) => {
                let ts = p11::open_token(uri, true, true)?;
                if !resumable {
                    p11::check_id_free(&ts, &placement.id, placement.replace)?;
                }
                ready.push(Ready::Pkcs11(ts));
            }
            Target::Piv(reader) => {
                let mut card = piv::Card::open(reader)?;
                card.refuse_defaults()?;
                if !placement.replace && card.slot_has_certificate(piv::SLOT_SIGNATURE)? {
                    return Err(ProvisionError::Refused(format!(
                        "the PIV card in {:?} already has a certificate in slot 9c; nothing was changed. Use --replace to overwrite it (check first that its key is backed up)",
                        card.reader()
                    )));
                }
                let pin = piv::token_pin(&card)?;
                card.verify_pin(&pin)?;
                ready.push(Ready::Piv(card, pin));
            }
        }
    }
    Ok(ready)
}

/// Loads the key onto every target opened by [`preflight`].
fn load_onto_targets(
    key: &FileSigner,
    cert_der: &[u8],
    placement: &Placement,
    ready: Vec<Ready>,
) -> Result<(), ProvisionError> {
    for r in ready {
        match r {
            Ready::Pkcs11(ts) => {
                p11::import(
                    &ts,
                    &p11::ImportRequest {
                        key,
                        cert_der,
                        label: &placement.label,
                        id: &placement.id,
                        always_authenticate: placement.always_authenticate,
                        replace: placement.replace,
                    },
                )?;
            }
            Ready::Piv(mut card, pin) => {
                card.import_signing_key(&pin, key, cert_der)?;
            }
        }
    }
    Ok(())
}

/// Verifies every target against `expected`.
pub fn verify_targets(
    expected: &Expected,
    placement: &Placement,
) -> Result<Vec<TokenReport>, ProvisionError> {
    let mut reports = Vec::new();
    for t in &placement.targets {
        let exp = match t {
            // PIV object labels are fixed by the driver.
            Target::Piv(_) => Expected {
                label: None,
                ..expected.clone()
            },
            Target::Pkcs11(_) => expected.clone(),
        };
        let uri = check_uri(t, placement.piv_module.as_deref());
        reports.push(check::verify_token(
            &uri,
            &exp,
            placement.signature_dir.as_deref(),
        )?);
    }
    Ok(reports)
}

fn summary(
    key: &FileSigner,
    cert_der: &[u8],
) -> Result<(String, String, String, String), ProvisionError> {
    let s = cert::CertSummary::from_der(cert_der)?;
    Ok((
        s.subject,
        s.not_after,
        s.sha256,
        hex::encode(sha2::Sha256::digest(key.public_key_der())),
    ))
}

fn token_label_for_uris(reports: &[TokenReport], placement: &Placement) -> String {
    reports
        .first()
        .map(|r| r.token_label.clone())
        .unwrap_or_else(|| placement.label.clone())
}

/// The whole creation workflow; see the module documentation.
pub fn create(
    spec: &KeySpec,
    backup_spec: &BackupSpec,
    placement: &Placement,
    cert_out: Option<&Path>,
) -> Result<ProvisionReport, ProvisionError> {
    let hardening = harden_for_private_keys();
    let mut warnings = hardening.warnings();
    warnings.extend(algorithm_warning(spec.algorithm));
    files::refuse_existing(&backup_spec.path)?;
    if let Some(c) = cert_out {
        files::refuse_existing(c)?;
    }
    // Everything that can refuse does so before the key exists.
    let ready = preflight(placement, false)?;
    let passphrase = backup_spec.passphrase.read("backup passphrase", true)?;
    if passphrase.len() < backup::MIN_PASSPHRASE_LEN {
        return Err(BackupError::WeakPassphrase {
            len: passphrase.len(),
        }
        .into());
    }

    let (key, cert_der) = generate(spec)?;
    let plain = backup::key_backup_plaintext(&key, &cert_der)?;
    let sealed = backup::encrypt(backup_spec.format, &plain, &passphrase)?;
    drop(plain);
    files::write_new(&backup_spec.path, &sealed, 0o600)?;
    // Read back what is on disk and open it: a backup that does not open is no backup.
    let reread = files::read(&backup_spec.path)?;
    let reopened = backup::open_key_backup(
        &reread,
        &passphrase,
        &backup_spec.path.display().to_string(),
    )?;
    let verified = reopened.key.public_key_der() == key.public_key_der()
        && reopened.cert_der.as_deref() == Some(&cert_der[..]);
    drop(reopened);
    drop(passphrase);
    if !verified {
        return Err(ProvisionError::Refused(format!(
            "{} does not open to the key just made; no token was touched. Delete it and run again",
            backup_spec.path.display()
        )));
    }
    if let Some(c) = cert_out {
        files::write_new(c, cert::to_pem(&cert_der).as_bytes(), 0o644)?;
    }

    load_onto_targets(&key, &cert_der, placement, ready)?;
    let (subject, not_after, cert_sha256, public_key_sha256) = summary(&key, &cert_der)?;
    // The key is no longer needed: OpenSSL clears its secure-heap numbers on free.
    drop(key);

    let expected = Expected {
        cert_der: cert_der.clone(),
        algorithm: spec.algorithm,
        label: Some(placement.label.clone()),
        id: placement.id.clone(),
    };
    let tokens = verify_targets(&expected, placement)?;
    let checks = check::cross_checks(&tokens, Some(&cert_sha256));
    let label = token_label_for_uris(&tokens, placement);
    Ok(ProvisionReport {
        hardening,
        algorithm: spec.algorithm,
        subject,
        not_after,
        cert_sha256,
        public_key_sha256,
        certificate_file: cert_out.map(Path::to_path_buf),
        backup: Some(BackupRecord {
            path: backup_spec.path.clone(),
            format: backup_spec.format,
            open_command: backup_spec
                .format
                .open_command(&backup_spec.path.display().to_string()),
            verified,
        }),
        tokens,
        checks,
        mkosi: mkosi::config(
            &label,
            &placement.id,
            cert_out.map(|p| p.display().to_string()).as_deref(),
        ),
        warnings,
    })
}

/// Restores a backup onto replacement tokens. `cert_file` is needed only
/// for a bare `openssl enc` backup of a key without its certificate.
pub fn restore(
    backup_path: &Path,
    passphrase: &SecretSource,
    cert_file: Option<&Path>,
    placement: &Placement,
) -> Result<ProvisionReport, ProvisionError> {
    let hardening = harden_for_private_keys();
    let mut warnings = hardening.warnings();
    let ready = preflight(placement, true)?;
    let data = files::read(backup_path)?;
    let pass = passphrase.read("backup passphrase", false)?;
    let opened = backup::open_key_backup(&data, &pass, &backup_path.display().to_string())?;
    drop(pass);
    let cert_der = match (&opened.cert_der, cert_file) {
        (Some(c), _) => c.clone(),
        (None, Some(f)) => {
            let der = crate::store::signing::read_certificate(f).map_err(|e| {
                ProvisionError::Refused(format!("{}: {e}", f.display()))
            })?;
            let public = openssl::x509::X509::from_der(&der)
                .and_then(|x| x.public_key())
                .and_then(|k| k.public_key_to_der())
                .map_err(|e| ProvisionError::Refused(e.to_string()))?;
            if public != opened.key.public_key_der() {
                return Err(ProvisionError::Refused(format!(
                    "{} is the certificate of another key than the backup's; nothing was changed",
                    f.display()
                )));
            }
            der
        }
        (None, None) => {
            return Err(ProvisionError::Refused(format!(
                "{} holds a key but no certificate (a plain `openssl enc` backup); give the certificate with --cert FILE",
                backup_path.display()
            )))
        }
    };
    let algorithm = opened.key.algorithm();
    warnings.extend(algorithm_warning(algorithm));
    load_onto_targets(&opened.key, &cert_der, placement, ready)?;
    let (subject, not_after, cert_sha256, public_key_sha256) = summary(&opened.key, &cert_der)?;
    let format = opened.format;
    drop(opened);
    let expected = Expected {
        cert_der,
        algorithm,
        label: Some(placement.label.clone()),
        id: placement.id.clone(),
    };
    let tokens = verify_targets(&expected, placement)?;
    let checks = check::cross_checks(&tokens, Some(&cert_sha256));
    let label = token_label_for_uris(&tokens, placement);
    Ok(ProvisionReport {
        hardening,
        algorithm,
        subject,
        not_after,
        cert_sha256,
        public_key_sha256,
        certificate_file: None,
        backup: Some(BackupRecord {
            path: backup_path.to_path_buf(),
            format,
            open_command: format.open_command(&backup_path.display().to_string()),
            verified: true,
        }),
        tokens,
        checks,
        mkosi: mkosi::config(&label, &placement.id, None),
        warnings,
    })
}

/// The human summary of a report.
pub fn render(r: &ProvisionReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Signing key {} ({})", r.subject, r.algorithm);
    let _ = writeln!(s, "  certificate sha256 {}", r.cert_sha256);
    let _ = writeln!(s, "  public key  sha256 {}", r.public_key_sha256);
    let _ = writeln!(s, "  valid until {}", r.not_after);
    if let Some(c) = &r.certificate_file {
        let _ = writeln!(s, "  certificate file {}", c.display());
    }
    if let Some(b) = &r.backup {
        let _ = writeln!(
            s,
            "  backup {} ({}, {}); opens without sbkit with: {}",
            b.path.display(),
            b.format,
            if b.verified {
                "re-read and opened"
            } else {
                "NOT verified"
            },
            b.open_command
        );
    }
    for t in &r.tokens {
        let _ = writeln!(
            s,
            "Token {:?} serial {} ({})",
            t.token_label,
            t.token_serial,
            t.module.display()
        );
        for o in &t.objects {
            let _ = writeln!(s, "  {:<7} {}", o.kind, o.uri);
        }
        for c in &t.checks {
            let _ = writeln!(s, "  {}", c.render());
        }
        if let Some(f) = t.test_signature.as_ref().and_then(|t| t.files.as_ref()) {
            let _ = writeln!(s, "  check by hand: {}", f.command);
        }
    }
    for c in &r.checks {
        let _ = writeln!(s, "{}", c.render());
    }
    let _ = writeln!(s, "\nmkosi.conf:\n{}", r.mkosi.validation_block);
    let _ = writeln!(s, "Plain URIs (build-uki, openssl, sbsign):");
    let _ = writeln!(s, "  key         {}", r.mkosi.key_uri);
    let _ = writeln!(s, "  certificate {}", r.mkosi.cert_uri);
    let _ = writeln!(s, "  build-uki   {}", r.mkosi.build_uki);
    let _ = writeln!(
        s,
        "Result: {}",
        if r.passed() {
            "all checks passed"
        } else {
            "SOME CHECKS FAILED"
        }
    );
    s
}
