//! The one way sbkit writes a file that must never be seen half-written:
//! contents go to a temporary name in the target's directory (same file
//! system), are fsynced, take the final name by `rename` (replace) or
//! `link` (never replace), and the directory is fsynced so the name itself
//! survives a crash. Secrets are created 0600 from the first byte (the mode
//! is given to `open`, not set afterwards), and their temporary file is
//! removed on every error path.
//!
//! [`super::atomic::WriteSet`] builds multi-file transactions on the same
//! primitives ([`write_synced`], [`sync_dir`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who may read a file that is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only the owner (0600): private keys, backups, anything secret.
    Secret,
    /// Everyone may read (0644): certificates, lists, images.
    Public,
    /// Whatever the file system gives (FAT has no modes; chmod fails there).
    FileSystemDefault,
}

impl Access {
    fn mode(self) -> Option<u32> {
        match self {
            Access::Secret => Some(0o600),
            Access::Public => Some(0o644),
            Access::FileSystemDefault => None,
        }
    }
}

/// A file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FileWriteError {
    /// The file exists and the caller asked never to replace one.
    #[error("{0} exists; nothing was changed. Choose another name or move the old file away")]
    Exists(PathBuf),
    /// An I/O operation failed.
    #[error("{action} {path}: {cause}{hint}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
        /// Advice, possibly empty.
        hint: &'static str,
    },
}

/// What to tell the user after an I/O error of `kind` while writing, if anything.
pub fn io_hint(kind: std::io::ErrorKind) -> &'static str {
    match kind {
        std::io::ErrorKind::PermissionDenied => {
            " (permission denied: choose another output directory or fix its permissions)"
        }
        std::io::ErrorKind::ReadOnlyFilesystem => " (read-only file system)",
        _ => "",
    }
}

/// A closure that turns an I/O error into a [`FileWriteError`] naming `path`.
pub fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FileWriteError + 'a {
    move |source| {
        let hint = io_hint(source.kind());
        FileWriteError::Io {
            action,
            path: path.to_path_buf(),
            cause: source,
            hint,
        }
    }
}

/// Test hook for interruption tests: with `SBKIT_TEST_CRASH_AT=N` in a
/// debug build, the N-th write step of the process aborts it on the spot
/// (no destructors, no cleanup: what a kill or power loss leaves). Release
/// builds compile it to nothing.
pub fn crash_point() {
    #[cfg(debug_assertions)]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static STEPS: AtomicU64 = AtomicU64::new(0);
        if let Some(n) = std::env::var("SBKIT_TEST_CRASH_AT")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            if STEPS.fetch_add(1, Ordering::SeqCst) + 1 == n {
                eprintln!("SBKIT_TEST_CRASH_AT={n}: aborting");
                std::process::abort();
            }
        }
    }
}

/// Creates `path` (which must not exist) with `access`, writes and fsyncs it.
pub fn write_synced(path: &Path, contents: &[u8], access: Access) -> Result<(), FileWriteError> {
    crash_point();
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if let Some(mode) = access.mode() {
        options.mode(mode);
    }
    let mut f = options
        .open(path)
        .map_err(io_error("cannot create", path))?;
    if let Some(mode) = access.mode() {
        // The umask can only narrow the mode; set it explicitly so 0644 stays 0644.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_error("cannot set permissions of", path))?;
    }
    f.write_all(contents)
        .map_err(io_error("cannot write", path))?;
    crash_point();
    f.sync_all().map_err(io_error("cannot sync", path))?;
    Ok(())
}

/// Fsyncs a directory, so renames and links in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileWriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("cannot sync directory", dir))
}

/// Renames within one file system (a crash point for interruption tests).
pub fn rename(from: &Path, to: &Path) -> Result<(), FileWriteError> {
    crash_point();
    fs::rename(from, to).map_err(io_error("cannot install", to))
}

/// Swaps two existing paths in one atomic step (`renameat2` with
/// `RENAME_EXCHANGE`): a reader sees one or the other, never neither.
/// `Ok(false)` when the file system cannot (then the caller falls back to
/// two renames).
pub fn exchange(a: &Path, b: &Path) -> Result<bool, FileWriteError> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    crash_point();
    match renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(io_error("cannot swap in", b)(std::io::Error::from(e))),
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary name next to `path`, unique per process and call.
fn temporary_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(
        ".{name}.sbkit-tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `path` atomically, replacing any file of that name: readers see
/// the old contents or the new, never a mix, even across a crash.
pub fn write_file(path: &Path, contents: &[u8], access: Access) -> Result<(), FileWriteError> {
    let dir = parent_of(path);
    let tmp = temporary_name(path);
    let result = write_synced(&tmp, contents, access)
        .and_then(|()| rename(&tmp, path))
        .and_then(|()| sync_dir(&dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a new file atomically and never over an existing one: the name
/// is taken with `link`, which fails if it exists, so two runs cannot
/// overwrite each other's file. The parent directories are created.
pub fn write_new_file(path: &Path, contents: &[u8], access: Access) -> Result<(), FileWriteError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(FileWriteError::Exists(path.to_path_buf()));
    }
    let dir = parent_of(path);
    fs::create_dir_all(&dir).map_err(io_error("cannot create directory", &dir))?;
    let tmp = temporary_name(path);
    let result = write_synced(&tmp, contents, access)
        .and_then(|()| {
            crash_point();
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    FileWriteError::Exists(path.to_path_buf())
                } else {
                    io_error("cannot create", path)(e)
                }
            })
        })
        .and_then(|()| {
            fs::remove_file(&tmp).map_err(io_error("cannot remove", &tmp))?;
            sync_dir(&dir)
        });
    let _ = fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_atomically_with_the_mode_asked_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vars.fd");
        write_file(&p, b"one", Access::Public).unwrap();
        write_file(&p, b"two", Access::Secret).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_new_file_never_replaces_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/backup.age");
        write_new_file(&p, b"one", Access::Secret).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert!(matches!(
            write_new_file(&p, b"two", Access::Secret),
            Err(FileWriteError::Exists(_))
        ));
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        // The target is a directory: rename fails after the temporary was written.
        let p = d.path().join("taken");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("x"), b"x").unwrap();
        assert!(write_file(&p, b"data", Access::Secret).is_err());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
