//! efivarfs, the kernel's view of firmware variables: each file
//! `<Name>-<vendor GUID>` reads as 4 attribute bytes and the value, and a
//! write(2) of attributes and payload becomes one `SetVariable` call.
//!
//! The kernel marks most variables immutable (`chattr +i`), so an existing
//! PK/KEK/db must have the flag cleared (`FS_IOC_SETFLAGS`) before it can be
//! opened for writing. A refused write returns the firmware's status as an
//! errno: `EACCES` for a security violation, `EINVAL` for a malformed payload.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::efi::Guid;

/// Where efivarfs is mounted on a running Linux system.
pub const DEFAULT_EFIVARFS: &str = "/sys/firmware/efi/efivars";

/// efivarfs is unusable or a variable operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EfivarfsError {
    /// The directory is missing.
    #[error("{0} does not exist: this machine was not booted through UEFI, or efivarfs is not mounted (mount -t efivarfs efivarfs /sys/firmware/efi/efivars; in a container, bind-mount it with -v /sys/firmware/efi/efivars:/sys/firmware/efi/efivars)")]
    Missing(String),
    /// The directory has no firmware variables.
    #[error("{0} has no SetupMode variable: it is not an efivarfs mount (mount -t efivarfs efivarfs {0}), or the firmware has no Secure Boot support")]
    NoSetupMode(String),
    /// efivarfs is mounted read-only.
    #[error("{0} is mounted read-only: remount it read-write (mount -o remount,rw {0}); in a container, mount it with :rw and run privileged")]
    ReadOnly(String),
    /// Reading a variable failed.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Clearing the immutable flag failed.
    #[error("cannot clear the immutable flag of {path} ({cause}): run as root (CAP_LINUX_IMMUTABLE), or clear it with `chattr -i {path}`")]
    Immutable {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The write was refused.
    #[error("writing {path} failed: {cause}{hint}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
        /// What it likely means.
        hint: &'static str,
    },
    /// The kernel took fewer bytes than given.
    #[error("writing {path}: only {written} of {len} bytes were taken; the variable is in an unknown state")]
    Short {
        /// The file.
        path: String,
        /// Bytes written.
        written: usize,
        /// Bytes given.
        len: usize,
    },
}

/// An efivarfs directory (or a stand-in directory for tests and dry runs).
#[derive(Clone, Debug)]
pub struct Efivarfs {
    dir: PathBuf,
    /// Whether the directory is really an efivarfs mount (per /proc/self/mountinfo).
    efivarfs: bool,
    read_only: bool,
}

/// The efivarfs file name of a variable.
pub fn file_name(name: &str, vendor: Guid) -> String {
    format!("{name}-{vendor}")
}

impl Efivarfs {
    /// Opens the directory and learns how it is mounted.
    pub fn open(dir: &Path) -> Result<Self, EfivarfsError> {
        if !dir.is_dir() {
            return Err(EfivarfsError::Missing(dir.display().to_string()));
        }
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let (efivarfs, read_only) = mount_of(&canonical)
            .map(|m| (m.fstype == "efivarfs", m.read_only))
            .unwrap_or((false, false));
        Ok(Efivarfs {
            dir: dir.to_path_buf(),
            efivarfs,
            read_only,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory is a real efivarfs mount.
    pub fn is_efivarfs(&self) -> bool {
        self.efivarfs
    }

    /// Whether the mount is read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The file of a variable.
    pub fn path(&self, name: &str, vendor: Guid) -> PathBuf {
        self.dir.join(file_name(name, vendor))
    }

    /// Reads a variable: its attributes and value, or `None` when it does not exist.
    pub fn read(&self, name: &str, vendor: Guid) -> Result<Option<(u32, Vec<u8>)>, EfivarfsError> {
        let path = self.path(name, vendor);
        let mut bytes = Vec::new();
        match File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(EfivarfsError::Read {
                    path: path.display().to_string(),
                    cause: source,
                })
            }
        }
        // A refused create leaves an empty file behind in efivarfs: no variable.
        if bytes.len() < 4 {
            return Ok(None);
        }
        let attributes = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        Ok(Some((attributes, bytes[4..].to_vec())))
    }

    /// Reads a one-byte boolean variable of the global namespace (SetupMode, SecureBoot …).
    pub fn read_flag(&self, name: &str) -> Result<Option<bool>, EfivarfsError> {
        Ok(self
            .read(name, crate::efi::guid::EFI_GLOBAL_VARIABLE)?
            .and_then(|(_, v)| v.first().map(|b| *b == 1)))
    }

    /// Writes a variable: `attributes` then `payload` in one write(2), after
    /// clearing the immutable flag of an existing file.
    pub fn write(
        &self,
        name: &str,
        vendor: Guid,
        attributes: u32,
        payload: &[u8],
    ) -> Result<(), EfivarfsError> {
        let path = self.path(name, vendor);
        let display = path.display().to_string();
        if self.read_only {
            return Err(EfivarfsError::ReadOnly(self.dir.display().to_string()));
        }
        if path.exists() {
            clear_immutable(&path).map_err(|source| EfivarfsError::Immutable {
                path: display.clone(),
                cause: source,
            })?;
        }
        let mut buf = Vec::with_capacity(4 + payload.len());
        buf.extend_from_slice(&attributes.to_le_bytes());
        buf.extend_from_slice(payload);
        let mut options = OpenOptions::new();
        options.write(true).create(true).mode(0o644);
        // efivarfs cannot truncate (each write replaces the whole variable);
        // a stand-in directory of ordinary files needs it.
        if !self.efivarfs {
            options.truncate(true);
        }
        let write_err = |source: std::io::Error| {
            let hint = match source.raw_os_error() {
                Some(13) => " (EACCES: the firmware refused it as a security violation: a bad signature, a timestamp not later than the stored one, or not in setup mode)",
                Some(22) => " (EINVAL: the firmware refused the payload as malformed)",
                Some(28) => " (ENOSPC: the firmware's variable store is full)",
                Some(30) => " (EROFS: read-only; remount efivarfs read-write)",
                Some(1) => " (EPERM: the file is still immutable, or not running as root)",
                _ => "",
            };
            EfivarfsError::Write {
                path: display.clone(),
                cause: source,
                hint,
            }
        };
        let mut file = options.open(&path).map_err(write_err)?;
        // One write(2): efivarfs turns each write call into one SetVariable.
        let written = file.write(&buf).map_err(write_err)?;
        if written != buf.len() {
            return Err(EfivarfsError::Short {
                path: display,
                written,
                len: buf.len(),
            });
        }
        Ok(())
    }
}

/// A mount from /proc/self/mountinfo.
struct Mount {
    fstype: String,
    read_only: bool,
}

/// The mount holding `path` (the longest mount point that is a prefix of it).
fn mount_of(path: &Path) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, Mount)> = None;
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional…] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(point), Some(options), Some(fstype)) =
            (fields.get(4), fields.get(5), right.first())
        else {
            continue;
        };
        let point = PathBuf::from(unescape_mountinfo(point));
        if !path.starts_with(&point) {
            continue;
        }
        let depth = point.components().count();
        let super_ro = right
            .get(2)
            .is_some_and(|o| o.split(',').any(|x| x == "ro"));
        let mount = Mount {
            fstype: fstype.to_string(),
            read_only: options.split(',').any(|x| x == "ro") || super_ro,
        };
        // Later lines of equal depth are mounted over earlier ones.
        if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, mount));
        }
    }
    best.map(|(_, m)| m)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Clears `FS_IMMUTABLE_FL` on a file. File systems without inode flags
/// (ENOTTY, EOPNOTSUPP, EINVAL) have nothing to clear.
fn clear_immutable(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    match flags::get(&file) {
        Ok(f) if f & flags::FS_IMMUTABLE_FL != 0 => flags::set(&file, f & !flags::FS_IMMUTABLE_FL),
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(25 | 95 | 22)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The inode-flags ioctls (`FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS`, what `chattr`
/// uses). The crate has no libc binding as a direct dependency, so the C
/// library's `ioctl` is declared here; std links that library on every Linux target.
mod flags {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    use nix::libc::{c_int, c_long};

    /// `FS_IMMUTABLE_FL`.
    pub const FS_IMMUTABLE_FL: c_int = 0x10;

    // The request numbers encode `long` (_IOR('f', 1, long)); the kernel reads
    // and writes an `int` at the pointer. A zeroed long holds it on the
    // little-endian machines sbkit targets.
    nix::ioctl_read!(fs_ioc_getflags, b'f', 1, c_long);
    nix::ioctl_write_ptr!(fs_ioc_setflags, b'f', 2, c_long);

    /// The file's inode flags.
    pub fn get(file: &File) -> std::io::Result<c_int> {
        let mut flags: c_long = 0;
        // SAFETY: the pointer is valid for the call and the descriptor stays open.
        unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) }.map_err(std::io::Error::from)?;
        Ok(flags as c_int)
    }

    /// Sets the file's inode flags.
    pub fn set(file: &File, flags: c_int) -> std::io::Result<()> {
        let value = flags as c_long;
        // SAFETY: the pointer is valid for the call and the descriptor stays open.
        unsafe { fs_ioc_setflags(file.as_raw_fd(), &value) }.map_err(std::io::Error::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efi::guid::EFI_GLOBAL_VARIABLE;

    #[test]
    fn a_stand_in_directory_reads_and_writes_like_efivarfs() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Efivarfs::open(dir.path()).unwrap();
        assert!(!fs.is_efivarfs());
        assert_eq!(fs.read_flag("SetupMode").unwrap(), None);
        fs.write("SetupMode", EFI_GLOBAL_VARIABLE, 6, &[1]).unwrap();
        assert_eq!(fs.read_flag("SetupMode").unwrap(), Some(true));
        fs.write("SetupMode", EFI_GLOBAL_VARIABLE, 6, &[0]).unwrap();
        assert_eq!(
            fs.read("SetupMode", EFI_GLOBAL_VARIABLE).unwrap(),
            Some((6, vec![0]))
        );
        assert!(fs
            .path("SetupMode", EFI_GLOBAL_VARIABLE)
            .ends_with("SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c"));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/x\"), r"/x\");
    }
}
