//! The final tree of a flattened image: each visible path's kind and where
//! its data was, for finding boot files after the stream.

use std::collections::HashMap;

use crate::initrd::EntryKind;

use super::split;

/// The final tree: what each visible path is, for finding boot files after
/// the stream (kernel, stub, os-release) without keeping the data.
#[derive(Debug, Default)]
pub struct Tree {
    pub(super) nodes: HashMap<Vec<u8>, TreeNode>,
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
