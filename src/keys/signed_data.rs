//! PKCS#7 / CMS `SignedData` built around a [`Signer`]: the signature container
//! of authenticated variables (detached, no signed attributes, the
//! efitools/bootctl form) and, with attributes, of Authenticode.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Any, ObjectIdentifier as Oid, OctetString, SetOfVec};
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;

use super::algorithm::{DigestAlgorithm, KeyAlgorithm};
use super::signer::{SignError, Signer};

/// `id-data`.
pub const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
/// `id-signedData`.
pub const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// `id-contentType` attribute.
pub const ID_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
/// `id-messageDigest` attribute.
pub const ID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");

/// Building a `SignedData` failed.
#[derive(Debug, thiserror::Error)]
pub enum SignedDataError {
    /// The signer certificate does not parse.
    #[error("signer certificate is not valid DER X.509: {0}")]
    Certificate(der::Error),
    /// The signer certificate is not for the signing key.
    #[error("the certificate does not belong to {0}: its public key differs")]
    KeyMismatch(String),
    /// The key failed to sign.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// DER encoding failed.
    #[error("DER encoding failed: {0}")]
    Encode(der::Error),
}

// By hand rather than `#[from]`: the message already shows the inner error,
// and a source as well would print it twice in an error chain.
impl From<der::Error> for SignedDataError {
    fn from(e: der::Error) -> Self {
        SignedDataError::Encode(e)
    }
}

/// What goes into the `SignedData` besides the signer.
pub struct SignedDataRequest<'a> {
    /// `eContentType`.
    pub content_type: Oid,
    /// `eContent` (DER of the content), or `None` for a detached signature.
    pub content: Option<Any>,
    /// The bytes whose digest is signed (the detached data, or the content's
    /// value as the spec for its type says).
    pub signed_bytes: &'a [u8],
    /// Digest algorithm.
    pub digest: DigestAlgorithm,
    /// With `true`, signed attributes (content type, message digest, plus
    /// `extra_attributes`) are added and signed instead of the content digest.
    pub signed_attributes: bool,
    /// Further signed attributes (Authenticode's `SpcSpOpusInfo`, …).
    pub extra_attributes: Vec<x509_cert::attr::Attribute>,
}

fn null_params() -> Option<Any> {
    Some(Any::from(der::asn1::Null))
}

/// The `AlgorithmIdentifier` of a digest, with the NULL parameters most verifiers expect.
pub fn digest_algorithm_identifier(digest: DigestAlgorithm) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: digest.oid(),
        parameters: null_params(),
    }
}

fn signature_algorithm_identifier(
    key: KeyAlgorithm,
    digest: DigestAlgorithm,
) -> AlgorithmIdentifierOwned {
    if key.is_ec() {
        let oid = match digest {
            DigestAlgorithm::Sha1 => Oid::new_unwrap("1.2.840.10045.4.1"),
            DigestAlgorithm::Sha256 => ECDSA_WITH_SHA256,
            DigestAlgorithm::Sha384 => ECDSA_WITH_SHA384,
            DigestAlgorithm::Sha512 => ECDSA_WITH_SHA512,
        };
        AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        }
    } else {
        AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: null_params(),
        }
    }
}

/// Builds and signs a `SignedData`; returns its DER (no `ContentInfo` around it).
pub fn build_signed_data(
    signer: &dyn Signer,
    certificate_der: &[u8],
    req: SignedDataRequest<'_>,
) -> Result<Vec<u8>, SignedDataError> {
    let cert =
        x509_cert::Certificate::from_der(certificate_der).map_err(SignedDataError::Certificate)?;
    let cert_spki = cert.tbs_certificate.subject_public_key_info.to_der()?;
    if cert_spki != signer.public_key_der() {
        return Err(SignedDataError::KeyMismatch(signer.describe()));
    }
    let content_digest = req.digest.digest(req.signed_bytes);

    let (signed_attrs, signature) = if req.signed_attributes {
        let mut attrs = SetOfVec::new();
        attrs.insert(x509_cert::attr::Attribute {
            oid: ID_CONTENT_TYPE,
            values: SetOfVec::try_from(vec![Any::encode_from(&req.content_type)?])?,
        })?;
        attrs.insert(x509_cert::attr::Attribute {
            oid: ID_MESSAGE_DIGEST,
            values: SetOfVec::try_from(vec![Any::encode_from(&OctetString::new(
                content_digest.clone(),
            )?)?])?,
        })?;
        for a in req.extra_attributes {
            attrs.insert(a)?;
        }
        // The signature covers the attributes encoded as a SET (tag 0x31), not
        // as the [0] IMPLICIT field they appear in.
        let encoded = attrs.to_der()?;
        let sig = signer.sign(req.digest, &encoded)?;
        (Some(attrs), sig)
    } else {
        (None, signer.sign_digest(req.digest, &content_digest)?)
    };

    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: digest_algorithm_identifier(req.digest),
        signed_attrs,
        signature_algorithm: signature_algorithm_identifier(signer.algorithm(), req.digest),
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![digest_algorithm_identifier(req.digest)])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: req.content_type,
            econtent: req.content,
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(vec![
            CertificateChoices::Certificate(cert),
        ])?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info])?),
    };
    Ok(signed_data.to_der()?)
}

/// A detached signature over `message` without signed attributes, as
/// authenticated variables carry it.
pub fn sign_detached(
    signer: &dyn Signer,
    certificate_der: &[u8],
    digest: DigestAlgorithm,
    message: &[u8],
) -> Result<Vec<u8>, SignedDataError> {
    build_signed_data(
        signer,
        certificate_der,
        SignedDataRequest {
            content_type: ID_DATA,
            content: None,
            signed_bytes: message,
            digest,
            signed_attributes: false,
            extra_attributes: Vec::new(),
        },
    )
}

/// Wraps `SignedData` DER in a `ContentInfo`, the form `openssl cms`/`pkcs7` read.
pub fn wrap_in_content_info(signed_data_der: &[u8]) -> Result<Vec<u8>, der::Error> {
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::from_der(signed_data_der)?,
    }
    .to_der()
}

/// Removes a `ContentInfo` wrapper if present, giving bare `SignedData` DER.
pub fn unwrap_content_info(der_bytes: &[u8]) -> Vec<u8> {
    match ContentInfo::from_der(der_bytes) {
        Ok(ci) if ci.content_type == ID_SIGNED_DATA => {
            ci.content.to_der().unwrap_or_else(|_| der_bytes.to_vec())
        }
        _ => der_bytes.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::cert::{issue_self_signed, CertProfile, CertRequest};
    use crate::keys::FileSigner;

    fn key_and_cert(alg: KeyAlgorithm) -> (FileSigner, Vec<u8>) {
        let key = FileSigner::generate(alg).unwrap();
        let cert = issue_self_signed(
            &key,
            &CertRequest {
                common_name: "t KEK",
                organization: "t",
                profile: CertProfile::KeyExchangeKey,
                not_before: time::OffsetDateTime::now_utc(),
                days: 30,
            },
        )
        .unwrap();
        (key, cert)
    }

    fn openssl_verifies(pkcs7: &[u8], cert: &[u8], data: &[u8]) -> bool {
        use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
        use openssl::stack::Stack;
        use openssl::x509::store::X509StoreBuilder;
        let p7 = Pkcs7::from_der(&wrap_in_content_info(pkcs7).unwrap()).unwrap();
        let x = openssl::x509::X509::from_der(cert).unwrap();
        let mut certs = Stack::new().unwrap();
        certs.push(x).unwrap();
        let store = X509StoreBuilder::new().unwrap().build();
        p7.verify(
            &certs,
            &store,
            Some(data),
            None,
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        )
        .is_ok()
    }

    #[test]
    fn detached_signature_verifies_with_openssl_and_detects_tampering() {
        for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::P256] {
            let (key, cert) = key_and_cert(alg);
            let p7 = sign_detached(&key, &cert, DigestAlgorithm::Sha256, b"payload").unwrap();
            assert!(openssl_verifies(&p7, &cert, b"payload"), "{alg}");
            assert!(!openssl_verifies(&p7, &cert, b"payloaD"), "{alg}");
        }
    }

    #[test]
    fn signed_attributes_verify_with_openssl() {
        let (key, cert) = key_and_cert(KeyAlgorithm::Rsa2048);
        let p7 = build_signed_data(
            &key,
            &cert,
            SignedDataRequest {
                content_type: ID_DATA,
                content: None,
                signed_bytes: b"payload",
                digest: DigestAlgorithm::Sha256,
                signed_attributes: true,
                extra_attributes: Vec::new(),
            },
        )
        .unwrap();
        assert!(openssl_verifies(&p7, &cert, b"payload"));
        assert!(!openssl_verifies(&p7, &cert, b"other"));
    }

    #[test]
    fn refuses_a_certificate_of_another_key() {
        let (key, _) = key_and_cert(KeyAlgorithm::Rsa2048);
        let (_, other_cert) = key_and_cert(KeyAlgorithm::Rsa2048);
        let r = sign_detached(&key, &other_cert, DigestAlgorithm::Sha256, b"x");
        assert!(matches!(r, Err(SignedDataError::KeyMismatch(_))));
    }
}
