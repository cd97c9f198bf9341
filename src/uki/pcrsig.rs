//! Signed PCR 11 policies: the `.pcrsig` and `.pcrpkey` sections.
//!
//! Owns the TPM2 policy digest a predicted PCR 11 value stands for, the
//! public-key fingerprint systemd uses to match signatures to keys, and the
//! `.pcrsig` JSON, byte-compatible with `systemd-measure sign`. Signing goes
//! through [`Signer`], so a file key and a token key behave the same.
//!
//! The policy digest is what `TPM2_PolicyPCR` leaves in a fresh SHA-256
//! policy session (systemd's `tpm2_calculate_policy_pcr`):
//! `SHA256(32 zero bytes | TPM_CC_PolicyPCR u32 | TPML_PCR_SELECTION | SHA256(PCR value))`
//! with a selection of one bank and PCR 11 only. The session hash is always
//! SHA-256, whichever bank the PCR value comes from; the signature over it
//! uses the bank's hash (that is what systemd-measure does and what
//! `TPM2_VerifySignature` is later given).

use openssl::pkey::{Id, PKey};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use base64::Engine as _;

use super::pcr::{Pcr11Prediction, PhasePath, ALL_BANKS, PCR_INDEX};
use crate::keys::{DigestAlgorithm, SignError, Signer};

/// The banks signed when the caller does not choose: all four, as ukify 254
/// does (it passes no `--bank`, and systemd-measure then signs every bank).
pub const DEFAULT_SIGNED_BANKS: [DigestAlgorithm; 4] = ALL_BANKS;

/// `TPM_CC_PolicyPCR`.
const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;

/// A `.pcrsig` that cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PcrSigError {
    /// The public key is not one systemd can use for PCR policies.
    #[error("the PCR signing key must be RSA (systemd-stub/cryptsetup verify PCR policies with RSA keys), got {0}; generate an RSA-2048 PCR key")]
    NotRsa(String),
    /// The public key does not parse.
    #[error("the PCR signing key's public key is not a DER SubjectPublicKeyInfo: {0}")]
    BadPublicKey(String),
    /// A PCR value has the wrong length for its bank.
    #[error("a {bank} PCR value must be {expected} bytes, got {got}")]
    PcrLength {
        /// The bank name.
        bank: &'static str,
        /// The bank's digest length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The prediction lacks a value that should be signed.
    #[error("the PCR 11 prediction has no {bank} value for phase path {phase:?}; predict the banks and phases you sign")]
    MissingPrediction {
        /// The bank name.
        bank: &'static str,
        /// The phase path.
        phase: String,
    },
    /// Nothing to sign.
    #[error("no banks or no phase paths to sign; select at least one of each")]
    Nothing,
    /// The signer failed.
    #[error("signing the PCR policy failed: {0}")]
    Sign(#[from] SignError),
    /// The signature the signer produced does not verify with its public key.
    #[error("the {bank} PCR policy signature from {key} does not verify with that key's public key; the token or key file holds a different key than expected")]
    BadSignature {
        /// The bank name.
        bank: &'static str,
        /// The signer's description.
        key: String,
    },
    /// OpenSSL failed.
    #[error("OpenSSL failed: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// The JSON is not a `.pcrsig`.
    #[error("not a .pcrsig JSON document: {0}")]
    Json(#[from] serde_json::Error),
}

/// The TPM2 algorithm identifier of a bank (`TPM2_ALG_SHA1` = 0x0004, …).
pub fn tpm2_alg_id(bank: DigestAlgorithm) -> u16 {
    match bank {
        DigestAlgorithm::Sha1 => 0x0004,
        DigestAlgorithm::Sha256 => 0x000B,
        DigestAlgorithm::Sha384 => 0x000C,
        DigestAlgorithm::Sha512 => 0x000D,
    }
}

/// The SHA-256 policy digest of `TPM2_PolicyPCR` over PCR 11 of `bank`
/// holding `pcr_value`.
pub fn policy_digest(bank: DigestAlgorithm, pcr_value: &[u8]) -> Result<[u8; 32], PcrSigError> {
    if pcr_value.len() != bank.output_len() {
        return Err(PcrSigError::PcrLength {
            bank: bank.name(),
            expected: bank.output_len(),
            got: pcr_value.len(),
        });
    }
    let mut select = [0u8; 3];
    select[(PCR_INDEX / 8) as usize] |= 1 << (PCR_INDEX % 8);
    let mut m = Vec::with_capacity(32 + 4 + 4 + 2 + 1 + 3 + 32);
    m.extend_from_slice(&[0u8; 32]); // the fresh session's digest
    m.extend_from_slice(&TPM_CC_POLICY_PCR.to_be_bytes());
    m.extend_from_slice(&1u32.to_be_bytes()); // TPML_PCR_SELECTION.count
    m.extend_from_slice(&tpm2_alg_id(bank).to_be_bytes());
    m.push(select.len() as u8); // sizeofSelect
    m.extend_from_slice(&select);
    m.extend_from_slice(&DigestAlgorithm::Sha256.digest(pcr_value));
    let mut out = [0u8; 32];
    out.copy_from_slice(&DigestAlgorithm::Sha256.digest(&m));
    Ok(out)
}

/// The fingerprint systemd gives a PCR key (`pkfp`): SHA-256 of the key as
/// OpenSSL's `i2d_PublicKey` writes it — for RSA the PKCS#1 `RSAPublicKey`,
/// not the SubjectPublicKeyInfo. `spki_der` is the SubjectPublicKeyInfo.
pub fn public_key_fingerprint(spki_der: &[u8]) -> Result<[u8; 32], PcrSigError> {
    let key = PKey::public_key_from_der(spki_der)
        .map_err(|e| PcrSigError::BadPublicKey(e.to_string()))?;
    if key.id() != Id::RSA {
        return Err(PcrSigError::NotRsa(format!("{:?}", key.id())));
    }
    let pkcs1 = key.rsa()?.public_key_to_der_pkcs1()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&DigestAlgorithm::Sha256.digest(&pkcs1));
    Ok(out)
}

/// The `.pcrpkey` section: the PEM SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`),
/// as `openssl pkey -pubout` writes it, for an RSA key.
pub fn pcrpkey_pem(spki_der: &[u8]) -> Result<Vec<u8>, PcrSigError> {
    let key = PKey::public_key_from_der(spki_der)
        .map_err(|e| PcrSigError::BadPublicKey(e.to_string()))?;
    if key.id() != Id::RSA {
        return Err(PcrSigError::NotRsa(format!("{:?}", key.id())));
    }
    Ok(key.public_key_to_pem()?)
}

/// One signed policy: field names and order as systemd-measure writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrSigEntry {
    /// The PCRs the policy covers: `[11]`.
    pub pcrs: Vec<u32>,
    /// The key fingerprint, hex ([`public_key_fingerprint`]).
    pub pkfp: String,
    /// The policy digest, hex ([`policy_digest`]).
    pub pol: String,
    /// The RSA PKCS#1 v1.5 signature over `pol` with the bank's hash, base64.
    pub sig: String,
}

/// The `.pcrsig` document: per bank, one entry per signed phase path.
///
/// Serializes with banks in systemd's order (sha1, sha256, sha384, sha512),
/// which is also the order systemd-measure prints whatever `--bank` order it
/// was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrSig {
    banks: Vec<(DigestAlgorithm, Vec<PcrSigEntry>)>,
}

impl PcrSig {
    /// Signs the predicted PCR 11 values of `banks` × `phases` with `signer`.
    ///
    /// Duplicates are signed once, like systemd-measure. Each signature is
    /// checked against the signer's public key before it is accepted, so a
    /// token holding an unexpected key fails here, not at boot.
    pub fn sign(
        signer: &dyn Signer,
        prediction: &Pcr11Prediction,
        banks: &[DigestAlgorithm],
        phases: &[PhasePath],
    ) -> Result<Self, PcrSigError> {
        if banks.is_empty() || phases.is_empty() {
            return Err(PcrSigError::Nothing);
        }
        let spki = signer.public_key_der();
        let pkfp = hex::encode(public_key_fingerprint(&spki)?);
        let public = PKey::public_key_from_der(&spki)?;
        let mut out = PcrSig::default();
        for &bank in ALL_BANKS.iter().filter(|b| banks.contains(b)) {
            let mut seen: Vec<&PhasePath> = Vec::new();
            for phase in phases {
                if seen.contains(&phase) {
                    continue;
                }
                seen.push(phase);
                let value = prediction.value(bank, phase).ok_or_else(|| {
                    PcrSigError::MissingPrediction {
                        bank: bank.name(),
                        phase: phase.to_string(),
                    }
                })?;
                let pol = policy_digest(bank, value)?;
                let sig = signer.sign(bank, &pol)?;
                let mut verifier = openssl::sign::Verifier::new(bank.openssl_md(), &public)?;
                verifier.update(&pol)?;
                if !verifier.verify(&sig)? {
                    return Err(PcrSigError::BadSignature {
                        bank: bank.name(),
                        key: signer.describe(),
                    });
                }
                out.push(
                    bank,
                    PcrSigEntry {
                        pcrs: vec![PCR_INDEX],
                        pkfp: pkfp.clone(),
                        pol: hex::encode(pol),
                        sig: base64::engine::general_purpose::STANDARD.encode(sig),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Adds an entry unless an equal one is there (ukify's merge rule).
    fn push(&mut self, bank: DigestAlgorithm, entry: PcrSigEntry) {
        let rank = |b: DigestAlgorithm| ALL_BANKS.iter().position(|&x| x == b);
        let pos = match self.banks.iter().position(|(b, _)| *b == bank) {
            Some(p) => p,
            None => {
                let at = self
                    .banks
                    .iter()
                    .position(|(b, _)| rank(*b) > rank(bank))
                    .unwrap_or(self.banks.len());
                self.banks.insert(at, (bank, Vec::new()));
                at
            }
        };
        let list = &mut self.banks[pos].1;
        if !list.contains(&entry) {
            list.push(entry);
        }
    }

    /// Merges another document in (several keys or phase groups in one
    /// `.pcrsig`), dropping duplicate entries as ukify does.
    pub fn append(&mut self, other: PcrSig) {
        for (bank, entries) in other.banks {
            for e in entries {
                self.push(bank, e);
            }
        }
    }

    /// The entries of one bank.
    pub fn entries(&self, bank: DigestAlgorithm) -> &[PcrSigEntry] {
        self.banks
            .iter()
            .find(|(b, _)| *b == bank)
            .map(|(_, e)| e.as_slice())
            .unwrap_or_default()
    }

    /// Compact JSON, as `systemd-measure sign --json=short` writes it.
    pub fn to_json(&self) -> String {
        // Serializing strings, numbers and lists into memory cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `.pcrsig` section content: [`Self::to_json`] plus the newline
    /// systemd-measure ends its output with, so the bytes equal what
    /// `systemd-measure sign > pcrsig.json` produces.
    pub fn to_section_bytes(&self) -> Vec<u8> {
        let mut v = self.to_json().into_bytes();
        v.push(b'\n');
        v
    }

    /// Parses a `.pcrsig` document (systemd-measure's or ukify's).
    pub fn from_json(bytes: &[u8]) -> Result<Self, PcrSigError> {
        // A .pcrsig section may carry trailing NUL padding.
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        Ok(serde_json::from_slice(&bytes[..end])?)
    }
}

impl Serialize for PcrSig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.banks.len()))?;
        for (bank, entries) in &self.banks {
            map.serialize_entry(bank.name(), entries)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PcrSig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: std::collections::BTreeMap<String, Vec<PcrSigEntry>> =
            Deserialize::deserialize(d)?;
        let mut out = PcrSig::default();
        for (name, entries) in raw {
            let bank = ALL_BANKS
                .iter()
                .copied()
                .find(|b| b.name() == name)
                .ok_or_else(|| D::Error::custom(format!("unknown PCR bank {name:?}")))?;
            for e in entries {
                out.push(bank, e);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{FileSigner, KeyAlgorithm};
    use crate::uki::pcr::{default_phase_paths, predict};

    #[test]
    fn policy_digest_matches_systemd_measure() {
        // From systemd-measure 254 `sign` (vmlinuz + os-release, phase
        // enter-initrd): PCR value and the "pol" it printed.
        let pcr = hex::decode("c2c39f6422629575f9c78dea035733d0140ec134b22412e74b17d06cde37cf07")
            .unwrap();
        assert_eq!(
            hex::encode(policy_digest(DigestAlgorithm::Sha256, &pcr).unwrap()),
            "c99d773fc0c4f0f8b9c511dff06a80dbc7fff9949eaf48c3fb6bf9b196efe6e9"
        );
        let pcr1 = hex::decode("f1bf6c530419f32fe48c489503ca505c0918ecab").unwrap();
        assert_eq!(
            hex::encode(policy_digest(DigestAlgorithm::Sha1, &pcr1).unwrap()),
            "9ea98b722893921d80730ce7155a102acf48bd7ccd27c4151e1322b6c492361c"
        );
        assert!(matches!(
            policy_digest(DigestAlgorithm::Sha384, &pcr),
            Err(PcrSigError::PcrLength { .. })
        ));
    }

    #[test]
    fn signs_verifies_and_round_trips() {
        let key = FileSigner::generate(KeyAlgorithm::Rsa2048).unwrap();
        let prediction = predict(
            &[(".linux", b"kernel")],
            &[".linux"],
            &ALL_BANKS,
            &default_phase_paths(),
        )
        .unwrap();
        let sig = PcrSig::sign(
            &key,
            &prediction,
            &[DigestAlgorithm::Sha512, DigestAlgorithm::Sha1],
            &default_phase_paths(),
        )
        .unwrap();
        let json = sig.to_json();
        assert!(
            json.starts_with(r#"{"sha1":[{"pcrs":[11],"pkfp":""#),
            "{json}"
        );
        assert!(json.contains(r#"],"sha512":[{"pcrs":[11],"#));
        assert_eq!(sig.entries(DigestAlgorithm::Sha1).len(), 4);
        assert!(sig.entries(DigestAlgorithm::Sha256).is_empty());
        assert_eq!(PcrSig::from_json(&sig.to_section_bytes()).unwrap(), sig);
        let mut twice = sig.clone();
        twice.append(sig.clone());
        assert_eq!(twice, sig);
    }

    #[test]
    fn refuses_ec_keys_and_missing_predictions() {
        let ec = FileSigner::generate(KeyAlgorithm::P256).unwrap();
        assert!(matches!(
            public_key_fingerprint(&ec.public_key_der()),
            Err(PcrSigError::NotRsa(_))
        ));
        let rsa = FileSigner::generate(KeyAlgorithm::Rsa2048).unwrap();
        let prediction = predict::<&str>(&[], &[], &[DigestAlgorithm::Sha256], &[]).unwrap();
        assert!(matches!(
            PcrSig::sign(
                &rsa,
                &prediction,
                &[DigestAlgorithm::Sha256],
                &default_phase_paths()
            ),
            Err(PcrSigError::MissingPrediction { .. })
        ));
    }

    #[test]
    fn pcrpkey_is_spki_pem() {
        let rsa = FileSigner::generate(KeyAlgorithm::Rsa2048).unwrap();
        let pem = pcrpkey_pem(&rsa.public_key_der()).unwrap();
        assert!(pem.starts_with(b"-----BEGIN PUBLIC KEY-----\n"));
    }
}
