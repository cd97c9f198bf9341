//! Authenticode: the PE image digest, signing through a [`Signer`], and a
//! verifier for `inspect`.
//!
//! Digest: the image bytes in file order, skipping the CheckSum field, the
//! certificate-table directory entry and the certificate table itself. Our
//! images have no gaps between headers and sections, where this equals the
//! spec's section-by-section form (sbsign's) and osslsigncode's linear form.

use der::asn1::{Any, ObjectIdentifier as Oid, OctetString};
use der::{Decode, Encode};

use super::image::{align_up, pe_checksum, write_u32, PeError, PeLayout, SECURITY_DIRECTORY};
use crate::keys::signed_data::{
    build_signed_data, wrap_in_content_info, SignedDataError, SignedDataRequest, ID_MESSAGE_DIGEST,
};
use crate::keys::{DigestAlgorithm, Signer};

/// `SPC_INDIRECT_DATA_OBJID`.
pub const SPC_INDIRECT_DATA: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// `SPC_PE_IMAGE_DATAOBJ`.
const SPC_PE_IMAGE_DATA: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// `SPC_SP_OPUS_INFO_OBJID`.
const SPC_SP_OPUS_INFO: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.12");
/// `SPC_STATEMENT_TYPE_OBJID`.
const SPC_STATEMENT_TYPE: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.11");
/// `SPC_INDIVIDUAL_SP_KEY_PURPOSE_OBJID`.
const SPC_INDIVIDUAL_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.21");
/// `WIN_CERT_TYPE_PKCS_SIGNED_DATA`.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
const WIN_CERT_REVISION_2_0: u16 = 0x0200;

/// Signing or verifying failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticodeError {
    /// Not a PE image.
    #[error(transparent)]
    Pe(#[from] PeError),
    /// Already signed.
    #[error("the image is already signed; sbkit signs unsigned images only (remove the old signature with sbattach --remove)")]
    AlreadySigned,
    /// Building the signature failed.
    #[error(transparent)]
    SignedData(#[from] SignedDataError),
    /// DER failed.
    #[error("DER: {0}")]
    Der(#[from] der::Error),
    /// No signature present.
    #[error("the image has no Authenticode signature")]
    Unsigned,
    /// The signature is malformed or does not match.
    #[error("signature check failed: {0}")]
    Invalid(String),
}

/// The Authenticode digest of an image.
pub fn image_digest(b: &[u8], digest: DigestAlgorithm) -> Result<Vec<u8>, AuthenticodeError> {
    let layout = PeLayout::parse(b)?;
    let (table_offset, table_size) = layout.certificate_table(b)?;
    let end = if table_size > 0 {
        table_offset as usize
    } else {
        b.len()
    };
    if end > b.len() {
        return Err(PeError("certificate table points past the end of the file".into()).into());
    }
    let dir = layout
        .directory_offset(SECURITY_DIRECTORY)
        .ok_or_else(|| PeError("no certificate table directory entry".into()))?;
    let mut h = openssl::hash::Hasher::new(digest.openssl_md())
        .map_err(|e| AuthenticodeError::Invalid(e.to_string()))?;
    let mut feed = |r: std::ops::Range<usize>| {
        h.update(&b[r])
            .map_err(|e| AuthenticodeError::Invalid(e.to_string()))
    };
    feed(0..layout.checksum_offset)?;
    feed(layout.checksum_offset + 4..dir)?;
    feed(dir + 8..end)?;
    Ok(h.finish()
        .map_err(|e| AuthenticodeError::Invalid(e.to_string()))?
        .to_vec())
}

/// DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        v.push(0x80 | (bytes.len() - skip) as u8);
        v.extend_from_slice(&bytes[skip..]);
    }
    v.extend_from_slice(content);
    v
}

/// `SpcIndirectDataContent` for a PE image digest, DER.
pub fn spc_indirect_data(
    digest: DigestAlgorithm,
    image_digest: &[u8],
) -> Result<Vec<u8>, der::Error> {
    // SpcPeImageData: flags = empty BIT STRING, file = [0] { [2] { [0] BMPString "<<<Obsolete>>>" } },
    // the form signtool and sbsign write.
    let obsolete: Vec<u8> = "<<<Obsolete>>>"
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    let spc_link = tlv(0xa2, &tlv(0x80, &obsolete));
    let mut pe_image_data = vec![0x03, 0x01, 0x00];
    pe_image_data.extend(tlv(0xa0, &spc_link));
    let mut attr = SPC_PE_IMAGE_DATA.to_der()?;
    attr.extend(tlv(0x30, &pe_image_data));
    let mut digest_info = crate::keys::signed_data::digest_algorithm_identifier(digest).to_der()?;
    digest_info.extend(OctetString::new(image_digest.to_vec())?.to_der()?);
    let mut content = tlv(0x30, &attr);
    content.extend(tlv(0x30, &digest_info));
    Ok(tlv(0x30, &content))
}

/// The value bytes of a DER TLV (what Authenticode's messageDigest covers).
fn der_value(tlv_bytes: &[u8]) -> Result<&[u8], der::Error> {
    let header = der::Header::from_der(tlv_bytes).or_else(|_| {
        // from_der refuses trailing data; decode the header from a reader instead.
        let mut r = der::SliceReader::new(tlv_bytes)?;
        der::Header::decode(&mut r)
    })?;
    let len: usize = header.length.try_into()?;
    let header_len: usize = header.encoded_len()?.try_into()?;
    tlv_bytes
        .get(header_len..)
        .and_then(|v| v.get(..len))
        .ok_or_else(|| der::Tag::Sequence.length_error())
}

fn attribute(oid: Oid, value_der: &[u8]) -> Result<x509_cert::attr::Attribute, der::Error> {
    Ok(x509_cert::attr::Attribute {
        oid,
        values: der::asn1::SetOfVec::try_from(vec![Any::from_der(value_der)?])?,
    })
}

/// Signs an unsigned PE image and returns the signed image.
pub fn sign(
    image: &[u8],
    signer: &dyn Signer,
    certificate_der: &[u8],
    digest: DigestAlgorithm,
) -> Result<Vec<u8>, AuthenticodeError> {
    let layout = PeLayout::parse(image)?;
    if layout.certificate_table(image)?.1 != 0 {
        return Err(AuthenticodeError::AlreadySigned);
    }
    let dir = layout
        .directory_offset(SECURITY_DIRECTORY)
        .ok_or_else(|| PeError("no certificate table directory entry".into()))?;
    // The certificate table starts 8-byte aligned; the padding is part of the digest.
    let mut out = image.to_vec();
    out.resize(align_up(out.len() as u64, 8) as usize, 0);
    let digest_value = image_digest(&out, digest)?;
    let content = spc_indirect_data(digest, &digest_value)?;
    let statement = tlv(0x30, &SPC_INDIVIDUAL_CODE_SIGNING.to_der()?);
    let pkcs7 = build_signed_data(
        signer,
        certificate_der,
        SignedDataRequest {
            content_type: SPC_INDIRECT_DATA,
            content: Some(Any::from_der(&content)?),
            signed_bytes: der_value(&content)?,
            digest,
            signed_attributes: true,
            extra_attributes: vec![
                attribute(SPC_SP_OPUS_INFO, &[0x30, 0x00])?,
                attribute(SPC_STATEMENT_TYPE, &statement)?,
            ],
        },
    )?;
    let blob = wrap_in_content_info(&pkcs7)?;
    let length = align_up(8 + blob.len() as u64, 8) as usize;
    let table_offset = out.len();
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(&blob);
    out.resize(table_offset + length, 0);
    write_u32(&mut out, dir, table_offset as u32);
    write_u32(&mut out, dir + 4, length as u32);
    let checksum = pe_checksum(&out, layout.checksum_offset);
    write_u32(&mut out, layout.checksum_offset, checksum);
    Ok(out)
}

/// What a signature check found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SignatureInfo {
    /// Subject of the signer certificate embedded in the signature.
    pub signer_subject: String,
    /// SHA-256 of the embedded signer certificate, hex.
    pub signer_sha256: String,
    /// Digest algorithm.
    pub digest: String,
    /// Whether the image digest in the signature equals the image's.
    pub digest_matches: bool,
}

/// Reads the image's first signature and checks the image digest and the
/// signature value against `trusted_der` (a certificate), when given.
pub fn verify(
    image: &[u8],
    trusted_der: Option<&[u8]>,
) -> Result<SignatureInfo, AuthenticodeError> {
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    let layout = PeLayout::parse(image)?;
    let (off, size) = layout.certificate_table(image)?;
    if size == 0 {
        return Err(AuthenticodeError::Unsigned);
    }
    // certificate_table checked that the table lies in the file and holds 8 bytes.
    let table =
        crate::pe::reader::Bytes::new(image).range(off as u64, size as u64, "certificate table")?;
    let len = u32::from_le_bytes([table[0], table[1], table[2], table[3]]) as usize;
    let blob = table.get(8..len.min(table.len())).ok_or_else(|| {
        AuthenticodeError::Invalid(format!(
            "the WIN_CERTIFICATE at offset {off:#x} declares dwLength {len}, less than its 8-byte header"
        ))
    })?;
    let mut reader = der::SliceReader::new(blob)?;
    let ci = ContentInfo::decode(&mut reader)?;
    let sd: SignedData = ci.content.decode_as()?;
    let si = sd
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| AuthenticodeError::Invalid("no SignerInfo".into()))?;
    let digest = match si.digest_alg.oid.to_string().as_str() {
        "2.16.840.1.101.3.4.2.1" => DigestAlgorithm::Sha256,
        "2.16.840.1.101.3.4.2.2" => DigestAlgorithm::Sha384,
        "2.16.840.1.101.3.4.2.3" => DigestAlgorithm::Sha512,
        "1.3.14.3.2.26" => DigestAlgorithm::Sha1,
        other => {
            return Err(AuthenticodeError::Invalid(format!(
                "unknown digest {other}"
            )))
        }
    };
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| AuthenticodeError::Invalid("no SpcIndirectDataContent".into()))?
        .to_der()?;
    let computed = image_digest(image, digest)?;
    let digest_matches = content.ends_with(&computed);
    let cert = sd
        .certificates
        .as_ref()
        .and_then(|c| c.0.iter().next())
        .and_then(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .ok_or_else(|| AuthenticodeError::Invalid("no certificate in the signature".into()))?;
    let embedded = cert.to_der()?;
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or_else(|| AuthenticodeError::Invalid("no signed attributes".into()))?;
    let md_ok = attrs.iter().any(|a| {
        a.oid == ID_MESSAGE_DIGEST
            && a.values.iter().any(|v| {
                v.decode_as::<OctetString>()
                    .map(|o| o.as_bytes() == digest.digest(der_value(&content).unwrap_or_default()))
                    .unwrap_or(false)
            })
    });
    if !md_ok {
        return Err(AuthenticodeError::Invalid(
            "messageDigest does not match the signed content".into(),
        ));
    }
    let key_cert = trusted_der.unwrap_or(&embedded);
    let x509 = openssl::x509::X509::from_der(key_cert)
        .map_err(|e| AuthenticodeError::Invalid(e.to_string()))?;
    let public = x509
        .public_key()
        .map_err(|e| AuthenticodeError::Invalid(e.to_string()))?;
    let mut v = openssl::sign::Verifier::new(digest.openssl_md(), &public)
        .map_err(|e| AuthenticodeError::Invalid(e.to_string()))?;
    let signed = attrs.to_der()?;
    v.update(&signed)
        .map_err(|e| AuthenticodeError::Invalid(e.to_string()))?;
    if !v.verify(si.signature.as_bytes()).unwrap_or(false) {
        return Err(AuthenticodeError::Invalid(match trusted_der {
            Some(_) => "the signature was not made by the given certificate's key".into(),
            None => "the signature does not verify with its own certificate".into(),
        }));
    }
    let summary = crate::keys::cert::CertSummary::from_der(&embedded)
        .map_err(|e| AuthenticodeError::Invalid(e.to_string()))?;
    Ok(SignatureInfo {
        signer_subject: summary.subject,
        signer_sha256: summary.sha256,
        digest: digest.name().into(),
        digest_matches,
    })
}
