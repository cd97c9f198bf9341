//! The initramfs judged by tools we did not write: the zstd, xz, gzip and lz4
//! command-line decompressors and GNU cpio (listing and extraction as root,
//! which keeps owners, modes and device nodes).
//!
//! Runs as root: the fixture chowns files and creates device nodes.

mod common;

use common::tools::{require_tool, run_ok};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sbkit::initrd::{build_initrd, Compression, InitrdError, InitrdOptions};
use sbkit::progress::{Progress, Unit};

const MTIME: u32 = 1_600_000_000;

/// Runs `tool args` with `input` on stdin and returns stdout.
fn pipe(tool: &str, args: &[&str], input: &[u8], cwd: &Path) -> Output {
    let mut child = Command::new(require_tool(tool))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What one path of the extracted tree must be.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    Dir,
    File(Vec<u8>),
    Link(&'static str),
    Char(u64, u64),
    Block(u64, u64),
    Fifo,
    Socket,
}

#[derive(Debug, Clone)]
struct Expect {
    want: Want,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// A rootfs under construction and what its initramfs must hold.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    expect: BTreeMap<Vec<u8>, Expect>,
    /// Sets of paths that must be one inode after extraction.
    links: Vec<Vec<&'static str>>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        let mut f = Fixture {
            _dir: dir,
            root,
            expect: BTreeMap::new(),
            links: Vec::new(),
        };
        f.own(".", Want::Dir, 0o755, 0, 0);
        f
    }

    fn own(&mut self, path: &str, want: Want, mode: u32, uid: u32, gid: u32) {
        let host = self.root.join(path);
        if !matches!(want, Want::Link(_)) {
            std::os::unix::fs::chown(&host, Some(uid), Some(gid)).unwrap();
            // After chown, which clears setuid/setgid.
            fs::set_permissions(&host, fs::Permissions::from_mode(mode)).unwrap();
        } else {
            std::os::unix::fs::lchown(&host, Some(uid), Some(gid)).unwrap();
        }
        let key = if path == "." {
            b".".to_vec()
        } else {
            path.as_bytes().to_vec()
        };
        self.expect.insert(
            key,
            Expect {
                want,
                mode,
                uid,
                gid,
            },
        );
    }

    fn dir(&mut self, path: &str, mode: u32, uid: u32, gid: u32) {
        fs::create_dir(self.root.join(path)).unwrap();
        self.own(path, Want::Dir, mode, uid, gid);
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32, uid: u32, gid: u32) {
        fs::write(self.root.join(path), data).unwrap();
        self.own(path, Want::File(data.to_vec()), mode, uid, gid);
    }

    fn symlink(&mut self, path: &str, target: &'static str, uid: u32, gid: u32) {
        std::os::unix::fs::symlink(target, self.root.join(path)).unwrap();
        self.own(path, Want::Link(target), 0o777, uid, gid);
    }

    fn hardlink(&mut self, paths: &[&'static str]) {
        let first = self.expect[paths[0].as_bytes()].clone();
        for p in &paths[1..] {
            fs::hard_link(self.root.join(paths[0]), self.root.join(p)).unwrap();
            self.expect.insert(p.as_bytes().to_vec(), first.clone());
        }
        self.links.push(paths.to_vec());
    }

    fn node(&mut self, path: &str, want: Want, mode: u32, uid: u32, gid: u32) {
        let host = self.root.join(path);
        let spec: Vec<String> = match want {
            Want::Char(ma, mi) => vec!["c".into(), ma.to_string(), mi.to_string()],
            Want::Block(ma, mi) => vec!["b".into(), ma.to_string(), mi.to_string()],
            Want::Fifo => vec!["p".into()],
            Want::Socket => {
                drop(std::os::unix::net::UnixListener::bind(&host).unwrap());
                vec![]
            }
            _ => unreachable!("not a node"),
        };
        if !spec.is_empty() {
            run_ok(Command::new(require_tool("mknod")).arg(&host).args(&spec));
        }
        self.own(path, want, mode, uid, gid);
    }

    /// A file that must not be in the initramfs.
    fn skipped(&mut self, path: &str) {
        fs::write(self.root.join(path), b"must not be archived").unwrap();
    }
}

fn big_data() -> Vec<u8> {
    // Over 8 MiB, so legacy LZ4 needs two blocks; compressible, not trivial.
    let mut v = Vec::with_capacity(9 << 20);
    let mut x: u64 = 88172645463325252;
    while v.len() < (9 << 20) + 1001 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(format!("{:x}\n", x % 4096).as_bytes());
    }
    v
}

fn fixture() -> Fixture {
    let mut f = Fixture::new();
    f.dir("usr", 0o755, 0, 0);
    f.dir("usr/bin", 0o755, 0, 0);
    f.file("usr/bin/hello", b"#!/bin/sh\necho hello\n", 0o755, 0, 0);
    f.file("usr/bin/su", b"setuid binary", 0o4755, 0, 0);
    f.file("usr/bin/wall", b"setgid binary", 0o2755, 0, 5);
    f.symlink("bin", "usr/bin", 0, 0);
    f.dir("etc", 0o755, 0, 0);
    f.file("etc/empty", b"", 0o644, 0, 0);
    f.file("etc/shadow", b"root:*:19000::::::\n", 0o640, 0, 42);
    f.symlink("etc/os-release", "../usr/lib/os-release", 0, 0);
    f.symlink("etc/mtab", "/proc/self/mounts", 0, 0);
    f.dir("usr/lib", 0o755, 0, 0);
    f.file("usr/lib/os-release", b"ID=test\n", 0o644, 0, 0);
    f.file("usr/lib/big", &big_data(), 0o644, 0, 0);
    f.hardlink(&[
        "usr/bin/hello",
        "usr/bin/hello-again",
        "usr/lib/hello-third",
    ]);
    f.hardlink(&["etc/empty", "etc/empty-too"]);
    f.dir("home", 0o755, 0, 0);
    f.dir("home/user", 0o700, 1000, 1000);
    f.file("home/user/notes", b"mine", 0o600, 1000, 1000);
    f.symlink("home/user/link", "notes", 1000, 1000);
    f.dir("srv", 0o2775, 1000, 50);
    f.dir("srv/a", 0o755, 0, 0);
    f.dir("srv/a/b", 0o755, 0, 0);
    f.dir("srv/a/b/c", 0o755, 0, 0);
    f.file("srv/a/b/c/deep", b"deep", 0o444, 0, 0);
    f.file(
        "srv/caf\u{e9} \u{2603}",
        b"utf-8 name with a space",
        0o644,
        0,
        0,
    );
    f.node("srv/null", Want::Char(1, 3), 0o666, 0, 0);
    f.node("srv/loop0", Want::Block(7, 0), 0o660, 0, 6);
    f.node("srv/fifo", Want::Fifo, 0o620, 1000, 50);
    f.node("srv/socket", Want::Socket, 0o755, 0, 0);
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("dev", 0o755),
    ] {
        f.dir(dir, mode, 0, 0);
    }
    f.node("dev/console", Want::Char(5, 1), 0o600, 0, 5);
    f.node("dev/null", Want::Char(1, 3), 0o666, 0, 0);
    f.expect.remove(&b"dev/null"[..]);
    f.dir("tmp/.X11-unix", 0o1777, 0, 0);
    f.expect.remove(&b"tmp/.X11-unix"[..]);
    f.skipped("proc/cpuinfo");
    f.skipped("run/utmp");
    f.skipped("tmp/scratch");
    f
}

fn options(compression: Compression) -> InitrdOptions {
    InitrdOptions {
        compression,
        mtime: MTIME,
        ..InitrdOptions::default()
    }
}

fn build(root: &Path, compression: Compression) -> Vec<u8> {
    let mut out = Vec::new();
    let bar = sbkit::progress::Quiet.start("initrd", Unit::Bytes, None);
    let stats = build_initrd(root, None, &mut out, &options(compression), &*bar)
        .unwrap_or_else(|e| panic!("build_initrd: {e}"));
    assert_eq!(stats.compressed_bytes, out.len() as u64);
    out
}

/// Extracts a cpio archive with GNU cpio into a new directory.
fn extract(archive: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = pipe(
        "cpio",
        &["-idmv", "--no-absolute-filenames", "--quiet"],
        archive,
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // -v reports each hard link it makes as "cpio: A linked to B"; anything
    // else from cpio itself is a complaint.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cpio:") && !l.contains(" linked to "))
        .collect();
    assert!(
        complaints.is_empty(),
        "cpio complained while extracting:\n{stderr}"
    );
    dir
}

fn want_of(meta: &fs::Metadata, path: &Path) -> Want {
    let t = meta.file_type();
    let major = |d: u64| ((d >> 32) & 0xffff_f000) | ((d >> 8) & 0xfff);
    let minor = |d: u64| ((d >> 12) & 0xffff_ff00) | (d & 0xff);
    if t.is_dir() {
        Want::Dir
    } else if t.is_file() {
        Want::File(fs::read(path).unwrap())
    } else if t.is_symlink() {
        let target = fs::read_link(path).unwrap();
        Want::Link(Box::leak(target.display().to_string().into_boxed_str()))
    } else if t.is_char_device() {
        Want::Char(major(meta.rdev()), minor(meta.rdev()))
    } else if t.is_block_device() {
        Want::Block(major(meta.rdev()), minor(meta.rdev()))
    } else if t.is_fifo() {
        Want::Fifo
    } else if t.is_socket() {
        Want::Socket
    } else {
        panic!("{} has an unknown type", path.display())
    }
}

fn list_tree(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(".")];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for item in fs::read_dir(root.join(&rel)).unwrap() {
            let item = item.unwrap();
            let child = rel.join(item.file_name());
            if item.file_type().unwrap().is_dir() {
                stack.push(child.clone());
            }
            out.push(child);
        }
    }
    out
}

/// Compares an extracted tree with the fixture's expectations.
fn assert_tree(extracted: &Path, f: &Fixture) {
    let mut found: Vec<Vec<u8>> = list_tree(extracted)
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    found.sort();
    let wanted: Vec<Vec<u8>> = f.expect.keys().cloned().collect();
    assert_eq!(
        found
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>(),
        wanted
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>(),
        "extracted paths"
    );
    for (path, e) in &f.expect {
        let host = extracted.join(OsStr::from_bytes(path));
        let meta = fs::symlink_metadata(&host).unwrap();
        let name = String::from_utf8_lossy(path);
        assert_eq!(want_of(&meta, &host), e.want, "{name}: type/content");
        assert_eq!((meta.uid(), meta.gid()), (e.uid, e.gid), "{name}: owner");
        if !matches!(e.want, Want::Link(_)) {
            assert_eq!(meta.mode() & 0o7777, e.mode, "{name}: mode");
        }
        if !matches!(e.want, Want::Dir | Want::Link(_)) {
            assert_eq!(meta.mtime(), MTIME as i64, "{name}: mtime");
        }
    }
    for set in &f.links {
        let inos: Vec<(u64, u64)> = set
            .iter()
            .map(|p| {
                let m = fs::symlink_metadata(extracted.join(p)).unwrap();
                assert_eq!(m.nlink(), set.len() as u64, "{p}: link count");
                (m.dev(), m.ino())
            })
            .collect();
        assert!(
            inos.windows(2).all(|w| w[0] == w[1]),
            "{set:?} are not one inode: {inos:?}"
        );
    }
}

/// Decompresses with the real tool for `compression`.
fn decompress(compression: Compression, data: &[u8]) -> Vec<u8> {
    let tool = match compression {
        Compression::Zstd { .. } => "zstd",
        Compression::Xz { .. } => "xz",
        Compression::Gzip { .. } => "gzip",
        Compression::Lz4 => "lz4",
        Compression::None => return data.to_vec(),
    };
    let dir = tempfile::tempdir().unwrap();
    pipe(tool, &["-d", "-c"], data, dir.path()).stdout
}

#[test]
fn every_compression_extracts_with_gnu_cpio_as_built() {
    let f = fixture();
    let plain = build(&f.root, Compression::None);
    let extracted = extract(&plain);
    assert_tree(extracted.path(), &f);
    for compression in [
        Compression::default(),
        Compression::Zstd { level: 19 },
        Compression::Xz { preset: 6 },
        Compression::Gzip { level: 9 },
        Compression::Lz4,
    ] {
        let packed = build(&f.root, compression);
        let unpacked = decompress(compression, &packed);
        assert!(
            unpacked == plain,
            "{compression}: the decompressed archive differs from the uncompressed build"
        );
        let extracted = extract(&unpacked);
        assert_tree(extracted.path(), &f);
    }
}

#[test]
fn gnu_cpio_lists_sorted_names_owners_and_devices() {
    let f = fixture();
    let plain = build(&f.root, Compression::None);
    let dir = tempfile::tempdir().unwrap();
    let names = pipe("cpio", &["-it", "--quiet"], &plain, dir.path()).stdout;
    let names: Vec<&[u8]> = names
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut sorted = names.clone();
    sorted[1..].sort();
    assert_eq!(names[0], b".", "the root comes first");
    assert_eq!(names, sorted, "names are in byte order");
    assert_eq!(names.len(), f.expect.len());
    assert!(names
        .iter()
        .all(|n| !n.starts_with(b"/") && !n.starts_with(b"./")));

    let listing = pipe(
        "cpio",
        &["-itv", "--numeric-uid-gid", "--quiet"],
        &plain,
        dir.path(),
    )
    .stdout;
    let listing = String::from_utf8_lossy(&listing);
    let line = |name: &str| -> Vec<String> {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(line("usr/bin/su")[..4], ["-rwsr-xr-x", "1", "0", "0"]);
    assert_eq!(line("usr/bin/hello")[..2], ["-rwxr-xr-x", "3"]);
    assert_eq!(line("srv")[..4], ["drwxrwsr-x", "2", "1000", "50"]);
    assert_eq!(line("tmp")[0], "drwxrwxrwt");
    assert_eq!(
        line("dev/console")[..6],
        ["crw-------", "1", "0", "5", "5,", "1"]
    );
    assert_eq!(
        line("srv/loop0")[..6],
        ["brw-rw----", "1", "0", "6", "7,", "0"]
    );
    assert_eq!(line("srv/fifo")[0], "prw--w----");
    assert_eq!(line("srv/socket")[0], "srwxr-xr-x");
    let bin = line("bin");
    assert_eq!(bin[0], "lrwxrwxrwx");
    assert_eq!(bin[bin.len() - 3..], ["bin", "->", "usr/bin"]);
}

#[test]
fn xz_output_carries_a_crc32_check() {
    let f = fixture();
    let packed = build(&f.root, Compression::Xz { preset: 1 });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initrd.xz");
    fs::write(&path, &packed).unwrap();
    let out = run_ok(
        Command::new(require_tool("xz"))
            .args(["--robot", "--list"])
            .arg(&path),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let file_line = text
        .lines()
        .find(|l| l.starts_with("file\t"))
        .unwrap_or_else(|| panic!("no file line in:\n{text}"));
    // xz --robot --list: the check names are in the 7th column.
    assert_eq!(file_line.split('\t').nth(6), Some("CRC32"), "{text}");
}

#[test]
fn builds_are_byte_identical_whatever_the_readdir_order() {
    // tmpfs lists a directory newest first, so creation order shows through readdir.
    let shm = Path::new("/dev/shm");
    assert!(
        shm.is_dir(),
        "/dev/shm (tmpfs) is needed to control readdir order"
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let make = |order: &mut dyn Iterator<Item = &&str>| {
        let t = tempfile::tempdir_in(shm).unwrap();
        for n in order {
            fs::create_dir_all(t.path().join("dir")).unwrap();
            fs::write(t.path().join("dir").join(n), n.as_bytes()).unwrap();
        }
        fs::hard_link(t.path().join("dir/a"), t.path().join("dir/z")).unwrap();
        t
    };
    let forward = make(&mut names.iter());
    let backward = make(&mut names.iter().rev());
    let order = |t: &tempfile::TempDir| -> Vec<_> {
        fs::read_dir(t.path().join("dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    assert_ne!(
        order(&forward),
        order(&backward),
        "the fixture must differ in readdir order"
    );
    let one = build(forward.path(), Compression::default());
    assert_eq!(
        one,
        build(forward.path(), Compression::default()),
        "rebuild"
    );
    assert_eq!(
        one,
        build(backward.path(), Compression::default()),
        "other readdir order"
    );
}

#[test]
fn an_unreadable_file_fails_naming_it() {
    // Root reads every file on disk; a write-only sysfs attribute still
    // refuses a read open (EACCES), even for root.
    let dir = Path::new("/sys/bus/cpu/drivers/processor");
    assert!(
        dir.join("bind").exists(),
        "{} is needed as a tree with a file root cannot read",
        dir.display()
    );
    let bar = sbkit::progress::Quiet.start("initrd", Unit::Bytes, None);
    let err = build_initrd(
        dir,
        None,
        std::io::sink(),
        &options(Compression::None),
        &*bar,
    )
    .unwrap_err();
    assert!(
        matches!(&err, InitrdError::ReadFile { path, .. } if path == &dir.join("bind")),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("/sys/bus/cpu/drivers/processor/bind"),
        "{text}"
    );
    assert!(text.contains("make it readable or remove it"), "{text}");
}

#[test]
fn the_overlay_overrides_the_rootfs() {
    let f = fixture();
    let overlay = tempfile::tempdir().unwrap();
    fs::create_dir_all(overlay.path().join("etc")).unwrap();
    fs::write(overlay.path().join("etc/os-release"), b"ID=overlay\n").unwrap();
    fs::write(overlay.path().join("etc/added"), b"added").unwrap();
    let mut out = Vec::new();
    let bar = sbkit::progress::Quiet.start("initrd", Unit::Bytes, None);
    build_initrd(
        &f.root,
        Some(overlay.path()),
        &mut out,
        &options(Compression::None),
        &*bar,
    )
    .unwrap();
    let extracted = extract(&out);
    let e = extracted.path();
    assert!(fs::symlink_metadata(e.join("etc/os-release"))
        .unwrap()
        .is_file());
    assert_eq!(fs::read(e.join("etc/os-release")).unwrap(), b"ID=overlay\n");
    assert_eq!(fs::read(e.join("etc/added")).unwrap(), b"added");
    assert_eq!(
        fs::read(e.join("etc/shadow")).unwrap(),
        b"root:*:19000::::::\n"
    );
}

#[test]
fn mounts_below_the_root_are_not_entered() {
    use sbkit::initrd::tree::{walk, WalkOptions};
    // /dev/pts is a devpts mount inside the devtmpfs /dev, here and in containers.
    let dev = Path::new("/dev");
    let pts_dev = fs::metadata("/dev/pts").expect("/dev/pts is needed").dev();
    assert_ne!(
        pts_dev,
        fs::metadata(dev).unwrap().dev(),
        "/dev/pts must be a mount"
    );
    let names = |one_file_system| -> Vec<PathBuf> {
        let opts = WalkOptions {
            one_file_system,
            skip_pseudo: false,
        };
        walk(dev, opts)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect()
    };
    let kept = names(true);
    assert!(
        kept.contains(&PathBuf::from("pts")),
        "the mount point stays"
    );
    assert!(!kept
        .iter()
        .any(|p| p.starts_with("pts") && p != Path::new("pts")));
    assert!(names(false).contains(&PathBuf::from("pts/ptmx")));
}
