//! Keys: generation, the [`Signer`] abstraction every signature goes through,
//! X.509 profiles for the Secure Boot hierarchy, and PKCS#7 `SignedData`.

pub mod algorithm;
pub mod cert;
pub mod file;
pub mod hierarchy;
pub mod signed_data;
pub mod signer;

pub use algorithm::{DigestAlgorithm, KeyAlgorithm};
pub use file::{FileSigner, KeyFileError};
pub use hierarchy::{KeyHierarchy, KeyRole, OfflineSigner, SigningRequest};
pub use signer::{SignError, Signer};
