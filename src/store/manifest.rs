//! The key directory's manifest (`manifest.json`): who owns the keys, what
//! they are, and what went into each signature list.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layout::MANIFEST;
use crate::efi::Guid;

/// Format tag of the manifest, bumped on incompatible changes.
pub const FORMAT: &str = "sbkit-keys/1";

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The tool and version that wrote it.
    pub tool: String,
    /// The organisation name given to genkey.
    pub name: String,
    /// Owner GUID of our entries; reused by every later operation on this directory.
    pub owner_guid: Guid,
    /// When the set was made (RFC 3339, UTC).
    pub created: String,
    /// The timestamp in the `.auth` files (RFC 3339, UTC).
    pub auth_timestamp: String,
    /// The Microsoft selection (`all`, `2023`, …).
    pub microsoft: String,
    /// `hardened` for the hardened repository layout; absent for the flat Kairos one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Our keys: PK, KEK, db and the PCR policy key.
    pub keys: Vec<KeyRecord>,
    /// What each variable's list holds: PK, KEK, db, dbx.
    pub lists: Vec<ListRecord>,
}

/// One key of the set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `PK`, `KEK`, `db` or `tpm2-pcr`.
    pub role: String,
    /// `rsa2048`, `p384`, …
    pub algorithm: String,
    /// The private key file.
    pub private_key: String,
    /// SHA-256 of the public key (DER `SubjectPublicKeyInfo`), hex.
    pub public_key_sha256: String,
    /// The certificate, when the role has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateRecord>,
}

/// A certificate of ours.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Subject DN.
    pub subject: String,
    /// Serial, hex.
    pub serial: String,
    /// Validity start, RFC 3339.
    pub not_before: String,
    /// Validity end, RFC 3339.
    pub not_after: String,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
}

/// The contents of one variable's signature database.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListRecord {
    /// `PK`, `KEK`, `db` or `dbx`.
    pub variable: String,
    /// Who signed the `.auth` file (`PK` or `KEK`).
    pub signed_by: String,
    /// The entries.
    pub entries: Vec<EntryRecord>,
}

/// One signature-list entry and where it came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryRecord {
    /// `x509`, `sha256` or the type GUID.
    #[serde(rename = "type")]
    pub kind: String,
    /// Owner GUID.
    pub owner: Guid,
    /// `ours`, `microsoft:<name>` or `custom:<file>`.
    pub source: String,
    /// Certificate subject, for X.509 entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// SHA-256 of a certificate, or the hash itself for hash entries, hex.
    pub sha256: String,
}

/// Reading a manifest failed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// I/O.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Not our JSON.
    #[error("{path} is not an sbkit manifest: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl Manifest {
    /// Reads `dir/manifest.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = dir.join(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ManifestError::Read {
                    path: path.display().to_string(),
                    cause: source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ManifestError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            })
    }
}
