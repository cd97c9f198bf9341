//! Hard links across the top-down stream: the bounded window of held-back
//! files that lets a later link make an earlier file the leader of a newc
//! link set, links to files of lower layers (pending until that layer is
//! read), and the repair pass that reads one layer again for links to files
//! already written (see the parent module's doc for why each is needed).

use std::collections::HashMap;
use std::io::{self, Read};

use crate::initrd::{DeviceNumber, Entry, EntryKind, HardLink};

use super::paths::{entry_for, normalize, pax_records, show, split_last, to_path};
use super::{FlattenError, Flattener, Kind, Meta, Node, Sink, Visibility};

/// A link name waiting for data: its layer (for messages) and path.
#[derive(Debug, Clone)]
pub(super) struct LinkName {
    pub(super) layer: u32,
    pub(super) path: Vec<u8>,
    /// The link header's own owner and mode: the kernel (like the engine)
    /// applies each name's to the shared inode, the last one winning.
    pub(super) meta: Meta,
}

/// A hard-link set to write after the last layer, from one layer read again.
#[derive(Debug)]
pub(super) struct Repair {
    /// The name already written plainly, rewritten as the leader; `None` when
    /// the target itself is not visible (the first name leads).
    pub(super) rewrite: Option<Vec<u8>>,
    pub(super) names: Vec<(Vec<u8>, Meta)>,
}

/// An entry held in the link window.
pub(super) struct Held {
    /// `None` for a shadowed file kept only in case a later link needs its data.
    pub(super) entry: Option<Entry>,
    pub(super) path: Vec<u8>,
    pub(super) data: Option<Vec<u8>>,
    /// The set a shadowed file's data went to.
    pub(super) ghost_group: Option<(u32, Vec<u8>)>,
}

/// A hard-link set: how many names it has so far, and the inode's metadata,
/// which every member's header repeats (the kernel re-applies each member's
/// owner and mode to the shared inode).
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    pub(super) members: u32,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// How a regular file of the current layer was handled, for later links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SeenAs {
    Emitted,
    Ghost,
}

impl<S: Sink> Flattener<S> {
    /// A hard link `name` → `target` in the current layer.
    pub(super) fn hard_link(
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
    pub(super) fn copy_of(
        &mut self,
        name: Vec<u8>,
        target: &[u8],
        node: Node,
    ) -> Result<(), FlattenError> {
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
    pub(super) fn link_in_window(
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
    pub(super) fn add_member(
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

    pub(super) fn add_repair(&mut self, rewrite: Option<Vec<u8>>, name: Vec<u8>, meta: Meta) {
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
    pub(super) fn resolve_pending<R: Read>(
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
    pub(super) fn repair_layer<R: Read>(
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

    pub(super) fn read_all<R: Read>(
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
    pub(super) fn push<R: Read>(
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

    pub(super) fn hold(&mut self, held: Held) -> Result<(), FlattenError> {
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

    pub(super) fn pop_window(&mut self) -> Result<(), FlattenError> {
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

    pub(super) fn flush_window(&mut self) -> Result<(), FlattenError> {
        while !self.window.is_empty() {
            self.pop_window()?;
        }
        self.window_index.clear();
        Ok(())
    }
}
