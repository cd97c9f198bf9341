//! EFI signature lists (`EFI_SIGNATURE_LIST`) and signature databases, the
//! contents of PK, KEK, db and dbx.
//!
//! One list per X.509 certificate (its `SignatureSize` is 16 + DER length);
//! SHA-256 hash entries share one list (`SignatureSize` 48). All integers are
//! little-endian. efitools' `cert-to-efi-sig-list` output is the reference.

use super::guid::{Guid, EFI_CERT_SHA256, EFI_CERT_X509};

/// Header size of an `EFI_SIGNATURE_LIST`: type GUID, ListSize, HeaderSize, SignatureSize.
const LIST_HEADER_SIZE: usize = 16 + 4 + 4 + 4;
/// Size of the owner GUID that starts every `EFI_SIGNATURE_DATA`.
const OWNER_SIZE: usize = 16;

/// One entry of a signature list: who owns it and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureEntry {
    /// The owner GUID (`SignatureOwner`).
    pub owner: Guid,
    /// The entry's data: a DER certificate, a hash, …
    pub data: Vec<u8>,
}

/// An `EFI_SIGNATURE_LIST`: entries of one type and one size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureList {
    /// `SignatureType`, e.g. [`EFI_CERT_X509`].
    pub signature_type: Guid,
    /// The type-specific header (empty for every type in use today).
    pub header: Vec<u8>,
    /// The entries; all have data of the same length.
    pub entries: Vec<SignatureEntry>,
}

/// A byte string that is not a well-formed signature database.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed signature list at byte offset {offset}: {problem}")]
pub struct SigListParseError {
    /// Where the problem starts, from the start of the parsed bytes.
    pub offset: usize,
    /// What is wrong there.
    pub problem: String,
}

/// Entries of one list are not all the same size, which the format cannot express.
#[derive(Debug, thiserror::Error)]
#[error("signature list of type {signature_type} mixes entry sizes {first} and {other}")]
pub struct MixedEntrySizes {
    signature_type: Guid,
    first: usize,
    other: usize,
}

impl SignatureList {
    /// A list holding one DER certificate.
    pub fn x509(owner: Guid, der: &[u8]) -> Self {
        SignatureList {
            signature_type: EFI_CERT_X509,
            header: Vec::new(),
            entries: vec![SignatureEntry {
                owner,
                data: der.to_vec(),
            }],
        }
    }

    /// A list of SHA-256 hash entries.
    pub fn sha256(entries: Vec<SignatureEntry>) -> Self {
        SignatureList {
            signature_type: EFI_CERT_SHA256,
            header: Vec::new(),
            entries,
        }
    }

    /// `SignatureSize`: owner GUID plus the (common) data length.
    fn signature_size(&self) -> Result<usize, MixedEntrySizes> {
        let first = self.entries.first().map_or(0, |e| e.data.len());
        if let Some(e) = self.entries.iter().find(|e| e.data.len() != first) {
            return Err(MixedEntrySizes {
                signature_type: self.signature_type,
                first,
                other: e.data.len(),
            });
        }
        Ok(OWNER_SIZE + first)
    }

    /// Serialises the list.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MixedEntrySizes> {
        let sig_size = self.signature_size()?;
        let total = LIST_HEADER_SIZE + self.header.len() + sig_size * self.entries.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.signature_type.to_bytes());
        // The sizes of real lists are far below 4 GiB; the casts cannot truncate.
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        out.extend_from_slice(&(sig_size as u32).to_le_bytes());
        out.extend_from_slice(&self.header);
        for entry in &self.entries {
            out.extend_from_slice(&entry.owner.to_bytes());
            out.extend_from_slice(&entry.data);
        }
        Ok(out)
    }
}

/// The value of a signature-database variable: a sequence of lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureDatabase {
    /// The lists, in order.
    pub lists: Vec<SignatureList>,
}

impl SignatureDatabase {
    /// Parses concatenated `EFI_SIGNATURE_LIST`s; an empty input is an empty database.
    pub fn parse(bytes: &[u8]) -> Result<Self, SigListParseError> {
        let mut lists = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let err = |offset: usize, problem: String| SigListParseError { offset, problem };
            let rest = &bytes[pos..];
            if rest.len() < LIST_HEADER_SIZE {
                return Err(err(
                    pos,
                    format!(
                        "{} bytes left, a list header needs {LIST_HEADER_SIZE}",
                        rest.len()
                    ),
                ));
            }
            let signature_type = Guid::read(rest).ok_or_else(|| err(pos, "short GUID".into()))?;
            let u32_at = |i: usize| {
                u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]) as usize
            };
            let list_size = u32_at(16);
            let header_size = u32_at(20);
            let sig_size = u32_at(24);
            if list_size < LIST_HEADER_SIZE || list_size > rest.len() {
                return Err(err(
                    pos + 16,
                    format!(
                        "ListSize {list_size} does not fit (bytes left: {})",
                        rest.len()
                    ),
                ));
            }
            if sig_size < OWNER_SIZE {
                return Err(err(
                    pos + 24,
                    format!("SignatureSize {sig_size} is smaller than an owner GUID"),
                ));
            }
            let body = list_size - LIST_HEADER_SIZE;
            if header_size > body || (body - header_size) % sig_size != 0 {
                return Err(err(
                    pos + 20,
                    format!(
                        "ListSize {list_size}, HeaderSize {header_size} and SignatureSize {sig_size} are inconsistent"
                    ),
                ));
            }
            let header = rest[LIST_HEADER_SIZE..LIST_HEADER_SIZE + header_size].to_vec();
            let entries = rest[LIST_HEADER_SIZE + header_size..list_size]
                .chunks_exact(sig_size)
                .map(|chunk| SignatureEntry {
                    owner: Guid::read(chunk).unwrap_or_else(|| Guid::from_bytes([0; 16])),
                    data: chunk[OWNER_SIZE..].to_vec(),
                })
                .collect();
            lists.push(SignatureList {
                signature_type,
                header,
                entries,
            });
            pos += list_size;
        }
        Ok(SignatureDatabase { lists })
    }

    /// Serialises every list in order.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MixedEntrySizes> {
        let mut out = Vec::new();
        for list in &self.lists {
            out.extend_from_slice(&list.to_bytes()?);
        }
        Ok(out)
    }

    /// Every entry with its list's type, in order.
    pub fn entries(&self) -> impl Iterator<Item = (Guid, &SignatureEntry)> {
        self.lists
            .iter()
            .flat_map(|l| l.entries.iter().map(move |e| (l.signature_type, e)))
    }

    /// Whether an entry with this type and data is already present (owner ignored).
    pub fn contains(&self, signature_type: Guid, data: &[u8]) -> bool {
        self.entries()
            .any(|(t, e)| t == signature_type && e.data == data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_certificate_and_hash_lists() {
        let owner = Guid::random();
        let db = SignatureDatabase {
            lists: vec![
                SignatureList::x509(owner, b"not really DER"),
                SignatureList::sha256(vec![
                    SignatureEntry {
                        owner,
                        data: vec![1; 32],
                    },
                    SignatureEntry {
                        owner,
                        data: vec![2; 32],
                    },
                ]),
            ],
        };
        let bytes = db.to_bytes().unwrap();
        assert_eq!(bytes.len(), (28 + 16 + 14) + (28 + 2 * 48));
        assert_eq!(SignatureDatabase::parse(&bytes).unwrap(), db);
    }

    #[test]
    fn reports_the_offset_of_a_bad_size() {
        let mut bytes = SignatureList::x509(Guid::random(), &[0; 10])
            .to_bytes()
            .unwrap();
        bytes[16] = 0xff; // ListSize now points past the end
        let e = SignatureDatabase::parse(&bytes).unwrap_err();
        assert_eq!(e.offset, 16);
        let e = SignatureDatabase::parse(&bytes[..20]).unwrap_err();
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn refuses_mixed_sizes() {
        let owner = Guid::random();
        let list = SignatureList::sha256(vec![
            SignatureEntry {
                owner,
                data: vec![1; 32],
            },
            SignatureEntry {
                owner,
                data: vec![2; 20],
            },
        ]);
        assert!(list.to_bytes().is_err());
    }
}
