//! Writing the workflow's files (the encrypted backup, the certificate):
//! never over an existing file, never half-written.
//!
//! The writing itself is the store's one atomic writer (temporary name,
//! fsync, `link` so an existing name is never replaced, directory fsync).
//! Only ciphertext and public data ever go through here.

use std::fs;
use std::path::{Path, PathBuf};

/// A file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file exists already.
    #[error("{0} exists; nothing was changed. Choose another name or move the old file away (sbkit never overwrites a backup or certificate)")]
    Exists(PathBuf),
    /// I/O failed.
    #[error("{action} {path}: {cause}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        action,
        path: path.to_path_buf(),
        cause: source,
    }
}

/// Fails when `path` exists.
pub fn refuse_existing(path: &Path) -> Result<(), FileError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(FileError::Exists(path.to_path_buf()));
    }
    Ok(())
}

/// Writes a new file with `mode` (0600 or 0644), atomically, refusing to
/// replace one: [`crate::store::write::write_new_file`].
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    use crate::store::write::{write_new_file, Access, FileWriteError};
    let access = if mode & 0o077 == 0 {
        Access::Secret
    } else {
        Access::Public
    };
    write_new_file(path, contents, access).map_err(|e| match e {
        FileWriteError::Exists(p) => FileError::Exists(p),
        FileWriteError::Io {
            action,
            path,
            cause: source,
            ..
        } => FileError::Io {
            action,
            path,
            cause: source,
        },
    })
}

/// Reads a file.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(io("cannot read", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn never_overwrites_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/backup.age");
        write_new(&p, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            write_new(&p, b"two", 0o600),
            Err(FileError::Exists(_))
        ));
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
