//! The outputs of one build as one transaction: every file is written into a
//! private staging directory inside the output directory (so the final
//! renames stay on one file system), synced, and only when all of them exist
//! renamed into place together. Until [`Staging::commit`] nothing of the run
//! is visible in the output directory; on any error before or during the
//! commit, the output directory holds what it held before (files this run
//! would have replaced are put back) and the staging directory is removed.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::names;

/// Writing or committing the outputs failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}; choose another -d or fix its permissions")]
    Write {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Something other than a regular file is where an output goes.
    #[error("{path} exists and is not a regular file ({kind}); build-uki replaces only files it wrote: move it away or choose another -d")]
    InTheWay {
        /// The path.
        path: String,
        /// What is there.
        kind: &'static str,
    },
    /// Two outputs of one run would have the same file name.
    #[error("two outputs of this run are both called {0}; give the entries distinct names (-n, --single-efi-cmdline titles)")]
    Duplicate(String),
    /// An output name is not a plain file name.
    #[error(transparent)]
    Name(#[from] names::BadName),
    /// A commit failed and putting the previous files back failed too: the
    /// staging directory is kept so that nothing is lost.
    #[error("{first}; and restoring the previous outputs failed ({problem}): they are kept in {kept}, move them back by hand")]
    RollbackFailed {
        /// Why the commit failed.
        first: Box<StageError>,
        /// Why the rollback failed.
        problem: String,
        /// The kept staging directory (previous files under `.replaced/`).
        kept: String,
    },
}

fn werr(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// Outputs being staged for one output directory.
pub struct Staging {
    out: PathBuf,
    dir: Option<tempfile::TempDir>,
    files: Vec<String>,
    /// The output directory did not exist before this run.
    created_out: bool,
}

impl Staging {
    /// Creates the output directory (when missing) and a private staging
    /// directory inside it.
    pub fn new(out: &Path) -> Result<Staging, StageError> {
        let created_out = !out.exists();
        std::fs::create_dir_all(out).map_err(werr(out))?;
        let dir = tempfile::Builder::new()
            .prefix(".sbkit-stage-")
            .tempdir_in(out)
            .map_err(werr(out))?;
        Ok(Staging {
            out: out.to_path_buf(),
            dir: Some(dir),
            files: Vec::new(),
            created_out,
        })
    }

    fn stage_dir(&self) -> &Path {
        // `dir` is only taken by `commit`, which consumes `self`.
        self.dir.as_ref().map_or(self.out.as_path(), |d| d.path())
    }

    /// The output directory.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Where the output `name` will be, once committed.
    pub fn target(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    /// A scratch directory for tools that write outputs themselves (xorriso),
    /// removed with the staging directory.
    pub fn scratch(&self, name: &str) -> Result<PathBuf, StageError> {
        let p = self.stage_dir().join(format!(".scratch-{name}"));
        std::fs::create_dir(&p).map_err(werr(&p))?;
        Ok(p)
    }

    fn claim(&mut self, name: &str) -> Result<PathBuf, StageError> {
        // The name must be a plain file name: it is joined to the output directory.
        names::file_stem("output file name", name)?;
        if self.files.iter().any(|f| f == name) {
            return Err(StageError::Duplicate(name.to_string()));
        }
        self.files.push(name.to_string());
        Ok(self.stage_dir().join(name))
    }

    /// Stages `bytes` as the output `name` (mode 0644, synced).
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), StageError> {
        let path = self.claim(name)?;
        let mut f = File::create(&path).map_err(werr(&path))?;
        f.write_all(bytes).map_err(werr(&path))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(werr(&path))?;
        f.sync_all().map_err(werr(&path))?;
        Ok(())
    }

    /// Stages a file written elsewhere in the staging directory (by
    /// [`Staging::scratch`]) as the output `name`: moved, made 0644, synced.
    pub fn adopt(&mut self, name: &str, from: &Path) -> Result<(), StageError> {
        let path = self.claim(name)?;
        std::fs::rename(from, &path).map_err(werr(&path))?;
        let f = File::open(&path).map_err(werr(&path))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(werr(&path))?;
        f.sync_all().map_err(werr(&path))?;
        Ok(())
    }

    /// Renames every staged file into the output directory. Refuses before
    /// renaming anything when a target is not a regular file; files this run
    /// replaces are kept aside until all renames succeeded and put back if
    /// one fails. Returns the final paths, in staging order.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, StageError> {
        for name in &self.files {
            let target = self.out.join(name);
            if let Ok(meta) = std::fs::symlink_metadata(&target) {
                let ft = meta.file_type();
                if !ft.is_file() {
                    return Err(StageError::InTheWay {
                        path: target.display().to_string(),
                        kind: if ft.is_dir() {
                            "a directory"
                        } else if ft.is_symlink() {
                            "a symbolic link"
                        } else {
                            "a special file"
                        },
                    });
                }
            }
        }
        let stage = self.stage_dir().to_path_buf();
        let backups = stage.join(".replaced");
        std::fs::create_dir(&backups).map_err(werr(&backups))?;
        // (name, whether an old file was kept aside)
        let mut done: Vec<(String, bool)> = Vec::new();
        let mut result = Ok(());
        for name in &self.files {
            let target = self.out.join(name);
            let backup = backups.join(name);
            let had_old = target.exists();
            if had_old {
                if let Err(e) = std::fs::rename(&target, &backup) {
                    result = Err(werr(&target)(e));
                    break;
                }
            }
            if let Err(e) = std::fs::rename(stage.join(name), &target) {
                if had_old {
                    // Put it back before undoing the others.
                    let _ = std::fs::rename(&backup, &target);
                }
                result = Err(werr(&target)(e));
                break;
            }
            done.push((name.clone(), had_old));
        }
        if let Err(e) = result {
            // Undo in reverse: the output directory returns to what it held.
            let mut failed = Vec::new();
            for (name, had_old) in done.iter().rev() {
                let target = self.out.join(name);
                let undone = if *had_old {
                    std::fs::rename(backups.join(name), &target)
                } else {
                    std::fs::remove_file(&target)
                };
                if let Err(u) = undone {
                    failed.push(format!("{}: {u}", target.display()));
                }
            }
            if !failed.is_empty() {
                // The previous files may still be under `.replaced/`: keep them.
                if let Some(dir) = self.dir.take() {
                    let kept = dir.keep();
                    return Err(StageError::RollbackFailed {
                        first: Box::new(e),
                        problem: failed.join("; "),
                        kept: kept.display().to_string(),
                    });
                }
            }
            return Err(e);
        }
        // The renames are durable once the directory is synced.
        File::open(&self.out)
            .and_then(|d| d.sync_all())
            .map_err(werr(&self.out))?;
        self.created_out = false;
        let paths = self.files.iter().map(|n| self.out.join(n)).collect();
        if let Some(dir) = self.dir.take() {
            dir.close().map_err(werr(&stage))?;
        }
        Ok(paths)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Not committed: the staging directory goes (TempDir), and an output
        // directory this run created goes too when nothing else is in it.
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
        if self.created_out {
            let _ = std::fs::remove_dir(&self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn nothing_is_visible_until_commit_and_all_is_after() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let mut s = Staging::new(&out).unwrap();
        s.write("a.efi", b"A").unwrap();
        s.write("a.conf", b"C").unwrap();
        assert!(names_in(&out)
            .iter()
            .all(|n| n.starts_with(".sbkit-stage-")));
        let paths = s.commit().unwrap();
        assert_eq!(paths, [out.join("a.efi"), out.join("a.conf")]);
        assert_eq!(names_in(&out), ["a.conf", "a.efi"]);
        let mode = std::fs::metadata(out.join("a.efi"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_dropped_staging_leaves_nothing_and_removes_a_new_output_dir() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("new");
        let mut s = Staging::new(&out).unwrap();
        s.write("a.efi", b"A").unwrap();
        drop(s);
        assert!(!out.exists());
        // An existing directory stays, with what it held.
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("mine"), b"x").unwrap();
        let mut s = Staging::new(&out).unwrap();
        s.write("a.efi", b"A").unwrap();
        drop(s);
        assert_eq!(names_in(&out), ["mine"]);
    }

    #[test]
    fn a_target_in_the_way_refuses_before_any_rename() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        std::fs::write(out.join("a.efi"), b"old").unwrap();
        std::fs::create_dir(out.join("b.efi")).unwrap();
        let mut s = Staging::new(out).unwrap();
        s.write("a.efi", b"new").unwrap();
        s.write("b.efi", b"new").unwrap();
        let e = s.commit().unwrap_err();
        assert!(matches!(e, StageError::InTheWay { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("b.efi exists and is not a regular file"));
        assert_eq!(names_in(out), ["a.efi", "b.efi"]);
        assert_eq!(std::fs::read(out.join("a.efi")).unwrap(), b"old");
    }

    #[test]
    fn a_rename_failing_midway_puts_everything_back() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        std::fs::write(out.join("a.efi"), b"old").unwrap();
        let mut s = Staging::new(out).unwrap();
        s.write("a.efi", b"new").unwrap();
        s.write("b.efi", b"new").unwrap();
        // The second staged file vanishes: its rename fails after the first
        // one replaced a.efi.
        std::fs::remove_file(s.stage_dir().join("b.efi")).unwrap();
        let e = s.commit().unwrap_err();
        assert!(matches!(e, StageError::Write { .. }), "{e}");
        assert_eq!(names_in(out), ["a.efi"]);
        assert_eq!(std::fs::read(out.join("a.efi")).unwrap(), b"old");
    }

    #[test]
    fn names_are_plain_and_distinct() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Staging::new(t.path()).unwrap();
        assert!(s.write("../x.efi", b"").is_err());
        s.write("x.efi", b"").unwrap();
        assert!(matches!(
            s.write("x.efi", b""),
            Err(StageError::Duplicate(_))
        ));
    }
}
