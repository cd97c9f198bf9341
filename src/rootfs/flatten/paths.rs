//! Path and header helpers of the flattener: normalising tar paths
//! (refusing absolute paths and `..`), splitting them, PAX records, and the
//! initramfs entry for a layer entry.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::initrd::{Entry, EntryKind};

use super::{Meta, ROOT};

pub(super) fn split(p: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    p.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| c.to_vec())
}

/// The PAX records of an entry as byte pairs.
pub(super) fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    match entry.pax_extensions() {
        Ok(Some(exts)) => exts
            .flatten()
            .map(|e| (e.key_bytes().to_vec(), e.value_bytes().to_vec()))
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn parse_id(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Normalises a layer path: `./` and `/`-runs dropped; refuses absolute paths
/// and `..`. The root is the empty path.
pub fn normalize(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("`..` component escapes the root"),
            p => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(p);
            }
        }
    }
    Ok(out)
}

pub(super) fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (ROOT, path),
    }
}

pub(super) fn to_path(p: &[u8]) -> PathBuf {
    if p.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(OsStr::from_bytes(p))
    }
}

pub(super) fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "/".into()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

pub(super) fn entry_for(path: &[u8], meta: &Meta) -> Entry {
    Entry {
        path: to_path(path),
        kind: meta.kind,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        size: if meta.kind == EntryKind::Regular {
            meta.size
        } else {
            0
        },
        link_target: match meta.kind {
            EntryKind::Symlink => meta.link.as_deref().map(to_path),
            _ => None,
        },
        rdev: meta.rdev,
        hardlink: None,
        source: None,
    }
}
