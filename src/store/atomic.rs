//! Writing a set of files into a directory as one transaction.
//!
//! Files are first written and fsynced in a staging directory inside the
//! target (same file system, so renames are atomic). A commit marker then
//! makes the set final: from that point an interrupted run is rolled forward
//! by the next one, before it the staging directory is discarded. Files the
//! new set replaces are moved aside into a `replaced-<time>/` directory, never
//! deleted. Readers call [`recover`] first, so they never see a half-installed set.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::write::{crash_point, Access, FileWriteError};

/// The staging directory's name inside the target directory.
pub const STAGING_DIR: &str = ".sbkit-staging";
const COMMIT_MARKER: &str = "COMMIT.json";

/// A write transaction that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An I/O operation failed; `path` says where.
    #[error("{action} {path}: {cause}{hint}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: String,
        /// The error.
        cause: std::io::Error,
        /// Advice for the user, possibly empty.
        hint: &'static str,
    },
    /// Writing one file failed.
    #[error(transparent)]
    File(#[from] FileWriteError),
    /// The commit marker names a path that is not a plain name inside the directory.
    #[error("{marker} names {name:?}, which {problem}; an interrupted sbkit run never writes that, so nothing was touched. Inspect {staging} (someone else may have planted it) and remove it by hand")]
    UnsafeName {
        /// The marker file.
        marker: String,
        /// The offending name.
        name: String,
        /// What is wrong with it.
        problem: String,
        /// The staging directory.
        staging: String,
    },
    /// The commit marker of an interrupted run is unreadable.
    #[error("{path} is corrupt ({message}); inspect the directory and remove {staging} by hand")]
    Marker {
        /// The marker.
        path: String,
        /// Why.
        message: String,
        /// The staging directory.
        staging: String,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
    move |source| {
        let hint = super::write::io_hint(source.kind());
        WriteError::Io {
            action,
            path: path.display().to_string(),
            cause: source,
            hint,
        }
    }
}

/// One file of the set.
struct PendingFile {
    name: String,
    contents: Zeroizing<Vec<u8>>,
    secret: bool,
    /// Written as a symbolic link to `contents` (a relative path) instead of a file.
    symlink: bool,
}

#[derive(Serialize, Deserialize)]
struct CommitPlan {
    /// Names to install, in order (the manifest last).
    install: Vec<String>,
    /// Existing names to move aside even though the new set has no such file.
    displace: Vec<String>,
    /// Where replaced files go, relative to the target directory.
    backup: String,
}

/// What a commit did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CommitReport {
    /// Files written.
    pub written: Vec<String>,
    /// The directory old files were moved to, when any were replaced.
    pub replaced_into: Option<PathBuf>,
}

/// A set of files to write into one directory, all or nothing.
pub struct WriteSet {
    dir: PathBuf,
    files: Vec<PendingFile>,
    displace: Vec<String>,
}

impl WriteSet {
    /// A new, empty set for `dir`.
    pub fn new(dir: &Path) -> Self {
        WriteSet {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            displace: Vec::new(),
        }
    }

    /// Adds a file; `secret` files get mode 0600 and their buffer is wiped on
    /// drop. `name` may contain `/`: subdirectories are made (mode 0700).
    pub fn add(&mut self, name: &str, contents: impl Into<Vec<u8>>, secret: bool) {
        self.files.push(PendingFile {
            name: name.to_string(),
            contents: Zeroizing::new(contents.into()),
            secret,
            symlink: false,
        });
    }

    /// Adds a symbolic link `name` pointing to `target` (relative to the link's directory).
    pub fn add_symlink(&mut self, name: &str, target: &str) {
        self.files.push(PendingFile {
            name: name.to_string(),
            contents: Zeroizing::new(target.as_bytes().to_vec()),
            secret: false,
            symlink: true,
        });
    }

    /// Also moves this existing file aside (when the new set no longer has it).
    pub fn displace(&mut self, name: &str) {
        self.displace.push(name.to_string());
    }

    /// Writes the set. Existing files of the same names are moved into
    /// `replaced-<backup_tag>/`. The last file added is installed last, so
    /// it can serve as the marker of a complete set.
    pub fn commit(self, backup_tag: &str) -> Result<CommitReport, WriteError> {
        let fresh = !self.dir.exists()
            || fs::read_dir(&self.dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !self.dir.exists() {
            fs::create_dir_all(&self.dir).map_err(io_err("cannot create directory", &self.dir))?;
        }
        if fresh {
            // Key directories hold private keys: only the owner may enter. An
            // empty directory made for us (e.g. a container's bind mount) is
            // tightened too.
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("cannot set permissions of", &self.dir))?;
        }
        recover(&self.dir)?;
        let staging = self.dir.join(STAGING_DIR);
        // 0700 from creation on: staged secrets are never in a directory others can enter.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io_err("cannot create staging directory", &staging))?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot set permissions of", &staging))?;
        let result = self.stage_and_commit(&staging, backup_tag);
        if result.is_err() && !staging.join(COMMIT_MARKER).exists() {
            // Before the marker nothing in the target changed: discard the staging area.
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    fn stage_and_commit(
        &self,
        staging: &Path,
        backup_tag: &str,
    ) -> Result<CommitReport, WriteError> {
        for f in &self.files {
            let path = staging.join(&f.name);
            make_parents(staging, &path)?;
            if f.symlink {
                let target = String::from_utf8_lossy(&f.contents).into_owned();
                crash_point();
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(io_err("cannot create symbolic link", &path))?;
            } else {
                let access = if f.secret {
                    Access::Secret
                } else {
                    Access::Public
                };
                super::write::write_synced(&path, &f.contents, access)?;
            }
        }
        sync_dir(staging)?;
        let plan = CommitPlan {
            install: self.files.iter().map(|f| f.name.clone()).collect(),
            displace: self.displace.clone(),
            backup: format!("replaced-{backup_tag}"),
        };
        let marker = serde_json::to_vec_pretty(&plan).unwrap_or_default();
        super::write::write_synced(&staging.join(COMMIT_MARKER), &marker, Access::Secret)?;
        sync_dir(staging)?;
        roll_forward(&self.dir, &plan)
    }
}

/// Creates the directories between `base` and `path` (mode 0700).
fn make_parents(base: &Path, path: &Path) -> Result<(), WriteError> {
    if let Some(parent) = path.parent() {
        if parent != base && !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err("cannot create directory", parent))?;
            let mut d = parent;
            while d != base {
                fs::set_permissions(d, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("cannot set permissions of", d))?;
                match d.parent() {
                    Some(p) => d = p,
                    None => break,
                }
            }
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    Ok(super::write::sync_dir(dir)?)
}

fn move_aside(dir: &Path, backup: &Path, name: &str) -> Result<bool, WriteError> {
    let old = dir.join(name);
    if fs::symlink_metadata(&old).is_err() {
        return Ok(false);
    }
    fs::create_dir_all(backup).map_err(io_err("cannot create", backup))?;
    fs::set_permissions(backup, fs::Permissions::from_mode(0o700))
        .map_err(io_err("cannot set permissions of", backup))?;
    let target = backup.join(name);
    make_parents(backup, &target)?;
    crash_point();
    fs::rename(&old, &target).map_err(io_err("cannot move aside", &old))?;
    Ok(true)
}

/// Why `name` (from a commit plan) is not a safe relative name under `base`,
/// or `None` when it is: plain components only (no `..`, `.`, root or
/// empty part, no NUL), and no component that exists under `base` as
/// anything but a real directory (a symbolic link would be followed).
fn unsafe_name(base: &Path, name: &str) -> Option<String> {
    use std::path::Component;
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > 1024 {
        return Some("is longer than any name sbkit writes".into());
    }
    if name.contains('\0') {
        return Some("contains a NUL byte".into());
    }
    if name.starts_with('/') {
        return Some("is an absolute path".into());
    }
    let path = Path::new(name);
    let parts: Vec<Component> = path.components().collect();
    for c in &parts {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Some("contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Some("is an absolute path".into()),
            Component::CurDir => return Some("contains `.`".into()),
        }
    }
    if name.split('/').any(str::is_empty) {
        return Some("contains an empty path component".into());
    }
    // Every directory on the way must be a real directory, never a link.
    let mut at = base.to_path_buf();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Some(format!("passes through {}, a symbolic link", at.display()))
            }
            Ok(m) if !m.is_dir() => {
                return Some(format!("passes through {}, not a directory", at.display()))
            }
            _ => {}
        }
    }
    None
}

/// Checks every name of a plan read back from disk before anything moves.
fn check_plan(dir: &Path, plan: &CommitPlan, marker: &Path) -> Result<(), WriteError> {
    let staging = dir.join(STAGING_DIR);
    let refuse = |name: &str, problem: String| WriteError::UnsafeName {
        marker: marker.display().to_string(),
        name: name.to_string(),
        problem,
        staging: staging.display().to_string(),
    };
    for name in plan.install.iter().chain(&plan.displace) {
        for base in [dir, staging.as_path()] {
            if let Some(problem) = unsafe_name(base, name) {
                return Err(refuse(name, problem));
            }
        }
    }
    if plan.backup.contains('/') || !plan.backup.starts_with("replaced-") {
        return Err(refuse(
            &plan.backup,
            "is not a replaced-<time> directory name".into(),
        ));
    }
    if let Some(problem) = unsafe_name(dir, &plan.backup) {
        return Err(refuse(&plan.backup, problem));
    }
    let backup = dir.join(&plan.backup);
    for name in plan.install.iter().chain(&plan.displace) {
        if let Some(problem) = unsafe_name(&backup, name) {
            return Err(refuse(name, problem));
        }
    }
    Ok(())
}

/// Installs staged files per the plan. Idempotent: a file still in staging is
/// not installed yet, so whatever has its name in the target is old.
fn roll_forward(dir: &Path, plan: &CommitPlan) -> Result<CommitReport, WriteError> {
    let staging = dir.join(STAGING_DIR);
    let backup = dir.join(&plan.backup);
    let mut replaced = false;
    for name in &plan.displace {
        if fs::symlink_metadata(staging.join(name)).is_err() {
            replaced |= move_aside(dir, &backup, name)?;
        }
    }
    let mut report = CommitReport::default();
    for name in &plan.install {
        let staged = staging.join(name);
        if fs::symlink_metadata(&staged).is_ok() {
            replaced |= move_aside(dir, &backup, name)?;
            let target = dir.join(name);
            make_parents(dir, &target)?;
            super::write::rename(&staged, &target)?;
        }
        report.written.push(name.clone());
    }
    sync_dir(dir)?;
    if backup.exists() {
        sync_dir(&backup)?;
        replaced = true;
    }
    crash_point();
    fs::remove_file(staging.join(COMMIT_MARKER)).map_err(io_err("cannot remove", &staging))?;
    fs::remove_dir_all(&staging).map_err(io_err("cannot remove", &staging))?;
    sync_dir(dir)?;
    report.replaced_into = replaced.then_some(backup);
    Ok(report)
}

/// Finishes or discards a transaction that an earlier run left behind in
/// `dir`. Returns `true` when there was one.
pub fn recover(dir: &Path) -> Result<bool, WriteError> {
    let staging = dir.join(STAGING_DIR);
    match fs::symlink_metadata(&staging) {
        Err(_) => return Ok(false),
        Ok(m) if !m.is_dir() => {
            return Err(WriteError::UnsafeName {
                marker: staging.display().to_string(),
                name: STAGING_DIR.into(),
                problem: "is not a directory (a symbolic link or file)".into(),
                staging: staging.display().to_string(),
            })
        }
        Ok(_) => {}
    }
    let marker = staging.join(COMMIT_MARKER);
    if marker.exists() {
        let bytes = fs::read(&marker).map_err(io_err("cannot read", &marker))?;
        let plan: CommitPlan = serde_json::from_slice(&bytes).map_err(|e| WriteError::Marker {
            path: marker.display().to_string(),
            message: e.to_string(),
            staging: staging.display().to_string(),
        })?;
        // The marker is data on disk, not ours until checked: a name that
        // leaves the directory would let whoever planted it replace any file.
        check_plan(dir, &plan, &marker)?;
        roll_forward(dir, &plan)?;
    } else {
        fs::remove_dir_all(&staging).map_err(io_err("cannot remove", &staging))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_modes_and_moves_old_files_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let mut set = WriteSet::new(&dir);
        set.add("a.key", b"secret".to_vec(), true);
        set.add("a.pem", b"public".to_vec(), false);
        let r = set.commit("1").unwrap();
        assert_eq!(r.written, ["a.key", "a.pem"]);
        assert!(r.replaced_into.is_none());
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("a.key"), 0o600);
        assert_eq!(mode("a.pem"), 0o644);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let mut set = WriteSet::new(&dir);
        set.add("a.key", b"new".to_vec(), true);
        set.displace("a.pem");
        let r = set.commit("2").unwrap();
        assert_eq!(fs::read(dir.join("a.key")).unwrap(), b"new");
        assert!(!dir.join("a.pem").exists());
        let backup = r.replaced_into.unwrap();
        assert_eq!(fs::read(backup.join("a.key")).unwrap(), b"secret");
        assert_eq!(fs::read(backup.join("a.pem")).unwrap(), b"public");
        assert!(!dir.join(STAGING_DIR).exists());
    }

    #[test]
    fn recovery_rolls_back_without_marker_and_forward_with_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("x"), b"old").unwrap();
        // Interrupted before the marker: discarded, old state kept.
        fs::create_dir(dir.join(STAGING_DIR)).unwrap();
        fs::write(dir.join(STAGING_DIR).join("x"), b"new").unwrap();
        assert!(recover(dir).unwrap());
        assert_eq!(fs::read(dir.join("x")).unwrap(), b"old");
        // Interrupted after the marker, halfway: completed.
        fs::create_dir(dir.join(STAGING_DIR)).unwrap();
        fs::write(dir.join(STAGING_DIR).join("y"), b"new-y").unwrap();
        fs::write(dir.join("x"), b"new-x").unwrap(); // x was already installed
        let plan = CommitPlan {
            install: vec!["x".into(), "y".into()],
            displace: vec![],
            backup: "replaced-t".into(),
        };
        fs::write(
            dir.join(STAGING_DIR).join(COMMIT_MARKER),
            serde_json::to_vec(&plan).unwrap(),
        )
        .unwrap();
        assert!(recover(dir).unwrap());
        assert_eq!(fs::read(dir.join("x")).unwrap(), b"new-x");
        assert_eq!(fs::read(dir.join("y")).unwrap(), b"new-y");
        assert!(!dir.join(STAGING_DIR).exists());
    }
}
