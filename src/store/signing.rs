//! The signing keys a build uses, from a key directory (`-k keys/`) or from
//! explicit key specifications (a file path or a `pkcs11:` URI). A key
//! directory is read through [`KeyDir`], so every layout and key backend
//! works alike.

use std::path::Path;

pub use super::keydir::{read_certificate, KeyDirError as SigningKeysError};
use super::keydir::{KeyDir, Unlock};
use crate::keys::{KeyRole, Signer};

/// The db signing key with its certificate, and the PCR policy key.
pub struct SigningKeys {
    /// Signs the images (Authenticode).
    pub secure_boot: Box<dyn Signer>,
    /// The certificate of `secure_boot`, DER.
    pub secure_boot_cert: Vec<u8>,
    /// Signs `.pcrsig` policies; `None` builds UKIs without `.pcrsig`/`.pcrpkey`.
    pub pcr: Option<Box<dyn Signer>>,
}

/// The db certificate of a key directory of any layout, without
/// touching (or decrypting) any private key: for commands that only verify.
pub fn secure_boot_certificate(dir: &Path) -> Result<Vec<u8>, SigningKeysError> {
    KeyDir::open(dir).certificate(KeyRole::Db)
}

impl SigningKeys {
    /// Loads db and the PCR key from a genkey directory through its
    /// [`KeyDir`]: the flat layout's PEM files, or the hardened layout's
    /// age-encrypted keys, decrypted in memory with the passphrase from
    /// `SBKIT_KEY_PASSPHRASE`, `SBKIT_KEY_PASSPHRASE_FILE` or a prompt.
    pub fn from_key_dir(dir: &Path) -> Result<Self, SigningKeysError> {
        crate::store::atomic::recover(dir).ok();
        Self::from_dir(&KeyDir::open(dir))
    }

    /// The PCR policy key of a key directory alone (for `--sb-key` with
    /// `-k`: the db key comes from elsewhere and is not loaded); `None` when
    /// the directory has none.
    pub fn pcr_from_key_dir(dir: &Path) -> Result<Option<Box<dyn Signer>>, SigningKeysError> {
        crate::store::atomic::recover(dir).ok();
        let dir = KeyDir::open(dir);
        if !dir.has_private_key(KeyRole::Pcr) {
            return Ok(None);
        }
        if dir.backend(KeyRole::Pcr).needs_passphrase() {
            crate::secret::harden_process();
        }
        Ok(Some(dir.load_signer(KeyRole::Pcr, &Unlock::from_env())?))
    }

    /// Loads db and (when the directory has one) the PCR key from `dir`'s backends.
    pub fn from_dir(dir: &KeyDir) -> Result<Self, SigningKeysError> {
        if dir.backend(KeyRole::Db).needs_passphrase() {
            crate::secret::harden_process();
        }
        let unlock = Unlock::from_env();
        // Both files are checked before any passphrase prompt.
        if !dir.has_private_key(KeyRole::Db) {
            return Err(SigningKeysError::Missing {
                path: dir
                    .root()
                    .join(dir.private_key_file(KeyRole::Db))
                    .display()
                    .to_string(),
            });
        }
        let secure_boot_cert = dir.certificate(KeyRole::Db)?;
        let secure_boot = dir.load_signer(KeyRole::Db, &unlock)?;
        let pcr = if dir.has_private_key(KeyRole::Pcr) {
            Some(dir.load_signer(KeyRole::Pcr, &unlock)?)
        } else {
            None
        };
        Ok(SigningKeys {
            secure_boot,
            secure_boot_cert,
            pcr,
        })
    }
}
