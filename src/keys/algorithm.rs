//! Key and digest algorithms, with the firmware-compatibility facts that go with them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of a signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// RSA with a 2048-bit modulus: the only kind every firmware verifies.
    Rsa2048,
    /// RSA-3072.
    Rsa3072,
    /// RSA-4096.
    Rsa4096,
    /// ECDSA on NIST P-256.
    P256,
    /// ECDSA on NIST P-384 (the YubiKey recipe's choice).
    P384,
}

/// A key type name that is not one we make.
#[derive(Debug, thiserror::Error)]
#[error("unknown key type {0:?}: use one of rsa2048, rsa3072, rsa4096, p256, p384")]
pub struct UnknownKeyAlgorithm(String);

impl KeyAlgorithm {
    /// Every supported algorithm, in the order the CLI lists them.
    pub const ALL: [KeyAlgorithm; 5] = [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::P256,
        KeyAlgorithm::P384,
    ];

    /// The CLI and manifest name.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa2048",
            KeyAlgorithm::Rsa3072 => "rsa3072",
            KeyAlgorithm::Rsa4096 => "rsa4096",
            KeyAlgorithm::P256 => "p256",
            KeyAlgorithm::P384 => "p384",
        }
    }

    /// Whether this is an elliptic-curve key.
    pub fn is_ec(self) -> bool {
        matches!(self, KeyAlgorithm::P256 | KeyAlgorithm::P384)
    }

    /// The digest this key signs with by default: SHA-384 for P-384, else SHA-256.
    pub fn default_digest(self) -> DigestAlgorithm {
        match self {
            KeyAlgorithm::P384 => DigestAlgorithm::Sha384,
            _ => DigestAlgorithm::Sha256,
        }
    }

    /// A warning for keys that firmware may refuse; `None` for RSA-2048.
    pub fn firmware_warning(self) -> Option<&'static str> {
        match self {
            KeyAlgorithm::Rsa2048 => None,
            KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => Some(
                "UEFI only guarantees RSA-2048; some firmware rejects larger RSA keys. \
                 Test-boot on the target machine before enrolling.",
            ),
            KeyAlgorithm::P256 | KeyAlgorithm::P384 => Some(
                "EC keys are not accepted by much firmware: Debian's OVMF (edk2 2022.11) refuses \
                 images and db updates signed with P-256/P-384 although every offline verifier \
                 accepts them. Enrolling EC keys can leave a machine unable to boot; use rsa2048 \
                 unless a test boot on the target firmware shows EC works.",
            ),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = UnknownKeyAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace(['-', '_'], "");
        Self::ALL
            .into_iter()
            .find(|a| a.name() == wanted)
            .ok_or_else(|| UnknownKeyAlgorithm(s.to_string()))
    }
}

/// A hash algorithm used in signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    /// SHA-1: only for the TPM's sha1 PCR bank; never for Secure Boot signatures.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            DigestAlgorithm::Sha1 => openssl::sha::sha1(data).to_vec(),
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
            DigestAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// The digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha1 => 20,
            DigestAlgorithm::Sha256 => 32,
            DigestAlgorithm::Sha384 => 48,
            DigestAlgorithm::Sha512 => 64,
        }
    }

    /// The lower-case name systemd and OpenSSL use: `sha1`, `sha256`, …
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha1 => "sha1",
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha384 => "sha384",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    /// The ASN.1 object identifier of the hash.
    pub fn oid(self) -> der::asn1::ObjectIdentifier {
        use der::asn1::ObjectIdentifier as Oid;
        match self {
            DigestAlgorithm::Sha1 => Oid::new_unwrap("1.3.14.3.2.26"),
            DigestAlgorithm::Sha256 => Oid::new_unwrap("2.16.840.1.101.3.4.2.1"),
            DigestAlgorithm::Sha384 => Oid::new_unwrap("2.16.840.1.101.3.4.2.2"),
            DigestAlgorithm::Sha512 => Oid::new_unwrap("2.16.840.1.101.3.4.2.3"),
        }
    }

    /// The DER `DigestInfo` prefix that PKCS#1 v1.5 puts before the hash.
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            DigestAlgorithm::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            DigestAlgorithm::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            DigestAlgorithm::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            DigestAlgorithm::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    /// The matching OpenSSL message digest.
    pub fn openssl_md(self) -> openssl::hash::MessageDigest {
        match self {
            DigestAlgorithm::Sha1 => openssl::hash::MessageDigest::sha1(),
            DigestAlgorithm::Sha256 => openssl::hash::MessageDigest::sha256(),
            DigestAlgorithm::Sha384 => openssl::hash::MessageDigest::sha384(),
            DigestAlgorithm::Sha512 => openssl::hash::MessageDigest::sha512(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_names() {
        assert_eq!(
            "RSA-2048".parse::<KeyAlgorithm>().unwrap(),
            KeyAlgorithm::Rsa2048
        );
        assert_eq!("p384".parse::<KeyAlgorithm>().unwrap(), KeyAlgorithm::P384);
        let e = "ed25519".parse::<KeyAlgorithm>().unwrap_err().to_string();
        assert!(e.contains("rsa2048"), "{e}");
    }

    #[test]
    fn digest_info_prefix_ends_with_the_hash_length() {
        for d in [
            DigestAlgorithm::Sha256,
            DigestAlgorithm::Sha384,
            DigestAlgorithm::Sha512,
        ] {
            let p = d.digest_info_prefix();
            assert_eq!(*p.last().unwrap() as usize, d.digest(b"").len());
            assert_eq!(p[1] as usize + 2, p.len() + d.digest(b"").len());
        }
    }
}
