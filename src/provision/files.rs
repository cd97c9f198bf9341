//! Writing the workflow's files (the encrypted backup, the certificate):
//! never over an existing file, never half-written.
//!
//! A file is written and fsynced under a temporary name in the same
//! directory, then hard-linked to its name — which fails if the name exists,
//! so two runs cannot overwrite each other's backup — and the temporary name
//! removed. Only ciphertext and public data ever go through here.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file exists already.
    #[error("{0} exists; nothing was changed. Choose another name or move the old file away (sbkit never overwrites a backup or certificate)")]
    Exists(PathBuf),
    /// I/O failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Fails when `path` exists.
pub fn refuse_existing(path: &Path) -> Result<(), FileError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(FileError::Exists(path.to_path_buf()));
    }
    Ok(())
}

/// Writes a new file with `mode`, atomically, refusing to replace one.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    refuse_existing(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io("cannot create directory", &dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.sbkit-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("cannot create", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("cannot set permissions of", &tmp))?;
        f.write_all(contents).map_err(io("cannot write", &tmp))?;
        f.sync_all().map_err(io("cannot sync", &tmp))?;
        fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                FileError::Exists(path.to_path_buf())
            } else {
                FileError::Io {
                    action: "cannot create",
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync directory", &dir))
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Reads a file.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(io("cannot read", path))
}

#[cfg(test)]
mod tests {
    use super::*;

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
