//! Flattening image layers into one stream of initramfs entries, reading each
//! layer once, from the top layer down.
//!
//! # Order and semantics
//!
//! Layers are applied the way overlayfs (and so the engine) merges them, but
//! walked top-down: the first time a path is met it is final, because every
//! layer above has already been seen. An index of claimed paths, whiteouts
//! (`.wh.NAME`) and opaque directories (`.wh..wh..opq`) decides for each
//! entry of a lower layer whether it is visible:
//! - a path claimed by an upper layer is shadowed (its data is skipped);
//! - a path whited out by an upper layer, or below a directory an upper layer
//!   made opaque, or below a path an upper layer turned into a non-directory,
//!   is hidden;
//! - directories merge: the upper layer's directory entry gives the owner and
//!   mode, lower layers add contents.
//!
//! The archive is therefore in top-down layer order, and within a layer in
//! that layer's tar order: deterministic for a given image (same digests,
//! same bytes), but not sorted by path like a `dir:` build. Two consequences
//! for the kernel's unpacker (init/initramfs.c), which creates no missing
//! parents and applies entries in order:
//! - A path whose parent directory has not been emitted yet gets a
//!   placeholder directory first (0755 root:root). When the directory's own
//!   entry turns up in a lower layer it is emitted again with its real owner
//!   and mode; `do_name` re-applies chown/chmod to an existing directory, so
//!   the last emission wins. If no layer has an entry for it, the placeholder
//!   stays: that is what the engine does too (it creates missing parents
//!   0755).
//! - Hard links. newc links names by inode number, and the kernel only links a
//!   name to an earlier entry whose header said `nlink >= 2`. Layer tars say
//!   which names are links only at the *later* name, so files are held back in
//!   a bounded window (`link_window` bytes, in order) before they are written:
//!   a link to a file still in the window turns that file into the set's first
//!   member (carrying the data) and the link into a later member (size 0).
//!   A link to a file already written (it was larger than the window, or the
//!   window moved on) is repaired after the last layer: that one layer is read
//!   again and the file is written once more as a set leader followed by its
//!   links (the kernel truncates and rewrites the existing file, so the names
//!   end up sharing one inode). A link to a file of a lower layer waits until
//!   that layer is read; the file is then written as the set's leader.
//!   Links to symlinks or device nodes become copies (the kernel cannot link a
//!   symlink; a copy of a device node is the same device).
//!
//! # Refusals
//! Paths are normalised (`./` prefixes dropped) and refused when absolute or
//! holding `..`; hard-link targets likewise. An entry below a symlink of the
//! same layer (a write through a symlink), or a layer that implicitly creates
//! a directory where a lower layer has a symlink, is refused. Limits on
//! entries, declared sizes and path length are checked before data is read.
//!
//! # Memory
//! The index holds one record per distinct path of the image (the path bytes
//! plus about 60 bytes), the whiteout and opaque sets, deferred link names,
//! and the link window (at most `link_window` bytes of file data). Nothing
//! else grows with the image: file data streams from the layer reader to the
//! sink.
//!
//! # Layout
//! This file holds the index and the per-entry decisions; [`links`] the
//! hard-link window, pending links and the repair pass; [`tree`] the final
//! tree handed to boot-file discovery; [`paths`] path normalisation and
//! header helpers; [`error`] the error and report types.

mod error;
mod links;
mod paths;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read};

use crate::initrd::tree::SKIPPED_CONTENTS;
use crate::initrd::{DeviceNumber, Entry, EntryKind};

use super::options::Limits;
pub use error::{FlattenError, FlattenReport};
use links::{Group, Held, LinkName, Repair, SeenAs};
pub use paths::normalize;
use paths::{entry_for, parse_id, pax_records, show, split, split_last};
pub use tree::{Tree, TreeNode};

/// Where flattened entries go (the cpio writer in a build).
pub trait Sink {
    /// Writes one entry; `data` supplies exactly `entry.size` bytes when the
    /// entry carries data.
    fn emit(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), FlattenError>;
}

/// What a claimed path is.
#[derive(Debug, Clone)]
enum Kind {
    /// A directory; `real` once a layer's own entry for it was applied.
    Dir { real: bool },
    /// A regular file; `group` when it is in a hard-link set.
    File {
        group: Option<u32>,
        data_path: Option<Vec<u8>>,
    },
    /// A symlink.
    Symlink(Vec<u8>),
    /// A device node, FIFO or socket.
    Special(EntryKind),
    /// A hard-link name waiting for its target (lower layer or repair pass).
    Pending,
}

#[derive(Debug, Clone)]
struct Node {
    layer: u32,
    kind: Kind,
}

impl Node {
    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }
}

enum Visibility {
    Visible,
    /// Claimed by a layer at or above this one.
    Claimed,
    /// Whited out, below an opaque directory or below a non-directory.
    Hidden,
}

/// Metadata of a layer entry, independent of the tar reader.
#[derive(Debug, Clone)]
struct Meta {
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: DeviceNumber,
    link: Option<Vec<u8>>,
}

/// Flattens layers (given top-down) into a [`Sink`].
pub struct Flattener<S: Sink> {
    sink: S,
    limits: Limits,
    skip_pseudo: bool,
    link_window: usize,
    nodes: HashMap<Vec<u8>, Node>,
    whiteouts: HashMap<Vec<u8>, u32>,
    opaque: HashMap<Vec<u8>, u32>,
    pending: HashMap<Vec<u8>, Vec<LinkName>>,
    repairs: BTreeMap<u32, Vec<(Vec<u8>, Repair)>>,
    groups: HashMap<u32, Group>,
    next_group: u32,
    window: VecDeque<Held>,
    window_index: HashMap<Vec<u8>, usize>,
    window_base: usize,
    window_bytes: usize,
    seen: HashMap<Vec<u8>, SeenAs>,
    aliases: HashMap<Vec<u8>, Vec<u8>>,
    layer: Option<u32>,
    label: String,
    labels: HashMap<u32, String>,
    declared_bytes: u64,
    report: FlattenReport,
}

const ROOT: &[u8] = b"";

impl<S: Sink> Flattener<S> {
    /// A flattener writing to `sink`. `skip_pseudo` leaves out the contents of
    /// `/proc /sys /dev /run /tmp` like a `dir:` build (keeping a
    /// `dev/console` device); `link_window` is the hard-link window in bytes.
    pub fn new(sink: S, limits: Limits, skip_pseudo: bool, link_window: usize) -> Self {
        Flattener {
            sink,
            limits,
            skip_pseudo,
            link_window,
            nodes: HashMap::new(),
            whiteouts: HashMap::new(),
            opaque: HashMap::new(),
            pending: HashMap::new(),
            repairs: BTreeMap::new(),
            groups: HashMap::new(),
            next_group: 0,
            window: VecDeque::new(),
            window_index: HashMap::new(),
            window_base: 0,
            window_bytes: 0,
            seen: HashMap::new(),
            aliases: HashMap::new(),
            layer: None,
            label: String::new(),
            labels: HashMap::new(),
            declared_bytes: 0,
            report: FlattenReport::default(),
        }
    }

    /// Applies one layer: `index` counts from the bottom layer (0) and must
    /// decrease from call to call; `label` names it in messages; `reader`
    /// is the uncompressed tar; `whiteouts` is false for a flattened tarball
    /// (`tar:` source), where `.wh.` names are ordinary files.
    pub fn layer(
        &mut self,
        index: u32,
        label: &str,
        reader: impl Read,
        whiteouts: bool,
    ) -> Result<(), FlattenError> {
        if let Some(prev) = self.layer {
            if index >= prev {
                return Err(FlattenError::Order {
                    previous: prev,
                    got: index,
                });
            }
        } else {
            // The root exists before any layer says anything about it.
            self.claim_placeholder(ROOT.to_vec(), index)?;
        }
        self.layer = Some(index);
        self.label = label.to_string();
        self.labels.insert(index, label.to_string());
        self.seen.clear();
        self.aliases.clear();
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.tar_error(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.tar_error(e))?;
            self.entry(&mut entry, whiteouts)?;
        }
        self.flush_window()?;
        // Past the end-of-archive blocks: the rest of the stream is read too,
        // so the layer's digests are checked over every byte (and a bomb
        // hidden after the archive meets the size limit).
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| self.tar_error(e))?;
        Ok(())
    }

    /// Finishes: repairs hard links by reading the layers `reopen` gives
    /// again (only those that need it), checks that every link found its
    /// target, and returns the sink, the final tree and the report.
    pub fn finish<R: Read>(
        mut self,
        mut reopen: impl FnMut(u32) -> Result<R, String>,
    ) -> Result<(S, Tree, FlattenReport), FlattenError> {
        self.flush_window()?;
        let repairs = std::mem::take(&mut self.repairs);
        for (layer, list) in repairs.into_iter().rev() {
            let label = self.labels.get(&layer).cloned().unwrap_or_default();
            let reader = reopen(layer).map_err(|problem| FlattenError::Reopen {
                layer: label.clone(),
                problem,
            })?;
            self.label = label;
            self.repair_layer(reader, list)?;
            self.report.relinked_layers.push(layer);
        }
        if let Some((target, names)) = self.pending.iter().min_by(|a, b| a.0.cmp(b.0)) {
            let name = &names[0];
            return Err(FlattenError::LinkTargetMissing {
                layer: self.labels.get(&name.layer).cloned().unwrap_or_default(),
                name: show(&name.path),
                target: show(target),
            });
        }
        let mut tree = Tree::default();
        for (path, node) in self.nodes {
            let (kind, target, data_path) = match node.kind {
                Kind::Dir { real } => {
                    if !real && !path.is_empty() {
                        self.report.placeholders_left += 1;
                    }
                    (EntryKind::Directory, None, None)
                }
                Kind::File { data_path, .. } => (
                    EntryKind::Regular,
                    None,
                    Some(data_path.unwrap_or_else(|| path.clone())),
                ),
                Kind::Symlink(t) => (EntryKind::Symlink, Some(t), None),
                Kind::Special(k) => (k, None, None),
                // Unreachable after the pending check; keep it out of the tree.
                Kind::Pending => continue,
            };
            tree.nodes.insert(
                path,
                TreeNode {
                    kind,
                    target,
                    data_path,
                },
            );
        }
        Ok((self.sink, tree, self.report))
    }

    fn tar_error(&self, source: io::Error) -> FlattenError {
        FlattenError::Tar {
            layer: self.label.clone(),
            source,
        }
    }

    fn current(&self) -> u32 {
        self.layer.unwrap_or(0)
    }

    fn bad(&self, path: &[u8], problem: impl Into<String>) -> FlattenError {
        FlattenError::BadEntry {
            layer: self.label.clone(),
            path: show(path),
            problem: problem.into(),
        }
    }

    /// One tar entry of the current layer.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        whiteouts: bool,
    ) -> Result<(), FlattenError> {
        self.report.entries_read += 1;
        if self.report.entries_read > self.limits.max_entries {
            return Err(FlattenError::Limit {
                layer: self.label.clone(),
                what: "the number of entries".into(),
                limit: self.limits.max_entries.to_string(),
                flag: "--max-image-entries",
            });
        }
        let raw = entry.path_bytes().into_owned();
        self.check_len(&raw)?;
        let path = match normalize(&raw) {
            Ok(p) => p,
            Err(reason) => {
                return Err(FlattenError::UnsafePath {
                    layer: self.label.clone(),
                    path: show(&raw),
                    reason,
                })
            }
        };
        let header = entry.header().clone();
        let size = entry.size();
        self.declared_bytes = self
            .declared_bytes
            .saturating_add(512 + size.div_ceil(512) * 512);
        if self.declared_bytes > self.limits.max_bytes {
            return Err(FlattenError::Limit {
                layer: self.label.clone(),
                what: format!("the declared size of entry {:?}", show(&path)),
                limit: format!("{} bytes", self.limits.max_bytes),
                flag: "--max-image-size",
            });
        }
        let (base, name) = split_last(&path);
        if whiteouts && !path.is_empty() {
            if let Some(hidden) = name.strip_prefix(b".wh.") {
                return self.whiteout(&path, base, hidden);
            }
        }
        let pax = pax_records(entry);
        let meta = self.meta(entry, &path, &header, size, &pax)?;
        for (key, _) in &pax {
            if key == b"SCHILY.xattr.security.capability" {
                if meta.kind == EntryKind::Regular
                    && matches!(self.visibility(&path, self.current()), Visibility::Visible)
                {
                    self.report.capabilities_lost.push(show(&path));
                }
            } else if key.starts_with(b"SCHILY.xattr.") {
                self.report.other_xattrs += 1;
            }
        }
        // A link name another layer is waiting for: this entry is its inode.
        if self.pending.contains_key(&path) && header.entry_type() != tar::EntryType::Link {
            return self.resolve_pending(&path, &meta, entry);
        }
        if header.entry_type() == tar::EntryType::Link {
            let Some(target) = meta.link.clone() else {
                return Err(self.bad(&path, "hard link without a target"));
            };
            return self.hard_link(path, target, meta);
        }
        self.place(path, meta, entry)
    }

    fn check_len(&self, raw: &[u8]) -> Result<(), FlattenError> {
        if raw.len() > self.limits.max_path_len {
            return Err(FlattenError::Limit {
                layer: self.label.clone(),
                what: format!("the length of path {:?}…", show(&raw[..64.min(raw.len())])),
                limit: format!("{} bytes", self.limits.max_path_len),
                flag: "--max-path-length",
            });
        }
        Ok(())
    }

    fn meta<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        path: &[u8],
        header: &tar::Header,
        size: u64,
        pax: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Meta, FlattenError> {
        use tar::EntryType as T;
        let kind = match header.entry_type() {
            T::Regular | T::Continuous | T::Link => EntryKind::Regular,
            T::Directory => EntryKind::Directory,
            T::Symlink => EntryKind::Symlink,
            T::Char => EntryKind::CharDevice,
            T::Block => EntryKind::BlockDevice,
            T::Fifo => EntryKind::Fifo,
            T::GNUSparse => {
                return Err(self.bad(path, "GNU sparse files are not supported in layers"))
            }
            other => {
                return Err(self.bad(
                    path,
                    format!("tar entry type {other:?} cannot be applied (only files, directories, links, devices and FIFOs)"),
                ))
            }
        };
        let int = |r: io::Result<u64>, what: &str| -> Result<u32, FlattenError> {
            r.ok()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| self.bad(path, format!("{what} does not fit 32 bits")))
        };
        let mut uid = int(header.uid(), "uid")?;
        let mut gid = int(header.gid(), "gid")?;
        // PAX records carry ids that do not fit the ustar field.
        let mut pax_link = None;
        for (k, v) in pax {
            match k.as_slice() {
                b"uid" => uid = parse_id(v).ok_or_else(|| self.bad(path, "bad PAX uid"))?,
                b"gid" => gid = parse_id(v).ok_or_else(|| self.bad(path, "bad PAX gid"))?,
                b"GNU.sparse.major" | b"GNU.sparse.map" | b"GNU.sparse.size" => {
                    return Err(self.bad(path, "sparse files are not supported in layers"))
                }
                b"linkpath" => pax_link = Some(v.clone()),
                _ => {}
            }
        }
        let link = match header.entry_type() {
            T::Symlink | T::Link => {
                let l = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .or(pax_link)
                    .ok_or_else(|| self.bad(path, "link without a target"))?;
                self.check_len(&l)?;
                Some(l)
            }
            _ => None,
        };
        let rdev = match kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => DeviceNumber {
                major: header.device_major().ok().flatten().unwrap_or(0),
                minor: header.device_minor().ok().flatten().unwrap_or(0),
            },
            _ => DeviceNumber::default(),
        };
        Ok(Meta {
            kind,
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            uid,
            gid,
            size: if kind == EntryKind::Regular { size } else { 0 },
            rdev,
            link,
        })
    }

    /// Records a whiteout (`.wh.NAME`) or an opaque marker (`.wh..wh..opq`).
    fn whiteout(&mut self, path: &[u8], dir: &[u8], hidden: &[u8]) -> Result<(), FlattenError> {
        let layer = self.current();
        if let Visibility::Hidden = self.visibility(path, layer) {
            return Ok(());
        }
        if !dir.is_empty() {
            self.ensure_dir(dir, layer, path)?;
        }
        if hidden == b".wh..opq" {
            self.opaque.entry(dir.to_vec()).or_insert(layer);
        } else if hidden.starts_with(b".wh.") {
            // Other `.wh..wh.` names are aufs bookkeeping; the engine ignores them.
        } else if !hidden.is_empty() {
            let mut target = dir.to_vec();
            if !target.is_empty() {
                target.push(b'/');
            }
            target.extend_from_slice(hidden);
            self.whiteouts.entry(target).or_insert(layer);
        }
        Ok(())
    }

    /// Whether `path` of layer `layer` is visible given the upper layers.
    fn visibility(&self, path: &[u8], layer: u32) -> Visibility {
        for (i, _) in path.iter().enumerate().filter(|(_, b)| **b == b'/') {
            let anc = &path[..i];
            if self.whiteouts.get(anc).is_some_and(|&l| l > layer)
                || self.opaque.get(anc).is_some_and(|&l| l > layer)
            {
                return Visibility::Hidden;
            }
            if let Some(n) = self.nodes.get(anc) {
                if n.layer > layer && !n.is_dir() {
                    return Visibility::Hidden;
                }
            }
        }
        if !path.is_empty() && self.opaque.get(ROOT).is_some_and(|&l| l > layer) {
            return Visibility::Hidden;
        }
        if self.whiteouts.get(path).is_some_and(|&l| l > layer) {
            return Visibility::Hidden;
        }
        match self.nodes.get(path) {
            Some(_) => Visibility::Claimed,
            None => Visibility::Visible,
        }
    }

    /// Whether an entry is left out as pseudo-file-system contents.
    fn pseudo(&self, path: &[u8], kind: EntryKind) -> bool {
        if !self.skip_pseudo {
            return false;
        }
        let Some(slash) = path.iter().position(|b| *b == b'/') else {
            return false;
        };
        let top = &path[..slash];
        if !SKIPPED_CONTENTS.iter().any(|s| s.as_bytes() == top) {
            return false;
        }
        !(path == b"dev/console" && kind == EntryKind::CharDevice)
    }

    /// Places a non-link entry of the current layer.
    fn place<R: Read>(
        &mut self,
        path: Vec<u8>,
        meta: Meta,
        data: &mut R,
    ) -> Result<(), FlattenError> {
        let layer = self.current();
        let vis = self.visibility(&path, layer);
        if meta.kind == EntryKind::Regular {
            self.seen.insert(
                path.clone(),
                if matches!(vis, Visibility::Visible) || self.same_layer_file(&path) {
                    SeenAs::Emitted
                } else {
                    SeenAs::Ghost
                },
            );
        }
        match vis {
            Visibility::Hidden => return self.ghost(path, meta, data),
            Visibility::Claimed => {
                let node = self.nodes.get(&path).cloned();
                match node {
                    Some(Node {
                        kind: Kind::Dir { real: false },
                        layer: by,
                    }) => {
                        match meta.kind {
                            EntryKind::Directory => {
                                // The directory's own metadata, after a placeholder.
                                self.nodes.insert(
                                    path.clone(),
                                    Node {
                                        layer: by,
                                        kind: Kind::Dir { real: true },
                                    },
                                );
                                return self.push(entry_for(&path, &meta), path, data);
                            }
                            EntryKind::Symlink => {
                                return Err(FlattenError::ThroughSymlink {
                                    layer: self.label.clone(),
                                    path: format!("{}/…", show(&path)),
                                    link: show(&path),
                                })
                            }
                            _ if by == layer => {
                                return Err(self.bad(
                                    &path,
                                    "the layer has entries below it but it is not a directory",
                                ))
                            }
                            // An upper layer made a directory here: it wins.
                            _ => return self.ghost(path, meta, data),
                        }
                    }
                    Some(n) if n.layer == layer => {
                        // The same path twice in one layer: the later entry wins,
                        // as tar extraction does (the kernel replaces the file).
                        if n.is_dir() != (meta.kind == EntryKind::Directory) {
                            return Err(self.bad(
                                &path,
                                "the layer holds it both as a directory and as a non-directory",
                            ));
                        }
                    }
                    _ => return self.ghost(path, meta, data),
                }
            }
            Visibility::Visible => {}
        }
        if self.pseudo(&path, meta.kind) {
            return Ok(());
        }
        if !path.is_empty() {
            let (parent, _) = split_last(&path);
            self.ensure_dir(parent, layer, &path)?;
        }
        let kind = match meta.kind {
            EntryKind::Directory => Kind::Dir { real: true },
            EntryKind::Regular => Kind::File {
                group: None,
                data_path: None,
            },
            EntryKind::Symlink => Kind::Symlink(meta.link.clone().unwrap_or_default()),
            k => Kind::Special(k),
        };
        self.nodes.insert(path.clone(), Node { layer, kind });
        self.push(entry_for(&path, &meta), path, data)
    }

    fn same_layer_file(&self, path: &[u8]) -> bool {
        self.nodes
            .get(path)
            .is_some_and(|n| n.layer == self.current() && matches!(n.kind, Kind::File { .. }))
    }

    /// A regular file no one will see: kept in the window (if small) only in
    /// case a later hard link of this layer needs its data.
    fn ghost<R: Read>(
        &mut self,
        path: Vec<u8>,
        meta: Meta,
        data: &mut R,
    ) -> Result<(), FlattenError> {
        self.report.shadowed += 1;
        if meta.kind != EntryKind::Regular
            || meta.size > self.link_window as u64
            || self.link_window == 0
        {
            return Ok(());
        }
        let bytes = self.read_all(data, meta.size, &path)?;
        self.hold(Held {
            entry: None,
            path,
            data: Some(bytes),
            ghost_group: None,
        })
    }

    /// Makes sure every directory of `dir` exists, with placeholders.
    fn ensure_dir(&mut self, dir: &[u8], layer: u32, for_path: &[u8]) -> Result<(), FlattenError> {
        let mut ends: Vec<usize> = dir
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| i)
            .collect();
        if !dir.is_empty() {
            ends.push(dir.len());
        }
        for end in ends {
            let anc = &dir[..end];
            match self.nodes.get(anc) {
                Some(n) if n.is_dir() => continue,
                Some(Node {
                    kind: Kind::Symlink(_),
                    ..
                }) => {
                    return Err(FlattenError::ThroughSymlink {
                        layer: self.label.clone(),
                        path: show(for_path),
                        link: show(anc),
                    })
                }
                Some(_) => {
                    return Err(self.bad(
                        for_path,
                        format!("its parent {:?} is not a directory", show(anc)),
                    ))
                }
                None => {
                    let anc = anc.to_vec();
                    self.claim_placeholder(anc, layer)?;
                }
            }
        }
        Ok(())
    }

    fn claim_placeholder(&mut self, path: Vec<u8>, layer: u32) -> Result<(), FlattenError> {
        self.nodes.insert(
            path.clone(),
            Node {
                layer,
                kind: Kind::Dir { real: false },
            },
        );
        let meta = Meta {
            kind: EntryKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            rdev: DeviceNumber::default(),
            link: None,
        };
        self.push(entry_for(&path, &meta), path, &mut io::empty())
    }

    fn write(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), FlattenError> {
        self.report.entries_emitted += 1;
        self.sink.emit(entry, data)
    }
}
