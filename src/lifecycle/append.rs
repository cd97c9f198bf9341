//! Append updates: an authenticated write with `EFI_VARIABLE_APPEND_WRITE`
//! (attributes 0x67) that adds entries to db or dbx without setup mode and
//! without restating what the variable holds. KEK signs them.
//!
//! The signed bytes include the attributes, so an append file cannot be
//! replayed as a replace. edk2 drops entries the variable already holds, so
//! re-applying an append is harmless; it does not require the timestamp to be
//! later than the variable's (it keeps the later of the two), which is why
//! a fixed `SOURCE_DATE_EPOCH` still gives a usable append.

use openssl::x509::X509;
use serde::Serialize;
use time::OffsetDateTime;

use crate::efi::authvar::{
    AuthVarError, AuthenticatedVariable, APPEND_WRITE, SECURE_BOOT_VARIABLE,
};
use crate::efi::siglist::{SignatureDatabase, SignatureEntry, SignatureList};
use crate::efi::time::EfiTime;
use crate::efi::Guid;
use crate::keys::algorithm::DigestAlgorithm;
use crate::keys::signer::Signer;
use crate::pe::authenticode::{image_digest, AuthenticodeError};
use crate::store::layout::Role;

/// What an append adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendEntry {
    /// An X.509 certificate (DER): in db it allows what it signed, in dbx it revokes it.
    Certificate(Vec<u8>),
    /// A SHA-256 hash: an image's Authenticode digest (allowed in db, revoked in dbx).
    Sha256([u8; 32]),
}

/// Why an append update could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Only db and dbx take appends signed by KEK.
    #[error("{0} cannot be appended to with a KEK-signed update: only db and dbx can")]
    NotAppendable(&'static str),
    /// Nothing to add.
    #[error("the append update for {0} has no entries: give a certificate, a hash or an image")]
    Empty(&'static str),
    /// A certificate does not parse.
    #[error("entry {index} is not an X.509 certificate in DER or PEM form: {reason}")]
    BadCertificate {
        /// Position among the certificates given, from 1.
        index: usize,
        /// What OpenSSL said.
        reason: String,
    },
    /// A hash is not 64 hex digits.
    #[error("{0:?} is not a SHA-256 hash: give 64 hexadecimal digits")]
    BadHash(String),
    /// An image's digest could not be computed.
    #[error("the Authenticode digest of {name} could not be computed: {source}")]
    Image {
        /// The image.
        name: String,
        /// Why.
        source: AuthenticodeError,
    },
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] AuthVarError),
    /// The list could not be encoded.
    #[error("the signature list could not be encoded: {0}")]
    Encode(String),
}

/// A certificate entry from DER or PEM bytes.
pub fn certificate_entry(index: usize, bytes: &[u8]) -> Result<AppendEntry, AppendError> {
    let bad = |e: openssl::error::ErrorStack| AppendError::BadCertificate {
        index,
        reason: e.to_string(),
    };
    let cert = if bytes.starts_with(b"-----BEGIN") {
        X509::from_pem(bytes).map_err(bad)?
    } else {
        X509::from_der(bytes).map_err(bad)?
    };
    Ok(AppendEntry::Certificate(cert.to_der().map_err(bad)?))
}

/// A hash entry from 64 hex digits.
pub fn hash_entry(text: &str) -> Result<AppendEntry, AppendError> {
    let bytes = hex::decode(text.trim()).map_err(|_| AppendError::BadHash(text.to_string()))?;
    let hash: [u8; 32] = bytes
        .try_into()
        .map_err(|_| AppendError::BadHash(text.to_string()))?;
    Ok(AppendEntry::Sha256(hash))
}

/// The entry that revokes (in dbx) or allows (in db) exactly one image: its
/// Authenticode SHA-256 digest, the value edk2 compares with.
pub fn image_entry(name: &str, image: &[u8]) -> Result<AppendEntry, AppendError> {
    let digest =
        image_digest(image, DigestAlgorithm::Sha256).map_err(|source| AppendError::Image {
            name: name.to_string(),
            source,
        })?;
    let hash: [u8; 32] = digest
        .try_into()
        .map_err(|_| AppendError::BadHash(format!("digest of {name}")))?;
    Ok(AppendEntry::Sha256(hash))
}

/// The signature lists of `entries`: one list per certificate (certificates
/// differ in size), one list for all hashes, in the order given.
pub fn signature_lists(owner: Guid, entries: &[AppendEntry]) -> Result<Vec<u8>, AppendError> {
    let mut db = SignatureDatabase::default();
    let hashes: Vec<SignatureEntry> = entries
        .iter()
        .filter_map(|e| match e {
            AppendEntry::Sha256(h) => Some(SignatureEntry {
                owner,
                data: h.to_vec(),
            }),
            AppendEntry::Certificate(_) => None,
        })
        .collect();
    for e in entries {
        if let AppendEntry::Certificate(der) = e {
            db.lists.push(SignatureList::x509(owner, der));
        }
    }
    if !hashes.is_empty() {
        db.lists.push(SignatureList::sha256(hashes));
    }
    db.to_bytes()
        .map_err(|e| AppendError::Encode(e.to_string()))
}

/// An append update, ready to write.
#[derive(Clone, Debug, Serialize)]
pub struct AppendUpdate {
    /// The variable: db or dbx.
    pub variable: &'static str,
    /// The update's EFI_TIME.
    pub timestamp: String,
    /// The signature lists it adds.
    #[serde(skip)]
    pub esl: Vec<u8>,
    /// The `.auth` file (attributes 0x67 signed in).
    #[serde(skip)]
    pub auth: Vec<u8>,
    /// How many entries it adds.
    pub entries: usize,
}

/// Signs an append update of `variable` (db or dbx) adding `entries`, owned
/// by `owner`, with the KEK `signer` whose certificate is `kek_certificate`.
pub fn append_update(
    variable: Role,
    owner: Guid,
    entries: &[AppendEntry],
    timestamp: OffsetDateTime,
    signer: &dyn Signer,
    kek_certificate: &[u8],
) -> Result<AppendUpdate, AppendError> {
    if !matches!(variable, Role::Db | Role::Dbx) {
        return Err(AppendError::NotAppendable(variable.name()));
    }
    if entries.is_empty() {
        return Err(AppendError::Empty(variable.name()));
    }
    let esl = signature_lists(owner, entries)?;
    let time = EfiTime::from_datetime(timestamp);
    let auth = AuthenticatedVariable::sign(
        variable.name(),
        variable.vendor(),
        SECURE_BOOT_VARIABLE | APPEND_WRITE,
        time,
        &esl,
        signer,
        kek_certificate,
        signer.algorithm().default_digest(),
    )?;
    Ok(AppendUpdate {
        variable: variable.name(),
        timestamp: time.to_string(),
        esl,
        auth: auth.to_bytes(),
        entries: entries.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_64_hex_digits() {
        assert!(hash_entry(&"ab".repeat(32)).is_ok());
        for bad in ["", "zz", &"ab".repeat(31), &"ab".repeat(33)] {
            let e = hash_entry(bad).unwrap_err();
            assert!(e.to_string().contains("64 hexadecimal digits"), "{e}");
        }
    }

    #[test]
    fn hashes_share_one_list_and_certificates_get_one_each() {
        let owner = Guid::random();
        let lists = signature_lists(
            owner,
            &[AppendEntry::Sha256([1; 32]), AppendEntry::Sha256([2; 32])],
        )
        .unwrap();
        let parsed = SignatureDatabase::parse(&lists).unwrap();
        assert_eq!(parsed.lists.len(), 1);
        assert_eq!(parsed.entries().count(), 2);
    }

    #[test]
    fn only_db_and_dbx_take_appends_and_never_empty() {
        let key =
            crate::keys::file::FileSigner::generate(crate::keys::KeyAlgorithm::Rsa2048).unwrap();
        let t = OffsetDateTime::UNIX_EPOCH;
        let e = append_update(
            Role::Kek,
            Guid::random(),
            &[AppendEntry::Sha256([0; 32])],
            t,
            &key,
            b"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("only db and dbx"), "{e}");
        let e = append_update(Role::Dbx, Guid::random(), &[], t, &key, b"").unwrap_err();
        assert!(e.to_string().contains("no entries"), "{e}");
    }
}
