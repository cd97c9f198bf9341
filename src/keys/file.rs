//! Software keys held in memory (OpenSSL), loaded from or written to PKCS#8 PEM.

use std::path::Path;

use openssl::pkey::{Id, PKey, Private};
use zeroize::Zeroizing;

use super::algorithm::{DigestAlgorithm, KeyAlgorithm};
use super::signer::{SignError, Signer};

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading the file failed.
    #[error("cannot read key {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not a private key we understand.
    #[error("{path} is not a PEM or DER private key (PKCS#8, PKCS#1 or SEC1): {message}")]
    Parse {
        /// The file.
        path: String,
        /// What OpenSSL said.
        message: String,
    },
    /// The key is of a kind we do not sign with.
    #[error("{path} holds a {kind} key; supported are RSA 2048/3072/4096 and EC P-256/P-384")]
    Unsupported {
        /// The file.
        path: String,
        /// What it holds.
        kind: String,
    },
    /// OpenSSL failed while generating or serialising.
    #[error("OpenSSL failed: {0}")]
    OpenSsl(openssl::error::ErrorStack),
}

// By hand rather than `#[from]`: the message already shows the inner error,
// and a source as well would print it twice in an error chain.
impl From<openssl::error::ErrorStack> for KeyFileError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        KeyFileError::OpenSsl(e)
    }
}

/// A private key in this process's memory.
pub struct FileSigner {
    key: PKey<Private>,
    algorithm: KeyAlgorithm,
    origin: String,
}

impl std::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("FileSigner")
            .field("algorithm", &self.algorithm)
            .field("origin", &self.origin)
            .finish()
    }
}

fn algorithm_of(key: &PKey<Private>) -> Option<KeyAlgorithm> {
    match key.id() {
        Id::RSA => match key.bits() {
            2048 => Some(KeyAlgorithm::Rsa2048),
            3072 => Some(KeyAlgorithm::Rsa3072),
            4096 => Some(KeyAlgorithm::Rsa4096),
            _ => None,
        },
        Id::EC => {
            let group = key.ec_key().ok()?.group().curve_name()?;
            match group {
                openssl::nid::Nid::X9_62_PRIME256V1 => Some(KeyAlgorithm::P256),
                openssl::nid::Nid::SECP384R1 => Some(KeyAlgorithm::P384),
                _ => None,
            }
        }
        _ => None,
    }
}

impl FileSigner {
    /// Generates a new key in memory.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyFileError> {
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        use openssl::rsa::Rsa;
        let key = match algorithm {
            KeyAlgorithm::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
            KeyAlgorithm::Rsa3072 => PKey::from_rsa(Rsa::generate(3072)?)?,
            KeyAlgorithm::Rsa4096 => PKey::from_rsa(Rsa::generate(4096)?)?,
            KeyAlgorithm::P256 => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                PKey::from_ec_key(EcKey::generate(&group)?)?
            }
            KeyAlgorithm::P384 => {
                let group = EcGroup::from_curve_name(Nid::SECP384R1)?;
                PKey::from_ec_key(EcKey::generate(&group)?)?
            }
        };
        Ok(FileSigner {
            key,
            algorithm,
            origin: "new key".into(),
        })
    }

    /// Parses a private key from PEM or DER bytes; `origin` names it in messages.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, KeyFileError> {
        let key = PKey::private_key_from_pem(bytes)
            .or_else(|_| PKey::private_key_from_der(bytes))
            .map_err(|e| KeyFileError::Parse {
                path: origin.to_string(),
                message: e.to_string(),
            })?;
        let algorithm = algorithm_of(&key).ok_or_else(|| KeyFileError::Unsupported {
            path: origin.to_string(),
            kind: format!("{:?} ({} bits)", key.id(), key.bits()),
        })?;
        Ok(FileSigner {
            key,
            algorithm,
            origin: origin.to_string(),
        })
    }

    /// Reads a private key file.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyFileError::Read {
            path: path.display().to_string(),
            cause: source,
        })?);
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// The key as PKCS#8 PEM; the buffer is wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
        Ok(Zeroizing::new(self.key.private_key_to_pem_pkcs8()?))
    }

    /// The public key as PEM `SubjectPublicKeyInfo` (`BEGIN PUBLIC KEY`).
    pub fn public_key_pem(&self) -> Result<Vec<u8>, KeyFileError> {
        Ok(self.key.public_key_to_pem()?)
    }

    /// The OpenSSL key, for code that must hand it to OpenSSL directly.
    pub fn pkey(&self) -> &PKey<Private> {
        &self.key
    }
}

impl Signer for FileSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> Vec<u8> {
        // Serialising a public key we hold cannot fail short of memory exhaustion.
        self.key.public_key_to_der().unwrap_or_default()
    }

    fn sign_digest(&self, digest: DigestAlgorithm, hash: &[u8]) -> Result<Vec<u8>, SignError> {
        let expected = digest.output_len();
        if hash.len() != expected {
            return Err(SignError::DigestLength {
                digest,
                got: hash.len(),
            });
        }
        let backend = |e: openssl::error::ErrorStack| SignError::Backend {
            key: self.describe(),
            message: e.to_string(),
        };
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&self.key).map_err(backend)?;
        ctx.sign_init().map_err(backend)?;
        if self.key.id() == Id::RSA {
            ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)
                .map_err(backend)?;
            let md = openssl::md::Md::fetch(None, digest_name(digest), None).map_err(backend)?;
            ctx.set_signature_md(&md).map_err(backend)?;
        }
        let mut sig = Vec::new();
        ctx.sign_to_vec(hash, &mut sig).map_err(backend)?;
        Ok(sig)
    }

    fn describe(&self) -> String {
        format!("{} key ({})", self.algorithm, self.origin)
    }

    fn as_file_signer(&self) -> Option<&FileSigner> {
        Some(self)
    }
}

fn digest_name(d: DigestAlgorithm) -> &'static str {
    match d {
        DigestAlgorithm::Sha1 => "SHA1",
        DigestAlgorithm::Sha256 => "SHA256",
        DigestAlgorithm::Sha384 => "SHA384",
        DigestAlgorithm::Sha512 => "SHA512",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_signature_verifies_with_openssl() {
        let key = FileSigner::generate(KeyAlgorithm::Rsa2048).unwrap();
        let sig = key.sign(DigestAlgorithm::Sha256, b"hello").unwrap();
        let public = PKey::public_key_from_der(&key.public_key_der()).unwrap();
        let mut v =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public).unwrap();
        v.update(b"hello").unwrap();
        assert!(v.verify(&sig).unwrap());
    }

    #[test]
    fn ec_signature_verifies_and_pem_round_trips() {
        let key = FileSigner::generate(KeyAlgorithm::P384).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with(concat!("-----BEGIN ", "PRIVATE KEY-----").as_bytes()));
        let again = FileSigner::from_bytes(&pem, "test").unwrap();
        assert_eq!(again.algorithm(), KeyAlgorithm::P384);
        let sig = again.sign(DigestAlgorithm::Sha384, b"hello").unwrap();
        let public = PKey::public_key_from_der(&key.public_key_der()).unwrap();
        let mut v =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha384(), &public).unwrap();
        v.update(b"hello").unwrap();
        assert!(v.verify(&sig).unwrap());
    }

    #[test]
    fn rejects_a_wrong_digest_length() {
        let key = FileSigner::generate(KeyAlgorithm::P256).unwrap();
        assert!(matches!(
            key.sign_digest(DigestAlgorithm::Sha256, &[0; 20]),
            Err(SignError::DigestLength { .. })
        ));
    }
}
