//! `enroll esp`: systemd-boot's auto-enroll layout on an EFI system partition.
//!
//! systemd-boot (252+) offers to enroll, or enrolls by itself in setup mode,
//! the `.auth` files in `loader/keys/<NAME>/` (`PK.auth`, `KEK.auth`,
//! `db.auth`; newer versions also take `dbx.auth`), as `loader.conf`'s
//! `secure-boot-enroll` says: `manual`, `force`, `off`, and from 253 on
//! `if-safe`. The files are staged next to their targets and renamed into
//! place only when all of them are written, `loader.conf` last, so a failure
//! leaves the ESP as it was.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::keyset::{KeySet, KeySetError, Need};
use crate::media::loader::{choose_enroll, sdboot_version, SecureBootEnroll};
use crate::store::Role;

/// The name systemd-boot enrolls without asking (`force`, `if-safe`).
pub const DEFAULT_NAME: &str = "auto";

/// Writing the ESP failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    /// The key directory.
    #[error(transparent)]
    Keys(#[from] KeySetError),
    /// The ESP directory is not there.
    #[error("{0} is not a directory: give the mount point of the EFI system partition (e.g. /boot/efi or /efi)")]
    NoEsp(String),
    /// A bad key set name.
    #[error("--name {0:?} cannot be a directory name under loader/keys/ (no '/', not empty, not . or ..)")]
    BadName(String),
    /// if-safe on a systemd-boot that does not know it.
    #[error("secure-boot-enroll if-safe needs systemd-boot 253 or newer; {path} is systemd-boot {version}: use manual or force, or update systemd-boot")]
    IfSafeUnsupported {
        /// The systemd-boot found.
        path: String,
        /// Its version.
        version: String,
    },
    /// The ESP does not take new files; nothing was changed.
    #[error("the ESP {esp} is not writable: cannot create {path} ({cause}); mount the ESP read-write and run as root. Nothing on the ESP was changed")]
    NotWritable {
        /// The ESP.
        esp: String,
        /// What could not be created.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// An I/O step failed.
    #[error("{action} {path}: {cause}{hint}")]
    Io {
        /// What was done.
        action: &'static str,
        /// Where.
        path: String,
        /// Why.
        cause: std::io::Error,
        /// Advice.
        hint: &'static str,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EspError + 'a {
    move |source| {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (permission denied: is the ESP mounted read-write, and are you root?)"
            }
            std::io::ErrorKind::ReadOnlyFilesystem => {
                " (read-only file system: remount the ESP read-write)"
            }
            _ => "",
        };
        EspError::Io {
            action,
            path: path.display().to_string(),
            cause: source,
            hint,
        }
    }
}

/// What `enroll esp` does.
#[derive(Clone, Debug)]
pub struct EspOptions {
    /// The ESP mount point (or a directory tree that becomes one).
    pub esp: PathBuf,
    /// The key directory.
    pub keys: PathBuf,
    /// The key set's name under `loader/keys/`.
    pub name: String,
    /// `secure-boot-enroll`; `None` keeps an existing line, else picks what the
    /// ESP's systemd-boot understands (`if-safe` from 253, else `manual`).
    pub enroll: Option<SecureBootEnroll>,
}

/// What `enroll esp` did.
#[derive(Clone, Debug, Serialize)]
pub struct EspReport {
    /// The ESP.
    pub esp: String,
    /// Files written, relative to the ESP.
    pub files: Vec<String>,
    /// Files removed because the key set no longer has them.
    pub removed: Vec<String>,
    /// The `secure-boot-enroll` value in loader.conf.
    pub secure_boot_enroll: SecureBootEnroll,
    /// Whether an existing `secure-boot-enroll` line was kept as it was.
    pub kept_existing_line: bool,
    /// The systemd-boot found on the ESP, and its version.
    pub systemd_boot: Option<String>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// Where systemd-boot lives on an ESP.
const SDBOOT_PLACES: [&str; 3] = [
    "EFI/systemd/systemd-bootx64.efi",
    "EFI/BOOT/BOOTX64.EFI",
    "EFI/BOOT/bootx64.efi",
];

/// The systemd-boot on the ESP: (path, major, full version).
fn find_sdboot(esp: &Path) -> Option<(String, u32, String)> {
    SDBOOT_PLACES.iter().find_map(|rel| {
        let bytes = fs::read(esp.join(rel)).ok()?;
        let (major, full) = sdboot_version(&bytes)?;
        Some((rel.to_string(), major, full))
    })
}

/// `loader.conf` with its `secure-boot-enroll` line set to `value`: the first
/// such line is replaced in place, later ones dropped, other lines kept.
pub fn set_enroll_line(conf: &str, value: SecureBootEnroll) -> String {
    let line = format!("secure-boot-enroll {}", value.word());
    let mut out = Vec::new();
    let mut done = false;
    for l in conf.lines() {
        if l.split_whitespace().next() == Some("secure-boot-enroll") {
            if !done {
                out.push(line.clone());
                done = true;
            }
        } else {
            out.push(l.to_string());
        }
    }
    if !done {
        out.push(line);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The value of an existing `secure-boot-enroll` line.
fn existing_enroll(conf: &str) -> Option<SecureBootEnroll> {
    conf.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("secure-boot-enroll"))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// A file staged next to its target.
struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    rel: String,
}

fn stage(
    esp: &Path,
    dir: &Path,
    name: &str,
    rel: String,
    bytes: &[u8],
) -> Result<Staged, EspError> {
    let tmp = dir.join(format!(".{name}.sbkit-tmp"));
    let target = dir.join(name);
    let not_writable = |cause| EspError::NotWritable {
        esp: esp.display().to_string(),
        path: tmp.display().to_string(),
        cause,
    };
    let mut f = File::create(&tmp).map_err(not_writable)?;
    f.write_all(bytes).map_err(not_writable)?;
    f.sync_all().map_err(not_writable)?;
    Ok(Staged { tmp, target, rel })
}

/// Runs `enroll esp`.
pub fn run(opts: &EspOptions) -> Result<EspReport, EspError> {
    let name = opts.name.as_str();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(EspError::BadName(opts.name.clone()));
    }
    if !opts.esp.is_dir() {
        return Err(EspError::NoEsp(opts.esp.display().to_string()));
    }
    let keys = KeySet::load(&opts.keys, Need::Auth)?;
    let mut warnings = Vec::new();

    let sdboot = find_sdboot(&opts.esp);
    let loader_dir = opts.esp.join("loader");
    let conf_path = loader_dir.join("loader.conf");
    let conf = match fs::read_to_string(&conf_path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err("cannot read", &conf_path)(e)),
    };
    let existing = existing_enroll(&conf);
    let (value, kept) = match (opts.enroll, existing) {
        (Some(SecureBootEnroll::IfSafe), _) => match &sdboot {
            Some((path, major, full)) if *major < 253 => {
                return Err(EspError::IfSafeUnsupported {
                    path: path.clone(),
                    version: full.clone(),
                })
            }
            Some(_) => (SecureBootEnroll::IfSafe, false),
            None => {
                warnings.push("no systemd-boot found on the ESP: if-safe needs systemd-boot 253 or newer; older ones ignore it and fall back to manual".into());
                (SecureBootEnroll::IfSafe, false)
            }
        },
        (Some(v), _) => (v, false),
        (None, Some(v)) => (v, true),
        (None, None) => (
            // Cannot fail without a request: it only refuses a requested if-safe.
            choose_enroll(None, sdboot.as_ref().map(|s| s.1)).unwrap_or(SecureBootEnroll::Manual),
            false,
        ),
    };
    if sdboot.is_none() && !opts.esp.join("EFI").is_dir() {
        warnings.push(format!(
            "{} has no EFI/ directory: is it really the EFI system partition?",
            opts.esp.display()
        ));
    }
    let new_conf = set_enroll_line(&conf, value);

    // Create the directories, remembering which are new so a failure can remove them.
    let keys_dir = loader_dir.join("keys").join(name);
    let mut created = Vec::new();
    for dir in [&loader_dir, &loader_dir.join("keys"), &keys_dir] {
        if !dir.is_dir() {
            if let Err(e) = fs::create_dir(dir) {
                for d in created.iter().rev() {
                    let _ = fs::remove_dir(d);
                }
                return Err(EspError::NotWritable {
                    esp: opts.esp.display().to_string(),
                    path: dir.display().to_string(),
                    cause: e,
                });
            }
            created.push(dir.clone());
        }
    }

    let rel_keys = format!("loader/keys/{name}");
    let mut staged = Vec::new();
    let mut result = Ok(());
    for var in &keys.vars {
        let Some(auth) = &var.auth else { continue };
        let file = var.role.file("auth");
        match stage(
            &opts.esp,
            &keys_dir,
            &file,
            format!("{rel_keys}/{file}"),
            auth,
        ) {
            Ok(s) => staged.push(s),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        match stage(
            &opts.esp,
            &loader_dir,
            "loader.conf",
            "loader/loader.conf".into(),
            new_conf.as_bytes(),
        ) {
            Ok(s) => staged.push(s),
            Err(e) => result = Err(e),
        }
    }
    if let Err(e) = result {
        for s in &staged {
            let _ = fs::remove_file(&s.tmp);
        }
        for d in created.iter().rev() {
            let _ = fs::remove_dir(d);
        }
        return Err(e);
    }

    // Commit: the key files first, loader.conf (which may turn enrollment on) last.
    let mut files = Vec::new();
    for s in &staged {
        fs::rename(&s.tmp, &s.target).map_err(io_err("cannot install", &s.target))?;
        files.push(s.rel.clone());
    }
    let mut removed = Vec::new();
    if keys.get(Role::Dbx).is_none() {
        let stale = keys_dir.join(Role::Dbx.file("auth"));
        if stale.exists() {
            fs::remove_file(&stale).map_err(io_err("cannot remove", &stale))?;
            removed.push(format!("{rel_keys}/dbx.auth"));
        }
    }
    // Directory syncs make the renames durable; FAT may not support them, which is harmless.
    for d in [&keys_dir, &loader_dir] {
        if let Ok(f) = File::open(d) {
            let _ = f.sync_all();
        }
    }
    Ok(EspReport {
        esp: opts.esp.display().to_string(),
        files,
        removed,
        secure_boot_enroll: value,
        kept_existing_line: kept,
        systemd_boot: sdboot.map(|(path, _, full)| format!("{path} (systemd-boot {full})")),
        warnings,
    })
}

/// The human-readable report.
pub fn render(r: &EspReport) -> String {
    let mut out = format!("ESP {}:\n", r.esp);
    for f in &r.files {
        out.push_str(&format!("  wrote {f}\n"));
    }
    for f in &r.removed {
        out.push_str(&format!("  removed {f} (the key set has no dbx)\n"));
    }
    out.push_str(&format!(
        "  secure-boot-enroll {}{}\n",
        r.secure_boot_enroll.word(),
        if r.kept_existing_line {
            " (kept the existing line)"
        } else {
            ""
        }
    ));
    if let Some(s) = &r.systemd_boot {
        out.push_str(&format!("  systemd-boot: {s}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enroll_line_is_replaced_in_place_and_other_lines_kept() {
        let conf = "timeout 3\nsecure-boot-enroll off\neditor no\nsecure-boot-enroll force\n";
        assert_eq!(
            set_enroll_line(conf, SecureBootEnroll::Manual),
            "timeout 3\nsecure-boot-enroll manual\neditor no\n"
        );
        assert_eq!(
            set_enroll_line("", SecureBootEnroll::Force),
            "secure-boot-enroll force\n"
        );
        assert_eq!(existing_enroll(conf), Some(SecureBootEnroll::Off));
        assert_eq!(existing_enroll("timeout 1\n"), None);
    }
}
