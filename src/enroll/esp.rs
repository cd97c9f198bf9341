//! `enroll esp`: systemd-boot's auto-enroll layout on an EFI system partition.
//!
//! systemd-boot (252+) offers to enroll, or enrolls by itself in setup mode,
//! the `.auth` files in `loader/keys/<NAME>/` (`PK.auth`, `KEK.auth`,
//! `db.auth`; newer versions also take `dbx.auth`), as `loader.conf`'s
//! `secure-boot-enroll` says: `manual`, `force`, `off`, and from 253 on
//! `if-safe`.
//!
//! The key set is written whole into `loader/keys/.NAME.sbkit-new/` and
//! swapped with `loader/keys/NAME/` in one atomic `renameat2(RENAME_EXCHANGE)`
//! (Linux 6.0+ vfat, ext4, tmpfs…; elsewhere two renames, with a moment of
//! no key set at all), and `loader.conf` is replaced last, atomically. An
//! interruption at any point leaves systemd-boot the old key set or the
//! complete new one — never a mix of old and new `.auth` files — and the
//! next run clears what was left.

use std::fs;
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

/// The staging names of a key set directory `keys/NAME`: the new set being
/// written, and the old set while it is swapped out.
fn swap_names(keys_parent: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        keys_parent.join(format!(".{name}.sbkit-new")),
        keys_parent.join(format!(".{name}.sbkit-old")),
    )
}

/// Finishes what an interrupted run left in `loader/keys/`: an old set
/// swapped out but not replaced goes back; staging leftovers go.
fn recover_swap(keys_parent: &Path, name: &str) -> Result<(), EspError> {
    let (new, old) = swap_names(keys_parent, name);
    let current = keys_parent.join(name);
    if old.is_dir() {
        if current.exists() {
            fs::remove_dir_all(&old).map_err(io_err("cannot remove", &old))?;
        } else {
            fs::rename(&old, &current).map_err(io_err("cannot restore", &current))?;
        }
    }
    if new.exists() {
        fs::remove_dir_all(&new).map_err(io_err("cannot remove", &new))?;
    }
    Ok(())
}

/// Writes the new key set into its staging directory: our `.auth` files,
/// plus any other file the old set's directory holds (not ours to drop).
fn stage_key_set(
    esp: &Path,
    staging: &Path,
    current: &Path,
    files: &[(String, &[u8])],
) -> Result<(), EspError> {
    use crate::store::write::{write_synced, Access, FileWriteError};
    let not_writable = |path: &Path, cause| EspError::NotWritable {
        esp: esp.display().to_string(),
        path: path.display().to_string(),
        cause,
    };
    let from_write = |e: FileWriteError| match e {
        FileWriteError::Io {
            path,
            cause: source,
            ..
        } => not_writable(&path, source),
        FileWriteError::Exists(path) => not_writable(
            &path,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ),
    };
    fs::create_dir(staging).map_err(|e| not_writable(staging, e))?;
    for (name, bytes) in files {
        write_synced(&staging.join(name), bytes, Access::FileSystemDefault).map_err(from_write)?;
    }
    if let Ok(entries) = fs::read_dir(current) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let ours = ["PK.auth", "KEK.auth", "db.auth", "dbx.auth"]
                .iter()
                .any(|f| file_name == *f);
            if ours || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let bytes = fs::read(entry.path()).map_err(io_err("cannot read", &entry.path()))?;
            write_synced(&staging.join(&file_name), &bytes, Access::FileSystemDefault)
                .map_err(from_write)?;
        }
    }
    // Directory syncs make the names durable; FAT may not support them, which is harmless.
    let _ = crate::store::write::sync_dir(staging);
    Ok(())
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
    let keys_parent = loader_dir.join("keys");
    let keys_dir = keys_parent.join(name);
    let mut created = Vec::new();
    for dir in [&loader_dir, &keys_parent] {
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
    recover_swap(&keys_parent, name)?;
    let (staging, swapped_out) = swap_names(&keys_parent, name);

    let rel_keys = format!("loader/keys/{name}");
    let auth_files: Vec<(String, &[u8])> = keys
        .vars
        .iter()
        .filter_map(|v| v.auth.as_deref().map(|a| (v.role.file("auth"), a)))
        .collect();
    let conf_tmp = loader_dir.join(".loader.conf.sbkit-tmp");
    let staged = stage_key_set(&opts.esp, &staging, &keys_dir, &auth_files).and_then(|()| {
        let _ = fs::remove_file(&conf_tmp);
        crate::store::write::write_synced(
            &conf_tmp,
            new_conf.as_bytes(),
            crate::store::write::Access::FileSystemDefault,
        )
        .map_err(|e| EspError::NotWritable {
            esp: opts.esp.display().to_string(),
            path: conf_tmp.display().to_string(),
            cause: match e {
                crate::store::write::FileWriteError::Io { cause: source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            },
        })
    });
    if let Err(e) = staged {
        let _ = fs::remove_dir_all(&staging);
        let _ = fs::remove_file(&conf_tmp);
        for d in created.iter().rev() {
            let _ = fs::remove_dir(d);
        }
        return Err(e);
    }

    // Commit: the key set swapped in whole, loader.conf (which may turn enrollment on) last.
    let mut removed = Vec::new();
    if keys.get(Role::Dbx).is_none() && keys_dir.join(Role::Dbx.file("auth")).exists() {
        removed.push(format!("{rel_keys}/dbx.auth"));
    }
    let swap = |from: &Path, to: &Path| -> Result<(), EspError> {
        crate::store::write::rename(from, to).map_err(|e| match e {
            crate::store::write::FileWriteError::Io { cause: source, .. } => {
                io_err("cannot install", to)(source)
            }
            other => io_err("cannot install", to)(std::io::Error::other(other.to_string())),
        })
    };
    let exchanged = keys_dir.exists()
        && crate::store::write::exchange(&staging, &keys_dir).map_err(|e| match e {
            crate::store::write::FileWriteError::Io { cause: source, .. } => {
                io_err("cannot install", &keys_dir)(source)
            }
            other => io_err("cannot install", &keys_dir)(std::io::Error::other(other.to_string())),
        })?;
    if exchanged {
        // The old set is now under the staging name.
        swap(&staging, &swapped_out)?;
    } else {
        if keys_dir.exists() {
            swap(&keys_dir, &swapped_out)?;
        }
        swap(&staging, &keys_dir)?;
    }
    let _ = crate::store::write::sync_dir(&keys_parent);
    if swapped_out.exists() {
        crate::store::write::crash_point();
        fs::remove_dir_all(&swapped_out).map_err(io_err("cannot remove", &swapped_out))?;
    }
    swap(&conf_tmp, &conf_path)?;
    let _ = crate::store::write::sync_dir(&loader_dir);
    let files: Vec<String> = auth_files
        .iter()
        .map(|(f, _)| format!("{rel_keys}/{f}"))
        .chain(std::iter::once("loader/loader.conf".to_string()))
        .collect();
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
