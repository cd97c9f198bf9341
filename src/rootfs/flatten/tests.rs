//! Flattener tests against a model of the kernel's initramfs unpacker.

use super::*;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;

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
        let (k, _, _) = flatten_with(&[base.clone(), mid.clone(), top.clone()], window).unwrap();
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
