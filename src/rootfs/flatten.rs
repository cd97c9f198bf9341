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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::initrd::cpio::CpioError;
use crate::initrd::tree::SKIPPED_CONTENTS;
use crate::initrd::{DeviceNumber, Entry, EntryKind, HardLink};

use super::options::Limits;

/// Where flattened entries go (the cpio writer in a build).
pub trait Sink {
    /// Writes one entry; `data` supplies exactly `entry.size` bytes when the
    /// entry carries data.
    fn emit(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), FlattenError>;
}

/// Why an image could not be flattened.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// The layer's tar stream is corrupt, truncated or not a tar.
    #[error("{layer}: cannot read the layer: {source}; the blob is corrupt or truncated (pull or export the image again)")]
    Tar {
        /// The layer.
        layer: String,
        /// What the reader said.
        source: io::Error,
    },
    /// A path that would land outside the root.
    #[error("{layer}: refusing entry {path:?}: {reason}; an image layer must only hold paths inside the root")]
    UnsafePath {
        /// The layer.
        layer: String,
        /// The path as stored.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry would be written through a symlink.
    #[error("{layer}: refusing entry {path:?}: it would be written through the symlink {link:?}; a layer must not place files below a symlink")]
    ThroughSymlink {
        /// The layer.
        layer: String,
        /// The entry.
        path: String,
        /// The symlink in its way.
        link: String,
    },
    /// An entry that cannot be applied.
    #[error("{layer}: entry {path:?}: {problem}")]
    BadEntry {
        /// The layer.
        layer: String,
        /// The entry.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A hard link whose target no layer has.
    #[error("{layer}: hard link {name:?} points to {target:?}, which neither its layer nor any layer below has; the image is malformed")]
    LinkTargetMissing {
        /// The layer of the link.
        layer: String,
        /// The link's name.
        name: String,
        /// Its target.
        target: String,
    },
    /// A configured limit was passed.
    #[error("{layer}: {what} passes the limit of {limit}; the image is hostile or larger than expected (raise {flag} if it is trusted)")]
    Limit {
        /// Where it was passed.
        layer: String,
        /// What was counted.
        what: String,
        /// The limit.
        limit: String,
        /// The option raising it.
        flag: &'static str,
    },
    /// Layers were not given top-down.
    #[error("layers must be flattened top-down: layer {got} after layer {previous}")]
    Order {
        /// The previous layer index.
        previous: u32,
        /// The layer given.
        got: u32,
    },
    /// The sink could not write an entry.
    #[error("{path}: cannot go into the initramfs: {source}")]
    Unrepresentable {
        /// The entry.
        path: String,
        /// Why.
        source: CpioError,
    },
    /// The sink's output failed.
    #[error("cannot write the initrd: {0}; check free space in the temporary directory")]
    Output(#[source] io::Error),
    /// A layer reader could not be reopened for a hard-link repair.
    #[error("{layer}: cannot read the layer again to repair hard links: {problem}")]
    Reopen {
        /// The layer.
        layer: String,
        /// What failed.
        problem: String,
    },
}

/// What the flattener reports besides the entries.
#[derive(Debug, Default, Clone)]
pub struct FlattenReport {
    /// Tar entries read from all layers.
    pub entries_read: u64,
    /// Entries emitted (placeholders and re-emissions included).
    pub entries_emitted: u64,
    /// Entries skipped because an upper layer shadows or hides them.
    pub shadowed: u64,
    /// Files whose `security.capability` xattr the initramfs cannot carry.
    pub capabilities_lost: Vec<String>,
    /// Entries with other extended attributes (also lost), counted.
    pub other_xattrs: u64,
    /// Layers read a second time to repair hard links.
    pub relinked_layers: Vec<u32>,
    /// Placeholder directories no layer described (kept as 0755 root).
    pub placeholders_left: u64,
}

/// The final tree: what each visible path is, for finding boot files after
/// the stream (kernel, stub, os-release) without keeping the data.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: HashMap<Vec<u8>, TreeNode>,
}

/// One visible path of the flattened image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    /// File type.
    pub kind: EntryKind,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// For regular files: the archive path whose entry carried the data
    /// (itself, or the leader of its hard-link set).
    pub data_path: Option<Vec<u8>>,
}

impl Tree {
    /// The node at an exact path (no symlink resolution); `b""` is the root.
    pub fn get(&self, path: &[u8]) -> Option<&TreeNode> {
        self.nodes.get(path)
    }

    /// Resolves `path` inside the image, following symlinks but never leaving
    /// the root (absolute targets are taken relative to it, `..` stops at
    /// it). Returns the final path and node.
    pub fn resolve(&self, path: &str) -> Option<(Vec<u8>, &TreeNode)> {
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut pending: Vec<Vec<u8>> = split(path.as_bytes()).rev().collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == b".." {
                done.pop();
                continue;
            }
            let mut here = done.join(&b'/');
            if !here.is_empty() {
                here.push(b'/');
            }
            here.extend_from_slice(&part);
            let node = self.nodes.get(&here)?;
            match (&node.kind, &node.target) {
                (EntryKind::Symlink, Some(target)) => {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    if target.starts_with(b"/") {
                        done.clear();
                    }
                    pending.extend(split(target).rev());
                }
                _ => done.push(part),
            }
        }
        let key = done.join(&b'/');
        self.nodes.get(&key).map(|n| (key, n))
    }

    /// Names directly below directory `dir` (an exact path), sorted.
    pub fn children(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self
            .nodes
            .keys()
            .filter_map(|k| {
                let rest = if dir.is_empty() {
                    k.as_slice()
                } else {
                    k.strip_prefix(dir)?.strip_prefix(b"/")?
                };
                (!rest.is_empty() && !rest.contains(&b'/')).then(|| rest.to_vec())
            })
            .collect();
        out.sort();
        out
    }

    /// Number of visible paths.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

fn split(p: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    p.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| c.to_vec())
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

/// A link name waiting for data: its layer (for messages) and path.
#[derive(Debug, Clone)]
struct LinkName {
    layer: u32,
    path: Vec<u8>,
    /// The link header's own owner and mode: the kernel (like the engine)
    /// applies each name's to the shared inode, the last one winning.
    meta: Meta,
}

/// A hard-link set to write after the last layer, from one layer read again.
#[derive(Debug)]
struct Repair {
    /// The name already written plainly, rewritten as the leader; `None` when
    /// the target itself is not visible (the first name leads).
    rewrite: Option<Vec<u8>>,
    names: Vec<(Vec<u8>, Meta)>,
}

/// An entry held in the link window.
struct Held {
    /// `None` for a shadowed file kept only in case a later link needs its data.
    entry: Option<Entry>,
    path: Vec<u8>,
    data: Option<Vec<u8>>,
    /// The set a shadowed file's data went to.
    ghost_group: Option<(u32, Vec<u8>)>,
}

/// A hard-link set: how many names it has so far, and the inode's metadata,
/// which every member's header repeats (the kernel re-applies each member's
/// owner and mode to the shared inode).
#[derive(Debug, Clone, Copy)]
struct Group {
    members: u32,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// How a regular file of the current layer was handled, for later links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeenAs {
    Emitted,
    Ghost,
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

    /// A hard link `name` → `target` in the current layer.
    fn hard_link(
        &mut self,
        name: Vec<u8>,
        raw_target: Vec<u8>,
        link_meta: Meta,
    ) -> Result<(), FlattenError> {
        let layer = self.current();
        let target = match normalize(&raw_target) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => return Err(self.bad(&name, "hard link to the root directory")),
            Err(reason) => {
                return Err(FlattenError::UnsafePath {
                    layer: self.label.clone(),
                    path: format!("{} (hard link target {})", show(&name), show(&raw_target)),
                    reason,
                })
            }
        };
        let target = self.aliases.get(&target).cloned().unwrap_or(target);
        self.aliases.insert(name.clone(), target.clone());
        let visible = matches!(self.visibility(&name, layer), Visibility::Visible)
            || self.same_layer_file(&name);
        if !visible || self.pseudo(&name, EntryKind::Regular) {
            self.report.shadowed += 1;
            return Ok(());
        }
        let (parent, _) = split_last(&name);
        self.ensure_dir(parent, layer, &name)?;
        // The target as this layer has it, in the window.
        if let Some(&seq) = self.window_index.get(&target) {
            let idx = seq - self.window_base;
            return self.link_in_window(idx, name, link_meta);
        }
        // The target as this layer has it, already written or dropped.
        match self.seen.get(&target).copied() {
            Some(SeenAs::Emitted) => {
                let node = self.nodes.get(&target).cloned();
                if let Some(Node {
                    kind: Kind::File { group: Some(g), .. },
                    ..
                }) = node
                {
                    return self.add_member(g, &target, name, Some(link_meta));
                }
                if let Some(Node {
                    kind: Kind::File { .. },
                    layer: l,
                }) = node
                {
                    if l == layer {
                        self.add_repair(Some(target), name, link_meta);
                        return Ok(());
                    }
                }
                self.add_repair(None, name, link_meta);
                return Ok(());
            }
            Some(SeenAs::Ghost) => {
                self.add_repair(None, name, link_meta);
                return Ok(());
            }
            None => {}
        }
        // A symlink or special file of this layer: a copy.
        if let Some(n) = self.nodes.get(&target).cloned() {
            if n.layer == layer {
                return self.copy_of(name, &target, n);
            }
        }
        // Not in this layer: a lower layer has it.
        self.nodes.insert(
            name.clone(),
            Node {
                layer,
                kind: Kind::Pending,
            },
        );
        self.pending.entry(target).or_default().push(LinkName {
            layer,
            path: name,
            meta: link_meta,
        });
        Ok(())
    }

    /// A link to a symlink or special file of this layer becomes a copy.
    fn copy_of(&mut self, name: Vec<u8>, target: &[u8], node: Node) -> Result<(), FlattenError> {
        let layer = self.current();
        match node.kind {
            Kind::Symlink(t) => {
                let meta = Meta {
                    kind: EntryKind::Symlink,
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    rdev: DeviceNumber::default(),
                    link: Some(t.clone()),
                };
                self.nodes.insert(
                    name.clone(),
                    Node {
                        layer,
                        kind: Kind::Symlink(t),
                    },
                );
                self.push(entry_for(&name, &meta), name, &mut io::empty())
            }
            Kind::Dir { .. } => Err(self.bad(&name, "hard link to a directory")),
            _ => Err(self.bad(
                &name,
                format!(
                    "hard link to {:?}, a special file; not supported",
                    show(target)
                ),
            )),
        }
    }

    /// Links `name` to the file held at window position `idx`.
    fn link_in_window(
        &mut self,
        idx: usize,
        name: Vec<u8>,
        link_meta: Meta,
    ) -> Result<(), FlattenError> {
        let layer = self.current();
        let held = &mut self.window[idx];
        if let Some(entry) = held.entry.as_mut() {
            let group = match entry.hardlink {
                Some(h) => h.group,
                None => {
                    let g = self.next_group;
                    self.next_group += 1;
                    self.groups.insert(
                        g,
                        Group {
                            members: 1,
                            mode: entry.mode,
                            uid: entry.uid,
                            gid: entry.gid,
                        },
                    );
                    g
                }
            };
            let members = match self.groups.get_mut(&group) {
                Some(g) => {
                    g.members += 1;
                    g.members
                }
                None => 2,
            };
            entry.hardlink = Some(HardLink {
                group,
                members,
                leader: true,
            });
            let leader_path = held.path.clone();
            let mut member = entry.clone();
            if let Some(n) = self.nodes.get_mut(&leader_path) {
                if let Kind::File { group: g, .. } = &mut n.kind {
                    *g = Some(group);
                }
            }
            member.path = to_path(&name);
            (member.mode, member.uid, member.gid) = (link_meta.mode, link_meta.uid, link_meta.gid);
            member.hardlink = Some(HardLink {
                group,
                members,
                leader: false,
            });
            self.nodes.insert(
                name.clone(),
                Node {
                    layer,
                    kind: Kind::File {
                        group: Some(group),
                        data_path: Some(leader_path),
                    },
                },
            );
            return self.hold(Held {
                entry: Some(member),
                path: name,
                data: None,
                ghost_group: None,
            });
        }
        // A shadowed file: the link carries its data as the set's leader.
        if let Some((g, leader)) = held.ghost_group.clone() {
            return self.add_member(g, &leader, name, Some(link_meta));
        }
        let data = held.data.take().unwrap_or_default();
        let g = self.next_group;
        self.next_group += 1;
        held.ghost_group = Some((g, name.clone()));
        // The data is the shadowed file's; owner and mode end up the link's
        // (applied last, by the engine as by the kernel).
        let mut meta = link_meta;
        meta.kind = EntryKind::Regular;
        meta.link = None;
        meta.size = data.len() as u64;
        self.groups.insert(
            g,
            Group {
                members: 2,
                mode: meta.mode,
                uid: meta.uid,
                gid: meta.gid,
            },
        );
        let mut entry = entry_for(&name, &meta);
        entry.hardlink = Some(HardLink {
            group: g,
            members: 2,
            leader: true,
        });
        self.nodes.insert(
            name.clone(),
            Node {
                layer,
                kind: Kind::File {
                    group: Some(g),
                    data_path: None,
                },
            },
        );
        self.hold(Held {
            entry: Some(entry),
            path: name,
            data: Some(data),
            ghost_group: None,
        })
    }

    /// Adds `name` to an existing set whose leader is already written.
    fn add_member(
        &mut self,
        group: u32,
        leader: &[u8],
        name: Vec<u8>,
        meta: Option<Meta>,
    ) -> Result<(), FlattenError> {
        let layer = self.current();
        let Some(set) = self.groups.get_mut(&group) else {
            return Err(self.bad(&name, "internal: hard-link set vanished"));
        };
        set.members += 1;
        if let Some(m) = &meta {
            (set.mode, set.uid, set.gid) = (m.mode, m.uid, m.gid);
        }
        let set = *set;
        let members = set.members;
        let mut entry = entry_for(
            &name,
            &Meta {
                kind: EntryKind::Regular,
                mode: set.mode,
                uid: set.uid,
                gid: set.gid,
                size: 0,
                rdev: DeviceNumber::default(),
                link: None,
            },
        );
        // The kernel re-applies each name's owner and mode to the shared
        // inode: a name carries its own header's (the engine does the same).
        entry.hardlink = Some(HardLink {
            group,
            members,
            leader: false,
        });
        self.nodes.insert(
            name.clone(),
            Node {
                layer,
                kind: Kind::File {
                    group: Some(group),
                    data_path: Some(leader.to_vec()),
                },
            },
        );
        self.hold(Held {
            entry: Some(entry),
            path: name,
            data: None,
            ghost_group: None,
        })
    }

    fn add_repair(&mut self, rewrite: Option<Vec<u8>>, name: Vec<u8>, meta: Meta) {
        let layer = self.current();
        let target = self
            .aliases
            .get(&name)
            .cloned()
            .unwrap_or_else(|| name.clone());
        self.nodes.insert(
            name.clone(),
            Node {
                layer,
                kind: Kind::Pending,
            },
        );
        let list = self.repairs.entry(layer).or_default();
        match list.iter_mut().find(|(t, _)| *t == target) {
            Some((_, r)) => r.names.push((name, meta)),
            None => list.push((
                target,
                Repair {
                    rewrite,
                    names: vec![(name, meta)],
                },
            )),
        }
    }

    /// An entry of a lower layer that link names of upper layers wait for.
    fn resolve_pending<R: Read>(
        &mut self,
        path: &[u8],
        meta: &Meta,
        data: &mut R,
    ) -> Result<(), FlattenError> {
        let names = self.pending.remove(path).unwrap_or_default();
        let layer = self.current();
        match meta.kind {
            EntryKind::Regular => {
                let visible = matches!(self.visibility(path, layer), Visibility::Visible)
                    && !self.pseudo(path, meta.kind);
                let g = self.next_group;
                self.next_group += 1;
                let total = names.len() as u32 + u32::from(visible);
                self.groups.insert(
                    g,
                    Group {
                        members: total.max(2),
                        mode: meta.mode,
                        uid: meta.uid,
                        gid: meta.gid,
                    },
                );
                let mut all: Vec<(Vec<u8>, u32, Meta)> = Vec::new();
                if visible {
                    let (parent, _) = split_last(path);
                    self.ensure_dir(parent, layer, path)?;
                    all.push((path.to_vec(), layer, meta.clone()));
                    self.seen.insert(path.to_vec(), SeenAs::Emitted);
                } else {
                    self.report.shadowed += 1;
                    self.seen.insert(path.to_vec(), SeenAs::Ghost);
                }
                all.extend(names.into_iter().map(|n| (n.path, n.layer, n.meta)));
                let leader = all[0].0.clone();
                self.flush_window()?;
                for (i, (name, l, own)) in all.iter().enumerate() {
                    let mut entry = entry_for(name, meta);
                    (entry.mode, entry.uid, entry.gid) = (own.mode, own.uid, own.gid);
                    entry.hardlink = Some(HardLink {
                        group: g,
                        members: total.max(2),
                        leader: i == 0,
                    });
                    self.nodes.insert(
                        name.clone(),
                        Node {
                            layer: *l,
                            kind: Kind::File {
                                group: Some(g),
                                data_path: (i > 0).then(|| leader.clone()),
                            },
                        },
                    );
                    if i == 0 {
                        self.write(&entry, Some(data as &mut dyn Read))?;
                    } else {
                        self.write(&entry, None)?;
                    }
                }
                Ok(())
            }
            EntryKind::Directory => {
                let first = names.first().map_or_else(Vec::new, |n| n.path.clone());
                Err(self.bad(&first, "hard link to a directory"))
            }
            _ => {
                // Symlinks and special files: each waiting name becomes a copy,
                // then the entry itself is placed normally.
                for n in &names {
                    let kind = match meta.kind {
                        EntryKind::Symlink => Kind::Symlink(meta.link.clone().unwrap_or_default()),
                        k => Kind::Special(k),
                    };
                    self.nodes.insert(
                        n.path.clone(),
                        Node {
                            layer: n.layer,
                            kind,
                        },
                    );
                    let entry = entry_for(&n.path, meta);
                    self.flush_window()?;
                    self.write(&entry, None)?;
                }
                self.place(path.to_vec(), meta.clone(), data)
            }
        }
    }

    /// Reads one layer again and writes the hard-link sets recorded for it.
    fn repair_layer<R: Read>(
        &mut self,
        reader: R,
        list: Vec<(Vec<u8>, Repair)>,
    ) -> Result<(), FlattenError> {
        let mut wanted: HashMap<Vec<u8>, Repair> = list.into_iter().collect();
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.tar_error(e))?;
        for entry in entries {
            if wanted.is_empty() {
                break;
            }
            let mut entry = entry.map_err(|e| self.tar_error(e))?;
            let Ok(path) = normalize(&entry.path_bytes()) else {
                continue;
            };
            let Some(repair) = wanted.remove(&path) else {
                continue;
            };
            let header = entry.header().clone();
            let size = entry.size();
            let pax = pax_records(&mut entry);
            let meta = self.meta(&entry, &path, &header, size, &pax)?;
            let g = self.next_group;
            self.next_group += 1;
            let mut all: Vec<(Vec<u8>, Meta)> = Vec::new();
            all.extend(repair.rewrite.clone().map(|r| (r, meta.clone())));
            all.extend(repair.names.iter().cloned());
            let total = (all.len() as u32).max(2);
            self.groups.insert(
                g,
                Group {
                    members: total,
                    mode: meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                },
            );
            let leader = all[0].0.clone();
            for (i, (name, own)) in all.iter().enumerate() {
                let mut e = entry_for(name, &meta);
                (e.mode, e.uid, e.gid) = (own.mode, own.uid, own.gid);
                e.hardlink = Some(HardLink {
                    group: g,
                    members: total,
                    leader: i == 0,
                });
                let layer = self.nodes.get(name).map_or(0, |n| n.layer);
                self.nodes.insert(
                    name.clone(),
                    Node {
                        layer,
                        kind: Kind::File {
                            group: Some(g),
                            data_path: (i > 0).then(|| leader.clone()),
                        },
                    },
                );
                if i == 0 {
                    self.write(&e, Some(&mut entry as &mut dyn Read))?;
                } else {
                    self.write(&e, None)?;
                }
            }
        }
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| self.tar_error(e))?;
        if let Some((target, r)) = wanted.into_iter().next() {
            return Err(FlattenError::LinkTargetMissing {
                layer: self.label.clone(),
                name: r.names.first().map_or_else(String::new, |n| show(&n.0)),
                target: show(&target),
            });
        }
        Ok(())
    }

    fn read_all<R: Read>(
        &self,
        r: &mut R,
        size: u64,
        path: &[u8],
    ) -> Result<Vec<u8>, FlattenError> {
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        r.take(size)
            .read_to_end(&mut buf)
            .map_err(|e| self.tar_error(e))?;
        if buf.len() as u64 != size {
            return Err(self.tar_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is truncated", show(path)),
            )));
        }
        Ok(buf)
    }

    /// Queues an entry (or streams it when it is too large for the window).
    fn push<R: Read>(
        &mut self,
        entry: Entry,
        path: Vec<u8>,
        data: &mut R,
    ) -> Result<(), FlattenError> {
        if entry.kind == EntryKind::Regular
            && entry.carries_data()
            && (entry.size > self.link_window as u64 || self.link_window == 0)
        {
            self.flush_window()?;
            return self.write(&entry, Some(data as &mut dyn Read));
        }
        let bytes = if entry.kind == EntryKind::Regular && entry.carries_data() {
            Some(self.read_all(data, entry.size, &path)?)
        } else {
            None
        };
        self.hold(Held {
            entry: Some(entry),
            path,
            data: bytes,
            ghost_group: None,
        })
    }

    fn hold(&mut self, held: Held) -> Result<(), FlattenError> {
        let len = held.data.as_ref().map_or(0, Vec::len);
        let is_file = held.data.is_some()
            || held
                .entry
                .as_ref()
                .is_some_and(|e| e.kind == EntryKind::Regular);
        if is_file {
            let seq = self.window_base + self.window.len();
            self.window_index.insert(held.path.clone(), seq);
        }
        self.window.push_back(held);
        self.window_bytes += len;
        while self.window_bytes > self.link_window && !self.window.is_empty() {
            self.pop_window()?;
        }
        Ok(())
    }

    fn pop_window(&mut self) -> Result<(), FlattenError> {
        let Some(held) = self.window.pop_front() else {
            return Ok(());
        };
        let seq = self.window_base;
        self.window_base += 1;
        if self.window_index.get(&held.path) == Some(&seq) {
            self.window_index.remove(&held.path);
        }
        let len = held.data.as_ref().map_or(0, Vec::len);
        self.window_bytes -= len;
        if let Some(entry) = held.entry {
            match held.data {
                Some(d) => self.write(&entry, Some(&mut d.as_slice() as &mut dyn Read))?,
                None => self.write(&entry, None)?,
            }
        }
        Ok(())
    }

    fn flush_window(&mut self) -> Result<(), FlattenError> {
        while !self.window.is_empty() {
            self.pop_window()?;
        }
        self.window_index.clear();
        Ok(())
    }

    fn write(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), FlattenError> {
        self.report.entries_emitted += 1;
        self.sink.emit(entry, data)
    }
}

/// The PAX records of an entry as byte pairs.
fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    match entry.pax_extensions() {
        Ok(Some(exts)) => exts
            .flatten()
            .map(|e| (e.key_bytes().to_vec(), e.value_bytes().to_vec()))
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_id(v: &[u8]) -> Option<u32> {
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

fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (ROOT, path),
    }
}

fn to_path(p: &[u8]) -> PathBuf {
    if p.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(OsStr::from_bytes(p))
    }
}

fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "/".into()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

fn entry_for(path: &[u8], meta: &Meta) -> Entry {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Applies entries the way init/initramfs.c does: directories re-apply
    /// owner and mode, files are truncated and rewritten in place, names of a
    /// set with nlink >= 2 link to the first name with the same inode number,
    /// symlinks and links replace what is there, no parent is created.
    #[derive(Default, Debug)]
    struct Kernel {
        names: BTreeMap<Vec<u8>, Name>,
        inodes: Vec<(u32, u32, u32, Vec<u8>)>,
        sets: HashMap<u32, usize>,
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Name {
        Dir(u32, u32, u32),
        File(usize),
        Symlink(Vec<u8>),
        Special(EntryKind),
    }

    impl Sink for Kernel {
        fn emit(&mut self, e: &Entry, data: Option<&mut dyn Read>) -> Result<(), FlattenError> {
            let path = if e.path == std::path::Path::new(".") {
                Vec::new()
            } else {
                e.path.as_os_str().as_bytes().to_vec()
            };
            if !path.is_empty() {
                let (parent, _) = split_last(&path);
                assert!(
                    matches!(self.names.get(parent), Some(Name::Dir(..))),
                    "{} written before its parent",
                    show(&path)
                );
            }
            match e.kind {
                EntryKind::Directory => {
                    self.names.insert(path, Name::Dir(e.mode, e.uid, e.gid));
                }
                EntryKind::Regular => {
                    let mut bytes = Vec::new();
                    if let Some(d) = data {
                        d.read_to_end(&mut bytes).unwrap();
                    }
                    if let Some(h) = e.hardlink.filter(|h| h.members >= 2) {
                        if let Some(&ino) = self.sets.get(&h.group) {
                            self.names.insert(path, Name::File(ino));
                            let i = &mut self.inodes[ino];
                            (i.0, i.1, i.2) = (e.mode, e.uid, e.gid);
                            return Ok(());
                        }
                    }
                    let ino = match self.names.get(&path) {
                        Some(Name::File(ino)) => *ino,
                        _ => {
                            self.inodes.push((0, 0, 0, Vec::new()));
                            self.inodes.len() - 1
                        }
                    };
                    self.inodes[ino] = (e.mode, e.uid, e.gid, bytes);
                    if let Some(h) = e.hardlink.filter(|h| h.members >= 2) {
                        self.sets.insert(h.group, ino);
                    }
                    self.names.insert(path, Name::File(ino));
                }
                EntryKind::Symlink => {
                    let t = e
                        .link_target
                        .as_ref()
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec();
                    self.names.insert(path, Name::Symlink(t));
                }
                k => {
                    self.names.insert(path, Name::Special(k));
                }
            }
            Ok(())
        }
    }

    impl Kernel {
        fn file(&self, p: &str) -> (u32, u32, u32, String) {
            match self.names.get(p.as_bytes()) {
                Some(Name::File(i)) => {
                    let n = &self.inodes[*i];
                    (n.0, n.1, n.2, String::from_utf8_lossy(&n.3).into_owned())
                }
                other => panic!("{p}: {other:?}"),
            }
        }
        fn ino(&self, p: &str) -> usize {
            match self.names.get(p.as_bytes()) {
                Some(Name::File(i)) => *i,
                other => panic!("{p}: {other:?}"),
            }
        }
        fn paths(&self) -> Vec<String> {
            self.names.keys().map(|k| show(k)).collect()
        }
    }

    enum E<'a> {
        Dir(&'a str, u32, u32),
        File(&'a str, &'a str),
        Owned(&'a str, &'a str, u32, u32),
        Link(&'a str, &'a str),
        /// A link whose header carries the inode's mode and owner, as real
        /// tar writers do.
        OwnedLink(&'a str, &'a str, u32, u32),
        Sym(&'a str, &'a str),
        Char(&'a str, u32, u32),
    }

    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match e {
                E::Dir(p, mode, uid) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_uid(*uid as u64);
                    h.set_size(0);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::File(p, data) | E::Owned(p, data, _, _) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    if let E::Owned(_, _, mode, uid) = e {
                        h.set_mode(*mode);
                        h.set_uid(*uid as u64);
                    }
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, data.as_bytes()).unwrap();
                }
                E::OwnedLink(p, t, mode, uid) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(*mode);
                    h.set_uid(*uid as u64);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::Link(p, t) | E::Sym(p, t) => {
                    h.set_entry_type(if matches!(e, E::Link(..)) {
                        tar::EntryType::Link
                    } else {
                        tar::EntryType::Symlink
                    });
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::Char(p, major, minor) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(0o666);
                    h.set_size(0);
                    h.set_device_major(*major).unwrap();
                    h.set_device_minor(*minor).unwrap();
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// Raw names (tar's builder refuses `..` and absolute paths).
    fn raw_layer(name: &[u8], link: Option<&[u8]>) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_entry_type(if link.is_some() {
            tar::EntryType::Link
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(0o644);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn flatten_with(
        layers: &[Vec<u8>],
        window: usize,
    ) -> Result<(Kernel, Tree, FlattenReport), FlattenError> {
        let mut f = Flattener::new(Kernel::default(), Limits::default(), true, window);
        for (i, l) in layers.iter().enumerate().rev() {
            f.layer(i as u32, &format!("layer {}", i + 1), &l[..], true)?;
        }
        f.finish(|i| Ok::<_, String>(io::Cursor::new(layers[i as usize].clone())))
    }

    fn flatten(layers: &[Vec<u8>]) -> Kernel {
        flatten_with(layers, 1 << 20).unwrap().0
    }

    #[test]
    fn whiteouts_opaque_directories_and_upper_files_win() {
        let base = layer(&[
            E::Dir("a/", 0o755, 0),
            E::File("a/x", "old"),
            E::File("a/y", "gone"),
            E::Dir("d/", 0o755, 0),
            E::File("d/1", "1"),
            E::Dir("d/sub/", 0o755, 0),
            E::File("d/sub/2", "2"),
            E::Dir("w/", 0o755, 0),
            E::File("w/inside", "hidden with w"),
        ]);
        let top = layer(&[
            E::Dir("a/", 0o750, 7),
            E::File("a/x", "new"),
            E::File("a/.wh.y", ""),
            E::File("a/z", "z"),
            E::Dir("d/", 0o755, 0),
            E::File("d/.wh..wh..opq", ""),
            E::File("d/3", "3"),
            E::File(".wh.w", ""),
        ]);
        let k = flatten(&[base, top]);
        assert_eq!(k.paths(), ["/", "a", "a/x", "a/z", "d", "d/3"]);
        assert_eq!(k.file("a/x").3, "new");
        assert_eq!(k.names[&b"a"[..]], Name::Dir(0o750, 7, 0));
    }

    #[test]
    fn placeholder_directories_get_their_real_metadata_later() {
        let base = layer(&[E::Dir("usr/", 0o700, 5), E::Dir("usr/bin/", 0o711, 6)]);
        let top = layer(&[E::File("usr/bin/tool", "t")]);
        let (k, _, report) = flatten_with(&[base, top], 1 << 20).unwrap();
        assert_eq!(k.names[&b"usr"[..]], Name::Dir(0o700, 5, 0));
        assert_eq!(k.names[&b"usr/bin"[..]], Name::Dir(0o711, 6, 0));
        assert_eq!(report.placeholders_left, 0);
    }

    #[test]
    fn hard_links_share_an_inode_with_and_without_the_window() {
        let l = layer(&[
            E::Owned("bin/perl", "perl binary", 0o755, 3),
            E::File("bin/other", "x"),
            E::OwnedLink("bin/perl5", "bin/perl", 0o755, 3),
            E::OwnedLink("bin/perl6", "bin/perl5", 0o755, 3),
        ]);
        for window in [1 << 20, 0] {
            let (k, _, report) = flatten_with(std::slice::from_ref(&l), window).unwrap();
            assert_eq!(k.ino("bin/perl"), k.ino("bin/perl5"), "window {window}");
            assert_eq!(k.ino("bin/perl"), k.ino("bin/perl6"), "window {window}");
            assert_eq!(k.file("bin/perl5"), (0o755, 3, 0, "perl binary".into()));
            assert_eq!(report.relinked_layers.is_empty(), window > 0);
        }
    }

    #[test]
    fn hard_links_reach_lower_layers_and_shadowed_targets() {
        let base = layer(&[E::File("a", "lower a"), E::File("c", "lower c")]);
        // The upper layer replaces `a` but links `b` to the lower `a`.
        let top = layer(&[E::File("a", "upper a"), E::Link("b", "c")]);
        let k = flatten(&[base.clone(), top]);
        assert_eq!(k.file("a").3, "upper a");
        assert_eq!(k.file("b").3, "lower c");
        assert_eq!(k.ino("b"), k.ino("c"));
        // A link whose target its own layer has, but an upper layer replaced.
        let mid = layer(&[E::File("t", "mid t"), E::Link("u", "t")]);
        let top = layer(&[E::File("t", "top t")]);
        for window in [1 << 20, 0] {
            let (k, _, _) =
                flatten_with(&[base.clone(), mid.clone(), top.clone()], window).unwrap();
            assert_eq!(k.file("t").3, "top t");
            assert_eq!(k.file("u").3, "mid t", "window {window}");
        }
    }

    #[test]
    fn unsafe_paths_and_writes_through_symlinks_are_refused() {
        for (name, link) in [
            (&b"../escape"[..], None),
            (b"/etc/passwd", None),
            (b"a/../../x", None),
            (b"innocent", Some(&b"../../etc/shadow"[..])),
        ] {
            let e = flatten_with(&[raw_layer(name, link)], 0).unwrap_err();
            assert!(matches!(e, FlattenError::UnsafePath { .. }), "{e}");
        }
        let l = layer(&[E::Sym("etc", "/host-etc"), E::File("etc/passwd", "x")]);
        let e = flatten_with(&[l], 0).unwrap_err();
        assert!(
            matches!(&e, FlattenError::ThroughSymlink { link, .. } if link == "etc"),
            "{e}"
        );
        // A lower symlink that an upper layer writes below without saying
        // the path is now a directory.
        let base = layer(&[E::Sym("lib", "usr/lib")]);
        let top = layer(&[E::File("lib/evil.so", "x")]);
        let e = flatten_with(&[base.clone(), top], 0).unwrap_err();
        assert!(matches!(e, FlattenError::ThroughSymlink { .. }), "{e}");
        // Saying so is a legitimate replacement of the symlink.
        let top = layer(&[E::Dir("lib/", 0o755, 0), E::File("lib/ok.so", "x")]);
        let k = flatten(&[base, top]);
        assert!(matches!(k.names[&b"lib"[..]], Name::Dir(..)));
    }

    #[test]
    fn limits_stop_before_data_is_read() {
        let l = layer(&[E::File("a", "1"), E::File("b", "2"), E::File("c", "3")]);
        let limits = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let mut f = Flattener::new(Kernel::default(), limits, true, 0);
        let e = f.layer(0, "l", &l[..], true).unwrap_err();
        assert!(e.to_string().contains("--max-image-entries"), "{e}");
        let limits = Limits {
            max_path_len: 3,
            ..Limits::default()
        };
        let l = layer(&[E::File("long/name", "1")]);
        let mut f = Flattener::new(Kernel::default(), limits, true, 0);
        let e = f.layer(0, "l", &l[..], true).unwrap_err();
        assert!(e.to_string().contains("--max-path-length"), "{e}");
    }

    #[test]
    fn pseudo_contents_are_skipped_and_the_tree_resolves_links() {
        let l = layer(&[
            E::Dir("tmp/", 0o1777, 0),
            E::File("tmp/junk", "x"),
            E::Dir("dev/", 0o755, 0),
            E::Char("dev/console", 5, 1),
            E::Char("dev/null", 1, 3),
            E::Dir("usr/lib/", 0o755, 0),
            E::File("usr/lib/os-release", "ID=x"),
            E::Dir("etc/", 0o755, 0),
            E::Sym("etc/os-release", "../usr/lib/os-release"),
            E::Sym("lib", "/usr/lib"),
        ]);
        let (k, tree, _) = flatten_with(&[l], 1 << 20).unwrap();
        assert!(!k.names.contains_key(&b"tmp/junk"[..]));
        assert!(!k.names.contains_key(&b"dev/null"[..]));
        assert!(k.names.contains_key(&b"dev/console"[..]));
        let (p, n) = tree.resolve("etc/os-release").unwrap();
        assert_eq!(p, b"usr/lib/os-release");
        assert_eq!(n.data_path.as_deref(), Some(&b"usr/lib/os-release"[..]));
        assert_eq!(
            tree.resolve("lib/os-release").unwrap().0,
            b"usr/lib/os-release"
        );
        assert_eq!(tree.children(b"usr/lib"), [b"os-release".to_vec()]);
    }
}
