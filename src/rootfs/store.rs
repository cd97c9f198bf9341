//! Files of an image held locally: an OCI layout directory, or a tar archive
//! (`oci-archive:`, `docker-archive:`) read in place.
//!
//! An archive is indexed once by a header scan that seeks over member data,
//! so opening a layer is a seek and a bounded read: nothing is unpacked to
//! disk. Member names are normalised; symlinked members (older `docker save`
//! shares layers that way) are followed inside the archive only.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::error::ImageError;
use super::manifest::LayerCompression;

/// Metadata documents larger than this are refused (a manifest is a few KiB).
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// An opened member: its reader and its length.
pub type Member = (Box<dyn Read + Send>, u64);

/// Read access to the files of a local image.
pub trait Store: Send + Sync {
    /// The source, for messages.
    fn name(&self) -> String;
    /// Opens a member; `None` when it does not exist. Returns the reader and the length.
    fn open(&self, path: &str) -> Result<Option<Member>, ImageError>;

    /// Reads a small member whole (at most [`MAX_DOCUMENT`] bytes).
    fn read_small(&self, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
        let Some((mut r, len)) = self.open(path)? else {
            return Ok(None);
        };
        if len > MAX_DOCUMENT {
            return Err(ImageError::source(
                &self.name(),
                format!("{path} is {len} bytes, too large for a metadata document"),
            ));
        }
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .map_err(|e| ImageError::source(&self.name(), format!("cannot read {path}: {e}")))?;
        Ok(Some(buf))
    }
}

/// Opens `path` for reading only if it is a regular file: a FIFO, a device
/// or a socket where an image file is expected would block the build forever
/// (or read a disk), so it is refused. The open itself does not block
/// (`O_NONBLOCK`, cleared again afterwards); with `follow` false a symlink
/// in the last component is refused too (`O_NOFOLLOW`).
pub fn open_regular(path: &Path, follow: bool) -> Result<File, ImageError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut flags = nix::libc::O_NONBLOCK;
    if !follow {
        flags |= nix::libc::O_NOFOLLOW;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(ImageError::io(path))?;
    let ft = f.metadata().map_err(ImageError::io(path))?.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(ImageError::source(
            &path.display().to_string(),
            format!(
                "is {kind}; image files must be regular files (replace it with the file itself)"
            ),
        ));
    }
    // Back to blocking reads (no effect on a regular file, but explicit).
    nix::fcntl::fcntl(
        &f,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| ImageError::io(path)(e.into()))?;
    Ok(f)
}

/// Checks a member path: relative, no `..`.
fn clean(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// An OCI layout (or unpacked `docker save`) directory.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store over `root`.
    pub fn new(root: &Path) -> DirStore {
        DirStore {
            root: root.to_path_buf(),
        }
    }
}

impl Store for DirStore {
    fn name(&self) -> String {
        self.root.display().to_string()
    }

    fn open(&self, path: &str) -> Result<Option<Member>, ImageError> {
        let rel = clean(path).ok_or_else(|| {
            ImageError::source(&self.name(), format!("refusing member path {path:?}"))
        })?;
        // No symlinks on the way: a layout's files are plain files, and a
        // link could point anywhere on the host.
        let mut here = self.root.clone();
        for part in rel.split('/') {
            here.push(part);
            match std::fs::symlink_metadata(&here) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ImageError::source(
                        &self.name(),
                        format!("{rel} goes through a symlink; an OCI layout holds plain files"),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(ImageError::io(&here)(e)),
            }
        }
        let f = open_regular(&here, false)?;
        let len = f.metadata().map_err(ImageError::io(&here))?.len();
        Ok(Some((Box::new(f), len)))
    }
}

#[derive(Clone, Debug)]
enum Entry {
    Data { offset: u64, len: u64 },
    Link(String),
}

/// A tar archive read in place.
pub struct TarStore {
    file: PathBuf,
    members: HashMap<String, Entry>,
}

impl TarStore {
    /// Indexes `file` by a header scan.
    pub fn open(file: &Path) -> Result<TarStore, ImageError> {
        let name = file.display().to_string();
        let mut f = open_regular(file, true)?;
        let mut head = [0u8; 4];
        let n = f.read(&mut head).map_err(ImageError::io(file))?;
        if LayerCompression::sniff(&head[..n]) != LayerCompression::None {
            return Err(ImageError::source(
                &name,
                "the archive is compressed; decompress it first (e.g. `gunzip -k` or `zstd -d`), it is read in place",
            ));
        }
        f.seek(SeekFrom::Start(0)).map_err(ImageError::io(file))?;
        let mut archive = tar::Archive::new(f);
        let bad =
            |e: io::Error| ImageError::source(&name, format!("not a readable tar archive: {e}"));
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = clean(&path) else { continue };
            let kind = entry.header().entry_type();
            let member = if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                let resolved = if kind.is_symlink() {
                    // Relative to the member's directory.
                    let dir = Path::new(&path).parent().unwrap_or(Path::new(""));
                    dir.join(&target).to_string_lossy().into_owned()
                } else {
                    target
                };
                Entry::Link(resolved)
            } else if kind.is_file() {
                Entry::Data {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                }
            } else {
                continue;
            };
            members.insert(path, member);
        }
        Ok(TarStore {
            file: file.to_path_buf(),
            members,
        })
    }

    /// Whether the archive has a member.
    pub fn has(&self, path: &str) -> bool {
        self.members.contains_key(path)
    }

    fn lookup(&self, path: &str) -> Option<(u64, u64)> {
        let mut p = clean(path)?;
        for _ in 0..8 {
            match self.members.get(&p)? {
                Entry::Data { offset, len } => return Some((*offset, *len)),
                Entry::Link(t) => {
                    // `..` inside the archive is resolved lexically; escaping it fails.
                    let mut parts: Vec<&str> = Vec::new();
                    for c in t.split('/') {
                        match c {
                            "" | "." => {}
                            ".." => {
                                parts.pop()?;
                            }
                            n => parts.push(n),
                        }
                    }
                    p = parts.join("/");
                }
            }
        }
        None
    }
}

impl Store for TarStore {
    fn name(&self) -> String {
        self.file.display().to_string()
    }

    fn open(&self, path: &str) -> Result<Option<Member>, ImageError> {
        let Some((offset, len)) = self.lookup(path) else {
            return Ok(None);
        };
        let mut f = open_regular(&self.file, true)?;
        f.seek(SeekFrom::Start(offset))
            .map_err(ImageError::io(&self.file))?;
        Ok(Some((Box::new(f.take(len)), len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_members_are_read_in_place_and_links_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("a.tar");
        let mut b = tar::Builder::new(File::create(&file).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h.clone(), "./blobs/sha256/x", &b"hello"[..])
            .unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "dir/link", "../blobs/sha256/x")
            .unwrap();
        b.append_link(&mut l.clone(), "dir/evil", "../../../etc/passwd")
            .unwrap();
        b.finish().unwrap();
        drop(b);
        let s = TarStore::open(&file).unwrap();
        assert_eq!(s.read_small("blobs/sha256/x").unwrap().unwrap(), b"hello");
        assert_eq!(s.read_small("dir/link").unwrap().unwrap(), b"hello");
        assert!(s.read_small("dir/evil").unwrap().is_none());
        assert!(s.read_small("missing").unwrap().is_none());
    }
}
