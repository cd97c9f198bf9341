//! Entries to cpio: inode numbers, link counts and the fixed mtime.

use std::collections::HashMap;
use std::io::{Read, Write};

use super::cpio::{self, CpioError, CpioWriter, Meta, Special};
use super::entry::{Entry, EntryKind};

/// Writes [`Entry`] values as a cpio newc archive.
///
/// Inode numbers are assigned from 1 in the order entries arrive, a hard-link
/// set taking the number of its first member, so the archive does not depend
/// on the host's inode numbers. Every entry gets `mtime`.
pub struct ArchiveWriter<W: Write> {
    cpio: CpioWriter<W>,
    mtime: u32,
    next_ino: u32,
    set_inos: HashMap<u32, u32>,
    entries: u64,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive whose entries all get modification time `mtime`.
    pub fn new(out: W, mtime: u32) -> Self {
        ArchiveWriter {
            cpio: CpioWriter::new(out),
            mtime,
            next_ino: 1,
            set_inos: HashMap::new(),
            entries: 0,
        }
    }

    /// Appends one entry; `data` supplies a regular file's bytes when
    /// [`Entry::carries_data`] (exactly [`Entry::size`] of them).
    pub fn add(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), CpioError> {
        let meta = self.meta(entry);
        let name = entry.path_bytes();
        match entry.kind {
            EntryKind::Regular if entry.carries_data() => {
                let mut empty = std::io::empty();
                let data = data.unwrap_or(&mut empty);
                self.cpio.file(name, &meta, entry.size, data)?;
            }
            EntryKind::Regular => self.cpio.file_link(name, &meta)?,
            EntryKind::Directory => self.cpio.directory(name, &meta)?,
            EntryKind::Symlink => {
                use std::os::unix::ffi::OsStrExt;
                let target = entry
                    .link_target
                    .as_deref()
                    .map_or(&[][..], |t| t.as_os_str().as_bytes());
                self.cpio.symlink(name, &meta, target)?;
            }
            EntryKind::CharDevice => {
                self.cpio
                    .special(name, &meta, Special::CharDevice(entry.rdev))?
            }
            EntryKind::BlockDevice => {
                self.cpio
                    .special(name, &meta, Special::BlockDevice(entry.rdev))?
            }
            EntryKind::Fifo => self.cpio.special(name, &meta, Special::Fifo)?,
            EntryKind::Socket => self.cpio.special(name, &meta, Special::Socket)?,
        }
        self.entries += 1;
        Ok(())
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Ends the archive; returns the output and the archive length in bytes.
    pub fn finish(self) -> Result<(W, u64), CpioError> {
        self.cpio.finish()
    }

    fn meta(&mut self, entry: &Entry) -> Meta {
        let ino = match entry.hardlink {
            Some(h) => match self.set_inos.get(&h.group) {
                Some(&ino) => ino,
                None => {
                    let ino = self.take_ino();
                    self.set_inos.insert(h.group, ino);
                    ino
                }
            },
            None => self.take_ino(),
        };
        let nlink = match (entry.kind, entry.hardlink) {
            (_, Some(h)) => h.members,
            // Not read by the kernel or cpio; 2 is what an empty directory has.
            (EntryKind::Directory, None) => 2,
            _ => 1,
        };
        Meta {
            ino,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            nlink,
            mtime: self.mtime,
        }
    }

    fn take_ino(&mut self) -> u32 {
        let ino = self.next_ino;
        // Past 4 billion entries numbers would repeat; no initramfs gets there.
        self.next_ino = self.next_ino.wrapping_add(1).max(1);
        ino
    }
}

/// The exact length of the archive of `entries`, for progress reporting.
pub fn archive_len(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| cpio::entry_len(e.path_bytes().len(), e.data_len()))
        .sum::<u64>()
        + cpio::trailer_len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initrd::entry::{DeviceNumber, HardLink};
    use std::path::PathBuf;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: PathBuf::from(path),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            link_target: None,
            rdev: DeviceNumber::default(),
            hardlink: None,
            source: None,
        }
    }

    #[test]
    fn hardlink_sets_share_the_first_members_inode() {
        let mut a = entry("a", EntryKind::Regular);
        a.size = 3;
        let set = HardLink {
            group: 0,
            members: 2,
            leader: true,
        };
        a.hardlink = Some(set);
        let mut b = a.clone();
        b.path = PathBuf::from("b");
        b.hardlink = Some(HardLink {
            leader: false,
            ..set
        });
        let mut l = entry("l", EntryKind::Symlink);
        l.link_target = Some(PathBuf::from("a"));
        let entries = [entry(".", EntryKind::Directory), a, l, b];
        let mut w = ArchiveWriter::new(Vec::new(), 7);
        w.add(&entries[0], None).unwrap();
        w.add(&entries[1], Some(&mut &b"abc"[..])).unwrap();
        w.add(&entries[2], None).unwrap();
        w.add(&entries[3], None).unwrap();
        assert_eq!(w.entries(), 4);
        let (out, len) = w.finish().unwrap();
        assert_eq!(len, archive_len(&entries));
        assert_eq!(len, out.len() as u64);
        let text = String::from_utf8_lossy(&out);
        // ino, then nlink, of each header in order.
        let heads: Vec<(&str, &str)> = text
            .match_indices("070701")
            .map(|(i, _)| (&text[i + 6..i + 14], &text[i + 38..i + 46]))
            .collect();
        assert_eq!(
            heads,
            [
                ("00000001", "00000002"),
                ("00000002", "00000002"),
                ("00000003", "00000001"),
                ("00000002", "00000002"),
                ("00000000", "00000001"),
            ]
        );
    }
}
