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
    /// A signature list to append is malformed.
    #[error("the signature list to append to {name} is malformed at byte {offset}: {problem}")]
    BadAppend {
        /// Variable name.
        name: String,
        /// Offset of the problem in the appended data.
        offset: usize,
        /// What is wrong.
        problem: String,
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

/// One `EFI_SIGNATURE_LIST` of raw signature-database bytes: its signature
/// type, header bytes (list header + SignatureHeader) and entries.
struct RawList<'a> {
    signature_type: [u8; 16],
    header: &'a [u8],
    signature_size: usize,
    entries: Vec<&'a [u8]>,
}

/// Splits signature-database bytes into lists, or says where they break.
fn raw_lists(bytes: &[u8]) -> Result<Vec<RawList<'_>>, (usize, String)> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut lists = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let bad = |problem: &str| (at, problem.to_string());
        let (list_size, header_size, signature_size) =
            match (u32_at(at + 16), u32_at(at + 20), u32_at(at + 24)) {
                (Some(l), Some(h), Some(s)) => (l, h, s),
                _ => return Err(bad("truncated EFI_SIGNATURE_LIST header")),
            };
        let end = at
            .checked_add(list_size)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| bad("SignatureListSize runs past the end"))?;
        let first = at
            .checked_add(28)
            .and_then(|h| h.checked_add(header_size))
            .filter(|&first| first <= end)
            .ok_or_else(|| bad("SignatureHeaderSize runs past the list"))?;
        if signature_size == 0 || (end - first) % signature_size != 0 {
            return Err(bad("the entries are not a whole number of SignatureSize"));
        }
        let mut signature_type = [0u8; 16];
        signature_type.copy_from_slice(&bytes[at..at + 16]);
        lists.push(RawList {
            signature_type,
            header: &bytes[at..first],
            signature_size,
            entries: bytes[first..end].chunks(signature_size).collect(),
        });
        at = end;
    }
    Ok(lists)
}

/// The value a variable has after an append write of `new` (signature lists)
/// onto `existing`, as edk2 computes it: entries already present in a list of
/// the same type and size are dropped, what remains of each new list is
/// appended after the old data, and a new list left empty is dropped whole.
pub fn append_signature_lists(
    name: &str,
    existing: &[u8],
    new: &[u8],
) -> Result<Vec<u8>, Pcr7Error> {
    let bad = |(offset, problem): (usize, String)| Pcr7Error::BadAppend {
        name: name.to_string(),
        offset,
        problem,
    };
    let old = raw_lists(existing).map_err(|(offset, problem)| Pcr7Error::BadList {
        name: name.to_string(),
        reason: format!("at byte {offset}: {problem}"),
    })?;
    let mut out = existing.to_vec();
    for list in raw_lists(new).map_err(bad)? {
        let kept: Vec<&[u8]> = list
            .entries
            .iter()
            .filter(|entry| {
                !old.iter().any(|o| {
                    o.signature_type == list.signature_type
                        && o.signature_size == list.signature_size
                        && o.entries.contains(entry)
                })
            })
            .copied()
            .collect();
        if kept.is_empty() {
            continue;
        }
        let size = list.header.len() + kept.len() * list.signature_size;
        let mut header = list.header.to_vec();
        header[16..20].copy_from_slice(&(size as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for entry in kept {
            out.extend_from_slice(entry);
        }
    }
    Ok(out)
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

impl Pcr7Prediction {
    /// The events as systemd-pcrlock's `.pcrlock` JSON: one record per event
    /// with its digest in every bank, which `systemd-pcrlock` combines into a
    /// policy (e.g. `/var/lib/pcrlock.d/…/*.pcrlock`).
    pub fn pcrlock(&self) -> serde_json::Value {
        let banks = [
            DigestAlgorithm::Sha1,
            DigestAlgorithm::Sha256,
            DigestAlgorithm::Sha384,
            DigestAlgorithm::Sha512,
        ];
        let records: Vec<serde_json::Value> = self
            .events
            .iter()
            .map(|event| {
                let digests: Vec<serde_json::Value> = banks
                    .iter()
                    .map(|bank| {
                        serde_json::json!({
                            "hashAlg": bank.name(),
                            "digest": hex::encode(bank.digest(&event.data)),
                        })
                    })
                    .collect();
                serde_json::json!({ "pcr": 7, "digests": digests })
            })
            .collect();
        serde_json::json!({ "records": records })
    }
}

/// One boot path's PCR 7 before and after a planned change of the variables.
#[derive(Clone, Debug, Serialize)]
pub struct Pcr7Plan {
    /// PCR 7 with the variables as they are.
    pub before: Pcr7Prediction,
    /// PCR 7 once the change is made, when a change is planned.
    pub after: Option<Pcr7Prediction>,
    /// Images of the boot path that no db certificate authorises (before, after).
    pub unauthorised: Vec<String>,
}

impl Pcr7Plan {
    /// Whether the planned change moves PCR 7 (a volume sealed to it stops unlocking).
    pub fn changes(&self) -> bool {
        self.after
            .as_ref()
            .is_some_and(|after| after.banks != self.before.banks)
    }
}

/// The authorities of `images` (in load order) under the db of `vars`; the
/// names of images no db certificate authorises are added to `unauthorised`.
fn authorities(
    vars: &SecureBootVariables,
    images: &[(String, Vec<u8>)],
    when: &str,
    unauthorised: &mut Vec<String>,
) -> Result<Vec<Authority>, Pcr7Error> {
    let mut out = Vec::new();
    for (name, bytes) in images {
        let found = match &vars.db {
            Some(db) => authority_for_image(db, bytes)?,
            None => None,
        };
        match found {
            Some(a) => out.push(a),
            None => unauthorised.push(format!("{name} ({when})")),
        }
    }
    Ok(out)
}

/// PCR 7 for a boot that loads `images` (name, bytes; in load order, e.g.
/// systemd-boot then the UKI) with `before`'s variables, and with `after`'s
/// when a change is planned.
pub fn plan(
    before: &SecureBootVariables,
    after: Option<&SecureBootVariables>,
    images: &[(String, Vec<u8>)],
) -> Result<Pcr7Plan, Pcr7Error> {
    let mut unauthorised = Vec::new();
    let now = authorities(before, images, "now", &mut unauthorised)?;
    let before_prediction = predict(before, &now);
    let after_prediction = match after {
        Some(vars) => {
            let then = authorities(vars, images, "after the change", &mut unauthorised)?;
            Some(predict(vars, &then))
        }
        None => None,
    };
    Ok(Pcr7Plan {
        before: before_prediction,
        after: after_prediction,
        unauthorised,
    })
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
    fn pcrlock_records_replay_to_the_predicted_value() {
        let vars = SecureBootVariables {
            secure_boot: true,
            db: Some(vec![1, 2, 3]),
            ..Default::default()
        };
        let p = predict(&vars, &[]);
        let lock = p.pcrlock();
        let mut pcr = vec![0u8; 32];
        for record in lock["records"].as_array().unwrap() {
            assert_eq!(record["pcr"], 7);
            let d = record["digests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["hashAlg"] == "sha256")
                .unwrap();
            pcr.extend(hex::decode(d["digest"].as_str().unwrap()).unwrap());
            pcr = DigestAlgorithm::Sha256.digest(&pcr);
        }
        assert_eq!(hex::encode(pcr), p.value(DigestAlgorithm::Sha256).unwrap());
    }

    #[test]
    fn a_plan_that_changes_db_changes_pcr7() {
        let before = SecureBootVariables {
            secure_boot: true,
            db: Some(vec![1]),
            ..Default::default()
        };
        let after = SecureBootVariables {
            db: Some(vec![1, 2]),
            ..before.clone()
        };
        // Neither db parses as a list with certificates: nothing is authorised,
        // and a bad list is an error, not a silent "unchanged".
        assert!(plan(&before, Some(&after), &[("x".into(), vec![0])]).is_err());
        let p = plan(&before, Some(&after), &[]).unwrap();
        assert!(p.changes());
        assert!(!plan(&before, Some(&before), &[]).unwrap().changes());
    }

    /// One list of `n`-byte entries.
    fn list(signature_type: u8, entries: &[&[u8]]) -> Vec<u8> {
        let size = entries[0].len();
        let mut out = vec![signature_type; 16];
        out.extend(((28 + size * entries.len()) as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((size as u32).to_le_bytes());
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn append_drops_entries_already_present_and_keeps_the_rest_in_order() {
        let old = list(1, &[b"aaaa", b"bbbb"]);
        let new = [list(1, &[b"bbbb", b"cccc"]), list(2, &[b"aaaa"])].concat();
        let after = append_signature_lists("db", &old, &new).unwrap();
        assert_eq!(
            after,
            [old.clone(), list(1, &[b"cccc"]), list(2, &[b"aaaa"])].concat()
        );
        // Re-applying the same append changes nothing.
        assert_eq!(append_signature_lists("db", &after, &new).unwrap(), after);
        let err = append_signature_lists("db", &old, &new[..30]).unwrap_err();
        assert!(err.to_string().contains("malformed at byte 0"), "{err}");
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
