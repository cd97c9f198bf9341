//! File names of a key directory. The flat layout is Kairos's: build-uki,
//! enroll and users' scripts look for exactly these names.

use crate::efi::guid::{Guid, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use crate::keys::cert::CertProfile;

/// The manifest file.
pub const MANIFEST: &str = "manifest.json";
/// The TPM PCR policy signing key (RSA-2048, PKCS#8 PEM).
pub const PCR_PRIVATE_KEY: &str = "tpm2-pcr-private.pem";
/// The TPM PCR policy public key (PEM `SubjectPublicKeyInfo`).
pub const PCR_PUBLIC_KEY: &str = "tpm2-pcr-public.pem";

/// How a key directory is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyLayout {
    /// Kairos's flat directory: `PK.key`, `PK.pem`, … side by side, keys in plaintext (0600).
    #[default]
    Kairos,
    /// The hardened repository (see [`super::hardened`]): encrypted keys, documents, links.
    Hardened,
}

impl std::str::FromStr for KeyLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kairos" | "flat" => Ok(KeyLayout::Kairos),
            "hardened" => Ok(KeyLayout::Hardened),
            _ => Err(format!(
                "unknown layout {s:?}: use kairos (flat, the default) or hardened (encrypted keys)"
            )),
        }
    }
}

/// A Secure Boot key variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Platform Key.
    Pk,
    /// Key Exchange Key.
    Kek,
    /// Signature database.
    Db,
    /// Forbidden signature database (holds no key of ours).
    Dbx,
}

impl Role {
    /// The roles that have a key of ours, in hierarchy order.
    pub const WITH_KEYS: [Role; 3] = [Role::Pk, Role::Kek, Role::Db];
    /// Every variable, in hierarchy order.
    pub const ALL: [Role; 4] = [Role::Pk, Role::Kek, Role::Db, Role::Dbx];

    /// The variable name, also the file stem: `PK`, `KEK`, `db`, `dbx`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Pk => "PK",
            Role::Kek => "KEK",
            Role::Db => "db",
            Role::Dbx => "dbx",
        }
    }

    /// The variable's vendor GUID.
    pub fn vendor(self) -> Guid {
        match self {
            Role::Pk | Role::Kek => EFI_GLOBAL_VARIABLE,
            Role::Db | Role::Dbx => EFI_IMAGE_SECURITY_DATABASE,
        }
    }

    /// The role whose key signs updates of this variable: PK for PK and KEK, KEK for db and dbx.
    pub fn signed_by(self) -> Role {
        match self {
            Role::Pk | Role::Kek => Role::Pk,
            Role::Db | Role::Dbx => Role::Kek,
        }
    }

    /// The certificate profile of this role's key.
    pub fn profile(self) -> CertProfile {
        match self {
            Role::Pk => CertProfile::PlatformKey,
            Role::Kek => CertProfile::KeyExchangeKey,
            Role::Db | Role::Dbx => CertProfile::CodeSigning,
        }
    }

    /// The key role whose certificate this variable carries; `None` for dbx.
    pub fn key_role(self) -> Option<crate::keys::KeyRole> {
        use crate::keys::KeyRole;
        match self {
            Role::Pk => Some(KeyRole::Pk),
            Role::Kek => Some(KeyRole::Kek),
            Role::Db => Some(KeyRole::Db),
            Role::Dbx => None,
        }
    }

    /// A file name of this role: `file("auth")` is `db.auth`.
    pub fn file(self, extension: &str) -> String {
        format!("{}.{extension}", self.name())
    }
}

/// Every file name genkey may write (for refusing to overwrite a key set).
pub fn key_set_files() -> Vec<String> {
    let mut names = Vec::new();
    for role in Role::WITH_KEYS {
        for ext in ["key", "pem", "der", "esl", "auth"] {
            names.push(role.file(ext));
        }
    }
    names.push(Role::Dbx.file("esl"));
    names.push(Role::Dbx.file("auth"));
    names.push(PCR_PRIVATE_KEY.into());
    names.push(PCR_PUBLIC_KEY.into());
    names.push(MANIFEST.into());
    names
}
