//! `enroll pcr7`: what PCR 7 will be on the next boot, and whether a planned
//! change of the Secure Boot variables (enrolling a key directory, a db or dbx
//! append) moves it — so volumes sealed to PCR 7 are re-sealed *before* the
//! reboot, not discovered locked after it.
//!
//! The arithmetic is in [`crate::tpm::pcr7`]; this module gathers the inputs
//! (the machine's efivarfs, an OVMF store or a key directory; the boot path's
//! images; the planned change) and says what follows for the user.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::efi::authvar::AuthenticatedVariable;
use crate::efi::varstore::VarStore;
use crate::keys::algorithm::DigestAlgorithm;
use crate::tpm::pcr7::{self, Pcr7Error, Pcr7Plan, SecureBootVariables};

/// Where the variables of the boot come from.
#[derive(Clone, Debug)]
pub enum VariableSource {
    /// A running machine's efivarfs.
    Efivarfs(PathBuf),
    /// An OVMF variable store file (Secure Boot assumed enforced).
    Vars(PathBuf),
    /// A key directory's lists, as `enroll` would put them in firmware.
    Keys(PathBuf),
}

/// A planned change of the variables.
#[derive(Clone, Debug, Default)]
pub struct PlannedChange {
    /// The variables as they will be, from another source (a new store or key directory).
    pub replace_with: Option<VariableSource>,
    /// Signature lists (`.esl`) or append `.auth` files whose entries are appended to db.
    pub append_db: Vec<PathBuf>,
    /// The same for dbx.
    pub append_dbx: Vec<PathBuf>,
}

impl PlannedChange {
    /// Whether anything is planned.
    pub fn is_empty(&self) -> bool {
        self.replace_with.is_none() && self.append_db.is_empty() && self.append_dbx.is_empty()
    }
}

/// What `enroll pcr7` is asked.
#[derive(Clone, Debug)]
pub struct Pcr7Options {
    /// The variables now.
    pub source: VariableSource,
    /// The images the firmware loads, in order (e.g. systemd-boot, then the UKI).
    pub images: Vec<PathBuf>,
    /// The change to predict.
    pub change: PlannedChange,
}

/// Why `enroll pcr7` could not predict.
#[derive(Debug, thiserror::Error)]
pub enum Pcr7CommandError {
    /// The prediction itself failed.
    #[error(transparent)]
    Predict(#[from] Pcr7Error),
    /// An input could not be read.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The report: PCR 7 now and after the change, and what the user must do.
#[derive(Clone, Debug, Serialize)]
pub struct Pcr7Report {
    /// Where the variables came from.
    pub source: String,
    /// The images of the boot path.
    pub images: Vec<String>,
    /// The prediction.
    #[serde(flatten)]
    pub plan: Pcr7Plan,
    /// Whether the planned change moves PCR 7.
    pub changes: bool,
    /// Warnings (images nobody authorises, predictions without images).
    pub warnings: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, Pcr7CommandError> {
    std::fs::read(path).map_err(|e| Pcr7CommandError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn load(source: &VariableSource) -> Result<SecureBootVariables, Pcr7CommandError> {
    Ok(match source {
        VariableSource::Efivarfs(dir) => SecureBootVariables::from_efivarfs(dir)?,
        VariableSource::Keys(dir) => SecureBootVariables::from_key_dir(dir)?,
        VariableSource::Vars(file) => {
            let store = VarStore::parse(read(file)?).map_err(|e| Pcr7CommandError::Read {
                path: file.display().to_string(),
                reason: format!("not an OVMF variable store: {e}"),
            })?;
            SecureBootVariables::from_varstore(&store, true)
        }
    })
}

fn describe(source: &VariableSource) -> String {
    match source {
        VariableSource::Efivarfs(d) => format!("efivarfs {}", d.display()),
        VariableSource::Vars(f) => format!("OVMF store {}", f.display()),
        VariableSource::Keys(d) => format!("key directory {}", d.display()),
    }
}

/// The signature lists an append file carries: an `.auth` file's data, or the
/// file itself when it is a signature list.
fn appended_lists(path: &Path) -> Result<Vec<u8>, Pcr7CommandError> {
    let bytes = read(path)?;
    if AuthenticatedVariable::looks_like(&bytes) {
        return AuthenticatedVariable::parse(&bytes)
            .map(|a| a.data)
            .map_err(|e| Pcr7CommandError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            });
    }
    Ok(bytes)
}

/// Predicts PCR 7 now and after the planned change.
pub fn run(opts: &Pcr7Options) -> Result<Pcr7Report, Pcr7CommandError> {
    let now = load(&opts.source)?;
    let after = if opts.change.is_empty() {
        None
    } else {
        let mut vars = match &opts.change.replace_with {
            Some(source) => load(source)?,
            None => now.clone(),
        };
        for file in &opts.change.append_db {
            let lists = appended_lists(file)?;
            let existing = vars.db.clone().unwrap_or_default();
            vars.db = Some(pcr7::append_signature_lists("db", &existing, &lists)?);
        }
        for file in &opts.change.append_dbx {
            let lists = appended_lists(file)?;
            let existing = vars.dbx.clone().unwrap_or_default();
            vars.dbx = Some(pcr7::append_signature_lists("dbx", &existing, &lists)?);
        }
        Some(vars)
    };
    let images = opts
        .images
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect::<Result<Vec<_>, Pcr7CommandError>>()?;
    let plan = pcr7::plan(&now, after.as_ref(), &images)?;
    let mut warnings = Vec::new();
    if images.is_empty() {
        warnings.push(
            "no --image given: the prediction holds only up to the separator; the db entries \
             that authorise the boot path are measured too, so name its images (systemd-boot, \
             the UKI) in load order"
                .to_string(),
        );
    }
    for name in &plan.unauthorised {
        warnings.push(format!(
            "no db certificate authorises {name}: with Secure Boot enforced the firmware refuses it"
        ));
    }
    Ok(Pcr7Report {
        source: describe(&opts.source),
        images: opts
            .images
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        changes: plan.changes(),
        plan,
        warnings,
    })
}

/// The report for people.
pub fn render(r: &Pcr7Report) -> String {
    let sha256 = |p: &pcr7::Pcr7Prediction| {
        p.value(DigestAlgorithm::Sha256)
            .unwrap_or_default()
            .to_string()
    };
    let mut out = format!("PCR 7 for a boot with the variables of {}\n", r.source);
    for e in &r.plan.before.events {
        out.push_str(&format!("  {}\n", e.description));
    }
    out.push_str(&format!("  sha256 now:   {}\n", sha256(&r.plan.before)));
    match &r.plan.after {
        None => {}
        Some(after) if !r.changes => {
            out.push_str(&format!("  sha256 after: {} (unchanged)\n", sha256(after)));
            out.push_str(
                "The planned change leaves PCR 7 as it is: volumes sealed to it keep unlocking.\n",
            );
        }
        Some(after) => {
            let value = sha256(after);
            out.push_str(&format!("  sha256 after: {value}\n"));
            out.push_str(&format!(
                "PCR 7 will change: volumes bound to PCR 7 must be re-enrolled before the reboot, e.g.\n  \
                 systemd-cryptenroll --wipe-slot=tpm2 --tpm2-device=auto --tpm2-pcrs=7:sha256={value} DEVICE\n  \
                 (PCR values in --tpm2-pcrs need systemd 255; on older systemd keep a recovery key and \
                 re-enroll after the reboot), or use --pcrlock FILE with systemd-pcrlock.\n"
            ));
        }
    }
    out
}
