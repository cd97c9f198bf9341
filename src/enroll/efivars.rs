//! `enroll efivars`: enroll the keys of a machine in setup mode through efivarfs.
//!
//! Before anything is written: the machine must be in setup mode, efivarfs
//! writable, the key directory complete with every `.auth` signed by the key
//! that will authorise it, and the option-ROM guard satisfied. Then dbx (when
//! the key directory has it), db, KEK and finally PK are written, each `.auth`
//! in one write(2) behind the attribute word 0x27. PK goes last because it
//! ends setup mode: until then nothing is enforced, so a failure midway leaves
//! a machine that still boots anything, and running the command again redoes
//! every write (each replaces its variable whole).

use std::path::PathBuf;

use serde::Serialize;

use super::efivarfs::{Efivarfs, EfivarfsError};
use super::keyset::{summarize, KeySet, KeySetError, Need};
use super::optionrom::{self, OptionRomCheck};
use crate::efi::authvar::SECURE_BOOT_VARIABLE;
use crate::store::Role;

/// Order of the writes: revocations first, PK (which ends setup mode) last.
pub const WRITE_ORDER: [Role; 4] = [Role::Dbx, Role::Db, Role::Kek, Role::Pk];

/// The command refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EfivarsError {
    /// The key directory.
    #[error(transparent)]
    Keys(#[from] KeySetError),
    /// efivarfs is unusable.
    #[error(transparent)]
    Efivarfs(#[from] EfivarfsError),
    /// Not in setup mode.
    #[error("the firmware is not in setup mode (SetupMode is {setup_mode}): a PK is enrolled, so it would refuse our PK, KEK and db. Nothing was written. Enter the firmware setup and clear the Secure Boot keys (\"Reset to Setup Mode\" / \"Delete all keys\"), then run this again")]
    NotSetupMode {
        /// What SetupMode read.
        setup_mode: String,
    },
    /// The option-ROM guard refused.
    #[error("refusing to enroll, nothing was written: {0}")]
    OptionRoms(String),
    /// A write failed after others succeeded.
    #[error("{message}")]
    Partial {
        /// The full explanation.
        message: String,
        /// Variables written.
        written: Vec<String>,
        /// The variable whose write failed.
        failed: String,
        /// The underlying error.
        cause: EfivarfsError,
    },
}

/// What `enroll efivars` does.
#[derive(Clone, Debug)]
pub struct EfivarsOptions {
    /// The key directory.
    pub keys: PathBuf,
    /// The efivarfs directory.
    pub efivarfs: PathBuf,
    /// The TPM event log.
    pub eventlog: PathBuf,
    /// Check and show, write nothing.
    pub dry_run: bool,
    /// Enroll even when the option-ROM guard refuses.
    pub ignore_option_roms: bool,
}

/// One planned write.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedWrite {
    /// The variable.
    pub variable: String,
    /// The efivarfs file.
    pub file: String,
    /// The attribute word written before the `.auth` bytes.
    pub attributes: u32,
    /// Bytes written (4 + the `.auth` file).
    pub bytes: usize,
    /// The `.auth` timestamp.
    pub timestamp: String,
    /// Which key signed it.
    pub signed_by: String,
    /// What the variable will hold.
    pub entries: Vec<super::keyset::EntrySummary>,
}

/// What `enroll efivars` did or would do.
#[derive(Clone, Debug, Serialize)]
pub struct EfivarsReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The efivarfs directory.
    pub efivarfs: String,
    /// Whether it is a real efivarfs mount.
    pub is_efivarfs: bool,
    /// The writes, in order.
    pub plan: Vec<PlannedWrite>,
    /// The option-ROM guard's findings.
    pub option_roms: OptionRomCheck,
    /// Whether the guard was overridden.
    pub option_rom_guard_overridden: bool,
    /// Variables written.
    pub written: Vec<String>,
    /// SetupMode read back after the writes (real efivarfs only).
    pub setup_mode_after: Option<bool>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// Runs `enroll efivars`.
pub fn run(opts: &EfivarsOptions) -> Result<EfivarsReport, EfivarsError> {
    let fs = Efivarfs::open(&opts.efivarfs)?;
    let setup_mode = fs
        .read("SetupMode", crate::efi::guid::EFI_GLOBAL_VARIABLE)?
        .ok_or_else(|| EfivarfsError::NoSetupMode(opts.efivarfs.display().to_string()))?;
    let keys = KeySet::load(&opts.keys, Need::Auth)?;
    let mut warnings = Vec::new();
    if !fs.is_efivarfs() {
        warnings.push(format!(
            "{} is not an efivarfs mount: writing ordinary files (a test or a dry run?)",
            opts.efivarfs.display()
        ));
    }

    let mut plan = Vec::new();
    for role in WRITE_ORDER {
        let Some(var) = keys.get(role) else { continue };
        let Some(auth) = &var.auth else { continue };
        plan.push(PlannedWrite {
            variable: role.name().into(),
            file: fs.path(role.name(), role.vendor()).display().to_string(),
            attributes: SECURE_BOOT_VARIABLE,
            bytes: 4 + auth.len(),
            timestamp: var.timestamp.map(|t| t.to_string()).unwrap_or_default(),
            signed_by: role.signed_by().name().into(),
            entries: summarize(&var.list),
        });
    }
    let db = keys
        .get(Role::Db)
        .map(|v| v.list.clone())
        .unwrap_or_default();
    let option_roms = optionrom::check(&db, &opts.eventlog);
    let mut report = EfivarsReport {
        dry_run: opts.dry_run,
        efivarfs: opts.efivarfs.display().to_string(),
        is_efivarfs: fs.is_efivarfs(),
        plan,
        option_roms,
        option_rom_guard_overridden: false,
        written: Vec::new(),
        setup_mode_after: None,
        warnings,
    };

    // The refusals, in the order a user can fix them.
    if setup_mode.1.first() != Some(&1) {
        return Err(EfivarsError::NotSetupMode {
            setup_mode: hex::encode(&setup_mode.1),
        });
    }
    if fs.is_read_only() {
        return Err(EfivarfsError::ReadOnly(opts.efivarfs.display().to_string()).into());
    }
    if !report.option_roms.verdict.is_safe() {
        if !opts.ignore_option_roms {
            return Err(EfivarsError::OptionRoms(report.option_roms.explain()));
        }
        report.option_rom_guard_overridden = true;
        report.warnings.push(format!(
            "option-ROM guard overridden (--yes-this-might-brick-my-machine): {}",
            report.option_roms.explain()
        ));
    }
    if opts.dry_run {
        return Ok(report);
    }

    for role in WRITE_ORDER {
        let Some(var) = keys.get(role) else { continue };
        let Some(auth) = &var.auth else { continue };
        let outcome = fs.write(role.name(), role.vendor(), SECURE_BOOT_VARIABLE, auth);
        // On real efivarfs, read the variable back: the firmware's value must be our list.
        let outcome = outcome.and_then(|()| {
            if !fs.is_efivarfs() {
                return Ok(());
            }
            match fs.read(role.name(), role.vendor())? {
                Some((_, value)) if value == var.value() => Ok(()),
                _ => Err(EfivarfsError::Write {
                    path: fs.path(role.name(), role.vendor()).display().to_string(),
                    cause: std::io::Error::other(
                        "the firmware reports a different value after the write",
                    ),
                    hint: "",
                }),
            }
        });
        if let Err(cause) = outcome {
            // What the firmware says now decides the advice: PK may have gone in.
            let setup_mode_now = fs.read_flag("SetupMode").ok().flatten();
            return Err(partial_failure(
                &report.written,
                role,
                &keys,
                setup_mode_now,
                cause,
            ));
        }
        report.written.push(role.name().into());
    }
    if fs.is_efivarfs() {
        report.setup_mode_after = fs.read_flag("SetupMode")?;
    }
    Ok(report)
}

/// The error for a write that failed after `written`: the machine's state and what to do.
fn partial_failure(
    written: &[String],
    failed: Role,
    keys: &KeySet,
    setup_mode_now: Option<bool>,
    cause: EfivarfsError,
) -> EfivarsError {
    let not_attempted: Vec<String> = WRITE_ORDER
        .iter()
        .skip_while(|r| **r != failed)
        .skip(1)
        .filter(|r| keys.get(**r).is_some())
        .map(|r| r.name().to_string())
        .collect();
    let state = if written.is_empty() {
        "nothing was written".to_string()
    } else {
        format!("written: {}", written.join(", "))
    };
    let rest = if not_attempted.is_empty() {
        String::new()
    } else {
        format!("; not attempted: {}", not_attempted.join(", "))
    };
    let failed_name = failed.name();
    let message = if setup_mode_now == Some(false) {
        format!(
            "writing {failed_name} failed: {cause}\nState of the machine: {state}; the firmware \
reports it has LEFT setup mode, so a PK is enrolled and the key variables can now only be \
changed with signed updates. Run `enroll status` to see what PK, KEK and db hold. If they are \
not what the key directory has, clear the Secure Boot keys in the firmware setup (back to \
setup mode) and run `enroll efivars` again."
        )
    } else {
        format!(
            "writing {failed_name} failed: {cause}\nState of the machine: {state}; \
{failed_name} NOT written{rest}. PK is not enrolled, so the firmware is still in setup mode \
and enforces nothing: it boots as before. Fix the cause and run `enroll efivars` again; \
every write replaces its variable whole, so repeating the written ones is harmless. (A \
refused create can leave an empty {failed_name} file in efivarfs until the next boot or a \
remount; it is not a variable.)"
        )
    };
    EfivarsError::Partial {
        message,
        written: written.to_vec(),
        failed: failed.name().into(),
        cause,
    }
}

/// The human-readable report.
pub fn render(r: &EfivarsReport) -> String {
    let mut out = String::new();
    out.push_str(if r.dry_run {
        "dry run: would write, in this order:\n"
    } else {
        "enrolled, in this order:\n"
    });
    for w in &r.plan {
        out.push_str(&format!(
            "  {:4} -> {} ({} bytes, attributes {:#04x}, time {}, signed by {})\n",
            w.variable, w.file, w.bytes, w.attributes, w.timestamp, w.signed_by
        ));
        for e in &w.entries {
            let what = e.subject.clone().unwrap_or_else(|| e.sha256.clone());
            out.push_str(&format!("         {} {what}\n", e.kind));
        }
    }
    out.push_str(&r.option_roms.explain());
    out.push('\n');
    if !r.dry_run {
        match r.setup_mode_after {
            Some(true) => out.push_str(
                "warning: the firmware still reports setup mode after PK was written\n",
            ),
            _ => out.push_str(
                "PK is enrolled: the firmware has left setup mode; Secure Boot is enforced from the next boot (if enabled in the firmware setup)\n",
            ),
        }
    }
    out
}
