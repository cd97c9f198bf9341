//! The key hierarchy: one signer per role (PK, KEK, db, PCR policy key),
//! each behind the one [`Signer`] interface whatever holds it — a file, an
//! encrypted file, a PKCS#11 token, or nothing at all ("offline").
//!
//! An offline key is one whose private half is on another machine or a
//! medium that is not attached (the air-gapped custody of a PK). It knows its
//! public key, so certificates and lists can name it, but asking it to sign
//! yields [`SignError::RequestNeeded`] with a [`SigningRequest`]: the exact
//! bytes to sign and their SHA-256, for the operator to carry to the key.
//! Nothing here knows about directories; `store::keydir` decides which
//! backend each role gets.

use std::collections::BTreeMap;
use std::fmt;

use sha2::Digest;

use super::algorithm::{DigestAlgorithm, KeyAlgorithm};
use super::signer::{SignError, Signer};

/// A role of the hierarchy that owns a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum KeyRole {
    /// Platform Key: signs PK and KEK updates.
    Pk,
    /// Key Exchange Key: signs db and dbx updates.
    Kek,
    /// The db key: signs boot images.
    Db,
    /// The TPM PCR policy key: signs `.pcrsig` policies.
    Pcr,
}

impl KeyRole {
    /// Every role, in hierarchy order.
    pub const ALL: [KeyRole; 4] = [KeyRole::Pk, KeyRole::Kek, KeyRole::Db, KeyRole::Pcr];

    /// The name used in messages and the manifest: `PK`, `KEK`, `db`, `tpm2-pcr`.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Pk => "PK",
            KeyRole::Kek => "KEK",
            KeyRole::Db => "db",
            KeyRole::Pcr => "tpm2-pcr",
        }
    }
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an offline key would have to sign, for the operator to carry to it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningRequest {
    /// The key asked for (its [`Signer::describe`]).
    pub key: String,
    /// The digest the signature must use.
    pub digest: DigestAlgorithm,
    /// The exact bytes to sign: the message when the caller had one, else
    /// the precomputed digest (`prehashed` says which).
    pub to_sign: Vec<u8>,
    /// Whether `to_sign` is already the `digest` of the message.
    pub prehashed: bool,
    /// SHA-256 of `to_sign`, hex, for the operator to compare on both machines.
    pub sha256: String,
}

impl SigningRequest {
    fn new(key: String, digest: DigestAlgorithm, to_sign: &[u8], prehashed: bool) -> Self {
        SigningRequest {
            key,
            digest,
            to_sign: to_sign.to_vec(),
            prehashed,
            sha256: hex::encode(sha2::Sha256::digest(to_sign)),
        }
    }
}

impl fmt::Debug for SigningRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes can be long; their hash identifies them.
        f.debug_struct("SigningRequest")
            .field("key", &self.key)
            .field("digest", &self.digest)
            .field("len", &self.to_sign.len())
            .field("prehashed", &self.prehashed)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// A key whose private half is not here: every signature becomes a request.
#[derive(Clone, Debug)]
pub struct OfflineSigner {
    role: KeyRole,
    algorithm: KeyAlgorithm,
    public_key: Vec<u8>,
    location: String,
}

impl OfflineSigner {
    /// An offline key of `role` with this public key (DER
    /// `SubjectPublicKeyInfo`); `location` tells the operator where the
    /// private key is kept ("PK medium", a token's label…).
    pub fn new(role: KeyRole, public_key_der: &[u8], location: &str) -> Result<Self, String> {
        let (_, algorithm) = crate::token::keydata::algorithm_of_spki(public_key_der)?;
        Ok(OfflineSigner {
            role,
            algorithm,
            public_key: public_key_der.to_vec(),
            location: location.to_string(),
        })
    }

    fn request(&self, digest: DigestAlgorithm, bytes: &[u8], prehashed: bool) -> SignError {
        SignError::RequestNeeded(Box::new(SigningRequest::new(
            self.describe(),
            digest,
            bytes,
            prehashed,
        )))
    }
}

impl Signer for OfflineSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> Vec<u8> {
        self.public_key.clone()
    }

    fn sign_digest(&self, digest: DigestAlgorithm, hash: &[u8]) -> Result<Vec<u8>, SignError> {
        if hash.len() != digest.output_len() {
            return Err(SignError::DigestLength {
                digest,
                got: hash.len(),
            });
        }
        Err(self.request(digest, hash, true))
    }

    fn describe(&self) -> String {
        format!(
            "offline {} key ({}, kept {})",
            self.role, self.algorithm, self.location
        )
    }

    fn sign(&self, digest: DigestAlgorithm, message: &[u8]) -> Result<Vec<u8>, SignError> {
        // The whole message, not its hash: the offline side can then show
        // and check what it signs.
        Err(self.request(digest, message, false))
    }
}

/// A role the hierarchy has no signer for.
#[derive(Debug, thiserror::Error)]
#[error("no {role} key is loaded here; {hint}")]
pub struct MissingRole {
    /// The role asked for.
    pub role: KeyRole,
    /// What to do about it.
    pub hint: String,
}

/// One signer per role; the roles an operation does not need stay empty.
#[derive(Default)]
pub struct KeyHierarchy {
    signers: BTreeMap<KeyRole, Box<dyn Signer>>,
}

impl fmt::Debug for KeyHierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (role, s) in &self.signers {
            m.entry(role, &s.describe());
        }
        m.finish()
    }
}

impl KeyHierarchy {
    /// An empty hierarchy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the signer of `role`.
    pub fn set(&mut self, role: KeyRole, signer: Box<dyn Signer>) {
        self.signers.insert(role, signer);
    }

    /// The signer of `role`, when one is loaded.
    pub fn get(&self, role: KeyRole) -> Option<&dyn Signer> {
        self.signers.get(&role).map(|b| b.as_ref())
    }

    /// The signer of `role`, or an error that names the role.
    pub fn require(&self, role: KeyRole) -> Result<&dyn Signer, MissingRole> {
        self.get(role).ok_or_else(|| MissingRole {
            role,
            hint: "load it from the key directory or give its key".into(),
        })
    }

    /// Takes the signer of `role` out of the hierarchy.
    pub fn take(&mut self, role: KeyRole) -> Option<Box<dyn Signer>> {
        self.signers.remove(&role)
    }

    /// The roles that have a signer.
    pub fn roles(&self) -> impl Iterator<Item = KeyRole> + '_ {
        self.signers.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FileSigner;

    #[test]
    fn an_offline_key_returns_the_exact_bytes_and_their_hash() {
        let real = FileSigner::generate(KeyAlgorithm::P256).unwrap();
        let offline = OfflineSigner::new(KeyRole::Pk, &real.public_key_der(), "the PK medium")
            .expect("P-256 SPKI");
        assert_eq!(offline.algorithm(), KeyAlgorithm::P256);
        assert_eq!(offline.public_key_der(), real.public_key_der());
        let err = offline
            .sign(DigestAlgorithm::Sha256, b"KEK update bytes")
            .unwrap_err();
        let SignError::RequestNeeded(req) = err else {
            panic!("expected a signing request, got {err}");
        };
        assert_eq!(req.to_sign, b"KEK update bytes");
        assert!(!req.prehashed);
        // Independent oracle: the SHA-256 computed by OpenSSL, not by sha2.
        assert_eq!(
            req.sha256,
            hex::encode(openssl::sha::sha256(b"KEK update bytes"))
        );
        assert!(req.key.contains("PK") && req.key.contains("the PK medium"));

        let digest = DigestAlgorithm::Sha256.digest(b"x");
        let SignError::RequestNeeded(req) = offline
            .sign_digest(DigestAlgorithm::Sha256, &digest)
            .unwrap_err()
        else {
            panic!("expected a signing request");
        };
        assert!(req.prehashed);
        assert_eq!(req.to_sign, digest);
    }

    #[test]
    fn operations_with_an_offline_key_return_the_request_not_a_generic_failure() {
        let real = FileSigner::generate(KeyAlgorithm::Rsa2048).unwrap();
        let offline = OfflineSigner::new(KeyRole::Pk, &real.public_key_der(), "safe").unwrap();
        let req = crate::keys::cert::CertRequest {
            common_name: "t PK",
            organization: "t",
            profile: crate::keys::cert::CertProfile::PlatformKey,
            not_before: time::OffsetDateTime::UNIX_EPOCH,
            days: 1,
        };
        match crate::keys::cert::issue_self_signed(&offline, &req) {
            Err(crate::keys::cert::CertError::Sign(SignError::RequestNeeded(r))) => {
                // The bytes are the certificate's TBS: a DER SEQUENCE.
                assert_eq!(r.to_sign.first(), Some(&0x30));
                assert_eq!(r.sha256, hex::encode(openssl::sha::sha256(&r.to_sign)));
            }
            other => panic!("expected a signing request, got {other:?}"),
        }
    }

    #[test]
    fn the_hierarchy_holds_one_backend_per_role() {
        let mut h = KeyHierarchy::new();
        let db = FileSigner::generate(KeyAlgorithm::Rsa2048).unwrap();
        let pk = OfflineSigner::new(KeyRole::Pk, &db.public_key_der(), "elsewhere").unwrap();
        h.set(KeyRole::Db, Box::new(db));
        h.set(KeyRole::Pk, Box::new(pk));
        assert!(h.require(KeyRole::Db).is_ok());
        assert!(h
            .require(KeyRole::Db)
            .unwrap()
            .sign(DigestAlgorithm::Sha256, b"m")
            .is_ok());
        assert!(matches!(
            h.require(KeyRole::Pk)
                .unwrap()
                .sign(DigestAlgorithm::Sha256, b"m"),
            Err(SignError::RequestNeeded(_))
        ));
        let Err(missing) = h.require(KeyRole::Kek) else {
            panic!("KEK is not loaded");
        };
        assert!(missing.to_string().contains("no KEK key"), "{missing}");
        assert_eq!(h.roles().collect::<Vec<_>>(), [KeyRole::Pk, KeyRole::Db]);
    }
}
