//! What goes into each Secure Boot variable: our certificate, the selected
//! Microsoft certificates, and entries imported from a firmware export —
//! vendor owners kept, hash entries kept, duplicates kept once and reported,
//! nothing dropped without a note.

use sha2::Digest;

use crate::efi::guid::{EFI_CERT_SHA256, EFI_CERT_X509};
use crate::efi::microsoft::VendorCert;
use crate::efi::{Guid, SignatureDatabase, SignatureEntry, SignatureList};
use crate::keys::cert::CertSummary;
use crate::store::import::ImportedList;
use crate::store::manifest::EntryRecord;
use crate::store::Role;

/// The value of one variable and the record of where each entry came from.
#[derive(Clone, Debug)]
pub struct BuiltList {
    /// The variable.
    pub role: Role,
    /// Its signature database.
    pub database: SignatureDatabase,
    /// One record per entry, in database order.
    pub records: Vec<EntryRecord>,
    /// What happened to imported entries, for the user.
    pub notes: Vec<String>,
}

fn kind_name(signature_type: Guid) -> String {
    if signature_type == EFI_CERT_X509 {
        "x509".into()
    } else if signature_type == EFI_CERT_SHA256 {
        "sha256".into()
    } else {
        signature_type.to_string()
    }
}

fn record(signature_type: Guid, entry: &SignatureEntry, source: &str) -> EntryRecord {
    let (subject, sha256) = if signature_type == EFI_CERT_X509 {
        let summary = CertSummary::from_der(&entry.data).ok();
        (
            summary.as_ref().map(|s| s.subject.clone()),
            hex::encode(sha2::Sha256::digest(&entry.data)),
        )
    } else if signature_type == EFI_CERT_SHA256 {
        (None, hex::encode(&entry.data))
    } else {
        (None, hex::encode(sha2::Sha256::digest(&entry.data)))
    };
    EntryRecord {
        kind: kind_name(signature_type),
        owner: entry.owner,
        source: source.to_string(),
        subject,
        sha256,
    }
}

/// Builds one variable's list.
///
/// `ours` is our certificate for this role (none for dbx); `vendor` the
/// Microsoft certificates chosen for it; `imported` every imported list (only
/// those for `role` are used).
pub fn build(
    role: Role,
    owner: Guid,
    ours: Option<&[u8]>,
    vendor: &[VendorCert],
    imported: &[ImportedList],
) -> BuiltList {
    let mut database = SignatureDatabase::default();
    let mut records = Vec::new();
    let mut notes = Vec::new();
    if let Some(der) = ours {
        let list = SignatureList::x509(owner, der);
        records.push(record(EFI_CERT_X509, &list.entries[0], "ours"));
        database.lists.push(list);
    }
    for cert in vendor {
        let list = cert.signature_list();
        records.push(record(
            EFI_CERT_X509,
            &list.entries[0],
            &format!("microsoft:{}", cert.name),
        ));
        database.lists.push(list);
    }

    let mut hashes: Vec<(SignatureEntry, String)> = Vec::new();
    for imp in imported.iter().filter(|i| i.role == role) {
        let t = imp.list.signature_type;
        if role == Role::Pk {
            for e in &imp.list.entries {
                let r = record(t, e, &imp.source);
                notes.push(format!(
                    "PK: {} ({}) from {} not enrolled: PK holds exactly one certificate, ours. \
                     To keep trusting it, add it to KEK instead.",
                    r.subject.as_deref().unwrap_or(&r.kind),
                    r.sha256,
                    imp.source
                ));
            }
            continue;
        }
        let mut kept = Vec::new();
        for e in &imp.list.entries {
            let duplicate = database.contains(t, &e.data)
                || kept.iter().any(|k: &SignatureEntry| k.data == e.data)
                || (t == EFI_CERT_SHA256 && hashes.iter().any(|(h, _)| h.data == e.data));
            if duplicate {
                let r = record(t, e, &imp.source);
                notes.push(format!(
                    "{}: {} {} from {} is already in the list; kept once",
                    role.name(),
                    r.kind,
                    r.subject.as_deref().unwrap_or(&r.sha256),
                    imp.source
                ));
                continue;
            }
            if t == EFI_CERT_SHA256 {
                hashes.push((e.clone(), imp.source.clone()));
            } else {
                kept.push(e.clone());
            }
        }
        if kept.is_empty() {
            continue;
        }
        notes.push(format!(
            "{}: merged {} {} entr{} from {}",
            role.name(),
            kept.len(),
            kind_name(t),
            if kept.len() == 1 { "y" } else { "ies" },
            imp.source
        ));
        if t == EFI_CERT_X509 {
            // One list per certificate: the form firmware and efitools write.
            for e in kept {
                records.push(record(t, &e, &imp.source));
                database.lists.push(SignatureList {
                    signature_type: t,
                    header: Vec::new(),
                    entries: vec![e],
                });
            }
        } else {
            for e in &kept {
                records.push(record(t, e, &imp.source));
            }
            database.lists.push(SignatureList {
                signature_type: t,
                header: imp.list.header.clone(),
                entries: kept,
            });
        }
    }
    if !hashes.is_empty() {
        notes.push(format!(
            "{}: merged {} sha256 hash entr{} into one list",
            role.name(),
            hashes.len(),
            if hashes.len() == 1 { "y" } else { "ies" }
        ));
        for (e, source) in &hashes {
            records.push(record(EFI_CERT_SHA256, e, source));
        }
        database.lists.push(SignatureList::sha256(
            hashes.into_iter().map(|(e, _)| e).collect(),
        ));
    }
    BuiltList {
        role,
        database,
        records,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efi::microsoft::{MS_KEK_2011, MS_UEFI_2011};

    fn imported(role: Role, list: SignatureList) -> ImportedList {
        ImportedList {
            role,
            list,
            source: "custom:test".into(),
        }
    }

    #[test]
    fn merges_vendor_owners_and_hashes_and_reports_duplicates() {
        let ours = Guid::random();
        let oem = Guid::random();
        let imports = vec![
            imported(Role::Db, SignatureList::x509(oem, b"oem cert")),
            imported(Role::Db, MS_UEFI_2011.signature_list()),
            imported(
                Role::Db,
                SignatureList::sha256(vec![
                    SignatureEntry {
                        owner: oem,
                        data: vec![7; 32],
                    },
                    SignatureEntry {
                        owner: oem,
                        data: vec![7; 32],
                    },
                ]),
            ),
            imported(Role::Kek, SignatureList::x509(oem, b"kek")),
        ];
        let built = build(Role::Db, ours, Some(b"our cert"), &[MS_UEFI_2011], &imports);
        let owners: Vec<_> = built.database.entries().map(|(_, e)| e.owner).collect();
        assert_eq!(owners.len(), 4, "ours, microsoft, oem cert, one hash");
        assert_eq!(owners[2], oem);
        assert!(built.database.contains(EFI_CERT_SHA256, &[7; 32]));
        assert_eq!(built.records.len(), 4);
        let dup_notes = built
            .notes
            .iter()
            .filter(|n| n.contains("kept once"))
            .count();
        assert_eq!(dup_notes, 2, "{:?}", built.notes);
    }

    #[test]
    fn pk_keeps_only_ours_and_says_so() {
        let imports = vec![imported(Role::Pk, MS_KEK_2011.signature_list())];
        let built = build(Role::Pk, Guid::random(), Some(b"pk"), &[], &imports);
        assert_eq!(built.database.lists.len(), 1);
        assert!(built.notes[0].contains("not enrolled"), "{:?}", built.notes);
    }
}
