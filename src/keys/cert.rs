//! X.509 certificates for the Secure Boot hierarchy: the PK/KEK/db profiles,
//! issued through any [`Signer`] (rcgen builds the TBS, our signer signs it),
//! and a summary reader for certificates from anywhere.

use der::{Decode, Encode};
use serde::Serialize;
use sha2::Digest;
use time::OffsetDateTime;

use super::algorithm::KeyAlgorithm;
use super::signer::Signer;

/// What a certificate is for; decides its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertProfile {
    /// Platform Key: a CA certificate.
    PlatformKey,
    /// Key Exchange Key: a CA certificate.
    KeyExchangeKey,
    /// Signature database key: signs boot images, so a code-signing certificate.
    CodeSigning,
}

/// A certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("cannot build certificate: {0}")]
    Build(rcgen::Error),
    /// The key failed to sign (or, offline, asks for a signing request).
    #[error(transparent)]
    Sign(crate::keys::SignError),
    /// The signer's public key does not parse.
    #[error("the signer's public key is not a valid SubjectPublicKeyInfo: {0}")]
    PublicKey(String),
    /// Bytes that are not a DER certificate.
    #[error("not an X.509 certificate: {0}")]
    Parse(String),
    /// The validity would end after 9999-12-31, which X.509 time cannot express.
    #[error("a certificate valid from {not_before} for {days} days would end after the year 9999, which is out of range for X.509: give an earlier SOURCE_DATE_EPOCH or fewer --expiration-in-days")]
    OutOfRange {
        /// The start asked for.
        not_before: String,
        /// The days asked for.
        days: u32,
    },
    /// The validity period does not fit.
    #[error("validity of {days} days does not fit a certificate (use 1 to 36500)")]
    Validity {
        /// The days asked for.
        days: u32,
    },
}

// By hand rather than `#[from]`: the message already shows the inner error,
// and a source as well would print it twice in an error chain.
impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError::Build(e)
    }
}

/// The request for one certificate.
#[derive(Clone, Debug)]
pub struct CertRequest<'a> {
    /// Common name, e.g. "Acme Corp db".
    pub common_name: &'a str,
    /// Organisation, e.g. "Acme Corp".
    pub organization: &'a str,
    /// What it is for.
    pub profile: CertProfile,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// Days of validity from `not_before`.
    pub days: u32,
}

/// Longest validity accepted, 100 years.
pub const MAX_VALIDITY_DAYS: u32 = 36_500;

/// Adapts a [`Signer`] to rcgen's signing-key interface.
struct RcgenKey<'a> {
    signer: &'a dyn Signer,
    raw_public_key: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    /// The signer's own error, which rcgen's error type cannot carry (an
    /// offline key's signing request must reach the caller intact).
    failure: std::sync::Mutex<Option<crate::keys::SignError>>,
}

impl<'a> RcgenKey<'a> {
    fn new(signer: &'a dyn Signer) -> Result<Self, CertError> {
        let spki_der = signer.public_key_der();
        let spki = spki::SubjectPublicKeyInfoRef::from_der(&spki_der)
            .map_err(|e| CertError::PublicKey(e.to_string()))?;
        let raw_public_key = spki.subject_public_key.raw_bytes().to_vec();
        let algorithm = match signer.algorithm() {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                &rcgen::PKCS_RSA_SHA256
            }
            KeyAlgorithm::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        };
        Ok(RcgenKey {
            failure: std::sync::Mutex::new(None),
            signer,
            raw_public_key,
            algorithm,
        })
    }
}

impl rcgen::PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = self.signer.algorithm().default_digest();
        self.signer.sign(digest, msg).map_err(|e| {
            if let Ok(mut f) = self.failure.lock() {
                *f = Some(e);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}

/// Issues a self-signed certificate for `signer`'s key and returns its DER.
///
/// The serial number and key identifier are derived from the public key and
/// validity, so the same key and time give the same certificate (RSA
/// signatures are deterministic; ECDSA ones are not).
pub fn issue_self_signed(signer: &dyn Signer, req: &CertRequest<'_>) -> Result<Vec<u8>, CertError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyIdMethod, KeyUsagePurpose, SerialNumber,
    };
    if req.days == 0 || req.days > MAX_VALIDITY_DAYS {
        return Err(CertError::Validity { days: req.days });
    }
    let key = RcgenKey::new(signer)?;
    let not_before = req
        .not_before
        .replace_nanosecond(0)
        .unwrap_or(req.not_before);
    let not_after = not_before
        .checked_add(time::Duration::days(i64::from(req.days)))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| CertError::OutOfRange {
            not_before: not_before
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| not_before.unix_timestamp().to_string()),
            days: req.days,
        })?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, req.common_name);
    dn.push(DnType::OrganizationName, req.organization);
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;

    let mut seed = sha2::Sha256::new();
    seed.update(&key.raw_public_key);
    seed.update(req.common_name.as_bytes());
    seed.update(not_before.unix_timestamp().to_be_bytes());
    seed.update(not_after.unix_timestamp().to_be_bytes());
    let mut serial = seed.finalize()[..16].to_vec();
    // A positive, non-zero INTEGER of 16 bytes.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    // RFC 7093 method 1: the leftmost 160 bits of SHA-256 of the subjectPublicKey.
    let key_id = sha2::Sha256::digest(&key.raw_public_key)[..20].to_vec();
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id);

    match req.profile {
        CertProfile::PlatformKey | CertProfile::KeyExchangeKey => {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
            ];
        }
        CertProfile::CodeSigning => {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        }
    }
    let cert = match params.self_signed(&key) {
        Ok(c) => c,
        Err(e) => {
            let failure = key.failure.lock().ok().and_then(|mut f| f.take());
            return Err(match failure {
                Some(sign) => CertError::Sign(sign),
                None => CertError::Build(e),
            });
        }
    };
    Ok(cert.der().to_vec())
}

/// What sbkit reports about a certificate.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
}

impl CertSummary {
    /// Reads the summary of a DER certificate.
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, CertError> {
        let cert = x509_cert::Certificate::from_der(der_bytes)
            .map_err(|e| CertError::Parse(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let rfc3339 = |t: x509_cert::time::Time| {
            let dt: OffsetDateTime =
                OffsetDateTime::from_unix_timestamp(t.to_unix_duration().as_secs() as i64)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            dt.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        Ok(CertSummary {
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            serial: hex::encode(tbs.serial_number.as_bytes()),
            not_before: rfc3339(tbs.validity.not_before),
            not_after: rfc3339(tbs.validity.not_after),
            sha256: hex::encode(sha2::Sha256::digest(der_bytes)),
        })
    }
}

/// The DER of a certificate given as PEM or DER; `None` if it is neither.
pub fn certificate_der(bytes: &[u8]) -> Option<Vec<u8>> {
    if let Ok(p) = pem::parse(bytes) {
        if p.tag() == "CERTIFICATE" {
            return Some(p.contents().to_vec());
        }
        return None;
    }
    let cert = x509_cert::Certificate::from_der(bytes).ok()?;
    cert.to_der().ok()
}

/// Every certificate in a PEM bundle, in order.
pub fn certificates_from_pem(bytes: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(bytes)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.contents().to_vec())
        .collect()
}

/// PEM text of a DER certificate.
pub fn to_pem(der_bytes: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der_bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FileSigner;

    fn issue(profile: CertProfile, alg: KeyAlgorithm) -> Vec<u8> {
        let key = FileSigner::generate(alg).unwrap();
        issue_self_signed(
            &key,
            &CertRequest {
                common_name: "Acme Corp db",
                organization: "Acme Corp",
                profile,
                not_before: time::macros::datetime!(2026-01-01 00:00 UTC),
                days: 10,
            },
        )
        .unwrap()
    }

    #[test]
    fn code_signing_profile_reads_back_in_openssl() {
        let der_bytes = issue(CertProfile::CodeSigning, KeyAlgorithm::Rsa2048);
        let x = openssl::x509::X509::from_der(&der_bytes).unwrap();
        assert!(
            x.verify(&x.public_key().unwrap()).unwrap(),
            "self-signature"
        );
        let text = String::from_utf8(x.to_text().unwrap()).unwrap();
        assert!(text.contains("Code Signing"), "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        let s = CertSummary::from_der(&der_bytes).unwrap();
        assert_eq!(s.not_before, "2026-01-01T00:00:00Z");
        assert_eq!(s.not_after, "2026-01-11T00:00:00Z");
        assert!(s.subject.contains("CN=Acme Corp db"), "{}", s.subject);
    }

    #[test]
    fn ca_profile_with_p384() {
        let der_bytes = issue(CertProfile::PlatformKey, KeyAlgorithm::P384);
        let x = openssl::x509::X509::from_der(&der_bytes).unwrap();
        assert!(x.verify(&x.public_key().unwrap()).unwrap());
        let text = String::from_utf8(x.to_text().unwrap()).unwrap();
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("ecdsa-with-SHA384"), "{text}");
    }

    #[test]
    fn refuses_zero_days() {
        let key = FileSigner::generate(KeyAlgorithm::P256).unwrap();
        let r = issue_self_signed(
            &key,
            &CertRequest {
                common_name: "x",
                organization: "x",
                profile: CertProfile::CodeSigning,
                not_before: OffsetDateTime::now_utc(),
                days: 0,
            },
        );
        assert!(matches!(r, Err(CertError::Validity { days: 0 })));
    }
}
