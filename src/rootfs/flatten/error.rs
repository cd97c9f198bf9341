//! What can go wrong while flattening, and what the flattener reports.

use std::io;

use crate::initrd::cpio::CpioError;

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
