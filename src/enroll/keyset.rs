//! The key directory as enroll sees it: the signature lists (`PK.esl` …) and
//! authenticated variables (`PK.auth` …) genkey wrote, checked before anything
//! reaches firmware.
//!
//! Checks: every needed file is there and parses; an `.esl` and its `.auth`
//! carry the same list; PK holds exactly one certificate; and every `.auth` is
//! signed by a certificate of the variable that will authorise it once the
//! firmware leaves setup mode (PK for PK and KEK, KEK for db and dbx). Setup
//! mode checks none of the latter, which is how broken signatures ship
//! unnoticed, so we check it here.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::efi::authvar::{signed_bytes, AuthVarParseError, SECURE_BOOT_VARIABLE};
use crate::efi::guid::EFI_CERT_X509;
use crate::efi::siglist::SigListParseError;
use crate::efi::{AuthenticatedVariable, EfiTime, Guid, SignatureDatabase};
use crate::keys::signed_data::{unwrap_content_info, wrap_in_content_info};
use crate::store::{KeyDir, Manifest, Role};

/// Which form of the keys a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Signature lists (`.esl`), written into a variable store directly.
    Esl,
    /// Authenticated variables (`.auth`), written through the firmware.
    Auth,
}

/// A key directory that cannot be enrolled.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// The directory is not there.
    #[error("key directory {0} does not exist: make one with `genkey NAME -o DIR`")]
    NoDir(String),
    /// Needed files are missing.
    #[error("key directory {dir} lacks {}: it must be made by genkey (`genkey NAME -o DIR`, or `genkey NAME -o DIR --reuse-keys` to remake the lists)", files.join(", "))]
    Missing {
        /// The directory.
        dir: String,
        /// The missing file names.
        files: Vec<String>,
    },
    /// A file cannot be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A signature list is malformed.
    #[error("{path}: {cause}")]
    BadList {
        /// The file.
        path: String,
        /// What is wrong.
        cause: SigListParseError,
    },
    /// An `.auth` file is malformed.
    #[error("{path}: {cause}")]
    BadAuth {
        /// The file.
        path: String,
        /// What is wrong.
        cause: AuthVarParseError,
    },
    /// `X.esl` and `X.auth` disagree.
    #[error("{esl} and {auth} hold different signature lists: the key directory is inconsistent; remake both with `genkey NAME -o DIR --reuse-keys`")]
    Mismatch {
        /// The `.esl` file.
        esl: String,
        /// The `.auth` file.
        auth: String,
    },
    /// PK must hold exactly one certificate.
    #[error("{path} holds {count} entries; PK must be exactly one X.509 certificate")]
    BadPk {
        /// The file.
        path: String,
        /// How many entries it has.
        count: usize,
    },
    /// An `.auth` is not signed by the key that must authorise it.
    #[error("{path} is not signed by any certificate in {signer} (the firmware checks exactly this for every later update): remake the .auth files with `genkey NAME -o DIR --reuse-keys`")]
    BadSignature {
        /// The `.auth` file.
        path: String,
        /// The variable whose certificates were tried.
        signer: &'static str,
    },
}

/// One variable's files.
#[derive(Clone, Debug)]
pub struct KeyVar {
    /// Which variable.
    pub role: Role,
    /// The `.esl` bytes, when the file exists.
    pub esl: Option<Vec<u8>>,
    /// The `.auth` bytes, when the file exists.
    pub auth: Option<Vec<u8>>,
    /// The parsed list (from the `.esl`, else from the `.auth`).
    pub list: SignatureDatabase,
    /// The `.auth` timestamp, when there is an `.auth`.
    pub timestamp: Option<EfiTime>,
}

impl KeyVar {
    /// The signature-list bytes of the variable's value.
    pub fn value(&self) -> Vec<u8> {
        match (&self.esl, &self.auth) {
            (Some(esl), _) => esl.clone(),
            (None, Some(auth)) => AuthenticatedVariable::parse(auth)
                .map(|a| a.data)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// The variables of a key directory, PK, KEK, db and (when present) dbx.
#[derive(Clone, Debug)]
pub struct KeySet {
    /// The directory.
    pub dir: PathBuf,
    /// Owner GUID of our entries, from `manifest.json` when there is one.
    pub owner: Option<Guid>,
    /// The variables in hierarchy order.
    pub vars: Vec<KeyVar>,
}

/// One line of a list's contents, for plans and reports.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EntrySummary {
    /// `x509`, `sha256` or the type GUID.
    #[serde(rename = "type")]
    pub kind: String,
    /// Owner GUID.
    pub owner: Guid,
    /// Certificate subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Certificate issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// SHA-256 of the certificate, or the hash itself.
    pub sha256: String,
    /// The shipped Microsoft certificate this is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_cert: Option<String>,
}

/// Summaries of every entry of a list.
pub fn summarize(list: &SignatureDatabase) -> Vec<EntrySummary> {
    use sha2::Digest;
    list.entries()
        .map(|(kind, e)| {
            if kind == EFI_CERT_X509 {
                let summary = crate::keys::cert::CertSummary::from_der(&e.data).ok();
                EntrySummary {
                    kind: "x509".into(),
                    owner: e.owner,
                    subject: summary.as_ref().map(|s| s.subject.clone()),
                    issuer: summary.as_ref().map(|s| s.issuer.clone()),
                    sha256: hex::encode(sha2::Sha256::digest(&e.data)),
                    vendor_cert: crate::efi::microsoft::VendorCert::find_by_der(&e.data)
                        .map(|c| c.name.to_string()),
                }
            } else {
                let kind_name = if kind == crate::efi::guid::EFI_CERT_SHA256 {
                    "sha256".to_string()
                } else {
                    kind.to_string()
                };
                EntrySummary {
                    kind: kind_name,
                    owner: e.owner,
                    subject: None,
                    issuer: None,
                    sha256: hex::encode(&e.data),
                    vendor_cert: None,
                }
            }
        })
        .collect()
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, KeySetError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeySetError::Read {
            path: path.display().to_string(),
            cause: source,
        }),
    }
}

impl KeySet {
    /// Reads and checks a key directory. PK, KEK and db must have the form
    /// `need` names; dbx is taken when the directory has it.
    pub fn load(dir: &Path, need: Need) -> Result<Self, KeySetError> {
        if !dir.is_dir() {
            return Err(KeySetError::NoDir(dir.display().to_string()));
        }
        let ext = match need {
            Need::Esl => "esl",
            Need::Auth => "auth",
        };
        // Public material only, in the directory's own layout: no private key is read.
        let keydir = KeyDir::open(dir);
        let missing: Vec<String> = Role::WITH_KEYS
            .iter()
            .map(|r| keydir.variable_file(*r, ext))
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(KeySetError::Missing {
                dir: dir.display().to_string(),
                files: missing,
            });
        }
        let owner = Manifest::read(dir).ok().flatten().map(|m| m.owner_guid);
        let mut vars = Vec::new();
        for role in Role::ALL {
            let esl_path = keydir.variable_path(role, "esl");
            let auth_path = keydir.variable_path(role, "auth");
            let esl = read_optional(&esl_path)?;
            let auth = read_optional(&auth_path)?;
            // dbx counts only in the form the command needs.
            let wanted = match need {
                Need::Esl => esl.is_some(),
                Need::Auth => auth.is_some(),
            };
            if !wanted {
                continue;
            }
            let parsed_auth = match &auth {
                Some(bytes) => Some(AuthenticatedVariable::parse(bytes).map_err(|source| {
                    KeySetError::BadAuth {
                        path: auth_path.display().to_string(),
                        cause: source,
                    }
                })?),
                None => None,
            };
            let (value, value_path) = match (&esl, &parsed_auth) {
                (Some(e), _) => (e.clone(), &esl_path),
                (None, Some(a)) => (a.data.clone(), &auth_path),
                (None, None) => continue,
            };
            if let (Some(e), Some(a)) = (&esl, &parsed_auth) {
                if *e != a.data {
                    return Err(KeySetError::Mismatch {
                        esl: esl_path.display().to_string(),
                        auth: auth_path.display().to_string(),
                    });
                }
            }
            let list = SignatureDatabase::parse(&value).map_err(|source| KeySetError::BadList {
                path: value_path.display().to_string(),
                cause: source,
            })?;
            if role == Role::Pk {
                let count = list.entries().count();
                let x509 = list.entries().filter(|(t, _)| *t == EFI_CERT_X509).count();
                if count != 1 || x509 != 1 {
                    return Err(KeySetError::BadPk {
                        path: value_path.display().to_string(),
                        count,
                    });
                }
            }
            vars.push(KeyVar {
                role,
                esl,
                auth,
                list,
                timestamp: parsed_auth.map(|a| a.timestamp),
            });
        }
        let set = KeySet {
            dir: dir.to_path_buf(),
            owner,
            vars,
        };
        if need == Need::Auth {
            set.verify_signatures()?;
        }
        Ok(set)
    }

    /// One variable, when the set has it.
    pub fn get(&self, role: Role) -> Option<&KeyVar> {
        self.vars.iter().find(|v| v.role == role)
    }

    /// Checks that every `.auth` is signed by a certificate of its authorising variable.
    pub fn verify_signatures(&self) -> Result<(), KeySetError> {
        for var in &self.vars {
            let Some(auth) = &var.auth else { continue };
            let path = KeyDir::open(&self.dir).variable_path(var.role, "auth");
            let parsed =
                AuthenticatedVariable::parse(auth).map_err(|source| KeySetError::BadAuth {
                    path: path.display().to_string(),
                    cause: source,
                })?;
            let signer = var.role.signed_by();
            let certs: Vec<Vec<u8>> = self
                .get(signer)
                .map(|s| {
                    s.list
                        .entries()
                        .filter(|(t, _)| *t == EFI_CERT_X509)
                        .map(|(_, e)| e.data.clone())
                        .collect()
                })
                .unwrap_or_default();
            let message = signed_bytes(
                var.role.name(),
                var.role.vendor(),
                SECURE_BOOT_VARIABLE,
                parsed.timestamp,
                &parsed.data,
            );
            if !certs.iter().any(|c| signed_by(&parsed.pkcs7, c, &message)) {
                return Err(KeySetError::BadSignature {
                    path: path.display().to_string(),
                    signer: signer.name(),
                });
            }
        }
        Ok(())
    }
}

/// Whether `pkcs7` (SignedData, bare or in a ContentInfo) is a valid detached
/// signature of `message` by the holder of `cert_der` — that certificate and no other.
fn signed_by(pkcs7: &[u8], cert_der: &[u8], message: &[u8]) -> bool {
    use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::X509;
    let verify = || -> Result<(), Box<dyn std::error::Error>> {
        let wrapped = wrap_in_content_info(&unwrap_content_info(pkcs7))?;
        let p7 = Pkcs7::from_der(&wrapped)?;
        let mut certs = Stack::new()?;
        certs.push(X509::from_der(cert_der)?)?;
        let store = X509StoreBuilder::new()?.build();
        // NOINTERN: find the signer only among `certs`, never among the certificates
        // the signature itself carries. NOVERIFY: firmware checks no chain or validity.
        p7.verify(
            &certs,
            &store,
            Some(message),
            None,
            Pkcs7Flags::NOINTERN | Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        )?;
        Ok(())
    };
    verify().is_ok()
}
