//! The hardened key repository layout (`genkey --layout hardened`):
//!
//! ```text
//! KEYDIR/
//!   README.md                 what is where, creation and expiry dates, what to do when
//!   manifest.json             as in the flat layout, with "layout": "hardened"
//!   secureboot/pk/            PK.key.age (encrypted), PK.pem, PK.der, PK.esl, PK.auth
//!   secureboot/kek/           KEK.key.age, KEK.pem, KEK.der, KEK.esl, KEK.auth
//!   secureboot/db/            db.key.age, db.pem, db.der, db.esl, db.auth (+ dbx.esl/.auth)
//!   secureboot/pcr/           tpm2-pcr-private.pem.age, tpm2-pcr-public.pem
//!   fingerprints/             SHA-256 of every certificate and public key
//!   revoked/                  where retired certificates go (README)
//!   rotation/                 the rotation schedule (README)
//!   backups/                  storage-locations.md, recovery-playbook.md (templates to fill in)
//!   PK.esl PK.auth … db.der   symbolic links into secureboot/, so that enroll, build-uki's
//!                             ISO auto-enroll and users' scripts find the Kairos names
//! ```
//!
//! Every private key is stored age-encrypted (passphrase mode) and only ever
//! decrypted in memory ([`load_key`]); there is no plaintext `*.key` file.
//! The passphrase comes from `SBKIT_KEY_PASSPHRASE`,
//! `SBKIT_KEY_PASSPHRASE_FILE`, or a terminal prompt.

use std::path::{Path, PathBuf};

use super::layout::{Role, MANIFEST, PCR_PUBLIC_KEY};
use crate::backup;
use crate::keys::FileSigner;
use crate::secret::{LockedBytes, SecretError, SecretSource};

/// The directory holding the Secure Boot material.
pub const SECUREBOOT_DIR: &str = "secureboot";
/// Environment variable holding the key passphrase.
pub const PASSPHRASE_ENV: &str = "SBKIT_KEY_PASSPHRASE";
/// Environment variable naming a file holding the key passphrase.
pub const PASSPHRASE_FILE_ENV: &str = "SBKIT_KEY_PASSPHRASE_FILE";
/// The `layout` value in the manifest.
pub const LAYOUT_NAME: &str = "hardened";

/// The role's directory, relative to the key directory.
pub fn role_dir(role: Role) -> &'static str {
    match role {
        Role::Pk => "secureboot/pk",
        Role::Kek => "secureboot/kek",
        Role::Db | Role::Dbx => "secureboot/db",
    }
}

/// The PCR key's directory.
pub const PCR_DIR: &str = "secureboot/pcr";
/// The encrypted PCR private key, relative to the key directory.
pub const PCR_PRIVATE_KEY_ENCRYPTED: &str = "secureboot/pcr/tpm2-pcr-private.pem.age";

/// `secureboot/pk/PK.auth` for `(Role::Pk, "auth")`.
pub fn role_file(role: Role, ext: &str) -> String {
    format!("{}/{}", role_dir(role), role.file(ext))
}

/// The encrypted private key of a role, relative to the key directory.
pub fn encrypted_key(role: Role) -> String {
    role_file(role, "key.age")
}

/// The PCR public key, relative to the key directory.
pub fn pcr_public_key() -> String {
    format!("{PCR_DIR}/{PCR_PUBLIC_KEY}")
}

/// Whether `dir` holds a hardened repository.
pub fn is_hardened(dir: &Path) -> bool {
    dir.join(SECUREBOOT_DIR).is_dir() && dir.join(encrypted_key(Role::Db)).is_file()
}

/// A hardened key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HardenedError {
    /// The passphrase could not be read.
    #[error("{0} (the hardened key directory's passphrase comes from ${PASSPHRASE_ENV}, ${PASSPHRASE_FILE_ENV} or a terminal prompt)")]
    Passphrase(SecretError),
    /// The file cannot be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Decryption failed.
    #[error(transparent)]
    Backup(#[from] backup::BackupError),
}

// By hand rather than `#[from]`: the message already shows the inner error,
// and a source as well would print it twice in an error chain.
impl From<SecretError> for HardenedError {
    fn from(e: SecretError) -> Self {
        HardenedError::Passphrase(e)
    }
}

/// The key passphrase: `SBKIT_KEY_PASSPHRASE`, `SBKIT_KEY_PASSPHRASE_FILE`, else a prompt.
pub fn passphrase_from_env() -> Result<LockedBytes, SecretError> {
    let source = if std::env::var_os(PASSPHRASE_ENV).is_some_and(|v| !v.is_empty()) {
        SecretSource::Env(PASSPHRASE_ENV.into())
    } else if let Some(f) = std::env::var_os(PASSPHRASE_FILE_ENV).filter(|v| !v.is_empty()) {
        SecretSource::File(f.into())
    } else {
        SecretSource::Prompt
    };
    source.read("key directory passphrase", false)
}

/// Decrypts one private key file of the repository, in memory.
pub fn load_key(path: &Path, passphrase: &[u8]) -> Result<FileSigner, HardenedError> {
    let data = std::fs::read(path).map_err(|source| HardenedError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    let origin = path.display().to_string();
    let (_, plain) = backup::decrypt(&data, passphrase, &origin)?;
    FileSigner::from_bytes(&plain, &origin).map_err(|e| {
        HardenedError::Backup(backup::BackupError::NoKey {
            origin,
            message: e.to_string(),
        })
    })
}

/// Symbolic links at the top of the repository to the public files, with
/// the flat layout's names (name, target).
pub fn compat_links(with_dbx: bool) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for role in Role::WITH_KEYS {
        for ext in ["esl", "auth", "pem", "der"] {
            v.push((role.file(ext), role_file(role, ext)));
        }
    }
    if with_dbx {
        for ext in ["esl", "auth"] {
            v.push((Role::Dbx.file(ext), role_file(Role::Dbx, ext)));
        }
    }
    v.push((PCR_PUBLIC_KEY.to_string(), pcr_public_key()));
    v
}

/// One key's dates and fingerprints for the documents.
#[derive(Clone, Debug)]
pub struct KeyDates {
    /// `PK`, `KEK`, `db`.
    pub role: String,
    /// Certificate subject.
    pub subject: String,
    /// Start of validity.
    pub not_before: String,
    /// End of validity.
    pub not_after: String,
    /// SHA-256 of the certificate.
    pub cert_sha256: String,
    /// SHA-256 of the public key.
    pub public_key_sha256: String,
}

/// The repository's documents (README, templates, fingerprints), as
/// (path, contents).
pub fn documents(name: &str, created: &str, keys: &[KeyDates]) -> Vec<(String, String)> {
    let mut docs = Vec::new();
    let table: String = keys
        .iter()
        .map(|k| {
            format!(
                "| {} | {} | {} | {} | `{}` |\n",
                k.role, k.subject, k.not_before, k.not_after, k.cert_sha256
            )
        })
        .collect();
    let earliest = keys
        .iter()
        .map(|k| k.not_after.as_str())
        .min()
        .unwrap_or("");
    docs.push((
        "README.md".to_string(),
        format!(
            "# Secure Boot key repository: {name}\n\n\
             Created {created} by sbkit genkey (hardened layout).\n\n\
             | key | subject | valid from | valid until | certificate SHA-256 |\n\
             | --- | --- | --- | --- | --- |\n{table}\n\
             First expiry: **{earliest}**. Firmware does not check expiry, but signing tools may;\n\
             plan the rotation (see `rotation/`) well before.\n\n\
             ## What is where\n\n\
             - `secureboot/pk`, `secureboot/kek`, `secureboot/db`: each key's certificate (`.pem`, `.der`),\n\
               signature list (`.esl`), authenticated variable (`.auth`) and its private key\n\
               **encrypted** with age (`*.key.age`, passphrase mode). There is no plaintext key on disk.\n\
             - `secureboot/pcr`: the TPM PCR policy key (encrypted) and its public key.\n\
             - `fingerprints/`: SHA-256 of every certificate and public key, to compare with what\n\
               firmware (`enroll status`) and tokens report.\n\
             - `revoked/`: certificates taken out of service, with the date and reason.\n\
             - `rotation/`: the rotation schedule.\n\
             - `backups/`: where the offline copies of this repository are and how to recover.\n\
             - `PK.esl`, `db.auth`, … at the top: links into `secureboot/` for tools that expect the\n\
               flat (Kairos) names: `enroll`, `build-uki -k`.\n\n\
             ## Using it\n\n\
             Tools that need a private key decrypt it in memory only; give the passphrase through\n\
             `{PASSPHRASE_ENV}`, `{PASSPHRASE_FILE_ENV}` or at the prompt:\n\n\
             ```sh\nbuild-uki dir:/rootfs -t iso -d build/ -k {dir}\nenroll efivars -k {dir}\n```\n\n\
             To open a key by hand (it then *is* on disk: do it on an offline machine only):\n\
             `age -d secureboot/db/db.key.age`.\n",
            dir = "KEYDIR"
        ),
    ));
    let mut fp = String::from("# certificate and public key SHA-256\n");
    for k in keys {
        fp.push_str(&format!(
            "{}  certificate {}\n{}  public-key  {}\n",
            k.cert_sha256, k.role, k.public_key_sha256, k.role
        ));
        docs.push((
            format!("fingerprints/{}.sha256", k.role),
            format!("{}  {}.der\n", k.cert_sha256, k.role),
        ));
    }
    docs.push(("fingerprints/SHA256SUMS".into(), fp));
    docs.push((
        "revoked/README.md".into(),
        "# Revoked keys\n\nMove a retired certificate here as `<role>-<date>.pem` with a line in this file:\n\
         date, certificate SHA-256, reason. Add its hash to dbx (genkey --custom-cert-dir with a dbx\n\
         list) if images it signed must stop booting.\n\n| date | role | certificate SHA-256 | reason |\n| --- | --- | --- | --- |\n"
            .into(),
    ));
    docs.push((
        "rotation/README.md".into(),
        format!(
            "# Rotation schedule\n\n| key | valid until | rotate by | done |\n| --- | --- | --- | --- |\n{}\n\
             Rotate db first (sign new images with both, enroll the new db entry signed by KEK),\n\
             then KEK (needs PK), PK last. Keep the Microsoft entries (`--microsoft`) when you remake lists.\n",
            keys.iter()
                .map(|k| format!("| {} | {} | 90 days before | |\n", k.role, k.not_after))
                .collect::<String>()
        ),
    ));
    docs.push((
        "backups/storage-locations.md".into(),
        format!(
            "# Where the copies of this repository are\n\nRepository {name}, created {created}.\n\n\
             | copy | medium | place | custodian | last checked | passphrase held by |\n| --- | --- | --- | --- | --- | --- |\n\
             | 1 | | | | | |\n| 2 | | | | | |\n\n\
             Check each copy yearly: it must open (`age -d secureboot/pk/PK.key.age > /dev/null`) and its\n\
             `fingerprints/SHA256SUMS` must match this one.\n"
        ),
    ));
    docs.push((
        "backups/recovery-playbook.md".into(),
        "# Recovery playbook\n\n\
         1. Get a copy of the repository (see storage-locations.md) onto an offline machine.\n\
         2. Check `fingerprints/SHA256SUMS` against what the machines report (`enroll status`).\n\
         3. Lost db key: make a new db key, have KEK sign its `.auth`, enroll it, re-sign images.\n\
         4. Lost KEK: PK signs a new KEK `.auth`. Lost PK: the machines must be put in setup mode by hand.\n\
         5. Token-held keys: `genkey token restore --backup FILE --piv READER` (or `--token URI`) loads the\n\
            backup onto a replacement token and checks it.\n\
         6. Write down what happened in `revoked/README.md`.\n"
            .into(),
    ));
    docs
}

/// Files of a hardened set, for refusing to overwrite one.
pub fn set_files() -> Vec<String> {
    let mut v: Vec<String> = Role::WITH_KEYS.iter().map(|r| encrypted_key(*r)).collect();
    v.push(PCR_PRIVATE_KEY_ENCRYPTED.into());
    v.push(MANIFEST.into());
    v
}
