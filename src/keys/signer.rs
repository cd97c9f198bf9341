//! The one signing interface: every place that signs (certificates,
//! Authenticode, authenticated variables, PCR policies) goes through
//! [`Signer`], so a file key and a token key behave the same.

use super::algorithm::{DigestAlgorithm, KeyAlgorithm};

/// A signing operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key cannot sign with this digest.
    #[error("a {key} key cannot sign with {digest:?}")]
    Unsupported {
        /// The key's algorithm.
        key: KeyAlgorithm,
        /// The digest asked for.
        digest: DigestAlgorithm,
    },
    /// The digest has the wrong length for its algorithm.
    #[error("digest of {got} bytes given for {digest:?}")]
    DigestLength {
        /// The digest algorithm.
        digest: DigestAlgorithm,
        /// The length given.
        got: usize,
    },
    /// The backend (OpenSSL, a token) failed.
    #[error("signing with {key} failed: {message}")]
    Backend {
        /// Which key, as [`Signer::describe`] says.
        key: String,
        /// What the backend said.
        message: String,
    },
    /// The key is offline: the signature must be made elsewhere from this request.
    #[error("{} is offline: sign the request (SHA-256 {}) on the machine that holds it", .0.key, .0.sha256)]
    RequestNeeded(Box<super::hierarchy::SigningRequest>),
}

impl SignError {
    /// The signing request, when the key was offline.
    pub fn signing_request(&self) -> Option<&super::hierarchy::SigningRequest> {
        match self {
            SignError::RequestNeeded(r) => Some(r),
            _ => None,
        }
    }
}

/// A private key that signs, wherever it is held.
///
/// The primitive is [`Signer::sign_digest`]: a token's `CKM_RSA_PKCS` and
/// `CKM_ECDSA` mechanisms take a digest, not a message, so hashing happens
/// here, in the caller's process, for every backend alike.
pub trait Signer: Send + Sync {
    /// The key's algorithm.
    fn algorithm(&self) -> KeyAlgorithm;

    /// The public key as a DER `SubjectPublicKeyInfo`.
    fn public_key_der(&self) -> Vec<u8>;

    /// Signs a precomputed digest: RSA PKCS#1 v1.5 (the `DigestInfo` is added
    /// by the implementation) or ECDSA, returned as a DER `Ecdsa-Sig-Value`.
    fn sign_digest(&self, digest: DigestAlgorithm, hash: &[u8]) -> Result<Vec<u8>, SignError>;

    /// A short human description of where the key is, for messages.
    fn describe(&self) -> String;

    /// The in-memory key behind this signer, when it is one: genkey writes
    /// (or re-encrypts) such keys; token and offline keys never leave their place.
    fn as_file_signer(&self) -> Option<&super::FileSigner> {
        None
    }

    /// Hashes `message` with `digest` and signs the hash.
    fn sign(&self, digest: DigestAlgorithm, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign_digest(digest, &digest.digest(message))
    }
}
