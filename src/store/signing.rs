//! The signing keys a build uses, from a key directory (`-k keys/`) or from
//! explicit key specifications (a file path or a `pkcs11:` URI).

use std::path::Path;

use super::layout::{Role, PCR_PRIVATE_KEY};
use crate::keys::{FileSigner, KeyFileError, Signer};

/// Keys could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeysError {
    /// A file the key directory should have is missing.
    #[error("{path} is missing: -k must name a key directory made by genkey (with db.key, db.der/db.pem, tpm2-pcr-private.pem)")]
    Missing {
        /// The file.
        path: String,
    },
    /// A key failed to load.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A hardened repository's encrypted key failed to open.
    #[error(transparent)]
    Hardened(#[from] super::hardened::HardenedError),
    /// A certificate failed to read.
    #[error("{path}: not a PEM or DER X.509 certificate")]
    Certificate {
        /// The file.
        path: String,
    },
    /// I/O.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The db signing key with its certificate, and the PCR policy key.
pub struct SigningKeys {
    /// Signs the images (Authenticode).
    pub secure_boot: Box<dyn Signer>,
    /// The certificate of `secure_boot`, DER.
    pub secure_boot_cert: Vec<u8>,
    /// Signs `.pcrsig` policies; `None` builds UKIs without `.pcrsig`/`.pcrpkey`.
    pub pcr: Option<Box<dyn Signer>>,
}

impl SigningKeys {
    /// [`SigningKeys::from_key_dir`] for the hardened layout.
    pub fn from_hardened_dir(dir: &Path) -> Result<Self, SigningKeysError> {
        use super::hardened;
        crate::secret::harden_process();
        let passphrase = hardened::passphrase_from_env().map_err(hardened::HardenedError::from)?;
        let db = hardened::load_key(&dir.join(hardened::encrypted_key(Role::Db)), &passphrase)?;
        let cert = read_certificate(&dir.join(hardened::role_file(Role::Db, "der")))?;
        let pcr_path = dir.join(hardened::PCR_PRIVATE_KEY_ENCRYPTED);
        let pcr = if pcr_path.exists() {
            Some(Box::new(hardened::load_key(&pcr_path, &passphrase)?) as Box<dyn Signer>)
        } else {
            None
        };
        Ok(SigningKeys {
            secure_boot: Box::new(db),
            secure_boot_cert: cert,
            pcr,
        })
    }
}

/// The db certificate of a key directory of either layout, without
/// touching (or decrypting) any private key: for commands that only verify.
pub fn secure_boot_certificate(dir: &Path) -> Result<Vec<u8>, SigningKeysError> {
    let candidates = if super::hardened::is_hardened(dir) {
        vec![dir.join(super::hardened::role_file(Role::Db, "der"))]
    } else {
        vec![
            dir.join(Role::Db.file("der")),
            dir.join(Role::Db.file("pem")),
        ]
    };
    match candidates.iter().find(|p| p.exists()) {
        Some(p) => read_certificate(p),
        None => Err(SigningKeysError::Missing {
            path: candidates[0].display().to_string(),
        }),
    }
}

/// Reads a certificate file (PEM or DER).
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, SigningKeysError> {
    let bytes = std::fs::read(path).map_err(|source| SigningKeysError::Read {
        path: path.display().to_string(),
        source,
    })?;
    crate::keys::cert::certificate_der(&bytes).ok_or_else(|| SigningKeysError::Certificate {
        path: path.display().to_string(),
    })
}

impl SigningKeys {
    /// Loads db and the PCR key from a genkey directory: the flat layout's
    /// PEM files, or the hardened layout's age-encrypted keys, decrypted in
    /// memory with the passphrase from `SBKIT_KEY_PASSPHRASE`,
    /// `SBKIT_KEY_PASSPHRASE_FILE` or a prompt.
    pub fn from_key_dir(dir: &Path) -> Result<Self, SigningKeysError> {
        crate::store::atomic::recover(dir).ok();
        if super::hardened::is_hardened(dir) {
            return Self::from_hardened_dir(dir);
        }
        let need = |name: String| {
            let p = dir.join(&name);
            if p.exists() {
                Ok(p)
            } else {
                Err(SigningKeysError::Missing {
                    path: p.display().to_string(),
                })
            }
        };
        let key = need(Role::Db.file("key"))?;
        let cert = need(Role::Db.file("der")).or_else(|_| need(Role::Db.file("pem")))?;
        let pcr = dir.join(PCR_PRIVATE_KEY);
        Ok(SigningKeys {
            secure_boot: Box::new(FileSigner::load(&key)?),
            secure_boot_cert: read_certificate(&cert)?,
            pcr: if pcr.exists() {
                Some(Box::new(FileSigner::load(&pcr)?))
            } else {
                None
            },
        })
    }
}
