//! The outputs of one build as one transaction: every file is written into a
//! private staging directory inside the output directory (so the final
//! renames stay on one file system), synced, and only when all of them exist
//! renamed into place together.
//!
//! A commit marker (`COMMIT.json`, listing the outputs) is written into the
//! staging directory before the first rename. It decides what happens to a
//! run that is killed or loses power: without the marker nothing of the run
//! had been installed and the next run into the same directory removes its
//! staging area; with it, the next run finishes the renames (rolls forward).
//! Either way every output ends up entirely old or entirely new, as a set.
//! On an ordinary error during the renames the previous files are put back
//! (files this run had already installed return to the staging area, so the
//! marker, removed last, never points at a half-undone set).
//!
//! One run at a time per output directory: the directory is `flock`ed for
//! the life of a [`Staging`], which is also what lets the next run treat any
//! staging area it finds as left behind rather than in use.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::names;
use crate::store::write::{crash_point, rename, sync_dir, write_synced, Access, FileWriteError};

/// The prefix of a staging directory's name inside the output directory.
const STAGE_PREFIX: &str = ".sbkit-stage-";
/// The commit marker's name inside a staging directory.
const COMMIT_MARKER: &str = "COMMIT.json";
/// Larger markers are not ours (a few hundred names at most).
const MAX_MARKER_LEN: u64 = 1 << 20;

/// What a commit marker records: the outputs, in install order.
#[derive(Serialize, Deserialize)]
struct CommitPlan {
    install: Vec<String>,
}

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
    /// A synced write or an install step failed.
    #[error(transparent)]
    File(#[from] FileWriteError),
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
    /// Another run holds the output directory.
    #[error(
        "another build-uki run is writing into {0}; wait for it to finish or choose another -d"
    )]
    Busy(String),
    /// A staging area left in the output directory is not one sbkit would
    /// have left: it is not touched.
    #[error("{dir} looks like the staging area of an interrupted build-uki run, but {problem}; sbkit never leaves that, so nothing was touched: inspect it (someone else may have planted it) and remove it by hand")]
    Leftover {
        /// The staging directory found.
        dir: String,
        /// What is wrong with it.
        problem: String,
    },
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
    /// What was done about runs interrupted earlier, for the report.
    recovered: Vec<String>,
    /// Held until the staging is committed or dropped (one run per directory).
    _lock: Flock<File>,
}

impl Staging {
    /// Creates the output directory (when missing), locks it, finishes or
    /// removes what an interrupted earlier run left in it, and makes a
    /// private (0700) staging directory inside it.
    pub fn new(out: &Path) -> Result<Staging, StageError> {
        let created_out = !out.exists();
        std::fs::create_dir_all(out).map_err(werr(out))?;
        let handle = File::open(out).map_err(werr(out))?;
        let lock = match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(StageError::Busy(out.display().to_string()))
            }
            Err((_, e)) => return Err(werr(out)(std::io::Error::from(e))),
        };
        let recovered = recover_locked(out)?;
        // Private from the start: the outputs are not secret, but nobody
        // else should see or race a half-made set.
        let dir = tempfile::Builder::new()
            .prefix(STAGE_PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(out)
            .map_err(werr(out))?;
        Ok(Staging {
            out: out.to_path_buf(),
            dir: Some(dir),
            files: Vec::new(),
            created_out,
            recovered,
            _lock: lock,
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

    /// What was done, when this staging began, about runs into the same
    /// directory that had been interrupted (one sentence each).
    pub fn recovered(&self) -> &[String] {
        &self.recovered
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
        if name == COMMIT_MARKER {
            return Err(StageError::Duplicate(name.to_string()));
        }
        if self.files.iter().any(|f| f == name) {
            return Err(StageError::Duplicate(name.to_string()));
        }
        self.files.push(name.to_string());
        Ok(self.stage_dir().join(name))
    }

    /// Stages `bytes` as the output `name` (mode 0644, synced).
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), StageError> {
        let path = self.claim(name)?;
        crash_point();
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
        crash_point();
        std::fs::rename(from, &path).map_err(werr(&path))?;
        let f = File::open(&path).map_err(werr(&path))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(werr(&path))?;
        f.sync_all().map_err(werr(&path))?;
        Ok(())
    }

    /// Renames every staged file into the output directory. Refuses before
    /// renaming anything when a target is not a regular file; writes the
    /// commit marker; keeps the files this run replaces aside until all
    /// renames succeeded and puts them back if one fails. Returns the final
    /// paths, in staging order.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, StageError> {
        for name in &self.files {
            check_target(&self.out.join(name))?;
        }
        let stage = self.stage_dir().to_path_buf();
        // From here on an interruption is finished by the next run.
        let plan = CommitPlan {
            install: self.files.clone(),
        };
        let marker = stage.join(COMMIT_MARKER);
        let json = serde_json::to_vec(&plan).map_err(|e| werr(&marker)(e.into()))?;
        write_synced(&marker, &json, Access::Public)?;
        sync_dir(&stage)?;
        let backups = stage.join(".replaced");
        std::fs::create_dir(&backups).map_err(werr(&backups))?;
        // (name, whether an old file was kept aside)
        let mut done: Vec<(String, bool)> = Vec::new();
        let mut result = Ok(());
        for name in &self.files {
            let target = self.out.join(name);
            let backup = backups.join(name);
            let had_old = target.exists();
            // The old file stays where it is (a second name keeps it for a
            // rollback) and the rename replaces it in one step: a reader of
            // the directory never finds the name missing.
            if had_old {
                if let Err(e) = keep_copy(&target, &backup) {
                    result = Err(e);
                    break;
                }
            }
            if let Err(e) = rename(&stage.join(name), &target) {
                result = Err(StageError::from(e));
                break;
            }
            done.push((name.clone(), had_old));
        }
        if let Err(e) = result {
            return Err(self.roll_back(e, &done, &stage, &backups, &marker));
        }
        // The renames are durable once the directory is synced.
        sync_dir(&self.out)?;
        crash_point();
        self.created_out = false;
        let paths = self.files.iter().map(|n| self.out.join(n)).collect();
        if let Some(dir) = self.dir.take() {
            dir.close().map_err(werr(&stage))?;
        }
        Ok(paths)
    }

    /// Undoes the installed part of a failed commit, in reverse: each new
    /// file goes back into the staging area (so that, were this interrupted,
    /// the marker still describes a complete set to roll forward), each old
    /// one back into place; the marker goes last.
    fn roll_back(
        &mut self,
        first: StageError,
        done: &[(String, bool)],
        stage: &Path,
        backups: &Path,
        marker: &Path,
    ) -> StageError {
        let mut failed = Vec::new();
        for (name, had_old) in done.iter().rev() {
            let target = self.out.join(name);
            // The new file goes back to staging first (a second name), then
            // the old one replaces it in place, or the name goes.
            let undone = keep_copy(&target, &stage.join(name)).and_then(|()| {
                if *had_old {
                    std::fs::rename(backups.join(name), &target).map_err(werr(&target))
                } else {
                    std::fs::remove_file(&target).map_err(werr(&target))
                }
            });
            if let Err(u) = undone {
                failed.push(format!("{}: {u}", target.display()));
            }
        }
        if failed.is_empty() {
            if let Err(u) = std::fs::remove_file(marker) {
                failed.push(format!("{}: {u}", marker.display()));
            }
        }
        if failed.is_empty() {
            return first;
        }
        // The previous files may still be under `.replaced/`: keep them.
        match self.dir.take() {
            Some(dir) => StageError::RollbackFailed {
                first: Box::new(first),
                problem: failed.join("; "),
                kept: dir.keep().display().to_string(),
            },
            None => first,
        }
    }
}

/// Gives the file at `from` the second name `to` (in the same file system):
/// a hard link, or a synced copy where the file system has no links (FAT).
fn keep_copy(from: &Path, to: &Path) -> Result<(), StageError> {
    crash_point();
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => {
            std::fs::copy(from, to).map_err(werr(to))?;
            File::open(to).and_then(|f| f.sync_all()).map_err(werr(to))
        }
    }
}

/// Refuses a target that is anything but a regular file (or absent).
fn check_target(target: &Path) -> Result<(), StageError> {
    if let Ok(meta) = std::fs::symlink_metadata(target) {
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
    Ok(())
}

/// Finishes (marker present) or removes (no marker) every staging area an
/// interrupted run left in `out`. The caller holds the directory's lock, so
/// none of them is in use. Everything read from disk is checked before
/// anything moves: the area must be a real directory of this user, the
/// marker a small regular file naming plain file names, the staged files
/// regular files, and their targets regular files or absent.
fn recover_locked(out: &Path) -> Result<Vec<String>, StageError> {
    let mut notes = Vec::new();
    let entries = std::fs::read_dir(out).map_err(werr(out))?;
    for entry in entries {
        let entry = entry.map_err(werr(out))?;
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGE_PREFIX)
        {
            continue;
        }
        let dir = entry.path();
        let leftover = |problem: String| StageError::Leftover {
            dir: dir.display().to_string(),
            problem,
        };
        let meta = std::fs::symlink_metadata(&dir).map_err(werr(&dir))?;
        if !meta.is_dir() {
            return Err(leftover("it is not a directory".into()));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(leftover("it belongs to another user".into()));
        }
        let marker = dir.join(COMMIT_MARKER);
        match std::fs::symlink_metadata(&marker) {
            Err(_) => notes.push(format!(
                "removed {}: a build-uki run was interrupted there before installing any output",
                dir.display()
            )),
            Ok(m) if !m.is_file() || m.len() > MAX_MARKER_LEN => {
                return Err(leftover(format!(
                    "its {COMMIT_MARKER} is not a small regular file"
                )))
            }
            Ok(_) => {
                let bytes = std::fs::read(&marker).map_err(werr(&marker))?;
                let plan: CommitPlan = serde_json::from_slice(&bytes)
                    .map_err(|e| leftover(format!("its {COMMIT_MARKER} is unreadable ({e})")))?;
                for name in &plan.install {
                    names::file_stem("output file name", name).map_err(|e| {
                        leftover(format!("its {COMMIT_MARKER} names {name:?}: {e}"))
                    })?;
                    let staged = dir.join(name);
                    if let Ok(m) = std::fs::symlink_metadata(&staged) {
                        if !m.is_file() {
                            return Err(leftover(format!("its {name} is not a regular file")));
                        }
                    }
                    check_target(&out.join(name))?;
                }
                let mut finished = Vec::new();
                for name in &plan.install {
                    let staged = dir.join(name);
                    // A name no longer staged was installed before the interruption.
                    if std::fs::symlink_metadata(&staged).is_ok() {
                        rename(&staged, &out.join(name))?;
                        finished.push(name.as_str());
                    }
                }
                sync_dir(out)?;
                notes.push(format!(
                    "finished a build-uki run interrupted while installing its outputs into {}: {} now from that run",
                    out.display(),
                    if finished.is_empty() {
                        "all were already installed, none".to_string()
                    } else {
                        finished.join(", ")
                    }
                ));
            }
        }
        std::fs::remove_dir_all(&dir).map_err(werr(&dir))?;
    }
    Ok(notes)
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
    fn the_staging_directory_is_private() {
        let t = tempfile::tempdir().unwrap();
        let s = Staging::new(t.path()).unwrap();
        let mode = std::fs::metadata(s.stage_dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
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
        assert!(matches!(e, StageError::File(_)), "{e}");
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

    /// A staging area as an interrupted run leaves it: staged files, and
    /// the marker when the run had reached its commit.
    fn leave_interrupted(out: &Path, staged: &[(&str, &[u8])], marker: Option<&str>) -> PathBuf {
        let dir = out.join(".sbkit-stage-test");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in staged {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        if let Some(m) = marker {
            std::fs::write(dir.join(COMMIT_MARKER), m).unwrap();
        }
        dir
    }

    #[test]
    fn the_next_run_rolls_forward_with_a_marker_and_discards_without() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        // Interrupted after a.efi was installed, before b.efi was.
        std::fs::write(out.join("a.efi"), b"new").unwrap();
        std::fs::write(out.join("b.efi"), b"old").unwrap();
        leave_interrupted(
            out,
            &[("b.efi", b"new")],
            Some(r#"{"install":["a.efi","b.efi"]}"#),
        );
        let s = Staging::new(out).unwrap();
        assert_eq!(s.recovered().len(), 1, "{:?}", s.recovered());
        assert!(s.recovered()[0].contains("b.efi"), "{:?}", s.recovered());
        drop(s);
        assert_eq!(names_in(out), ["a.efi", "b.efi"]);
        assert_eq!(std::fs::read(out.join("b.efi")).unwrap(), b"new");

        // Interrupted before its commit: nothing of it is installed.
        leave_interrupted(out, &[("b.efi", b"newer")], None);
        let s = Staging::new(out).unwrap();
        assert!(s.recovered()[0].contains("before installing any output"));
        drop(s);
        assert_eq!(names_in(out), ["a.efi", "b.efi"]);
        assert_eq!(std::fs::read(out.join("b.efi")).unwrap(), b"new");
    }

    #[test]
    fn a_planted_marker_cannot_reach_outside_the_output_directory() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(t.path().join("victim"), b"mine").unwrap();
        for plan in [
            r#"{"install":["../victim"]}"#,
            r#"{"install":["/etc/victim"]}"#,
            r#"{"install":[".hidden"]}"#,
            r#"{"install":"#,
        ] {
            let dir = leave_interrupted(&out, &[], Some(plan));
            let e = Staging::new(&out).err().expect(plan);
            assert!(matches!(e, StageError::Leftover { .. }), "{plan}: {e}");
            assert!(e.to_string().contains("nothing was touched"), "{e}");
            assert_eq!(std::fs::read(t.path().join("victim")).unwrap(), b"mine");
            std::fs::remove_dir_all(&dir).unwrap();
        }
        // A staged symbolic link is not installed either.
        let dir = leave_interrupted(&out, &[], Some(r#"{"install":["a.efi"]}"#));
        std::os::unix::fs::symlink("/etc/passwd", dir.join("a.efi")).unwrap();
        let e = Staging::new(&out).err().expect("symlink");
        assert!(e.to_string().contains("a.efi is not a regular file"), "{e}");
        assert!(!out.join("a.efi").exists());
    }

    #[test]
    fn one_run_at_a_time_per_output_directory() {
        let t = tempfile::tempdir().unwrap();
        let first = Staging::new(t.path()).unwrap();
        let e = Staging::new(t.path()).err().expect("second run");
        assert!(matches!(e, StageError::Busy(_)), "{e}");
        // The first run's staging area is not mistaken for a leftover.
        drop(first);
        let second = Staging::new(t.path()).unwrap();
        assert!(second.recovered().is_empty());
    }
}
