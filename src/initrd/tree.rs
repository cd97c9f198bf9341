//! Entries of a root filesystem directory (and an optional overlay directory),
//! sorted and with hard links numbered, ready for the archive.
//!
//! Rules of the walk:
//! - `lstat` only: symlinks are entries, never followed (the root path itself
//!   may be a symlink to the rootfs).
//! - Ownership, permission bits (setuid, setgid, sticky included), symlink
//!   targets and device numbers are kept as they are on disk.
//! - The *contents* of the top-level `proc`, `sys`, `dev`, `run` and `tmp` are
//!   left out, the directories themselves are kept with their owner and mode:
//!   the booted system mounts proc, sysfs, devtmpfs and tmpfs there, and what a
//!   build host left in them (a bind-mounted /dev, a stale /run) is not part of
//!   the image. One exception: `dev/console`, when it is a character device,
//!   is kept, because the kernel opens /dev/console for init's stdin/stdout/
//!   stderr before anything mounts /dev; without it init starts with no
//!   console unless the kernel's built-in initramfs supplies one.
//! - Other file systems mounted below the root are not entered (their mount
//!   point directory is kept, empty): a chroot-style rootfs often has host
//!   directories bind-mounted into it (package caches, /home, a build
//!   workspace), and silently copying them into a signed, shipped image would
//!   leak host data. [`WalkOptions::one_file_system`] turns this off.
//! - Hard links are found by `(st_dev, st_ino)`; sets are numbered in the
//!   order of their first name in the sorted archive, so the numbering does
//!   not depend on the host's inode numbers.
//! - An overlay directory replaces files of the rootfs with its own and adds
//!   new ones. Where both have a directory, the rootfs's directory keeps its
//!   owner and mode and the overlay only adds contents (so a `mkdir -p`'d
//!   overlay cannot loosen `/tmp` or `/root`). A directory in one and a
//!   non-directory in the other is refused. The skip rules apply to the
//!   rootfs only: the overlay is explicit user content.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::entry::{sort_key, DeviceNumber, Entry, EntryKind, HardLink, Source};
use super::InitrdError;

/// Top-level directories whose contents are left out of a rootfs.
pub const SKIPPED_CONTENTS: [&str; 5] = ["proc", "sys", "dev", "run", "tmp"];

/// How a directory is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkOptions {
    /// Do not descend into directories on another file system than the root.
    pub one_file_system: bool,
    /// Apply the pseudo-file-system rule ([`SKIPPED_CONTENTS`], `dev/console`).
    pub skip_pseudo: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            one_file_system: true,
            skip_pseudo: true,
        }
    }
}

/// Walks `root` and, if given, `overlay` (which overrides it), and returns
/// every entry sorted by path bytes with hard-link sets numbered.
pub fn collect(
    root: &Path,
    overlay: Option<&Path>,
    one_file_system: bool,
) -> Result<Vec<Entry>, InitrdError> {
    let base = walk(
        root,
        WalkOptions {
            one_file_system,
            skip_pseudo: true,
        },
    )?;
    let merged = match overlay {
        Some(dir) => {
            let top = walk(
                dir,
                WalkOptions {
                    one_file_system,
                    skip_pseudo: false,
                },
            )?;
            merge_overlay(base, top)?
        }
        None => base,
    };
    Ok(number_hardlinks(merged))
}

/// Walks one directory tree into entries sorted by path bytes (root `.`
/// first); hard-link sets are not numbered yet.
pub fn walk(root: &Path, opts: WalkOptions) -> Result<Vec<Entry>, InitrdError> {
    let meta = fs::metadata(root).map_err(|e| walk_error(root, e))?;
    if !meta.is_dir() {
        return Err(InitrdError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut walker = Walker {
        opts,
        root_dev: meta.dev(),
        entries: Vec::new(),
    };
    let top = walker.entry(root, PathBuf::from("."), &meta)?;
    walker.entries.push(top);
    walker.descend(root, Path::new(""))?;
    let mut entries = walker.entries;
    entries.sort_by(|a, b| sort_key(&a.path).cmp(sort_key(&b.path)));
    Ok(entries)
}

struct Walker {
    opts: WalkOptions,
    root_dev: u64,
    entries: Vec<Entry>,
}

impl Walker {
    /// Adds the children of directory `dir` (archive path `rel`, empty for the
    /// root) and recurses; an explicit stack would also do, but rootfs depth
    /// is small and recursion keeps the rules readable.
    fn descend(&mut self, dir: &Path, rel: &Path) -> Result<(), InitrdError> {
        let mut children = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| walk_error(dir, e))? {
            let item = item.map_err(|e| walk_error(dir, e))?;
            // DirEntry::metadata is an lstat relative to the open directory.
            let meta = item.metadata().map_err(|e| walk_error(&item.path(), e))?;
            children.push((item.file_name(), meta));
        }
        // Sorted so that the first error met does not depend on readdir order.
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, meta) in children {
            let host = dir.join(&name);
            let child_rel = rel.join(&name);
            if self.skipped(&child_rel, &meta) {
                continue;
            }
            let entry = self.entry(&host, child_rel.clone(), &meta)?;
            let is_dir = entry.kind == EntryKind::Directory;
            self.entries.push(entry);
            if is_dir && self.enters(&child_rel, &meta) {
                self.descend(&host, &child_rel)?;
            }
        }
        Ok(())
    }

    /// Whether an entry below a pseudo-file-system directory is left out.
    fn skipped(&self, rel: &Path, meta: &Metadata) -> bool {
        if !self.opts.skip_pseudo {
            return false;
        }
        let mut parts = rel.components();
        let (Some(top), Some(_)) = (parts.next(), parts.next()) else {
            return false;
        };
        let top = top.as_os_str();
        if !SKIPPED_CONTENTS.iter().any(|s| top == *s) {
            return false;
        }
        let console = rel == Path::new("dev/console")
            && EntryKind::from_mode(meta.mode()) == Some(EntryKind::CharDevice);
        !console
    }

    fn enters(&self, rel: &Path, meta: &Metadata) -> bool {
        if self.opts.one_file_system && meta.dev() != self.root_dev {
            return false;
        }
        // `dev` is entered only to find dev/console; `skipped` drops the rest.
        let pseudo = self.opts.skip_pseudo
            && rel != Path::new("dev")
            && SKIPPED_CONTENTS.iter().any(|s| rel == Path::new(s));
        !pseudo
    }

    fn entry(&self, host: &Path, rel: PathBuf, meta: &Metadata) -> Result<Entry, InitrdError> {
        let kind =
            EntryKind::from_mode(meta.mode()).ok_or_else(|| InitrdError::UnsupportedType {
                path: host.to_path_buf(),
                mode: meta.mode(),
            })?;
        let link_target = match kind {
            EntryKind::Symlink => Some(fs::read_link(host).map_err(|e| walk_error(host, e))?),
            _ => None,
        };
        let rdev = match kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => DeviceNumber::from_dev_t(meta.rdev()),
            _ => DeviceNumber::default(),
        };
        Ok(Entry {
            path: rel,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: if kind == EntryKind::Regular {
                meta.size()
            } else {
                0
            },
            link_target,
            rdev,
            hardlink: None,
            source: Some(Source {
                path: host.to_path_buf(),
                dev: meta.dev(),
                ino: meta.ino(),
                nlink: meta.nlink(),
            }),
        })
    }
}

fn walk_error(path: &Path, source: io::Error) -> InitrdError {
    InitrdError::Walk {
        path: path.to_path_buf(),
        source,
    }
}

/// Lays `overlay` over `base` (both sorted); see the module doc for the rules.
pub fn merge_overlay(base: Vec<Entry>, overlay: Vec<Entry>) -> Result<Vec<Entry>, InitrdError> {
    let mut merged: BTreeMap<Vec<u8>, Entry> = base
        .into_iter()
        .map(|e| (sort_key(&e.path).to_vec(), e))
        .collect();
    for top in overlay {
        let key = sort_key(&top.path).to_vec();
        match merged.get_mut(&key) {
            None => {
                merged.insert(key, top);
            }
            Some(below) => {
                let dirs = (
                    below.kind == EntryKind::Directory,
                    top.kind == EntryKind::Directory,
                );
                match dirs {
                    (true, true) => {}
                    (false, false) => *below = top,
                    _ => {
                        return Err(InitrdError::OverlayConflict {
                            path: top.path,
                            rootfs: below.kind.describe(),
                            overlay: top.kind.describe(),
                        })
                    }
                }
            }
        }
    }
    Ok(merged.into_values().collect())
}

/// Numbers hard-link sets of sorted entries: members share `(st_dev, st_ino)`,
/// sets are numbered by their first member, and the first member leads.
pub fn number_hardlinks(mut entries: Vec<Entry>) -> Vec<Entry> {
    let mut sets: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let Some(src) = &e.source else { continue };
        if e.kind.can_hardlink() && src.nlink > 1 {
            sets.entry((src.dev, src.ino)).or_default().push(i);
        }
    }
    let mut sets: Vec<Vec<usize>> = sets.into_values().filter(|s| s.len() > 1).collect();
    // Member lists are in archive order; order the sets by first member.
    sets.sort_by_key(|s| s[0]);
    for (group, members) in sets.iter().enumerate() {
        for (k, &i) in members.iter().enumerate() {
            entries[i].hardlink = Some(HardLink {
                group: group as u32,
                members: members.len() as u32,
                leader: k == 0,
            });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn names(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| e.path.display().to_string())
            .collect()
    }

    fn write(path: &Path, data: &[u8]) {
        if let Some(p) = path.parent() {
            fs::create_dir_all(p).unwrap();
        }
        fs::write(path, data).unwrap();
    }

    #[test]
    fn walks_sorted_with_pseudo_contents_skipped() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(&r.join("usr/bin/b"), b"b");
        write(&r.join("usr/bin/a"), b"a");
        write(&r.join("usr.x"), b"");
        write(&r.join("proc/1/status"), b"x");
        write(&r.join("tmp/junk"), b"x");
        write(&r.join("dev/null"), b"not a device");
        write(&r.join("dev/console"), b"a file, not a device");
        write(&r.join("var/tmp/kept"), b"x");
        symlink("usr/bin", r.join("bin")).unwrap();
        fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        let entries = walk(r, WalkOptions::default()).unwrap();
        assert_eq!(
            names(&entries),
            [
                ".",
                "bin",
                "dev",
                "proc",
                "tmp",
                "usr",
                "usr.x",
                "usr/bin",
                "usr/bin/a",
                "usr/bin/b",
                "var",
                "var/tmp",
                "var/tmp/kept"
            ]
        );
        let tmp = entries.iter().find(|e| e.path == Path::new("tmp")).unwrap();
        assert_eq!(tmp.mode, 0o1777);
        let bin = entries.iter().find(|e| e.path == Path::new("bin")).unwrap();
        assert_eq!(bin.kind, EntryKind::Symlink);
        assert_eq!(bin.link_target.as_deref(), Some(Path::new("usr/bin")));
    }

    #[test]
    fn overlay_replaces_files_and_keeps_base_directories() {
        let t = tempfile::tempdir().unwrap();
        let (base, top) = (t.path().join("base"), t.path().join("top"));
        write(&base.join("etc/hostname"), b"base");
        write(&base.join("etc/keep"), b"keep");
        write(&top.join("etc/hostname"), b"overlay");
        write(&top.join("etc/new"), b"new");
        write(&top.join("tmp/x"), b"overlay content is never skipped");
        fs::set_permissions(base.join("etc"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::set_permissions(top.join("etc"), fs::Permissions::from_mode(0o700)).unwrap();
        let entries = collect(&base, Some(&top), true).unwrap();
        assert_eq!(
            names(&entries),
            [
                ".",
                "etc",
                "etc/hostname",
                "etc/keep",
                "etc/new",
                "tmp",
                "tmp/x"
            ]
        );
        assert_eq!(entries[1].mode, 0o751);
        let hostname = entries[2].source.as_ref().unwrap();
        assert!(hostname.path.starts_with(&top));
    }

    #[test]
    fn overlay_cannot_turn_a_symlink_into_a_directory() {
        let t = tempfile::tempdir().unwrap();
        let (base, top) = (t.path().join("base"), t.path().join("top"));
        write(&base.join("usr/lib/x"), b"x");
        symlink("usr/lib", base.join("lib")).unwrap();
        write(&top.join("lib/firmware/f"), b"f");
        let e = collect(&base, Some(&top), true).unwrap_err();
        assert!(
            matches!(&e, InitrdError::OverlayConflict { path, .. } if path == Path::new("lib")),
            "{e}"
        );
    }

    #[test]
    fn hardlinks_are_numbered_in_archive_order() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(&r.join("z1"), b"z");
        write(&r.join("a1"), b"a");
        fs::hard_link(r.join("z1"), r.join("b2")).unwrap();
        fs::hard_link(r.join("a1"), r.join("c2")).unwrap();
        fs::hard_link(r.join("a1"), r.join("d3")).unwrap();
        let entries = collect(r, None, true).unwrap();
        let links: Vec<_> = entries
            .iter()
            .map(|e| e.hardlink.map(|h| (h.group, h.members, h.leader)))
            .collect();
        // ".", a1, b2, c2, d3, z1
        assert_eq!(
            links,
            [
                None,
                Some((0, 3, true)),
                Some((1, 2, true)),
                Some((0, 3, false)),
                Some((0, 3, false)),
                Some((1, 2, false))
            ]
        );
    }

    #[test]
    fn a_hardlink_set_cut_to_one_name_by_the_overlay_is_a_plain_file() {
        let t = tempfile::tempdir().unwrap();
        let (base, top) = (t.path().join("base"), t.path().join("top"));
        write(&base.join("a"), b"a");
        fs::hard_link(base.join("a"), base.join("b")).unwrap();
        write(&top.join("b"), b"other");
        let entries = collect(&base, Some(&top), true).unwrap();
        assert!(entries.iter().all(|e| e.hardlink.is_none()));
    }

    #[test]
    fn root_must_be_a_directory() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("f"), b"");
        assert!(matches!(
            walk(&t.path().join("f"), WalkOptions::default()),
            Err(InitrdError::NotADirectory { .. })
        ));
        assert!(matches!(
            walk(&t.path().join("missing"), WalkOptions::default()),
            Err(InitrdError::Walk { .. })
        ));
    }
}
