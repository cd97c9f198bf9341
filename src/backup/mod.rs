//! Encrypted backups of private keys, in two formats other tools open:
//!
//! - [`BackupFormat::Age`] (default): age passphrase mode. Authenticated: a
//!   wrong passphrase or a changed byte is always detected. `age -d FILE`.
//! - [`BackupFormat::OpensslEnc`]: exactly what `openssl enc -aes-256-cbc
//!   -pbkdf2` writes, for users who follow openssl recipes. Not
//!   authenticated; a wrong passphrase is caught by the padding check almost
//!   always and by the key failing to parse otherwise.
//!   `openssl enc -d -aes-256-cbc -pbkdf2 -in FILE`.
//!
//! A key backup's plaintext is the PKCS#8 PEM private key followed by the
//! PEM certificate: what `openssl enc -d` gives is directly usable by
//! `openssl pkey` / `openssl x509`, and a restore can put the very same
//! certificate back on a replacement token. Plaintext only ever exists in
//! [`LockedBytes`]; nothing here writes files.

pub mod age_format;
pub mod openssl_enc;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::keys::{FileSigner, Signer};
use crate::secret::LockedBytes;

/// An encrypted backup format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackupFormat {
    /// age passphrase mode (scrypt + ChaCha20-Poly1305), authenticated.
    #[default]
    Age,
    /// `openssl enc -aes-256-cbc -pbkdf2` (PBKDF2-SHA256, 10000 iterations), not authenticated.
    OpensslEnc,
}

impl BackupFormat {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            BackupFormat::Age => "age",
            BackupFormat::OpensslEnc => "openssl-enc",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            BackupFormat::Age => "age",
            BackupFormat::OpensslEnc => "enc",
        }
    }

    /// The command that opens such a file without sbkit.
    pub fn open_command(self, file: &str) -> String {
        match self {
            BackupFormat::Age => format!("age -d -o KEY.pem {file}"),
            BackupFormat::OpensslEnc => {
                format!("openssl enc -d -aes-256-cbc -pbkdf2 -in {file} -out KEY.pem")
            }
        }
    }

    /// The format of `data`, from its first bytes.
    pub fn detect(data: &[u8]) -> Option<Self> {
        if data.starts_with(age_format::MAGIC) || data.starts_with(age_format::ARMOR_MAGIC) {
            Some(BackupFormat::Age)
        } else if data.starts_with(openssl_enc::MAGIC) {
            Some(BackupFormat::OpensslEnc)
        } else {
            None
        }
    }
}

impl fmt::Display for BackupFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown backup format {0:?}: use age (default, authenticated) or openssl-enc (the `openssl enc -aes-256-cbc -pbkdf2` format)")]
pub struct UnknownFormat(String);

impl FromStr for BackupFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "age" => Ok(BackupFormat::Age),
            "openssl-enc" | "openssl" | "enc" | "aes-256-cbc" => Ok(BackupFormat::OpensslEnc),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// A backup could not be written or opened.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The bytes are neither age nor `openssl enc` with salt.
    #[error("{origin} is not an sbkit backup: neither an age file nor `openssl enc` output with salt (\"Salted__\")")]
    UnknownFile {
        /// The file, for the message.
        origin: String,
    },
    /// The passphrase is wrong.
    #[error("{origin}: wrong passphrase ({format}). Nothing was changed; check the passphrase and try again{hint}")]
    WrongPassphrase {
        /// The file.
        origin: String,
        /// The format.
        format: BackupFormat,
        /// More for the unauthenticated format.
        hint: &'static str,
    },
    /// age failed otherwise.
    #[error("{origin}: {cause}")]
    Age {
        /// The file.
        origin: String,
        /// Why.
        cause: age_format::AgeError,
    },
    /// openssl enc failed otherwise.
    #[error("{origin}: {cause}")]
    Enc {
        /// The file.
        origin: String,
        /// Why.
        cause: openssl_enc::EncError,
    },
    /// It decrypts but holds no private key we can use.
    #[error("{origin}: decrypted, but holds no usable private key: {message}")]
    NoKey {
        /// The file.
        origin: String,
        /// Why.
        message: String,
    },
    /// A weak passphrase for a new backup.
    #[error("the backup passphrase is {len} characters; use at least {MIN_PASSPHRASE_LEN} (a backup is offline and can be attacked at leisure)")]
    WeakPassphrase {
        /// Its length.
        len: usize,
    },
}

/// Shortest passphrase accepted for a new backup.
pub const MIN_PASSPHRASE_LEN: usize = 12;

/// Encrypts `plaintext` in `format`.
pub fn encrypt(
    format: BackupFormat,
    plaintext: &[u8],
    passphrase: &[u8],
) -> Result<Vec<u8>, BackupError> {
    if passphrase.len() < MIN_PASSPHRASE_LEN {
        return Err(BackupError::WeakPassphrase {
            len: passphrase.len(),
        });
    }
    match format {
        BackupFormat::Age => age_format::encrypt(plaintext, passphrase, age_format::WORK_FACTOR)
            .map_err(|source| BackupError::Age {
                origin: "new backup".into(),
                cause: source,
            }),
        BackupFormat::OpensslEnc => {
            openssl_enc::encrypt(plaintext, passphrase).map_err(|source| BackupError::Enc {
                origin: "new backup".into(),
                cause: source,
            })
        }
    }
}

/// Decrypts a backup of either format into locked memory; `origin` names
/// the file in messages.
pub fn decrypt(
    data: &[u8],
    passphrase: &[u8],
    origin: &str,
) -> Result<(BackupFormat, LockedBytes), BackupError> {
    let format = BackupFormat::detect(data).ok_or_else(|| BackupError::UnknownFile {
        origin: origin.to_string(),
    })?;
    let plain = match format {
        BackupFormat::Age => age_format::decrypt(data, passphrase).map_err(|e| match e {
            age_format::AgeError::WrongPassphrase => BackupError::WrongPassphrase {
                origin: origin.to_string(),
                format,
                hint: "",
            },
            source => BackupError::Age {
                origin: origin.to_string(),
                cause: source,
            },
        })?,
        BackupFormat::OpensslEnc => {
            openssl_enc::decrypt(data, passphrase).map_err(|e| match e {
                openssl_enc::EncError::BadDecrypt => BackupError::WrongPassphrase {
                    origin: origin.to_string(),
                    format,
                    hint: " (or the file is damaged: this format has no integrity check)",
                },
                source => BackupError::Enc {
                    origin: origin.to_string(),
                    cause: source,
                },
            })?
        }
    };
    Ok((format, plain))
}

/// The plaintext of a key backup: PKCS#8 PEM key, then the PEM certificate.
pub fn key_backup_plaintext(key: &FileSigner, cert_der: &[u8]) -> Result<LockedBytes, BackupError> {
    let pem = key.to_pkcs8_pem().map_err(|e| BackupError::NoKey {
        origin: "new backup".into(),
        message: e.to_string(),
    })?;
    let cert = crate::keys::cert::to_pem(cert_der);
    let mut out = LockedBytes::with_capacity(pem.len() + cert.len());
    out.extend_from_slice(&pem).expect("sized for it");
    out.extend_from_slice(cert.as_bytes())
        .expect("sized for it");
    Ok(out)
}

/// What a key backup holds, in memory.
pub struct KeyBackup {
    /// The format it was in.
    pub format: BackupFormat,
    /// The private key.
    pub key: FileSigner,
    /// The certificate, when the backup has one (sbkit's do; a bare `openssl enc` of a key does not).
    pub cert_der: Option<Vec<u8>>,
}

impl KeyBackup {
    /// SHA-256 of the certificate, hex.
    pub fn cert_sha256(&self) -> Option<String> {
        self.cert_der
            .as_ref()
            .map(|c| hex::encode(sha2::Sha256::digest(c)))
    }

    /// SHA-256 of the public key (DER SubjectPublicKeyInfo), hex.
    pub fn public_key_sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.key.public_key_der()))
    }
}

/// Opens a key backup: decrypts, parses the key and the certificate (if
/// present) and checks that they belong together.
pub fn open_key_backup(
    data: &[u8],
    passphrase: &[u8],
    origin: &str,
) -> Result<KeyBackup, BackupError> {
    let (format, plain) = decrypt(data, passphrase, origin)?;
    let no_key = |message: String| {
        if format == BackupFormat::OpensslEnc {
            // Garbage after a lucky padding byte is a wrong passphrase.
            BackupError::WrongPassphrase {
                origin: origin.to_string(),
                format,
                hint: " (the padding happened to check out, but what came out is no key: this format has no integrity check)",
            }
        } else {
            BackupError::NoKey {
                origin: origin.to_string(),
                message,
            }
        }
    };
    let key = FileSigner::from_bytes(&plain, origin).map_err(|e| no_key(e.to_string()))?;
    let certs = crate::keys::cert::certificates_from_pem(&plain);
    let cert_der = certs.into_iter().next();
    if let Some(c) = &cert_der {
        let x = openssl::x509::X509::from_der(c).map_err(|e| BackupError::NoKey {
            origin: origin.to_string(),
            message: format!("the certificate does not parse: {e}"),
        })?;
        let public = x
            .public_key()
            .and_then(|k| k.public_key_to_der())
            .map_err(|e| BackupError::NoKey {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        if public != key.public_key_der() {
            return Err(BackupError::NoKey {
                origin: origin.to_string(),
                message: "the certificate in the backup is for another key".into(),
            });
        }
    }
    Ok(KeyBackup {
        format,
        key,
        cert_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;

    #[test]
    fn detects_formats_and_refuses_weak_passphrases() {
        assert_eq!(
            BackupFormat::detect(b"age-encryption.org/v1\n-> scrypt"),
            Some(BackupFormat::Age)
        );
        assert_eq!(
            BackupFormat::detect(b"Salted__12345678"),
            Some(BackupFormat::OpensslEnc)
        );
        assert_eq!(
            BackupFormat::detect(concat!("-----BEGIN ", "PRIVATE KEY").as_bytes()),
            None
        );
        assert!(matches!(
            encrypt(BackupFormat::Age, b"x", b"short"),
            Err(BackupError::WeakPassphrase { len: 5 })
        ));
        assert_eq!(
            "openssl-enc".parse::<BackupFormat>().unwrap(),
            BackupFormat::OpensslEnc
        );
    }

    #[test]
    fn key_backup_round_trips_in_openssl_format() {
        let key = FileSigner::generate(KeyAlgorithm::P256).unwrap();
        let cert = crate::keys::cert::issue_self_signed(
            &key,
            &crate::keys::cert::CertRequest {
                common_name: "t",
                organization: "t",
                profile: crate::keys::cert::CertProfile::CodeSigning,
                not_before: time::OffsetDateTime::now_utc(),
                days: 1,
            },
        )
        .unwrap();
        let plain = key_backup_plaintext(&key, &cert).unwrap();
        let pass = b"a long enough passphrase";
        let c = encrypt(BackupFormat::OpensslEnc, &plain, pass).unwrap();
        let b = open_key_backup(&c, pass, "t.enc").unwrap();
        assert_eq!(b.format, BackupFormat::OpensslEnc);
        assert_eq!(b.key.public_key_der(), key.public_key_der());
        assert_eq!(b.cert_der.as_deref(), Some(&cert[..]));
        let e = open_key_backup(&c, b"another long passphrase", "t.enc")
            .err()
            .unwrap();
        assert!(matches!(e, BackupError::WrongPassphrase { .. }), "{e}");
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
    }
}
