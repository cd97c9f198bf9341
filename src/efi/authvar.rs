//! Time-based authenticated variables (`EFI_VARIABLE_AUTHENTICATION_2`), the
//! `.auth` files that update PK, KEK, db and dbx.
//!
//! File = `EFI_TIME | WIN_CERTIFICATE_UEFI_GUID | PKCS#7 SignedData | data`.
//! The signature covers `name (UTF-16LE, no NUL) | vendor GUID | attributes | EFI_TIME | data`.

use super::guid::{Guid, EFI_CERT_TYPE_PKCS7};
use super::time::{EfiTime, EFI_TIME_SIZE};
use crate::keys::signed_data::{sign_detached, SignedDataError};
use crate::keys::{DigestAlgorithm, Signer};

/// `EFI_VARIABLE_NON_VOLATILE`.
pub const NON_VOLATILE: u32 = 0x01;
/// `EFI_VARIABLE_BOOTSERVICE_ACCESS`.
pub const BOOTSERVICE_ACCESS: u32 = 0x02;
/// `EFI_VARIABLE_RUNTIME_ACCESS`.
pub const RUNTIME_ACCESS: u32 = 0x04;
/// `EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS`.
pub const TIME_BASED_AUTHENTICATED_WRITE_ACCESS: u32 = 0x20;
/// `EFI_VARIABLE_APPEND_WRITE`.
pub const APPEND_WRITE: u32 = 0x40;
/// The attributes of a Secure Boot key variable written whole: 0x27.
pub const SECURE_BOOT_VARIABLE: u32 =
    NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS;

/// `WIN_CERT_TYPE_EFI_GUID`.
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0EF1;
/// `WIN_CERT_REVISION` 2.0.
const WIN_CERT_REVISION: u16 = 0x0200;
/// `WIN_CERTIFICATE_UEFI_GUID` header: dwLength, wRevision, wCertificateType, CertType.
const WIN_CERT_UEFI_GUID_HEADER: usize = 4 + 2 + 2 + 16;

/// Bytes that are not a well-formed `.auth` file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed authenticated variable at byte offset {offset}: {problem}")]
pub struct AuthVarParseError {
    /// Where the problem is.
    pub offset: usize,
    /// What it is.
    pub problem: String,
}

/// Making an authenticated variable failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthVarError {
    /// The signature could not be made.
    #[error("signing variable {name}: {source}")]
    Sign {
        /// The variable.
        name: String,
        /// Why.
        source: SignedDataError,
    },
}

/// The parts of an `EFI_VARIABLE_AUTHENTICATION_2` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedVariable {
    /// `TimeStamp`.
    pub timestamp: EfiTime,
    /// The PKCS#7 `SignedData` DER (`CertData`).
    pub pkcs7: Vec<u8>,
    /// The new variable value (a signature database for Secure Boot keys).
    pub data: Vec<u8>,
}

/// The bytes that an authenticated write's signature covers.
pub fn signed_bytes(
    name: &str,
    vendor: Guid,
    attributes: u32,
    timestamp: EfiTime,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() * 2 + 16 + 4 + EFI_TIME_SIZE + data.len());
    for unit in name.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(&vendor.to_bytes());
    out.extend_from_slice(&attributes.to_le_bytes());
    out.extend_from_slice(&timestamp.to_bytes());
    out.extend_from_slice(data);
    out
}

impl AuthenticatedVariable {
    /// Signs `data` as the new value of variable `name` in `vendor`'s namespace.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        name: &str,
        vendor: Guid,
        attributes: u32,
        timestamp: EfiTime,
        data: &[u8],
        signer: &dyn Signer,
        signer_certificate_der: &[u8],
        digest: DigestAlgorithm,
    ) -> Result<Self, AuthVarError> {
        let message = signed_bytes(name, vendor, attributes, timestamp, data);
        let pkcs7 =
            sign_detached(signer, signer_certificate_der, digest, &message).map_err(|source| {
                AuthVarError::Sign {
                    name: name.to_string(),
                    source,
                }
            })?;
        Ok(AuthenticatedVariable {
            timestamp,
            pkcs7,
            data: data.to_vec(),
        })
    }

    /// The `.auth` file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let cert_len = WIN_CERT_UEFI_GUID_HEADER + self.pkcs7.len();
        let mut out = Vec::with_capacity(EFI_TIME_SIZE + cert_len + self.data.len());
        out.extend_from_slice(&self.timestamp.to_bytes());
        out.extend_from_slice(&(cert_len as u32).to_le_bytes());
        out.extend_from_slice(&WIN_CERT_REVISION.to_le_bytes());
        out.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
        out.extend_from_slice(&EFI_CERT_TYPE_PKCS7.to_bytes());
        out.extend_from_slice(&self.pkcs7);
        out.extend_from_slice(&self.data);
        out
    }

    /// Parses a `.auth` file.
    pub fn parse(bytes: &[u8]) -> Result<Self, AuthVarParseError> {
        let err = |offset, problem: &str| AuthVarParseError {
            offset,
            problem: problem.to_string(),
        };
        let timestamp =
            EfiTime::from_bytes(bytes).ok_or_else(|| err(0, "shorter than an EFI_TIME"))?;
        let hdr = bytes
            .get(EFI_TIME_SIZE..EFI_TIME_SIZE + WIN_CERT_UEFI_GUID_HEADER)
            .ok_or_else(|| err(EFI_TIME_SIZE, "WIN_CERTIFICATE header is cut off"))?;
        let length = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let revision = u16::from_le_bytes([hdr[4], hdr[5]]);
        let cert_type = u16::from_le_bytes([hdr[6], hdr[7]]);
        if revision != WIN_CERT_REVISION {
            return Err(err(EFI_TIME_SIZE + 4, "wRevision is not 0x0200"));
        }
        if cert_type != WIN_CERT_TYPE_EFI_GUID {
            return Err(err(
                EFI_TIME_SIZE + 6,
                "wCertificateType is not WIN_CERT_TYPE_EFI_GUID (0x0EF1)",
            ));
        }
        if Guid::read(&hdr[8..]) != Some(EFI_CERT_TYPE_PKCS7) {
            return Err(err(
                EFI_TIME_SIZE + 8,
                "CertType is not EFI_CERT_TYPE_PKCS7_GUID",
            ));
        }
        if length < WIN_CERT_UEFI_GUID_HEADER || EFI_TIME_SIZE + length > bytes.len() {
            return Err(err(EFI_TIME_SIZE, "dwLength does not fit the file"));
        }
        let pkcs7 =
            bytes[EFI_TIME_SIZE + WIN_CERT_UEFI_GUID_HEADER..EFI_TIME_SIZE + length].to_vec();
        let data = bytes[EFI_TIME_SIZE + length..].to_vec();
        Ok(AuthenticatedVariable {
            timestamp,
            pkcs7,
            data,
        })
    }

    /// Whether `bytes` start like a `.auth` file (a plausible header).
    pub fn looks_like(bytes: &[u8]) -> bool {
        bytes.len() > EFI_TIME_SIZE + WIN_CERT_UEFI_GUID_HEADER
            && bytes[EFI_TIME_SIZE + 4..EFI_TIME_SIZE + 8] == [0x00, 0x02, 0xF1, 0x0E]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efi::guid::EFI_GLOBAL_VARIABLE;

    #[test]
    fn signed_bytes_layout() {
        let t =
            EfiTime::from_bytes(&[0xea, 0x07, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        let b = signed_bytes("PK", EFI_GLOBAL_VARIABLE, SECURE_BOOT_VARIABLE, t, b"ESL");
        assert_eq!(&b[..4], b"P\0K\0");
        assert_eq!(&b[4..20], &EFI_GLOBAL_VARIABLE.to_bytes());
        assert_eq!(&b[20..24], &[0x27, 0, 0, 0]);
        assert_eq!(&b[24..40], &t.to_bytes());
        assert_eq!(&b[40..], b"ESL");
    }

    #[test]
    fn parse_round_trip_and_errors() {
        let v = AuthenticatedVariable {
            timestamp: EfiTime::from_bytes(&[0; 16]).unwrap(),
            pkcs7: vec![0x30, 0x00],
            data: b"data".to_vec(),
        };
        let bytes = v.to_bytes();
        assert!(AuthenticatedVariable::looks_like(&bytes));
        assert_eq!(AuthenticatedVariable::parse(&bytes).unwrap(), v);
        let e = AuthenticatedVariable::parse(&bytes[..20]).unwrap_err();
        assert_eq!(e.offset, 16);
        let mut bad = bytes.clone();
        bad[22] = 0x02;
        assert_eq!(AuthenticatedVariable::parse(&bad).unwrap_err().offset, 22);
    }
}
