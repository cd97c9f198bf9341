//! The entry model: one file of the initramfs, independent of where it comes
//! from (a directory walk today, container image layers later).

use std::path::{Path, PathBuf};

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file with data.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link; its target is carried as data.
    Symlink,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket inode.
    Socket,
}

impl EntryKind {
    /// The `S_IFMT` bits of this kind, as stored in the cpio mode field.
    pub fn type_bits(self) -> u32 {
        match self {
            EntryKind::Regular => 0o100000,
            EntryKind::Directory => 0o040000,
            EntryKind::Symlink => 0o120000,
            EntryKind::CharDevice => 0o020000,
            EntryKind::BlockDevice => 0o060000,
            EntryKind::Fifo => 0o010000,
            EntryKind::Socket => 0o140000,
        }
    }

    /// The kind encoded in a `st_mode`, if it is one cpio can carry.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 => EntryKind::Regular,
            0o040000 => EntryKind::Directory,
            0o120000 => EntryKind::Symlink,
            0o020000 => EntryKind::CharDevice,
            0o060000 => EntryKind::BlockDevice,
            0o010000 => EntryKind::Fifo,
            0o140000 => EntryKind::Socket,
            _ => return None,
        })
    }

    /// A word for messages ("directory", "symlink", ...).
    pub fn describe(self) -> &'static str {
        match self {
            EntryKind::Regular => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::CharDevice => "character device",
            EntryKind::BlockDevice => "block device",
            EntryKind::Fifo => "FIFO",
            EntryKind::Socket => "socket",
        }
    }

    /// Whether entries of this kind can share an inode in the initramfs.
    ///
    /// The kernel's unpacker (`maybe_link` in init/initramfs.c) links regular
    /// files and special files, never symlinks or directories.
    pub fn can_hardlink(self) -> bool {
        !matches!(self, EntryKind::Directory | EntryKind::Symlink)
    }
}

/// A device number split the way cpio stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceNumber {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DeviceNumber {
    /// Splits a Linux `dev_t` (`st_rdev`) with glibc's encoding.
    pub fn from_dev_t(dev: u64) -> Self {
        let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff);
        let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
        // Both masks leave at most 32 bits, so the casts are lossless.
        DeviceNumber {
            major: major as u32,
            minor: minor as u32,
        }
    }
}

/// Membership of an entry in a set of hard links to one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HardLink {
    /// The set, numbered from 0 in the order of its first member in the archive.
    pub group: u32,
    /// How many entries of the archive belong to the set (at least 2).
    pub members: u32,
    /// Whether this is the set's first entry in the archive, the one carrying the data.
    pub leader: bool,
}

/// The host file an entry's data and identity come from (directory walks only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Absolute or caller-relative path on the host.
    pub path: PathBuf,
    /// `st_dev` at walk time.
    pub dev: u64,
    /// `st_ino` at walk time.
    pub ino: u64,
    /// `st_nlink` at walk time.
    pub nlink: u64,
}

/// One file of the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive: relative, no leading `/` or `./`; the root is `.`.
    pub path: PathBuf,
    /// File type.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Data length of a regular file; 0 for every other kind.
    pub size: u64,
    /// Target of a symlink.
    pub link_target: Option<PathBuf>,
    /// Device number of a character or block device.
    pub rdev: DeviceNumber,
    /// Set when the entry is one of several names of one inode.
    pub hardlink: Option<HardLink>,
    /// Where the data is read from, for entries found by a directory walk.
    pub source: Option<Source>,
}

impl Entry {
    /// The archive path as bytes.
    pub fn path_bytes(&self) -> &[u8] {
        use std::os::unix::ffi::OsStrExt;
        self.path.as_os_str().as_bytes()
    }

    /// Whether this entry carries file data in the archive (regular files that
    /// are not a later name of an inode already written).
    pub fn carries_data(&self) -> bool {
        self.kind == EntryKind::Regular
            && !matches!(self.hardlink, Some(HardLink { leader: false, .. }))
    }

    /// The data length written to the archive for this entry.
    pub fn data_len(&self) -> u64 {
        match self.kind {
            EntryKind::Regular if self.carries_data() => self.size,
            EntryKind::Symlink => self.link_target.as_deref().map_or(0, target_len),
            _ => 0,
        }
    }
}

fn target_len(target: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    target.as_os_str().as_bytes().len() as u64
}

/// The key entries are sorted by: the root first, then path bytes.
///
/// Byte order puts every directory before its contents (a parent's path is a
/// prefix of its children's), which the kernel needs: it creates no missing
/// parents.
pub fn sort_key(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    if path == Path::new(".") {
        b""
    } else {
        path.as_os_str().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc's `makedev`.
    fn makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        // makedev(5, 1) = 0x501; makedev(259, 65536) uses the high bits.
        assert_eq!(
            DeviceNumber::from_dev_t(0x501),
            DeviceNumber { major: 5, minor: 1 }
        );
        let dev = makedev(259, 65536);
        assert_eq!(
            DeviceNumber::from_dev_t(dev),
            DeviceNumber {
                major: 259,
                minor: 65536
            }
        );
    }

    #[test]
    fn kinds_round_trip_through_mode_bits() {
        for kind in [
            EntryKind::Regular,
            EntryKind::Directory,
            EntryKind::Symlink,
            EntryKind::CharDevice,
            EntryKind::BlockDevice,
            EntryKind::Fifo,
            EntryKind::Socket,
        ] {
            assert_eq!(EntryKind::from_mode(kind.type_bits() | 0o755), Some(kind));
        }
        assert_eq!(EntryKind::from_mode(0o755), None);
    }

    #[test]
    fn root_sorts_before_names_below_dot() {
        let mut paths = ["-x", ".", "a/b", "a", "a.b"].map(PathBuf::from);
        paths.sort_by(|a, b| sort_key(a).cmp(sort_key(b)));
        assert_eq!(
            paths.map(|p| p.display().to_string()),
            [".", "-x", "a", "a.b", "a/b"]
        );
    }
}
