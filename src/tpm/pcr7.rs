//! PCR 7 prediction: the Secure Boot policy as edk2 measures it (TCG PC Client
//! Platform Firmware Profile, "PCR[7] usage").
//!
//! The firmware extends PCR 7, in this order:
//! 1. one `EV_EFI_VARIABLE_DRIVER_CONFIG` event each for `SecureBoot`, `PK`,
//!    `KEK`, `db` and `dbx` — a variable that does not exist is measured with
//!    no data, never skipped — then `dbt` only when it exists;
//! 2. an `EV_SEPARATOR` (four zero bytes);
//! 3. one `EV_EFI_VARIABLE_AUTHORITY` event per distinct db entry that
//!    authorised a loaded image (the `EFI_SIGNATURE_DATA`: owner GUID and
//!    certificate), each entry measured once however many images it allowed.
//!
//! Every event's digest covers its whole `UEFI_VARIABLE_DATA` record (vendor
//! GUID, UnicodeNameLength u64, VariableDataLength u64, the name in UTF-16LE
//! without its NUL, the data). The facts were read from edk2's Tcg2Dxe and
//! DxeImageVerificationLib; the guest's own PCR 7 under OVMF + swtpm judges the
//! result in the tests.
//!
//! Why predict at all: a volume sealed to PCR 7 stops unlocking as soon as any
//! of these bytes change (a db append, a rotation, a dbx update), and the user
//! has to re-seal *before* rebooting, with the value the next boot will have.

use std::path::Path;

use serde::Serialize;

use crate::efi::guid::{Guid, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use crate::efi::siglist::SignatureDatabase;
use crate::efi::varstore::VarStore;
use crate::keys::algorithm::DigestAlgorithm;

/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_EFI_VARIABLE_DRIVER_CONFIG`.
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// `EV_EFI_VARIABLE_AUTHORITY`.
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;

/// `EFI_CERT_X509_GUID`: the signature type of a certificate entry.
const EFI_CERT_X509: Guid = Guid::from_str_const("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");

/// Why a prediction could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Pcr7Error {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A variable's value is not a signature list.
    #[error("{name} is not a valid EFI signature list: {reason}")]
    BadList {
        /// Variable name.
        name: String,
        /// What the parser said.
        reason: String,
    },
    /// An efivarfs file is shorter than its 4-byte attribute prefix.
    #[error(
        "{0} is shorter than the 4-byte efivarfs attribute prefix; is this an efivarfs mount?"
    )]
    ShortEfivar(String),
}

/// The Secure Boot variables a boot will measure, as their raw values
/// (signature lists, without efivarfs' attribute prefix or `.auth` headers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecureBootVariables {
    /// Whether Secure Boot will be enforced (the `SecureBoot` variable's one byte).
    pub secure_boot: bool,
    /// `PK`, when it exists.
    pub pk: Option<Vec<u8>>,
    /// `KEK`, when it exists.
    pub kek: Option<Vec<u8>>,
    /// `db`, when it exists.
    pub db: Option<Vec<u8>>,
    /// `dbx`, when it exists.
    pub dbx: Option<Vec<u8>>,
    /// `dbt`, when it exists (measured only then).
    pub dbt: Option<Vec<u8>>,
}

impl SecureBootVariables {
    /// The variables of an OVMF variable store. `SecureBoot` is not stored (the
    /// firmware derives it at boot), so `secure_boot` says what the boot will have.
    pub fn from_varstore(store: &VarStore, secure_boot: bool) -> Self {
        let get = |name: &str, vendor: Guid| store.get(name, vendor).map(|v| v.data.clone());
        SecureBootVariables {
            secure_boot,
            pk: get("PK", EFI_GLOBAL_VARIABLE),
            kek: get("KEK", EFI_GLOBAL_VARIABLE),
            db: get("db", EFI_IMAGE_SECURITY_DATABASE),
            dbx: get("dbx", EFI_IMAGE_SECURITY_DATABASE),
            dbt: get("dbt", EFI_IMAGE_SECURITY_DATABASE),
        }
    }

    /// The variables of a running machine, read from an efivarfs mount
    /// (`/sys/firmware/efi/efivars`), including its `SecureBoot` state.
    pub fn from_efivarfs(dir: &Path) -> Result<Self, Pcr7Error> {
        let read = |name: &str, vendor: Guid| -> Result<Option<Vec<u8>>, Pcr7Error> {
            let path = dir.join(format!("{name}-{vendor}"));
            match std::fs::read(&path) {
                Ok(bytes) if bytes.len() < 4 => {
                    Err(Pcr7Error::ShortEfivar(path.display().to_string()))
                }
                // efivarfs prefixes the value with its 4-byte attributes.
                Ok(bytes) => Ok(Some(bytes[4..].to_vec())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Pcr7Error::Read {
                    path: path.display().to_string(),
                    source,
                }),
            }
        };
        let secure_boot = read("SecureBoot", EFI_GLOBAL_VARIABLE)?
            .map(|v| v.first() == Some(&1))
            .unwrap_or(false);
        Ok(SecureBootVariables {
            secure_boot,
            pk: read("PK", EFI_GLOBAL_VARIABLE)?,
            kek: read("KEK", EFI_GLOBAL_VARIABLE)?,
            db: read("db", EFI_IMAGE_SECURITY_DATABASE)?,
            dbx: read("dbx", EFI_IMAGE_SECURITY_DATABASE)?,
            dbt: read("dbt", EFI_IMAGE_SECURITY_DATABASE)?,
        })
    }

    /// The variables a machine will hold once a key directory's signature lists
    /// (`PK.esl`, `KEK.esl`, `db.esl`, and `dbx.esl` when there is one) are
    /// enrolled, with Secure Boot enforced.
    pub fn from_key_dir(dir: &Path) -> Result<Self, Pcr7Error> {
        let read = |stem: &str| -> Result<Option<Vec<u8>>, Pcr7Error> {
            let path = dir.join(format!("{stem}.esl"));
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Pcr7Error::Read {
                    path: path.display().to_string(),
                    source,
                }),
            }
        };
        Ok(SecureBootVariables {
            secure_boot: true,
            pk: read("PK")?,
            kek: read("KEK")?,
            db: read("db")?,
            dbx: read("dbx")?,
            dbt: None,
        })
    }
}

/// A db entry that authorised a loaded image: the `EFI_SIGNATURE_DATA`
/// (owner GUID followed by the certificate) the firmware measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    /// `SignatureOwner`.
    pub owner: Guid,
    /// The certificate (DER), as stored in db.
    pub certificate: Vec<u8>,
}

impl Authority {
    /// The `EFI_SIGNATURE_DATA` bytes.
    pub fn signature_data(&self) -> Vec<u8> {
        let mut out = self.owner.to_bytes().to_vec();
        out.extend_from_slice(&self.certificate);
        out
    }
}

/// The db certificate entry whose key made the image's signature, as edk2
/// picks it: db's certificate entries in order, the first that verifies.
/// `None` when no certificate entry of db verifies the image (the firmware
/// would refuse it, or allows it by hash, which measures no certificate).
pub fn authority_for_image(db: &[u8], image: &[u8]) -> Result<Option<Authority>, Pcr7Error> {
    let list = SignatureDatabase::parse(db).map_err(|e| Pcr7Error::BadList {
        name: "db".into(),
        reason: e.to_string(),
    })?;
    for (signature_type, entry) in list.entries() {
        if signature_type != EFI_CERT_X509 {
            continue;
        }
        let verified = crate::pe::authenticode::verify(image, Some(&entry.data))
            .map(|info| info.digest_matches)
            .unwrap_or(false);
        if verified {
            return Ok(Some(Authority {
                owner: entry.owner,
                certificate: entry.data.clone(),
            }));
        }
    }
    Ok(None)
}

/// One PCR 7 event, as it appears in the firmware's event log.
#[derive(Clone, Debug, Serialize)]
pub struct MeasuredEvent {
    /// The TCG event type.
    pub event_type: u32,
    /// What it is, for people: `SecureBoot`, `db`, `separator`, `authority db: …`.
    pub description: String,
    /// The bytes the digest covers.
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// `UEFI_VARIABLE_DATA` for `name` in `vendor` with `data`.
fn variable_data(vendor: Guid, name: &str, data: &[u8]) -> Vec<u8> {
    let name16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut out = Vec::with_capacity(32 + name16.len() + data.len());
    out.extend_from_slice(&vendor.to_bytes());
    out.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&name16);
    out.extend_from_slice(data);
    out
}

/// The PCR 7 events of a boot with `vars` that loads images authorised by
/// `authorities` (in load order; repeats are measured once, as edk2 does).
pub fn events(vars: &SecureBootVariables, authorities: &[Authority]) -> Vec<MeasuredEvent> {
    let config = |vendor: Guid, name: &str, data: Option<&[u8]>| MeasuredEvent {
        event_type: EV_EFI_VARIABLE_DRIVER_CONFIG,
        description: match data {
            Some(d) => format!("{name} ({} bytes)", d.len()),
            None => format!("{name} (absent, measured empty)"),
        },
        data: variable_data(vendor, name, data.unwrap_or_default()),
    };
    let secure_boot = [u8::from(vars.secure_boot)];
    let mut out = vec![
        config(EFI_GLOBAL_VARIABLE, "SecureBoot", Some(&secure_boot)),
        config(EFI_GLOBAL_VARIABLE, "PK", vars.pk.as_deref()),
        config(EFI_GLOBAL_VARIABLE, "KEK", vars.kek.as_deref()),
        config(EFI_IMAGE_SECURITY_DATABASE, "db", vars.db.as_deref()),
        config(EFI_IMAGE_SECURITY_DATABASE, "dbx", vars.dbx.as_deref()),
    ];
    if let Some(dbt) = &vars.dbt {
        out.push(config(EFI_IMAGE_SECURITY_DATABASE, "dbt", Some(dbt)));
    }
    out.push(MeasuredEvent {
        event_type: EV_SEPARATOR,
        description: "separator".into(),
        data: vec![0; 4],
    });
    let mut seen: Vec<&Authority> = Vec::new();
    for authority in authorities {
        if seen.contains(&authority) {
            continue;
        }
        seen.push(authority);
        let subject = crate::keys::cert::CertSummary::from_der(&authority.certificate)
            .map(|s| s.subject)
            .unwrap_or_else(|_| "unparsable certificate".into());
        out.push(MeasuredEvent {
            event_type: EV_EFI_VARIABLE_AUTHORITY,
            description: format!("authority db: {subject} (owner {})", authority.owner),
            data: variable_data(
                EFI_IMAGE_SECURITY_DATABASE,
                "db",
                &authority.signature_data(),
            ),
        });
    }
    out
}

/// PCR 7 after `events`, in `bank`, starting from the reset value (zeros).
pub fn replay(events: &[MeasuredEvent], bank: DigestAlgorithm) -> Vec<u8> {
    let mut pcr = vec![0u8; bank.output_len()];
    for event in events {
        let mut input = pcr;
        input.extend_from_slice(&bank.digest(&event.data));
        pcr = bank.digest(&input);
    }
    pcr
}

/// A PCR 7 prediction: the value per bank and the events behind it.
#[derive(Clone, Debug, Serialize)]
pub struct Pcr7Prediction {
    /// `(bank name, hex value)` for sha1, sha256, sha384, sha512.
    pub banks: Vec<(String, String)>,
    /// The events, in measurement order.
    pub events: Vec<MeasuredEvent>,
}

impl Pcr7Prediction {
    /// The value in `bank` (lower-case hex), if predicted.
    pub fn value(&self, bank: DigestAlgorithm) -> Option<&str> {
        self.banks
            .iter()
            .find(|(name, _)| name == bank.name())
            .map(|(_, v)| v.as_str())
    }
}

/// Predicts PCR 7 in every bank for a boot with `vars` that loads images
/// authorised by `authorities`.
pub fn predict(vars: &SecureBootVariables, authorities: &[Authority]) -> Pcr7Prediction {
    let events = events(vars, authorities);
    let banks = [
        DigestAlgorithm::Sha1,
        DigestAlgorithm::Sha256,
        DigestAlgorithm::Sha384,
        DigestAlgorithm::Sha512,
    ]
    .into_iter()
    .map(|bank| (bank.name().to_string(), hex::encode(replay(&events, bank))))
    .collect();
    Pcr7Prediction { banks, events }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_data_has_the_uefi_variable_data_layout() {
        let d = variable_data(EFI_GLOBAL_VARIABLE, "PK", b"xyz");
        assert_eq!(&d[..16], &EFI_GLOBAL_VARIABLE.to_bytes());
        assert_eq!(u64::from_le_bytes(d[16..24].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(d[24..32].try_into().unwrap()), 3);
        assert_eq!(&d[32..36], &[b'P', 0, b'K', 0]);
        assert_eq!(&d[36..], b"xyz");
    }

    #[test]
    fn absent_variables_are_measured_empty_and_dbt_only_when_present() {
        let vars = SecureBootVariables {
            secure_boot: true,
            ..Default::default()
        };
        let ev = events(&vars, &[]);
        let names: Vec<_> = ev.iter().map(|e| e.description.clone()).collect();
        assert_eq!(ev.len(), 6, "{names:?}");
        assert_eq!(ev[5].event_type, EV_SEPARATOR);
        let with_dbt = SecureBootVariables {
            dbt: Some(vec![1]),
            ..vars.clone()
        };
        assert_eq!(events(&with_dbt, &[]).len(), 7);
    }

    #[test]
    fn an_authority_is_measured_once_and_changes_the_value() {
        let vars = SecureBootVariables::default();
        let a = Authority {
            owner: EFI_GLOBAL_VARIABLE,
            certificate: vec![0x30, 0x00],
        };
        let once = predict(&vars, std::slice::from_ref(&a));
        let twice = predict(&vars, &[a.clone(), a]);
        assert_eq!(once.events.len(), twice.events.len());
        assert_eq!(once.banks, twice.banks);
        assert_ne!(once.banks, predict(&vars, &[]).banks);
    }

    #[test]
    fn replay_extends_from_zero() {
        let ev = [MeasuredEvent {
            event_type: EV_SEPARATOR,
            description: String::new(),
            data: vec![0; 4],
        }];
        let digest = DigestAlgorithm::Sha256.digest(&[0; 4]);
        let mut input = vec![0u8; 32];
        input.extend_from_slice(&digest);
        assert_eq!(
            replay(&ev, DigestAlgorithm::Sha256),
            DigestAlgorithm::Sha256.digest(&input)
        );
    }
}
