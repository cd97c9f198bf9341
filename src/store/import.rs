//! Reading what users export from firmware (`--custom-cert-dir`): files named
//! PK, KEK, db and dbx holding raw signature lists (with or without the 4-byte
//! efivarfs attribute prefix), `.auth` files, or DER/PEM certificates.

use std::path::{Path, PathBuf};

use super::layout::Role;
use crate::efi::guid::MICROSOFT_OWNER;
use crate::efi::microsoft::VendorCert;
use crate::efi::siglist::SigListParseError;
use crate::efi::{AuthenticatedVariable, Guid, SignatureDatabase, SignatureList};

/// Extensions recognised after a variable name (`db`, `db.esl`, …).
const EXTENSIONS: [&str; 8] = ["", ".esl", ".auth", ".der", ".cer", ".crt", ".pem", ".bin"];

/// An exported file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The directory or a file cannot be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// Where.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A file's bytes are not what its name says.
    #[error("{path}: byte offset {offset}: {problem}. Export the variable again (e.g. `efi-readvar -v {var} -o {var}.esl`) or remove the file")]
    Malformed {
        /// The file.
        path: String,
        /// Where in the file.
        offset: usize,
        /// What is wrong.
        problem: String,
        /// The variable the file is for.
        var: &'static str,
    },
    /// Nothing to import.
    #[error("{path} holds no file named PK, KEK, db or dbx (optionally with .esl, .auth, .der, .pem, .crt or .cer); nothing to import")]
    Empty {
        /// The directory.
        path: String,
    },
}

/// A signature list read from an export, with where it came from.
#[derive(Clone, Debug)]
pub struct ImportedList {
    /// The variable it belongs to.
    pub role: Role,
    /// The list as found (owners and types kept).
    pub list: SignatureList,
    /// `custom:<file name>`.
    pub source: String,
}

/// Everything read from an export directory.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    /// The lists, per file in role order.
    pub lists: Vec<ImportedList>,
    /// Files in the directory that were not read, with why.
    pub ignored: Vec<(String, String)>,
}

fn candidate_names(role: Role) -> Vec<String> {
    let mut names: Vec<String> = EXTENSIONS
        .iter()
        .map(|e| format!("{}{e}", role.name()))
        .collect();
    names.push(format!("{}-{}", role.name(), role.vendor()));
    names
}

/// Reads an export directory. `our_owner` labels bare certificates that are
/// not Microsoft's (a bare certificate carries no owner).
pub fn read_export_dir(dir: &Path, our_owner: Guid) -> Result<Imported, ImportError> {
    let read_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ImportError::Read {
            path,
            cause: source,
        }
    };
    let mut known: Vec<(Role, PathBuf)> = Vec::new();
    let mut ignored = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let role = Role::ALL
            .into_iter()
            .find(|r| candidate_names(*r).contains(&name));
        match role {
            Some(r) if entry.path().is_file() => known.push((r, entry.path())),
            Some(_) => ignored.push((name, "not a regular file".into())),
            None => ignored.push((
                name,
                "not named after PK, KEK, db or dbx; not imported".into(),
            )),
        }
    }
    if known.is_empty() {
        return Err(ImportError::Empty {
            path: dir.display().to_string(),
        });
    }
    known.sort_by_key(|(r, _)| *r);
    let mut lists = Vec::new();
    for (role, path) in known {
        let bytes = std::fs::read(&path).map_err(read_err(&path))?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for list in parse_export(&bytes, role, our_owner).map_err(|(offset, problem)| {
            ImportError::Malformed {
                path: path.display().to_string(),
                offset,
                problem,
                var: role.name(),
            }
        })? {
            lists.push(ImportedList {
                role,
                list,
                source: format!("custom:{file}"),
            });
        }
    }
    Ok(Imported { lists, ignored })
}

fn cert_list(der: &[u8], our_owner: Guid) -> SignatureList {
    let owner = if VendorCert::find_by_der(der).is_some() {
        MICROSOFT_OWNER
    } else {
        our_owner
    };
    SignatureList::x509(owner, der)
}

/// Interprets one exported file; errors are (byte offset, problem).
fn parse_export(
    bytes: &[u8],
    role: Role,
    our_owner: Guid,
) -> Result<Vec<SignatureList>, (usize, String)> {
    let trimmed = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if bytes[trimmed..].starts_with(b"-----BEGIN") {
        let certs = crate::keys::cert::certificates_from_pem(bytes);
        if certs.is_empty() {
            return Err((trimmed, "PEM file without a CERTIFICATE block".into()));
        }
        return Ok(certs.iter().map(|d| cert_list(d, our_owner)).collect());
    }
    if AuthenticatedVariable::looks_like(bytes) {
        let auth = AuthenticatedVariable::parse(bytes).map_err(|e| (e.offset, e.problem))?;
        let data_offset = bytes.len() - auth.data.len();
        return SignatureDatabase::parse(&auth.data)
            .map(|db| db.lists)
            .map_err(|e| shift(e, data_offset));
    }
    let der_like = bytes.first() == Some(&0x30);
    if der_like {
        if let Some(der) = crate::keys::cert::certificate_der(bytes) {
            return Ok(vec![cert_list(&der, our_owner)]);
        }
        // A DER SEQUENCE that does not parse as a certificate: no standard
        // signature-list type GUID starts with 0x30, so unless it happens to
        // be a valid list, say what it is — a broken certificate.
        if SignatureDatabase::parse(bytes).is_err() {
            return Err(der_problem(bytes));
        }
    }
    let _ = role;
    match SignatureDatabase::parse(bytes) {
        Ok(db) => Ok(db.lists),
        Err(at_zero) => {
            // efivarfs files start with the variable's 4-byte attributes (e.g. 0x27).
            let looks_prefixed =
                bytes.len() > 4 && bytes[1..4] == [0, 0, 0] && bytes[0] & !0x7f == 0;
            if looks_prefixed {
                SignatureDatabase::parse(&bytes[4..])
                    .map(|db| db.lists)
                    .map_err(|e| shift(e, 4))
            } else {
                Err((at_zero.offset, at_zero.problem))
            }
        }
    }
}

/// What is wrong with bytes that start like a DER certificate but do not parse.
fn der_problem(bytes: &[u8]) -> (usize, String) {
    // The SEQUENCE header: short form, or long form with 1 to 4 length bytes.
    let announced = match bytes.get(1) {
        Some(&n) if n < 0x80 => Some(2 + usize::from(n)),
        Some(&n) if (0x81..=0x84).contains(&n) => {
            let count = usize::from(n & 0x7f);
            bytes.get(2..2 + count).map(|len| {
                len.iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
                    .saturating_add(2 + count)
            })
        }
        _ => None,
    };
    match announced {
        Some(total) if total > bytes.len() => (
            bytes.len(),
            format!(
                "truncated DER certificate: its header announces {total} bytes but the file has {}; export it again",
                bytes.len()
            ),
        ),
        None if bytes.len() < 6 => (
            bytes.len(),
            format!("truncated DER certificate: the file has only {} bytes", bytes.len()),
        ),
        _ => (
            0,
            "a DER structure that is not an X.509 certificate (nor a signature list)".into(),
        ),
    }
}

fn shift(e: SigListParseError, by: usize) -> (usize, String) {
    (e.offset + by, e.problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efi::microsoft::MS_UEFI_2011;

    #[test]
    fn reads_every_export_form() {
        let tmp = tempfile::tempdir().unwrap();
        let owner = Guid::random();
        let oem = Guid::random();
        let esl = SignatureList::x509(oem, &MS_UEFI_2011.der())
            .to_bytes()
            .unwrap();
        // db with the efivarfs attribute prefix
        let mut prefixed = vec![0x27, 0, 0, 0];
        prefixed.extend_from_slice(&esl);
        std::fs::write(tmp.path().join("db"), &prefixed).unwrap();
        // KEK as a PEM certificate (Microsoft's: gets Microsoft's owner)
        std::fs::write(
            tmp.path().join("KEK.pem"),
            crate::keys::cert::to_pem(&MS_UEFI_2011.der()),
        )
        .unwrap();
        std::fs::write(tmp.path().join("notes.txt"), b"hello").unwrap();
        let got = read_export_dir(tmp.path(), owner).unwrap();
        assert_eq!(got.lists.len(), 2);
        assert_eq!(got.lists[0].role, Role::Kek);
        assert_eq!(got.lists[0].list.entries[0].owner, MICROSOFT_OWNER);
        assert_eq!(got.lists[1].role, Role::Db);
        assert_eq!(got.lists[1].list.entries[0].owner, oem, "vendor owner kept");
        assert_eq!(got.ignored.len(), 1);
    }

    #[test]
    fn names_file_and_offset_of_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let mut esl = SignatureList::x509(Guid::random(), b"abc")
            .to_bytes()
            .unwrap();
        esl.truncate(esl.len() - 1);
        std::fs::write(tmp.path().join("dbx.esl"), &esl).unwrap();
        let e = read_export_dir(tmp.path(), Guid::random())
            .unwrap_err()
            .to_string();
        assert!(e.contains("dbx.esl") && e.contains("byte offset 16"), "{e}");
    }

    #[test]
    fn an_empty_directory_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_export_dir(tmp.path(), Guid::random()),
            Err(ImportError::Empty { .. })
        ));
    }
}
