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
    /// Loads db and the PCR key from a genkey directory.
    pub fn from_key_dir(dir: &Path) -> Result<Self, SigningKeysError> {
        crate::store::atomic::recover(dir).ok();
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
