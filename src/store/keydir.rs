//! [`KeyDir`]: one key directory, whatever its layout — where each role's
//! files are, which backend holds each role's private key, and how to load
//! it into a [`KeyHierarchy`].
//!
//! This is the only place that knows the layouts apart. The flat Kairos
//! directory keeps `PK.key`, `PK.pem`, … side by side with plaintext keys;
//! the hardened repository keeps them under `secureboot/<role>/` with
//! age-encrypted keys. The custody-split layout to come (PK and KEK private
//! keys on their own media or tokens, only public material here) is a third
//! [`KeyLayout`] plus per-role [`KeyBackend`]s, which [`KeyDir::set_backend`]
//! already expresses: a role can be a file, an encrypted file, a `pkcs11:`
//! URI or offline. Public material (certificates, lists, `.auth` files) is
//! read per role without touching any private key.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::hardened;
use super::layout::{KeyLayout, Role, MANIFEST, PCR_PRIVATE_KEY, PCR_PUBLIC_KEY};
use crate::keys::{FileSigner, KeyFileError, KeyHierarchy, KeyRole, OfflineSigner, Signer};
use crate::secret::{LockedBytes, SecretError, SecretSource};

/// Where the private key of one role is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyBackend {
    /// A PEM/DER private key file in plaintext (mode 0600).
    File(PathBuf),
    /// An age- or openssl-enc-encrypted private key file, opened in memory with the passphrase.
    EncryptedFile(PathBuf),
    /// A key on a PKCS#11 token, by `pkcs11:` URI.
    Pkcs11(String),
    /// Not reachable from here: signing produces a signing request instead.
    Offline {
        /// Where the key is kept, for the operator ("PK medium in the safe").
        location: String,
    },
}

impl KeyBackend {
    /// Whether loading this backend needs the key directory's passphrase.
    pub fn needs_passphrase(&self) -> bool {
        matches!(self, KeyBackend::EncryptedFile(_))
    }
}

/// A key directory could not be read or a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyDirError {
    /// A file the key directory should have is missing.
    #[error("{path} is missing: -k must name a key directory made by genkey (with db.key, db.der/db.pem, tpm2-pcr-private.pem)")]
    Missing {
        /// The file.
        path: String,
    },
    /// A key failed to load.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A hardened repository's encrypted key failed to open.
    #[error(transparent)]
    Hardened(#[from] hardened::HardenedError),
    /// A certificate failed to read.
    #[error("{path}: not a PEM or DER X.509 certificate")]
    Certificate {
        /// The file.
        path: String,
    },
    /// I/O.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A token key failed to open.
    #[error(transparent)]
    Token(#[from] crate::token::OpenSignerError),
    /// An offline key's public half is unusable.
    #[error("the offline {role} key: {message}")]
    Offline {
        /// The role.
        role: KeyRole,
        /// What is wrong with its public key.
        message: String,
    },
}

/// How encrypted keys are opened: the passphrase is read at most once per
/// run, on first need, and shared by every role.
pub struct Unlock {
    source: Option<SecretSource>,
    passphrase: OnceCell<LockedBytes>,
}

impl Unlock {
    /// The passphrase from `SBKIT_KEY_PASSPHRASE`, `SBKIT_KEY_PASSPHRASE_FILE`
    /// or a terminal prompt, read when first needed.
    pub fn from_env() -> Self {
        Unlock {
            source: None,
            passphrase: OnceCell::new(),
        }
    }

    /// A passphrase already read.
    pub fn with_passphrase(passphrase: LockedBytes) -> Self {
        let cell = OnceCell::new();
        let _ = cell.set(passphrase);
        Unlock {
            source: None,
            passphrase: cell,
        }
    }

    /// A passphrase from `source`, read when first needed.
    pub fn from_source(source: SecretSource) -> Self {
        Unlock {
            source: Some(source),
            passphrase: OnceCell::new(),
        }
    }

    /// The passphrase, reading it on first use.
    pub fn passphrase(&self) -> Result<&LockedBytes, SecretError> {
        if let Some(p) = self.passphrase.get() {
            return Ok(p);
        }
        let p = match &self.source {
            Some(s) => s.read("key directory passphrase", false)?,
            None => hardened::passphrase_from_env()?,
        };
        Ok(self.passphrase.get_or_init(|| p))
    }
}

/// Files a layout adds to a key set besides keys, certificates and lists.
#[derive(Clone, Debug, Default)]
pub struct LayoutExtras {
    /// Documents, as (path, contents).
    pub documents: Vec<(String, String)>,
    /// Symbolic links, as (link, target relative to the link's directory).
    pub links: Vec<(String, String)>,
}

/// A key directory: its layout, its files per role, and each role's key backend.
#[derive(Clone, Debug)]
pub struct KeyDir {
    root: PathBuf,
    layout: KeyLayout,
    backends: BTreeMap<KeyRole, KeyBackend>,
}

/// The Secure Boot variable whose certificate a key role carries.
fn variable_of(role: KeyRole) -> Option<Role> {
    match role {
        KeyRole::Pk => Some(Role::Pk),
        KeyRole::Kek => Some(Role::Kek),
        KeyRole::Db => Some(Role::Db),
        KeyRole::Pcr => None,
    }
}

impl KeyDir {
    /// The key directory at `root` in the layout found there (flat when empty).
    pub fn open(root: &Path) -> Self {
        Self::new(root, Self::detect(root))
    }

    /// The key directory at `root` in `layout` (for writing a new one).
    pub fn new(root: &Path, layout: KeyLayout) -> Self {
        KeyDir {
            root: root.to_path_buf(),
            layout,
            backends: BTreeMap::new(),
        }
    }

    /// The layout of the directory at `root`.
    pub fn detect(root: &Path) -> KeyLayout {
        if hardened::is_hardened(root) {
            KeyLayout::Hardened
        } else {
            KeyLayout::Kairos
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its layout.
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// Whether this layout stores private keys encrypted (a passphrase is needed to write them).
    pub fn encrypts_private_keys(&self) -> bool {
        self.layout == KeyLayout::Hardened
    }

    /// The `layout` value of the manifest; `None` for the flat layout.
    pub fn manifest_layout(&self) -> Option<String> {
        match self.layout {
            KeyLayout::Kairos => None,
            KeyLayout::Hardened => Some(hardened::LAYOUT_NAME.to_string()),
        }
    }

    /// The file of a variable's list, certificate or `.auth`, relative to the
    /// directory: `db.auth` flat, `secureboot/db/db.auth` hardened.
    pub fn variable_file(&self, var: Role, ext: &str) -> String {
        match self.layout {
            KeyLayout::Kairos => var.file(ext),
            KeyLayout::Hardened => hardened::role_file(var, ext),
        }
    }

    /// [`KeyDir::variable_file`] as a full path.
    pub fn variable_path(&self, var: Role, ext: &str) -> PathBuf {
        self.root.join(self.variable_file(var, ext))
    }

    /// The PCR policy public key (PEM), relative to the directory.
    pub fn pcr_public_key_file(&self) -> String {
        match self.layout {
            KeyLayout::Kairos => PCR_PUBLIC_KEY.to_string(),
            KeyLayout::Hardened => hardened::pcr_public_key(),
        }
    }

    /// Where this layout keeps the private key of `role`, relative to the directory.
    pub fn private_key_file(&self, role: KeyRole) -> String {
        match (self.layout, variable_of(role)) {
            (KeyLayout::Kairos, Some(var)) => var.file("key"),
            (KeyLayout::Kairos, None) => PCR_PRIVATE_KEY.to_string(),
            (KeyLayout::Hardened, Some(var)) => hardened::encrypted_key(var),
            (KeyLayout::Hardened, None) => hardened::PCR_PRIVATE_KEY_ENCRYPTED.to_string(),
        }
    }

    /// The backend of `role`: the one set with [`KeyDir::set_backend`], else
    /// the layout's key file.
    pub fn backend(&self, role: KeyRole) -> KeyBackend {
        if let Some(b) = self.backends.get(&role) {
            return b.clone();
        }
        let path = self.root.join(self.private_key_file(role));
        if self.encrypts_private_keys() {
            KeyBackend::EncryptedFile(path)
        } else {
            KeyBackend::File(path)
        }
    }

    /// Holds `role`'s private key in `backend` instead of the layout's file
    /// (a token, another medium, offline).
    pub fn set_backend(&mut self, role: KeyRole, backend: KeyBackend) {
        self.backends.insert(role, backend);
    }

    /// Whether `role`'s private key is there to load (always true for tokens
    /// and offline keys, which are checked when opened).
    pub fn has_private_key(&self, role: KeyRole) -> bool {
        match self.backend(role) {
            KeyBackend::File(p) | KeyBackend::EncryptedFile(p) => p.exists(),
            KeyBackend::Pkcs11(_) | KeyBackend::Offline { .. } => true,
        }
    }

    /// The certificate (DER) of `role`, read from the public files only.
    /// The flat layout may hold the DER or only the PEM.
    pub fn certificate(&self, role: KeyRole) -> Result<Vec<u8>, KeyDirError> {
        let Some(var) = variable_of(role) else {
            return Err(KeyDirError::Missing {
                path: format!("a certificate of the {role} key (it has none)"),
            });
        };
        let candidates = [
            self.variable_path(var, "der"),
            self.variable_path(var, "pem"),
        ];
        match candidates.iter().find(|p| p.exists()) {
            Some(p) => read_certificate(p),
            None => Err(KeyDirError::Missing {
                path: candidates[0].display().to_string(),
            }),
        }
    }

    /// The public key (DER `SubjectPublicKeyInfo`) of `role`, from its
    /// certificate or, for the PCR key, its public key file.
    pub fn public_key(&self, role: KeyRole) -> Result<Vec<u8>, KeyDirError> {
        let bad = |message: String| KeyDirError::Offline { role, message };
        if role == KeyRole::Pcr {
            let path = self.root.join(self.pcr_public_key_file());
            let pem = std::fs::read(&path).map_err(|source| KeyDirError::Read {
                path: path.display().to_string(),
                cause: source,
            })?;
            return openssl::pkey::PKey::public_key_from_pem(&pem)
                .and_then(|k| k.public_key_to_der())
                .map_err(|e| bad(format!("{}: {e}", path.display())));
        }
        let der = self.certificate(role)?;
        openssl::x509::X509::from_der(&der)
            .and_then(|c| c.public_key())
            .and_then(|k| k.public_key_to_der())
            .map_err(|e| bad(e.to_string()))
    }

    /// Loads the signer of `role` from its backend.
    pub fn load_signer(
        &self,
        role: KeyRole,
        unlock: &Unlock,
    ) -> Result<Box<dyn Signer>, KeyDirError> {
        match self.backend(role) {
            KeyBackend::File(path) => {
                if !path.exists() {
                    return Err(KeyDirError::Missing {
                        path: path.display().to_string(),
                    });
                }
                Ok(Box::new(FileSigner::load(&path)?))
            }
            KeyBackend::EncryptedFile(path) => {
                let passphrase = unlock.passphrase().map_err(hardened::HardenedError::from)?;
                Ok(Box::new(hardened::load_key(&path, passphrase)?))
            }
            KeyBackend::Pkcs11(uri) => Ok(crate::token::open_signer(&uri)?),
            KeyBackend::Offline { location } => {
                let spki = self.public_key(role)?;
                let signer = OfflineSigner::new(role, &spki, &location)
                    .map_err(|message| KeyDirError::Offline { role, message })?;
                Ok(Box::new(signer))
            }
        }
    }

    /// Loads the signers of `roles` into a hierarchy.
    pub fn load_hierarchy(
        &self,
        roles: &[KeyRole],
        unlock: &Unlock,
    ) -> Result<KeyHierarchy, KeyDirError> {
        let mut h = KeyHierarchy::new();
        for role in roles {
            h.set(*role, self.load_signer(*role, unlock)?);
        }
        Ok(h)
    }

    /// Every file name of a complete set in any layout, relative to the
    /// directory (for refusing to overwrite a key set).
    pub fn any_layout_set_files() -> Vec<String> {
        let mut names = super::layout::key_set_files();
        names.extend(hardened::set_files());
        names
    }

    /// Names the new set must move aside when it has no such variable
    /// (today: dbx without entries), in every place this layout puts them.
    pub fn variable_names_to_displace(&self, var: Role) -> Vec<String> {
        let mut v = vec![
            self.variable_file(var, "esl"),
            self.variable_file(var, "auth"),
        ];
        if self.layout == KeyLayout::Hardened {
            // The flat-name links at the top.
            v.push(var.file("esl"));
            v.push(var.file("auth"));
        }
        v
    }

    /// The layout's extra files (documents) and links. `keys` are the dates
    /// and fingerprints shown in the documents.
    pub fn layout_extras(
        &self,
        name: &str,
        created: &str,
        keys: &[hardened::KeyDates],
        with_dbx: bool,
    ) -> LayoutExtras {
        match self.layout {
            KeyLayout::Kairos => LayoutExtras::default(),
            KeyLayout::Hardened => LayoutExtras {
                documents: hardened::documents(name, created, keys),
                links: hardened::compat_links(with_dbx),
            },
        }
    }

    /// The first of genkey's next steps: how the private keys are kept.
    pub fn custody_note(&self) -> String {
        let dir = self.root.display();
        match self.layout {
            KeyLayout::Kairos => format!(
                "Keep {dir} private: it holds PK.key, KEK.key, db.key and tpm2-pcr-private.pem."
            ),
            KeyLayout::Hardened => format!(
                "Its private keys are age-encrypted (secureboot/*/*.key.age); tools decrypt them in memory with the passphrase from ${} or a prompt. Fill in {dir}/backups/storage-locations.md and keep copies offline.",
                hardened::PASSPHRASE_ENV
            ),
        }
    }

    /// The manifest file.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST)
    }
}

/// Reads a certificate file (PEM or DER).
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, KeyDirError> {
    let bytes = std::fs::read(path).map_err(|source| KeyDirError::Read {
        path: path.display().to_string(),
        cause: source,
    })?;
    crate::keys::cert::certificate_der(&bytes).ok_or_else(|| KeyDirError::Certificate {
        path: path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{DigestAlgorithm, KeyAlgorithm, SignError};

    #[test]
    fn paths_per_role_follow_the_layout() {
        let flat = KeyDir::new(Path::new("/k"), KeyLayout::Kairos);
        let hard = KeyDir::new(Path::new("/k"), KeyLayout::Hardened);
        assert_eq!(flat.variable_file(Role::Db, "auth"), "db.auth");
        assert_eq!(
            hard.variable_file(Role::Db, "auth"),
            "secureboot/db/db.auth"
        );
        assert_eq!(flat.private_key_file(KeyRole::Pk), "PK.key");
        assert_eq!(
            hard.private_key_file(KeyRole::Pk),
            "secureboot/pk/PK.key.age"
        );
        assert_eq!(
            flat.backend(KeyRole::Pcr),
            KeyBackend::File("/k/tpm2-pcr-private.pem".into())
        );
        assert!(hard.backend(KeyRole::Kek).needs_passphrase());
        assert!(!flat.encrypts_private_keys() && hard.encrypts_private_keys());
    }

    #[test]
    fn public_material_loads_without_any_private_key_and_offline_keys_make_requests() {
        let tmp = tempfile::tempdir().unwrap();
        let key = FileSigner::generate(KeyAlgorithm::Rsa2048).unwrap();
        let der = crate::keys::cert::issue_self_signed(
            &key,
            &crate::keys::cert::CertRequest {
                common_name: "t PK",
                organization: "t",
                profile: Role::Pk.profile(),
                not_before: time::OffsetDateTime::UNIX_EPOCH,
                days: 10,
            },
        )
        .unwrap();
        std::fs::write(tmp.path().join("PK.der"), &der).unwrap();
        let mut dir = KeyDir::open(tmp.path());
        assert_eq!(dir.layout(), KeyLayout::Kairos);
        assert_eq!(dir.certificate(KeyRole::Pk).unwrap(), der);
        // No PK.key: the file backend says which file is missing.
        let err = dir
            .load_signer(KeyRole::Pk, &Unlock::from_env())
            .err()
            .expect("no key file");
        assert!(err.to_string().contains("PK.key"), "{err}");
        dir.set_backend(
            KeyRole::Pk,
            KeyBackend::Offline {
                location: "the safe".into(),
            },
        );
        let pk = dir.load_signer(KeyRole::Pk, &Unlock::from_env()).unwrap();
        assert_eq!(pk.public_key_der(), key.public_key_der());
        let err = pk.sign(DigestAlgorithm::Sha256, b"bytes").unwrap_err();
        assert!(matches!(err, SignError::RequestNeeded(_)), "{err}");
    }
}
