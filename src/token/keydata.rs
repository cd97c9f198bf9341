//! Turning what a token says about a key into what the rest of sbkit uses:
//! a DER SubjectPublicKeyInfo, a [`KeyAlgorithm`], and DER ECDSA signatures.

use der::Decode;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;

use crate::keys::KeyAlgorithm;

/// SPKI DER of an RSA key from CKA_MODULUS and CKA_PUBLIC_EXPONENT.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, String> {
    let rsa = Rsa::from_public_components(
        BigNum::from_slice(modulus).map_err(|e| e.to_string())?,
        BigNum::from_slice(exponent).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let key = PKey::from_rsa(rsa).map_err(|e| e.to_string())?;
    key.public_key_to_der().map_err(|e| e.to_string())
}

/// The curve named by CKA_EC_PARAMS (a DER OBJECT IDENTIFIER).
fn curve(ec_params: &[u8]) -> Result<Nid, String> {
    let oid = der::asn1::ObjectIdentifier::from_der(ec_params).map_err(|_| {
        format!(
            "CKA_EC_PARAMS {} is not a named curve (explicit parameters are not supported)",
            hex::encode(ec_params)
        )
    })?;
    match oid.to_string().as_str() {
        "1.2.840.10045.3.1.7" => Ok(Nid::X9_62_PRIME256V1),
        "1.3.132.0.34" => Ok(Nid::SECP384R1),
        other => Err(format!(
            "curve {other} is not supported (P-256 and P-384 are)"
        )),
    }
}

/// The uncompressed point inside CKA_EC_POINT. PKCS#11 says it is a DER
/// OCTET STRING; some modules hand out the bare point, which starts with the
/// same 0x04 byte, so the length decides.
fn unwrap_point(ec_point: &[u8], field_len: usize) -> Result<Vec<u8>, String> {
    let bare_len = 1 + 2 * field_len;
    if let Ok(os) = der::asn1::OctetString::from_der(ec_point) {
        if os.as_bytes().len() == bare_len {
            return Ok(os.as_bytes().to_vec());
        }
    }
    if ec_point.len() == bare_len && ec_point[0] == 0x04 {
        return Ok(ec_point.to_vec());
    }
    Err(format!(
        "CKA_EC_POINT ({} bytes) is neither a DER OCTET STRING holding an uncompressed point nor the bare point",
        ec_point.len()
    ))
}

/// SPKI DER of an EC key from CKA_EC_PARAMS and CKA_EC_POINT.
pub(crate) fn ec_spki(ec_params: &[u8], ec_point: &[u8]) -> Result<Vec<u8>, String> {
    let nid = curve(ec_params)?;
    let group = EcGroup::from_curve_name(nid).map_err(|e| e.to_string())?;
    let field_len = (group.degree() as usize).div_ceil(8);
    let point_bytes = unwrap_point(ec_point, field_len)?;
    let mut ctx = openssl::bn::BigNumContext::new().map_err(|e| e.to_string())?;
    let point = EcPoint::from_bytes(&group, &point_bytes, &mut ctx)
        .map_err(|e| format!("CKA_EC_POINT is not a point on the curve: {e}"))?;
    let key = EcKey::from_public_key(&group, &point).map_err(|e| e.to_string())?;
    PKey::from_ec_key(key)
        .and_then(|k| k.public_key_to_der())
        .map_err(|e| e.to_string())
}

/// The public key and its [`KeyAlgorithm`] from SPKI DER.
pub(crate) fn algorithm_of_spki(spki: &[u8]) -> Result<(PKey<Public>, KeyAlgorithm), String> {
    let key = PKey::public_key_from_der(spki).map_err(|e| e.to_string())?;
    let alg = match key.id() {
        Id::RSA => match key.bits() {
            2048 => KeyAlgorithm::Rsa2048,
            3072 => KeyAlgorithm::Rsa3072,
            4096 => KeyAlgorithm::Rsa4096,
            n => return Err(format!("RSA-{n} is not supported (2048, 3072, 4096 are)")),
        },
        Id::EC => {
            let nid = key
                .ec_key()
                .ok()
                .and_then(|k| k.group().curve_name())
                .ok_or("an EC key on an unnamed curve is not supported")?;
            match nid {
                Nid::X9_62_PRIME256V1 => KeyAlgorithm::P256,
                Nid::SECP384R1 => KeyAlgorithm::P384,
                other => {
                    return Err(format!(
                        "EC curve {} is not supported (P-256 and P-384 are)",
                        other.short_name().unwrap_or("?")
                    ))
                }
            }
        }
        other => return Err(format!("a {other:?} key is not supported (RSA and EC are)")),
    };
    Ok((key, alg))
}

/// A DER `Ecdsa-Sig-Value` from the `r || s` that CKM_ECDSA returns.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(format!(
            "the token's ECDSA signature has {} bytes; r || s must have an even length",
            raw.len()
        ));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let sig = EcdsaSig::from_private_components(
        BigNum::from_slice(r).map_err(|e| e.to_string())?,
        BigNum::from_slice(s).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    sig.to_der().map_err(|e| e.to_string())
}

/// Checks a signature over a digest with the public key, as a verifier
/// would: catches a public key object or certificate that shares the CKA_ID
/// but belongs to another key.
pub(crate) fn verify_digest(
    key: &PKey<Public>,
    digest: crate::keys::DigestAlgorithm,
    hash: &[u8],
    signature: &[u8],
) -> bool {
    let check = || -> Result<bool, openssl::error::ErrorStack> {
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(key)?;
        ctx.verify_init()?;
        if key.id() == Id::RSA {
            ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
            let md = openssl::md::Md::fetch(None, digest.name(), None)?;
            ctx.set_signature_md(&md)?;
        }
        ctx.verify(hash, signature)
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{DigestAlgorithm, FileSigner, Signer};

    #[test]
    fn ec_spki_accepts_wrapped_and_bare_points() {
        let key = FileSigner::generate(KeyAlgorithm::P384).unwrap();
        let ec = key.pkey().ec_key().unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let point = ec
            .public_key()
            .to_bytes(
                ec.group(),
                openssl::ec::PointConversionForm::UNCOMPRESSED,
                &mut ctx,
            )
            .unwrap();
        let params = hex::decode("06052b81040022").unwrap();
        let mut wrapped = vec![0x04, point.len() as u8];
        wrapped.extend_from_slice(&point);
        assert_eq!(ec_spki(&params, &wrapped).unwrap(), key.public_key_der());
        assert_eq!(ec_spki(&params, &point).unwrap(), key.public_key_der());
        let e = ec_spki(&hex::decode("06082a8648ce3d030101").unwrap(), &point).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn raw_ecdsa_converts_to_a_der_signature_that_verifies() {
        let key = FileSigner::generate(KeyAlgorithm::P256).unwrap();
        let hash = DigestAlgorithm::Sha256.digest(b"m");
        let der_sig = key.sign_digest(DigestAlgorithm::Sha256, &hash).unwrap();
        // Take it apart into r || s as a token would return it, and back.
        let sig = EcdsaSig::from_der(&der_sig).unwrap();
        let mut raw = sig.r().to_vec_padded(32).unwrap();
        raw.extend(sig.s().to_vec_padded(32).unwrap());
        let again = ecdsa_raw_to_der(&raw).unwrap();
        let (public, alg) = algorithm_of_spki(&key.public_key_der()).unwrap();
        assert_eq!(alg, KeyAlgorithm::P256);
        assert!(verify_digest(
            &public,
            DigestAlgorithm::Sha256,
            &hash,
            &again
        ));
        assert!(!verify_digest(
            &public,
            DigestAlgorithm::Sha256,
            &DigestAlgorithm::Sha256.digest(b"n"),
            &again
        ));
        assert!(ecdsa_raw_to_der(&raw[1..]).is_err());
    }

    #[test]
    fn rsa_spki_from_components() {
        let key = FileSigner::generate(KeyAlgorithm::Rsa2048).unwrap();
        let rsa = key.pkey().rsa().unwrap();
        let spki = rsa_spki(&rsa.n().to_vec(), &rsa.e().to_vec()).unwrap();
        assert_eq!(spki, key.public_key_der());
        let (public, alg) = algorithm_of_spki(&spki).unwrap();
        assert_eq!(alg, KeyAlgorithm::Rsa2048);
        let hash = DigestAlgorithm::Sha256.digest(b"m");
        let sig = key.sign_digest(DigestAlgorithm::Sha256, &hash).unwrap();
        assert!(verify_digest(&public, DigestAlgorithm::Sha256, &hash, &sig));
    }
}
