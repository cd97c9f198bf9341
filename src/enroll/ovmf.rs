//! `enroll ovmf`: an OVMF variable store with our keys, for virtual machines.
//!
//! Starting from a template store (the firmware's empty `OVMF_VARS*.fd`, or a
//! VM's own), PK, KEK and db are set to the key directory's signature lists,
//! dbx to `dbx.esl` when there is one, and edk2's `SecureBootEnable` on and
//! `CustomMode` off, as `virt-fw-vars --secure-boot` does. Without a dbx of
//! ours or the template's, a placeholder dbx (one SHA-256 entry, the hash of
//! nothing) is written like OVMF's own EnrollDefaultKeys and virt-fw-vars do.
//! `--setup-mode` leaves PK out, so the firmware boots in setup mode.
//!
//! Every key variable gets the timestamp 2010-01-01T00:00:00Z: a time-based
//! authenticated update must carry a strictly later time, and every `.auth`
//! file made for these keys is later than that.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::keyset::{KeySet, KeySetError, Need};
use crate::efi::authvar::{BOOTSERVICE_ACCESS, NON_VOLATILE, SECURE_BOOT_VARIABLE};
use crate::efi::varstore::{
    VarStore, VarStoreError, Variable, CUSTOM_MODE_ENABLE, OVMF_ENROLL_DEFAULT_KEYS,
    SECURE_BOOT_ENABLE_DISABLE,
};
use crate::efi::{EfiTime, SignatureEntry, SignatureList};
use crate::store::Role;

/// The timestamp of every key variable written: earlier than any later update.
pub const STORE_TIMESTAMP: EfiTime = EfiTime {
    year: 2010,
    month: 1,
    day: 1,
    hour: 0,
    minute: 0,
    second: 0,
};

/// Making the store failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum OvmfError {
    /// The key directory.
    #[error(transparent)]
    Keys(#[from] KeySetError),
    /// The template cannot be read.
    #[error("cannot read template {path}: {cause}")]
    ReadTemplate {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The template is not a variable store, or the result does not fit.
    #[error("{path}: {cause}")]
    Store {
        /// The template.
        path: String,
        /// Why.
        cause: VarStoreError,
    },
    /// Our own reader does not find what we wrote.
    #[error("the written store does not read back as built ({0}); this is a bug in sbkit, nothing was written")]
    ReadBack(String),
    /// The output cannot be written.
    #[error("cannot write {path}: {cause} (nothing was written; check the directory exists and is writable)")]
    Write {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
}

/// What `enroll ovmf` does.
#[derive(Clone, Debug)]
pub struct OvmfOptions {
    /// The template store.
    pub template: PathBuf,
    /// The key directory.
    pub keys: PathBuf,
    /// The store to write.
    pub output: PathBuf,
    /// Leave PK out: the firmware boots in setup mode.
    pub setup_mode: bool,
}

/// One variable written.
#[derive(Clone, Debug, Serialize)]
pub struct WrittenVariable {
    /// Name.
    pub name: String,
    /// Vendor GUID.
    pub vendor: crate::efi::Guid,
    /// Attributes.
    pub attributes: u32,
    /// Value size.
    pub size: usize,
    /// Where the value came from.
    pub source: String,
}

/// What `enroll ovmf` did.
#[derive(Clone, Debug, Serialize)]
pub struct OvmfReport {
    /// The template read.
    pub template: String,
    /// The store written.
    pub output: String,
    /// Whether PK was left out.
    pub setup_mode: bool,
    /// Variables set.
    pub written: Vec<WrittenVariable>,
    /// Variables removed (PK in setup mode).
    pub removed: Vec<String>,
    /// Variables of the template kept as they were.
    pub kept: Vec<String>,
    /// Bytes for variable records in the store.
    pub capacity: usize,
    /// Bytes used after writing.
    pub used: usize,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// Builds the store image from a template image and a key set; pure.
pub fn build_store(
    template: Vec<u8>,
    keys: &KeySet,
    setup_mode: bool,
) -> Result<(Vec<u8>, OvmfReport), VarStoreError> {
    let mut store = VarStore::parse(template)?;
    let mut report = OvmfReport {
        template: String::new(),
        output: String::new(),
        setup_mode,
        written: Vec::new(),
        removed: Vec::new(),
        kept: Vec::new(),
        capacity: store.capacity(),
        used: 0,
        warnings: Vec::new(),
    };
    if setup_mode && store.remove("PK", Role::Pk.vendor()).is_some() {
        report.removed.push("PK".into());
    }
    let key_var = |name: &str, vendor, data: Vec<u8>| {
        let mut v = Variable::new(name, vendor, SECURE_BOOT_VARIABLE, data);
        v.timestamp = STORE_TIMESTAMP.to_bytes();
        v
    };
    let mut set = |store: &mut VarStore, var: Variable, source: String| {
        report.written.push(WrittenVariable {
            name: var.name.clone(),
            vendor: var.vendor,
            attributes: var.attributes,
            size: var.data.len(),
            source,
        });
        store.set(var)
    };
    // db and dbx first, PK last: the order a firmware would need, kept for readers of the report.
    for role in [Role::Dbx, Role::Db, Role::Kek, Role::Pk] {
        if role == Role::Pk && setup_mode {
            continue;
        }
        if let Some(kv) = keys.get(role) {
            let source = crate::store::KeyDir::open(&keys.dir)
                .variable_path(role, "esl")
                .display()
                .to_string();
            set(
                &mut store,
                key_var(role.name(), role.vendor(), kv.value()),
                source,
            )?;
        } else if role == Role::Dbx && store.get("dbx", role.vendor()).is_none() {
            // Without a `dbx.esl` a template's own dbx (revocations) stays.
            let placeholder = SignatureList::sha256(vec![SignatureEntry {
                owner: OVMF_ENROLL_DEFAULT_KEYS,
                data: sha2_empty(),
            }]);
            let data = placeholder.to_bytes().unwrap_or_default();
            set(
                &mut store,
                key_var("dbx", role.vendor(), data),
                "placeholder: SHA-256 of nothing, as OVMF's EnrollDefaultKeys writes".into(),
            )?;
        }
    }
    let flag = |name: &str, vendor, on: bool| {
        Variable::new(
            name,
            vendor,
            NON_VOLATILE | BOOTSERVICE_ACCESS,
            vec![u8::from(on)],
        )
    };
    set(
        &mut store,
        flag("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE, true),
        "Secure Boot on (edk2)".into(),
    )?;
    set(
        &mut store,
        flag("CustomMode", CUSTOM_MODE_ENABLE, false),
        "standard mode (edk2)".into(),
    )?;
    let written: Vec<String> = report.written.iter().map(|w| w.name.clone()).collect();
    report.kept = store
        .variables()
        .iter()
        .filter(|v| !written.contains(&v.name))
        .map(|v| v.name.clone())
        .collect();
    let image = store.to_bytes()?;
    report.used = store.used();
    // The firmware needs room of its own (boot entries, its counters) after this.
    let free = report.capacity - report.used;
    if free < 16 * 1024 {
        report.warnings.push(format!(
            "only {free} bytes of the variable store remain free; the firmware needs room for its own variables"
        ));
    }
    Ok((image, report))
}

fn sha2_empty() -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b"").to_vec()
}

/// Checks that `image` reads back with exactly the variables of the report.
fn verify_read_back(image: &[u8], keys: &KeySet, setup_mode: bool) -> Result<(), String> {
    let store = VarStore::parse(image.to_vec()).map_err(|e| e.to_string())?;
    for role in Role::ALL {
        let Some(kv) = keys.get(role) else { continue };
        let stored = store.get(role.name(), role.vendor());
        if role == Role::Pk && setup_mode {
            if stored.is_some() {
                return Err("PK is present in a setup-mode store".into());
            }
            continue;
        }
        match stored {
            Some(v) if v.data == kv.value() && v.attributes == SECURE_BOOT_VARIABLE => {}
            Some(_) => return Err(format!("{} differs from the key directory", role.name())),
            None => return Err(format!("{} is missing", role.name())),
        }
    }
    if store
        .get("dbx", Role::Dbx.vendor())
        .is_some_and(|v| crate::efi::SignatureDatabase::parse(&v.data).is_err())
    {
        return Err("dbx is not a signature list".into());
    }
    Ok(())
}

/// Writes `bytes` to `path` with the store's one atomic writer (temporary
/// file, fsync, rename, directory fsync).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use crate::store::write::{write_file, Access, FileWriteError};
    write_file(path, bytes, Access::Public).map_err(|e| match e {
        FileWriteError::Io { cause: source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}

/// Runs `enroll ovmf`.
pub fn run(opts: &OvmfOptions) -> Result<OvmfReport, OvmfError> {
    let keys = KeySet::load(&opts.keys, Need::Esl)?;
    let template_path = opts.template.display().to_string();
    let template = std::fs::read(&opts.template).map_err(|source| OvmfError::ReadTemplate {
        path: template_path.clone(),
        cause: source,
    })?;
    let (image, mut report) =
        build_store(template, &keys, opts.setup_mode).map_err(|source| OvmfError::Store {
            path: template_path.clone(),
            cause: source,
        })?;
    verify_read_back(&image, &keys, opts.setup_mode).map_err(OvmfError::ReadBack)?;
    write_atomically(&opts.output, &image).map_err(|source| OvmfError::Write {
        path: opts.output.display().to_string(),
        cause: source,
    })?;
    report.template = template_path;
    report.output = opts.output.display().to_string();
    Ok(report)
}

/// The human-readable report.
pub fn render(r: &OvmfReport) -> String {
    let mut out = format!(
        "wrote {} from {}{}\n",
        r.output,
        r.template,
        if r.setup_mode {
            " (setup mode: no PK)"
        } else {
            " (Secure Boot on, user mode)"
        }
    );
    for w in &r.written {
        out.push_str(&format!(
            "  {:16} {:5} bytes  attributes {:#04x}  {}\n",
            w.name, w.size, w.attributes, w.source
        ));
    }
    for name in &r.removed {
        out.push_str(&format!("  {name:16} removed\n"));
    }
    if !r.kept.is_empty() {
        out.push_str(&format!(
            "  kept from the template: {}\n",
            r.kept.join(", ")
        ));
    }
    out.push_str(&format!(
        "  store: {} of {} bytes used\n",
        r.used, r.capacity
    ));
    out
}
