//! `enroll status`: the Secure Boot state and the contents of PK, KEK, db and
//! dbx, read from efivarfs (a running machine) or from an OVMF variable store.
//!
//! SetupMode and SecureBoot are volatile variables the firmware computes at
//! boot, so a variable store does not hold them: for a store they are derived
//! the way edk2 does (setup mode without a PK; Secure Boot with a PK and
//! `SecureBootEnable` on, outside custom mode) and marked as derived.

use std::path::Path;

use serde::Serialize;

use super::efivarfs::{Efivarfs, EfivarfsError};
use super::keyset::{summarize, EntrySummary};
use crate::efi::guid::EFI_GLOBAL_VARIABLE;
use crate::efi::varstore::{
    VarStore, VarStoreError, CUSTOM_MODE_ENABLE, SECURE_BOOT_ENABLE_DISABLE,
};
use crate::efi::SignatureDatabase;
use crate::store::Role;

/// Reading the state failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// efivarfs.
    #[error(transparent)]
    Efivarfs(#[from] EfivarfsError),
    /// The variable store file cannot be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not a variable store.
    #[error("{path}: {cause}")]
    Store {
        /// The file.
        path: String,
        /// Why.
        cause: VarStoreError,
    },
}

/// One Secure Boot variable.
#[derive(Clone, Debug, Serialize)]
pub struct VariableStatus {
    /// `PK`, `KEK`, `db`, `dbx`.
    pub name: String,
    /// Whether the variable exists.
    pub present: bool,
    /// Its attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<u32>,
    /// Its authenticated-write timestamp (variable stores only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Size of the value in bytes.
    pub size: usize,
    /// The entries of its signature lists.
    pub entries: Vec<EntrySummary>,
    /// Why the value is not a signature database, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Free space of a variable store.
#[derive(Clone, Debug, Serialize)]
pub struct StoreSpace {
    /// Bytes for variable records.
    pub capacity: usize,
    /// Bytes the records take.
    pub used: usize,
}

/// The Secure Boot state of a machine or a variable store.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// `efivarfs` or `ovmf-vars`.
    pub source: &'static str,
    /// The directory or file read.
    pub path: String,
    /// Whether the firmware is (or will boot) in setup mode.
    pub setup_mode: Option<bool>,
    /// Whether Secure Boot is (or will be) enforced.
    pub secure_boot: Option<bool>,
    /// True when SetupMode and SecureBoot are derived from a store, not read.
    pub derived: bool,
    /// AuditMode (UEFI 2.5+), when the firmware has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_mode: Option<bool>,
    /// DeployedMode (UEFI 2.5+), when the firmware has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed_mode: Option<bool>,
    /// edk2's SecureBootEnable, when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot_enable: Option<bool>,
    /// edk2's CustomMode, when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_mode: Option<bool>,
    /// PK, KEK, db, dbx.
    pub variables: Vec<VariableStatus>,
    /// Space in the variable store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSpace>,
}

fn variable_status(
    role: Role,
    found: Option<(u32, Vec<u8>)>,
    timestamp: Option<String>,
) -> VariableStatus {
    let Some((attributes, value)) = found else {
        return VariableStatus {
            name: role.name().into(),
            present: false,
            attributes: None,
            timestamp: None,
            size: 0,
            entries: Vec::new(),
            problem: None,
        };
    };
    let (entries, problem) = match SignatureDatabase::parse(&value) {
        Ok(db) => (summarize(&db), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    VariableStatus {
        name: role.name().into(),
        present: true,
        attributes: Some(attributes),
        timestamp,
        size: value.len(),
        entries,
        problem,
    }
}

/// Reads the state from an efivarfs directory.
pub fn from_efivarfs(dir: &Path) -> Result<Status, StatusError> {
    let fs = Efivarfs::open(dir)?;
    let setup_mode = fs.read_flag("SetupMode")?;
    // An empty directory is not efivarfs; a firmware without Secure Boot still lists other variables.
    let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if setup_mode.is_none() && empty {
        return Err(EfivarfsError::NoSetupMode(dir.display().to_string()).into());
    }
    let mut variables = Vec::new();
    for role in Role::ALL {
        variables.push(variable_status(
            role,
            fs.read(role.name(), role.vendor())?,
            None,
        ));
    }
    let flag = |name: &str, vendor| -> Result<Option<bool>, StatusError> {
        Ok(fs
            .read(name, vendor)?
            .and_then(|(_, v)| v.first().map(|b| *b == 1)))
    };
    Ok(Status {
        source: "efivarfs",
        path: dir.display().to_string(),
        setup_mode,
        secure_boot: fs.read_flag("SecureBoot")?,
        derived: false,
        audit_mode: fs.read_flag("AuditMode")?,
        deployed_mode: fs.read_flag("DeployedMode")?,
        secure_boot_enable: flag("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE)?,
        custom_mode: flag("CustomMode", CUSTOM_MODE_ENABLE)?,
        variables,
        store: None,
    })
}

/// Reads the state from a parsed variable store.
pub fn from_store(store: &VarStore, path: &str) -> Status {
    let mut variables = Vec::new();
    for role in Role::ALL {
        let var = store.get(role.name(), role.vendor());
        variables.push(variable_status(
            role,
            var.map(|v| (v.attributes, v.data.clone())),
            var.and_then(|v| v.time()).map(|t| t.to_string()),
        ));
    }
    let flag = |name: &str, vendor| {
        store
            .get(name, vendor)
            .and_then(|v| v.data.first().map(|b| *b == 1))
    };
    let pk = store
        .get("PK", EFI_GLOBAL_VARIABLE)
        .is_some_and(|v| !v.data.is_empty());
    let secure_boot_enable = flag("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE);
    let custom_mode = flag("CustomMode", CUSTOM_MODE_ENABLE);
    Status {
        source: "ovmf-vars",
        path: path.to_string(),
        setup_mode: Some(!pk),
        // edk2 sets SecureBootEnable itself at the first boot with a PK when it is absent.
        secure_boot: Some(pk && secure_boot_enable.unwrap_or(true) && custom_mode != Some(true)),
        derived: true,
        audit_mode: None,
        deployed_mode: None,
        secure_boot_enable,
        custom_mode,
        variables,
        store: Some(StoreSpace {
            capacity: store.capacity(),
            used: store.used(),
        }),
    }
}

/// Reads the state from an OVMF variable store file.
pub fn from_vars_file(path: &Path) -> Result<Status, StatusError> {
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| StatusError::Read {
        path: display.clone(),
        cause: source,
    })?;
    let store = VarStore::parse(bytes).map_err(|source| StatusError::Store {
        path: display.clone(),
        cause: source,
    })?;
    Ok(from_store(&store, &display))
}

/// The human-readable report.
pub fn render(s: &Status) -> String {
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let mut out = String::new();
    let note = if s.derived {
        " (at next boot, derived from the stored variables)"
    } else {
        ""
    };
    out.push_str(&format!("source:      {} {}\n", s.source, s.path));
    out.push_str(&format!("setup mode:  {}{note}\n", yes_no(s.setup_mode)));
    out.push_str(&format!("secure boot: {}{note}\n", yes_no(s.secure_boot)));
    for (label, value) in [
        ("audit mode", s.audit_mode),
        ("deployed mode", s.deployed_mode),
        ("SecureBootEnable", s.secure_boot_enable),
        ("CustomMode", s.custom_mode),
    ] {
        if value.is_some() {
            out.push_str(&format!("{label}: {}\n", yes_no(value)));
        }
    }
    if let Some(space) = &s.store {
        out.push_str(&format!(
            "store:       {} of {} bytes used\n",
            space.used, space.capacity
        ));
    }
    for v in &s.variables {
        if !v.present {
            out.push_str(&format!("{}: absent\n", v.name));
            continue;
        }
        let attrs = v
            .attributes
            .map_or(String::new(), |a| format!(", attributes {a:#x}"));
        let time = v
            .timestamp
            .as_ref()
            .map_or(String::new(), |t| format!(", time {t}"));
        out.push_str(&format!(
            "{}: {} entries, {} bytes{attrs}{time}\n",
            v.name,
            v.entries.len(),
            v.size
        ));
        if let Some(p) = &v.problem {
            out.push_str(&format!("  not a signature list: {p}\n"));
        }
        for e in &v.entries {
            let what = match (&e.subject, &e.vendor_cert) {
                (Some(s), Some(vendor)) => format!("{s} [{vendor}]"),
                (Some(s), None) => s.clone(),
                _ => e.sha256.clone(),
            };
            out.push_str(&format!("  {:6} owner {}  {what}\n", e.kind, e.owner));
        }
    }
    out
}
