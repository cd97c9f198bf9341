//! The `genkey` command: a Secure Boot key hierarchy (PK, KEK, db) and a TPM
//! PCR-policy key, with the signature lists and `.auth` files firmware takes.
//!
//! The story: check the name and the directory, read any firmware export,
//! make or load the keys, issue the certificates, build the lists, sign the
//! `.auth` files, and write everything as one transaction.

pub mod lists;

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;
use time::OffsetDateTime;

use crate::efi::authvar::{AuthVarError, SECURE_BOOT_VARIABLE};
use crate::efi::microsoft::{MicrosoftSelection, OPTION_ROM_WARNING};
use crate::efi::{AuthenticatedVariable, EfiTime, Guid};
use crate::keys::cert::{self, CertError, CertRequest, CertSummary};
use crate::keys::{FileSigner, KeyAlgorithm, KeyFileError, KeyHierarchy, KeyRole, Signer};
use crate::secret::{LockedBytes, SecretError, SecretSource};
use crate::store::atomic::{CommitReport, WriteError, WriteSet};
use crate::store::hardened;
use crate::store::import::{read_export_dir, ImportError, ImportedList};
use crate::store::keydir::{KeyBackend, KeyDir, KeyDirError, Unlock};
pub use crate::store::layout::KeyLayout;
use crate::store::layout::MANIFEST;
use crate::store::manifest::{CertificateRecord, KeyRecord, ListRecord, ManifestError};
use crate::store::{Manifest, Role};

use lists::BuiltList;

/// Longest organisation name: "NAME KEK" must fit X.520's 64-character common name.
pub const MAX_NAME_LEN: usize = 60;
/// Validities below this many days get a warning.
pub const SHORT_VALIDITY_DAYS: u32 = 90;

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct GenkeyOptions {
    /// Organisation name, e.g. "Acme Corp".
    pub name: String,
    /// The key directory.
    pub output: PathBuf,
    /// Certificate validity in days.
    pub days: u32,
    /// Algorithm of PK, KEK and db.
    pub algorithm: KeyAlgorithm,
    /// Which Microsoft certificates to enroll.
    pub microsoft: MicrosoftSelection,
    /// A firmware export to merge.
    pub custom_cert_dir: Option<PathBuf>,
    /// Replace an existing key set (the old one is moved aside, not deleted).
    pub force: bool,
    /// Keep the existing private keys and remake certificates, lists and `.auth` files.
    pub reuse_keys: bool,
    /// Owner GUID to use instead of the directory's or a random one.
    pub owner_guid: Option<Guid>,
    /// Certificate start and `.auth` timestamp (from `SOURCE_DATE_EPOCH` for reproducible output).
    pub timestamp: OffsetDateTime,
    /// Flat Kairos directory, or the hardened repository with encrypted keys.
    pub layout: KeyLayout,
    /// Passphrase of the hardened layout's encrypted keys (asked twice at a prompt).
    pub passphrase: Option<SecretSource>,
}

/// genkey failed; nothing in the key directory changed.
#[derive(Debug, thiserror::Error)]
pub enum GenkeyError {
    /// Bad organisation name.
    #[error("invalid NAME {name:?}: {problem}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The directory already holds keys.
    #[error(
        "{dir} already holds a key set ({files}); nothing was changed. Use another -o, \
             --reuse-keys to remake certificates and lists from these keys, or --force to \
             replace them (the old set is moved to replaced-<time>/, not deleted)"
    )]
    KeySetExists {
        /// The directory.
        dir: String,
        /// Some of the files found.
        files: String,
    },
    /// The output path is unusable.
    #[error("output {path}: {problem}")]
    Output {
        /// The path.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// `--reuse-keys` without keys.
    #[error("--reuse-keys: {path} is missing; without existing keys, leave out --reuse-keys")]
    MissingKey {
        /// The missing file.
        path: String,
    },
    /// The timestamp is before 1970 (SOURCE_DATE_EPOCH is never negative).
    #[error("the timestamp {0} (SOURCE_DATE_EPOCH) is before 1970-01-01 and out of range: SOURCE_DATE_EPOCH counts seconds since 1970 and cannot be negative; unset it or give a date after 1970")]
    TimestampOutOfRange(i64),
    /// Bad validity.
    #[error("--expiration-in-days {0}: must be between 1 and {max}", max = cert::MAX_VALIDITY_DAYS)]
    Validity(u32),
    /// Reading the firmware export failed.
    #[error("--custom-cert-dir: {0}")]
    Import(ImportError),
    /// A key file failed.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A certificate failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Signing an `.auth` file failed.
    #[error(transparent)]
    AuthVar(#[from] AuthVarError),
    /// The manifest of the directory is unreadable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A list could not be serialised.
    #[error("building {0}: {1}")]
    List(&'static str, String),
    /// The hardened layout's passphrase could not be read.
    #[error("the key passphrase: {0}")]
    Passphrase(SecretError),
    /// Encrypting or decrypting a hardened key failed.
    #[error(transparent)]
    Hardened(#[from] hardened::HardenedError),
    /// Encrypting a key failed.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// A key of the directory could not be loaded.
    #[error(transparent)]
    KeyDir(#[from] KeyDirError),
    /// A role's key is not one genkey can write (a token or offline key).
    #[error("the {role} key is held by {held}; genkey can only write keys it holds in memory")]
    NotExportable {
        /// The role.
        role: KeyRole,
        /// The key's description.
        held: String,
    },
}

// By hand rather than `#[from]`: the message already shows the inner error,
// and a source as well would print it twice in an error chain.
impl From<SecretError> for GenkeyError {
    fn from(e: SecretError) -> Self {
        GenkeyError::Passphrase(e)
    }
}

// By hand rather than `#[from]`: the message already shows the inner error,
// and a source as well would print it twice in an error chain.
impl From<ImportError> for GenkeyError {
    fn from(e: ImportError) -> Self {
        GenkeyError::Import(e)
    }
}

/// One variable in the report.
#[derive(Clone, Debug, Serialize)]
pub struct ListSummary {
    /// PK, KEK, db, dbx.
    pub variable: String,
    /// Number of entries.
    pub entries: usize,
    /// The `.esl` and `.auth` file names.
    pub files: Vec<String>,
    /// Which key signed the `.auth` file.
    pub signed_by: String,
}

/// What genkey did; printed for people or as `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct GenkeyReport {
    /// The key directory.
    pub directory: PathBuf,
    /// The manifest written.
    pub manifest: Manifest,
    /// The lists.
    pub lists: Vec<ListSummary>,
    /// What happened to imported entries.
    pub import_notes: Vec<String>,
    /// Files in the export directory that were not read.
    pub import_ignored: Vec<String>,
    /// Warnings for the user.
    pub warnings: Vec<String>,
    /// Files written and where replaced ones went.
    pub commit: CommitReport,
    /// Whether existing keys were reused.
    pub reused_keys: bool,
    /// What to do next.
    pub next_steps: Vec<String>,
}

/// Checks the organisation name.
pub fn validate_name(name: &str) -> Result<(), GenkeyError> {
    let bad = |problem: &str| GenkeyError::InvalidName {
        name: name.to_string(),
        problem: problem.to_string(),
    };
    if name.trim().is_empty() {
        return Err(bad(
            "it is empty; give your organisation's name, e.g. genkey \"Acme Corp\"",
        ));
    }
    if name.trim() != name {
        return Err(bad("it starts or ends with white space"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(bad(&format!(
            "it is {} characters long; certificate names allow {MAX_NAME_LEN}",
            name.chars().count()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("it contains control characters"));
    }
    Ok(())
}

/// The key-set files already present in `dir` (either layout).
fn existing_key_files(dir: &Path) -> Vec<String> {
    KeyDir::any_layout_set_files()
        .into_iter()
        .filter(|f| std::fs::symlink_metadata(dir.join(f)).is_ok())
        .collect()
}

fn check_output(dir: &Path) -> Result<(), GenkeyError> {
    let out_err = |problem: String| GenkeyError::Output {
        path: dir.display().to_string(),
        problem,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(out_err("exists and is not a directory".into()));
    }
    // Probe the nearest existing ancestor for write access before the slow key generation.
    let mut probe_dir = dir;
    while !probe_dir.exists() {
        probe_dir = match probe_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if probe_dir == Path::new(".") {
            break;
        }
    }
    tempfile::Builder::new()
        .prefix(".sbkit-probe")
        .tempfile_in(probe_dir)
        .map(drop)
        .map_err(|e| {
            out_err(format!(
                "{} is not writable ({e}); choose another -o or fix its permissions",
                probe_dir.display()
            ))
        })
}

/// Loads the existing private keys of every role for `--reuse-keys`.
fn load_keys(source: &KeyDir, unlock: &Unlock) -> Result<KeyHierarchy, GenkeyError> {
    for role in KeyRole::ALL {
        if !source.has_private_key(role) {
            return Err(GenkeyError::MissingKey {
                path: source
                    .root()
                    .join(source.private_key_file(role))
                    .display()
                    .to_string(),
            });
        }
    }
    Ok(source.load_hierarchy(&KeyRole::ALL, unlock)?)
}

/// Generates the four keys, each on its own thread: the generations are
/// independent, and RSA generation dominates genkey's run time.
fn generate_keys(
    algorithm: KeyAlgorithm,
    progress: &indicatif::ProgressBar,
) -> Result<KeyHierarchy, GenkeyError> {
    // systemd's PCR policy signatures are RSA-2048, whatever the Secure Boot keys are.
    let wanted = [
        (KeyRole::Pk, algorithm),
        (KeyRole::Kek, algorithm),
        (KeyRole::Db, algorithm),
        (KeyRole::Pcr, KeyAlgorithm::Rsa2048),
    ];
    progress.set_message(format!(
        "generating PK, KEK, db ({algorithm}) and TPM PCR policy keys"
    ));
    let generated: Vec<(KeyRole, Result<FileSigner, KeyFileError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|&(_, alg)| {
                scope.spawn(move || {
                    let k = FileSigner::generate(alg);
                    progress.inc(1);
                    k
                })
            })
            .collect();
        wanted
            .iter()
            .zip(handles)
            .map(|(&(role, _), h)| {
                let result = h.join().unwrap_or_else(|_| {
                    Err(KeyFileError::Parse {
                        path: role.name().into(),
                        message: "key generation thread panicked".into(),
                    })
                });
                (role, result)
            })
            .collect()
    });
    let mut keys = KeyHierarchy::new();
    for (role, key) in generated {
        keys.set(role, Box::new(key?));
    }
    Ok(keys)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The public key as PEM `SubjectPublicKeyInfo`, whatever holds the private key.
fn public_key_pem(signer: &dyn Signer) -> Result<Vec<u8>, GenkeyError> {
    let key = openssl::pkey::PKey::public_key_from_der(&signer.public_key_der())
        .map_err(KeyFileError::from)?;
    Ok(key.public_key_to_pem().map_err(KeyFileError::from)?)
}

fn public_key_sha256(signer: &dyn Signer) -> String {
    hex::encode(sha2::Sha256::digest(signer.public_key_der()))
}

/// Runs genkey. On error nothing in the output directory has changed.
pub fn run(
    opts: &GenkeyOptions,
    progress: &indicatif::ProgressBar,
) -> Result<GenkeyReport, GenkeyError> {
    validate_name(&opts.name)?;
    if opts.days == 0 || opts.days > cert::MAX_VALIDITY_DAYS {
        return Err(GenkeyError::Validity(opts.days));
    }
    if opts.timestamp.unix_timestamp() < 0 {
        return Err(GenkeyError::TimestampOutOfRange(
            opts.timestamp.unix_timestamp(),
        ));
    }
    check_output(&opts.output)?;
    crate::store::atomic::recover(&opts.output)?;
    let existing = existing_key_files(&opts.output);
    if !existing.is_empty() && !opts.force && !opts.reuse_keys {
        return Err(GenkeyError::KeySetExists {
            dir: opts.output.display().to_string(),
            files: existing
                .iter()
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let previous = if existing.is_empty() {
        None
    } else {
        Manifest::read(&opts.output)?
    };
    let owner = opts
        .owner_guid
        .or(previous.as_ref().map(|m| m.owner_guid))
        .unwrap_or_else(Guid::random);

    let imported: (Vec<ImportedList>, Vec<String>) = match &opts.custom_cert_dir {
        Some(dir) => {
            let imp = read_export_dir(dir, owner)?;
            let ignored = imp
                .ignored
                .iter()
                .map(|(f, why)| format!("{f}: {why}"))
                .collect();
            (imp.lists, ignored)
        }
        None => (Vec::new(), Vec::new()),
    };

    let mut warnings = Vec::new();
    let target = KeyDir::new(&opts.output, opts.layout);
    // The passphrase is read (and, for a new one, confirmed) before the slow
    // key generation, so a typo costs nothing.
    let passphrase: Option<LockedBytes> = if target.encrypts_private_keys() {
        warnings.extend(crate::secret::harden_for_private_keys().warnings());
        let source = opts.passphrase.clone().unwrap_or(SecretSource::Prompt);
        let p = source.read("key directory passphrase", !opts.reuse_keys)?;
        if p.len() < crate::backup::MIN_PASSPHRASE_LEN {
            return Err(crate::backup::BackupError::WeakPassphrase { len: p.len() }.into());
        }
        Some(p)
    } else {
        None
    };
    // With --reuse-keys the keys come from the directory as it is: a layout
    // that encrypts may take them from either layout (re-encrypting flat
    // keys); a plaintext layout reads only plaintext keys, so encrypted keys
    // are never silently written out in the clear.
    let source = if target.encrypts_private_keys() {
        KeyDir::open(&opts.output)
    } else {
        target.clone()
    };
    let keys = if opts.reuse_keys {
        progress.set_message("loading existing keys");
        let unlock = match &passphrase {
            Some(p) => Unlock::with_passphrase(p.duplicate()),
            None => Unlock::from_env(),
        };
        load_keys(&source, &unlock)?
    } else {
        generate_keys(opts.algorithm, progress)?
    };
    let signer = |role: KeyRole| -> Result<&dyn Signer, GenkeyError> {
        keys.require(role).map_err(|e| GenkeyError::MissingKey {
            path: e.to_string(),
        })
    };
    let var_signer = |var: Role| -> Result<&dyn Signer, GenkeyError> {
        signer(var.key_role().ok_or(GenkeyError::MissingKey {
            path: format!("{} holds no key", var.name()),
        })?)
    };
    let algorithm = signer(KeyRole::Pk)?.algorithm();
    if let Some(w) = algorithm.firmware_warning() {
        warnings.push(format!("{algorithm}: {w}"));
    }
    if opts.days < SHORT_VALIDITY_DAYS {
        warnings.push(format!(
            "the certificates are valid for only {} days; firmware does not check expiry, \
             but signing tools and verifiers may refuse expired certificates",
            opts.days
        ));
    }
    if !opts.microsoft.keeps_option_roms() {
        warnings.push(OPTION_ROM_WARNING.to_string());
    }

    progress.set_message("issuing certificates");
    let mut certs = Vec::new();
    for role in Role::WITH_KEYS {
        let cn = format!("{} {}", opts.name, role.name());
        let der = cert::issue_self_signed(
            var_signer(role)?,
            &CertRequest {
                common_name: &cn,
                organization: &opts.name,
                profile: role.profile(),
                not_before: opts.timestamp,
                days: opts.days,
            },
        )?;
        certs.push((role, der));
    }
    let cert_of = |role: Role| -> &[u8] {
        certs
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, d)| d.as_slice())
            .unwrap_or_default()
    };

    let built: Vec<BuiltList> = Role::ALL
        .into_iter()
        .map(|role| {
            let (ours, vendor) = match role {
                Role::Pk => (Some(cert_of(Role::Pk)), Vec::new()),
                Role::Kek => (Some(cert_of(Role::Kek)), opts.microsoft.kek()),
                Role::Db => (Some(cert_of(Role::Db)), opts.microsoft.db()),
                Role::Dbx => (None, Vec::new()),
            };
            lists::build(role, owner, ours, &vendor, &imported.0)
        })
        .collect();

    progress.set_message("signing authenticated variables");
    let efi_time = EfiTime::from_datetime(opts.timestamp);
    let mut set = WriteSet::new(&opts.output);
    // Where each file goes is the target directory's business.
    let place = |role: Role, ext: &str| -> String { target.variable_file(role, ext) };
    let exportable = |role: KeyRole| -> Result<&FileSigner, GenkeyError> {
        let s = signer(role)?;
        s.as_file_signer()
            .ok_or_else(|| GenkeyError::NotExportable {
                role,
                held: s.describe(),
            })
    };
    let seal = |key: &FileSigner| -> Result<Vec<u8>, GenkeyError> {
        let pem = key.to_pkcs8_pem()?;
        let plain = LockedBytes::from_slice(&pem);
        drop(pem);
        Ok(crate::backup::encrypt(
            crate::backup::BackupFormat::Age,
            &plain,
            passphrase.as_deref().unwrap_or_default(),
        )?)
    };
    let mut summaries = Vec::new();
    let mut list_records = Vec::new();
    let mut import_notes = Vec::new();
    for list in &built {
        import_notes.extend(list.notes.iter().cloned());
        if list.role == Role::Dbx && list.database.lists.is_empty() {
            for name in target.variable_names_to_displace(Role::Dbx) {
                set.displace(&name);
            }
            continue;
        }
        let esl = list
            .database
            .to_bytes()
            .map_err(|e| GenkeyError::List(list.role.name(), e.to_string()))?;
        let signer_role = list.role.signed_by();
        let auth = AuthenticatedVariable::sign(
            list.role.name(),
            list.role.vendor(),
            SECURE_BOOT_VARIABLE,
            efi_time,
            &esl,
            var_signer(signer_role)?,
            cert_of(signer_role),
            var_signer(signer_role)?.algorithm().default_digest(),
        )?;
        set.add(&place(list.role, "esl"), esl, false);
        set.add(&place(list.role, "auth"), auth.to_bytes(), false);
        summaries.push(ListSummary {
            variable: list.role.name().into(),
            entries: list.records.len(),
            files: vec![list.role.file("esl"), list.role.file("auth")],
            signed_by: signer_role.name().into(),
        });
        list_records.push(ListRecord {
            variable: list.role.name().into(),
            signed_by: signer_role.name().into(),
            entries: list.records.clone(),
        });
    }

    // The private keys: written where the target's backend for the role
    // says, when it is a file genkey holds; tokens and offline keys stay put.
    for role in KeyRole::ALL {
        let name = target.private_key_file(role);
        match target.backend(role) {
            KeyBackend::EncryptedFile(_) => {
                // Re-encrypted on --reuse-keys too: the passphrase may be new.
                set.add(&name, seal(exportable(role)?)?, true);
            }
            KeyBackend::File(_) => {
                // Reused plaintext keys are already in place.
                if !opts.reuse_keys {
                    set.add(&name, exportable(role)?.to_pkcs8_pem()?.to_vec(), true);
                }
            }
            KeyBackend::Pkcs11(_) | KeyBackend::Offline { .. } => {}
        }
    }
    let mut key_records = Vec::new();
    for (role, der) in &certs {
        let signer = var_signer(*role)?;
        set.add(&place(*role, "pem"), cert::to_pem(der), false);
        set.add(&place(*role, "der"), der.clone(), false);
        let s = CertSummary::from_der(der)?;
        key_records.push(KeyRecord {
            role: role.name().into(),
            algorithm: signer.algorithm().name().into(),
            private_key: role
                .key_role()
                .map(|r| target.private_key_file(r))
                .unwrap_or_default(),
            public_key_sha256: public_key_sha256(signer),
            certificate: Some(CertificateRecord {
                subject: s.subject,
                serial: s.serial,
                not_before: s.not_before,
                not_after: s.not_after,
                sha256: s.sha256,
            }),
        });
    }
    let pcr = signer(KeyRole::Pcr)?;
    set.add(&target.pcr_public_key_file(), public_key_pem(pcr)?, false);
    key_records.push(KeyRecord {
        role: KeyRole::Pcr.name().into(),
        algorithm: pcr.algorithm().name().into(),
        private_key: target.private_key_file(KeyRole::Pcr),
        public_key_sha256: public_key_sha256(pcr),
        certificate: None,
    });

    let manifest = Manifest {
        format: crate::store::manifest::FORMAT.into(),
        tool: format!("sbkit genkey {}", env!("CARGO_PKG_VERSION")),
        name: opts.name.clone(),
        owner_guid: owner,
        created: previous
            .as_ref()
            .filter(|_| opts.reuse_keys)
            .map(|m| m.created.clone())
            .unwrap_or_else(|| rfc3339(opts.timestamp)),
        auth_timestamp: efi_time.to_string(),
        microsoft: opts.microsoft.name().into(),
        layout: target.manifest_layout(),
        keys: key_records,
        lists: list_records,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| GenkeyError::List("manifest", e.to_string()))?;
    let dates: Vec<hardened::KeyDates> = manifest
        .keys
        .iter()
        .filter_map(|k| {
            k.certificate.as_ref().map(|c| hardened::KeyDates {
                role: k.role.clone(),
                subject: c.subject.clone(),
                not_before: c.not_before.clone(),
                not_after: c.not_after.clone(),
                cert_sha256: c.sha256.clone(),
                public_key_sha256: k.public_key_sha256.clone(),
            })
        })
        .collect();
    let with_dbx = built
        .iter()
        .any(|l| l.role == Role::Dbx && !l.database.lists.is_empty());
    let extras = target.layout_extras(&opts.name, &manifest.created, &dates, with_dbx);
    for (path, text) in extras.documents {
        set.add(&path, text, false);
    }
    for (link, to) in extras.links {
        set.add_symlink(&link, &to);
    }
    // The manifest goes last: its presence marks a complete set.
    set.add(MANIFEST, manifest_json, false);

    progress.set_message("writing key directory");
    let backup_tag = OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "old".into());
    let commit = set.commit(&backup_tag)?;

    let dir = opts.output.display().to_string();
    let first_step = target.custody_note();
    let next_steps = vec![
        first_step,
        format!("Build a signed image: build-uki IMAGE -t iso -d build/ -k {dir}"),
        format!("Enroll on a machine in setup mode: enroll efivars -k {dir} (or boot the ISO with secure-boot-enroll)"),
    ];
    Ok(GenkeyReport {
        directory: opts.output.clone(),
        manifest,
        lists: summaries,
        import_notes,
        import_ignored: imported.1,
        warnings,
        commit,
        reused_keys: opts.reuse_keys,
        next_steps,
    })
}

/// The human summary of a report.
pub fn render_summary(r: &GenkeyReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let m = &r.manifest;
    let _ = writeln!(
        s,
        "Secure Boot keys for {:?} in {}",
        m.name,
        r.directory.display()
    );
    let _ = writeln!(s, "  owner GUID   {}", m.owner_guid);
    let _ = writeln!(s, "  Microsoft    {}", m.microsoft);
    for k in &m.keys {
        match &k.certificate {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "  {:<4} {:<8} cert sha256 {}  expires {}",
                    k.role, k.algorithm, c.sha256, c.not_after
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  {:<13} {:<8} public key sha256 {}",
                    k.role, k.algorithm, k.public_key_sha256
                );
            }
        }
    }
    for l in &r.lists {
        let _ = writeln!(
            s,
            "  {:<4} {:>3} entr{:<3} {} (signed by {})",
            l.variable,
            l.entries,
            if l.entries == 1 { "y" } else { "ies" },
            l.files.join(", "),
            l.signed_by
        );
    }
    for n in &r.import_notes {
        let _ = writeln!(s, "  import: {n}");
    }
    for n in &r.import_ignored {
        let _ = writeln!(s, "  import: ignored {n}");
    }
    if let Some(b) = &r.commit.replaced_into {
        let _ = writeln!(s, "  the previous files were moved to {}", b.display());
    }
    let _ = writeln!(s, "Next steps:");
    for n in &r.next_steps {
        let _ = writeln!(s, "  - {n}");
    }
    s
}
