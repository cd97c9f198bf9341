//! Signing with a key that never leaves a PKCS#11 token (YubiKey, smart
//! card, HSM, SoftHSM2).
//!
//! This module owns everything between a `pkcs11:` URI (RFC 7512) and a
//! [`Signer`]: URI parsing ([`uri`]), choosing and loading the PKCS#11
//! module ([`module`]), PIN sources and the token's retry counter ([`pin`]),
//! and [`Pkcs11Signer`] itself. [`open_signer`] is the entry point for
//! `--sb-key`-style options that take either a URI or a key file.
//!
//! Secrets never come from the command line: `pin-value=` in a URI is
//! refused, PINs come from `SBKIT_PKCS11_PIN`, `SBKIT_PKCS11_PIN_FILE`, the
//! URI's `pin-source=` file, or a terminal prompt, and are zeroized.

pub(crate) mod keydata;
pub mod module;
pub mod pin;
mod pkcs11;
mod raw;
pub mod session;
pub mod slots;
pub mod uri;

use std::path::Path;

pub use module::{ModuleError, MODULE_ENV};
pub use pin::{PIN_ENV, PIN_FILE_ENV};
pub use pkcs11::{
    Pkcs11Options, Pkcs11Signer, TokenError, ALLOW_FINAL_TRY_ENV, PIN_EVERY_SIGNATURE_ENV,
};
pub use uri::{is_pkcs11_uri, Pkcs11Uri, UriError};

use crate::keys::{FileSigner, KeyFileError, Signer};

/// A key given as `pkcs11:` URI or file that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenSignerError {
    /// The token key failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The key file failed.
    #[error(transparent)]
    File(#[from] KeyFileError),
}

/// Opens a signing key: a `pkcs11:` URI becomes a [`Pkcs11Signer`] (with
/// [`Pkcs11Options::from_env`]), anything else is a private key file for
/// [`FileSigner::load`].
pub fn open_signer(spec: &str) -> Result<Box<dyn Signer>, OpenSignerError> {
    open_signer_with(spec, &Pkcs11Options::from_env())
}

/// [`open_signer`] with explicit token options (e.g. from CLI flags).
pub fn open_signer_with(
    spec: &str,
    options: &Pkcs11Options,
) -> Result<Box<dyn Signer>, OpenSignerError> {
    if is_pkcs11_uri(spec) {
        Ok(Box::new(Pkcs11Signer::open(spec, options)?))
    } else {
        Ok(Box::new(FileSigner::load(Path::new(spec))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_go_to_the_file_signer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.key");
        let key = FileSigner::generate(crate::keys::KeyAlgorithm::P256).unwrap();
        std::fs::write(&path, key.to_pkcs8_pem().unwrap()).unwrap();
        let s = open_signer(path.to_str().unwrap()).unwrap();
        assert_eq!(s.public_key_der(), key.public_key_der());
        let e = open_signer("/nonexistent/db.key").err().unwrap();
        assert!(matches!(e, OpenSignerError::File(_)), "{e}");
    }

    #[test]
    fn uris_go_to_the_token_and_refuse_pin_value() {
        let e = open_signer("pkcs11:token=x?pin-value=1234").err().unwrap();
        assert!(
            matches!(
                e,
                OpenSignerError::Token(TokenError::Uri(UriError::PinValue))
            ),
            "{e}"
        );
        let e = open_signer("pkcs11:token=x;type=cert").err().unwrap();
        assert!(e.to_string().contains("type=private"), "{e}");
    }
}
