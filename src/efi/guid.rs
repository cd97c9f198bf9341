//! EFI GUIDs: parsing, formatting and the mixed-endian byte order firmware uses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 128-bit EFI GUID, kept in its textual field order.
///
/// On the wire (`to_bytes`) the first three fields are little-endian and the
/// last eight bytes are stored as written: the layout of `EFI_GUID`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(uuid::Uuid);

/// A GUID string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{input:?} is not a GUID (expected the form 8be4df61-93ca-11d2-aa0d-00e098032b8c)")]
pub struct GuidParseError {
    input: String,
}

impl Guid {
    /// Builds a GUID from its textual form at compile time; panics on a typo, which tests catch.
    pub const fn from_str_const(s: &str) -> Self {
        match uuid::Uuid::try_parse(s) {
            Ok(u) => Guid(u),
            Err(_) => panic!("invalid GUID literal"),
        }
    }

    /// A fresh random (version 4) GUID, for a new owner.
    pub fn random() -> Self {
        Guid(uuid::Uuid::new_v4())
    }

    /// The 16 bytes as `EFI_GUID` stores them.
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0.to_bytes_le()
    }

    /// Reads an `EFI_GUID` from its 16 stored bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Guid(uuid::Uuid::from_bytes_le(bytes))
    }

    /// Reads an `EFI_GUID` from the start of a slice, if it is long enough.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        Some(Self::from_bytes(array))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim().trim_start_matches('{').trim_end_matches('}');
        uuid::Uuid::try_parse(trimmed)
            .map(Guid)
            .map_err(|_| GuidParseError {
                input: s.to_string(),
            })
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `EFI_GLOBAL_VARIABLE`: PK, KEK, SecureBoot, SetupMode.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::from_str_const("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: db, dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid =
    Guid::from_str_const("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
/// `EFI_CERT_X509_GUID`: a DER X.509 certificate entry.
pub const EFI_CERT_X509: Guid = Guid::from_str_const("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
/// `EFI_CERT_SHA256_GUID`: a SHA-256 hash entry.
pub const EFI_CERT_SHA256: Guid = Guid::from_str_const("c1c41626-504c-4092-aca9-41f936934328");
/// `EFI_CERT_TYPE_PKCS7_GUID`: the certificate type of an authenticated variable's signature.
pub const EFI_CERT_TYPE_PKCS7: Guid = Guid::from_str_const("4aafd29d-68df-49ee-8aa9-347d375665a7");
/// The owner GUID Microsoft uses for its certificates in KEK and db.
pub const MICROSOFT_OWNER: Guid = Guid::from_str_const("77fa9abd-0359-4d32-bd60-28f4e78f784b");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_are_mixed_endian() {
        let bytes = EFI_GLOBAL_VARIABLE.to_bytes();
        assert_eq!(
            hex::encode(bytes),
            "61dfe48bca93d211aa0d00e098032b8c",
            "first three fields little-endian, last eight as written"
        );
        assert_eq!(Guid::from_bytes(bytes), EFI_GLOBAL_VARIABLE);
    }

    #[test]
    fn parses_braced_and_rejects_garbage() {
        let g: Guid = "{77FA9ABD-0359-4D32-BD60-28F4E78F784B}".parse().unwrap();
        assert_eq!(g, MICROSOFT_OWNER);
        assert!("not-a-guid".parse::<Guid>().is_err());
    }
}
