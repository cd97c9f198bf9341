//! Container-image fixtures and the engine oracle: busybox base images
//! imported into the local Docker engine, images built layer by layer with
//! `docker build`, hand-made layers (OCI layouts, `docker save` archives),
//! the engine's own flattening (`docker export` of a created container), and
//! a comparison of two extracted trees (types, modes, owners, link targets,
//! device numbers, contents, hard-link sets).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use crate::common::rootfs::{busybox_rootfs, MARKER_INIT};
use crate::common::tools::{require_tool, run_ok};

/// Applets the image RUN steps use, linked into /bin of the base.
const APPLETS: [&str; 20] = [
    "rm", "mkdir", "ln", "chmod", "chown", "mknod", "mkfifo", "cp", "touch", "mv", "ls", "sh",
    "cat", "echo", "sleep", "mount", "poweroff", "tr", "true", "stat",
];

/// A unique suffix for engine object names, so parallel tests do not collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `docker ARGS...`, panicking with its output on failure.
pub fn docker(args: &[&str]) -> String {
    let out = run_ok(Command::new(require_tool("docker")).args(args));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes engine objects on drop (images by tag, containers by id).
#[derive(Default)]
pub struct EngineObjects {
    pub images: Vec<String>,
    pub containers: Vec<String>,
}

impl Drop for EngineObjects {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for i in self.images.iter().rev() {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

/// A busybox rootfs (the boot-test one: kernel under /boot, os-release,
/// `MARKER_INIT` as /init) with the applets RUN steps need.
pub fn base_rootfs(root: &Path) {
    busybox_rootfs(root, MARKER_INIT);
    for a in APPLETS {
        let link = root.join("bin").join(a);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
}

/// `docker import` of `root` as `tag`.
pub fn import(root: &Path, tag: &str, objects: &mut EngineObjects) {
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Command::new(require_tool("docker"))
        .args(["import", "-", tag])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success(), "tar of {}", root.display());
    assert!(
        out.status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    objects.images.push(tag.to_string());
}

/// `docker build` (the classic builder: offline, one layer per RUN) of
/// `dockerfile` as `tag`.
pub fn build(dockerfile: &str, tag: &str, objects: &mut EngineObjects) {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let out = Command::new(require_tool("docker"))
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", tag])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    objects.images.push(tag.to_string());
}

/// The engine's flattening of `image`: `docker export` of a created (never
/// started) container, unpacked into `dest` with owners, modes, links and
/// device nodes (as root). Returns the export tarball's path (beside `dest`).
pub fn engine_export(image: &str, dest: &Path, objects: &mut EngineObjects) -> PathBuf {
    let id = docker(&["create", image, "/bin/sh"]);
    objects.containers.push(id.clone());
    let tarball = dest.with_extension("export.tar");
    docker(&["export", "-o", tarball.to_str().unwrap(), &id]);
    fs::create_dir_all(dest).unwrap();
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--same-owner", "-p", "-x", "-f"])
            .arg(&tarball)
            .arg("-C")
            .arg(dest),
    );
    tarball
}

/// Unpacks an uncompressed or zstd cpio initrd with GNU cpio (as root: owners
/// and device nodes kept) into `dest`. `-u`: later entries of a path replace
/// earlier ones, as the kernel's unpacker does.
pub fn unpack_initrd(initrd: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let data = fs::read(initrd).unwrap();
    let cpio_bytes = if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let out = Command::new(require_tool("zstd"))
            .args(["-dc"])
            .arg(initrd)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    } else {
        data
    };
    let mut child = Command::new(require_tool("cpio"))
        .args(["-i", "-d", "-m", "-u", "--no-absolute-filenames", "--quiet"])
        .current_dir(dest)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&cpio_bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cpio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One path of an extracted tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// `d`, `f`, `l`, `c`, `b`, `p`, `s`.
    pub kind: char,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Symlink target, device number, or the SHA-256 of a file's content.
    pub what: String,
}

/// A tree as comparable data, plus its hard-link sets.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub items: BTreeMap<String, Item>,
    /// Each set of names sharing one inode (files only), sorted.
    pub links: Vec<Vec<String>>,
}

/// Paths an engine adds to every container (the init layer: `/.dockerenv`,
/// `/etc/hosts`, an empty `/dev/console` file, ...) or that neither side
/// carries the same way: the pseudo file systems' contents (an initrd leaves
/// them out), and the directories whose metadata the init layer overrides.
pub fn engine_only(path: &str) -> bool {
    matches!(
        path,
        ".dockerenv"
            | "etc/hostname"
            | "etc/hosts"
            | "etc/resolv.conf"
            | "etc/mtab"
            | "dev"
            | "proc"
            | "sys"
    ) || ["dev/", "proc/", "sys/", "run/", "tmp/"]
        .iter()
        .any(|p| path.starts_with(p))
}

impl Snapshot {
    /// Reads `root` (lstat only), leaving out paths `skip` says.
    pub fn of(root: &Path, skip: &dyn Fn(&str) -> bool) -> Snapshot {
        let mut items = BTreeMap::new();
        let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let m = fs::symlink_metadata(&p).unwrap();
                let ft = m.file_type();
                if ft.is_dir() {
                    stack.push(p.clone());
                }
                if skip(&rel) {
                    continue;
                }
                let (kind, what) = if ft.is_dir() {
                    ('d', String::new())
                } else if ft.is_symlink() {
                    ('l', fs::read_link(&p).unwrap().display().to_string())
                } else if ft.is_file() {
                    if m.nlink() > 1 {
                        inodes
                            .entry((m.dev(), m.ino()))
                            .or_default()
                            .push(rel.clone());
                    }
                    ('f', hex::encode(Sha256::digest(fs::read(&p).unwrap())))
                } else if ft.is_char_device() {
                    ('c', format!("{:x}", m.rdev()))
                } else if ft.is_block_device() {
                    ('b', format!("{:x}", m.rdev()))
                } else if ft.is_fifo() {
                    ('p', String::new())
                } else {
                    ('s', String::new())
                };
                items.insert(
                    rel,
                    Item {
                        kind,
                        mode: m.mode() & 0o7777,
                        uid: m.uid(),
                        gid: m.gid(),
                        what,
                    },
                );
            }
        }
        let mut links: Vec<Vec<String>> = inodes
            .into_values()
            .filter(|v| v.len() > 1)
            .map(|mut v| {
                v.sort();
                v
            })
            .collect();
        links.sort();
        Snapshot { items, links }
    }
}

/// Asserts two snapshots are equal, listing every difference.
pub fn assert_same(ours: &Snapshot, engine: &Snapshot, what: &str) {
    let mut diffs = Vec::new();
    for (p, e) in &engine.items {
        match ours.items.get(p) {
            None => diffs.push(format!("missing in ours: {p} {e:?}")),
            Some(o) if o != e => {
                diffs.push(format!("differs: {p}\n   ours   {o:?}\n   engine {e:?}"))
            }
            _ => {}
        }
    }
    for (p, o) in &ours.items {
        if !engine.items.contains_key(p) {
            diffs.push(format!("only in ours: {p} {o:?}"));
        }
    }
    if ours.links != engine.links {
        diffs.push(format!(
            "hard-link sets differ:\n   ours   {:?}\n   engine {:?}",
            ours.links, engine.links
        ));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} difference(s) from the engine's flattening:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// A layer entry for hand-made layers.
pub enum L<'a> {
    /// Directory with mode, uid, gid.
    Dir(&'a str, u32, u32, u32),
    /// File with content.
    File(&'a str, &'a [u8]),
    /// File with content, mode, uid, gid.
    Owned(&'a str, &'a [u8], u32, u32, u32),
    /// Hard link to a target.
    Link(&'a str, &'a str),
    /// Symlink to a target.
    Sym(&'a str, &'a str),
    /// File with a `security.capability` xattr (PAX record).
    Capable(&'a str, &'a [u8]),
    /// A raw name (`..`, absolute) for hostile layers: regular file.
    RawFile(&'a [u8], &'a [u8]),
    /// A raw hard link name and target.
    RawLink(&'a [u8], &'a [u8]),
}

/// An uncompressed layer tar of `entries`.
pub fn layer_tar(entries: &[L<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            L::Dir(p, mode, uid, gid) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(*uid as u64);
                h.set_gid(*gid as u64);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            L::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            L::Owned(p, data, mode, uid, gid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid as u64);
                h.set_gid(*gid as u64);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            L::Link(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            L::Sym(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            L::Capable(p, data) => {
                // v2 capability blob: cap_net_raw (bit 13) permitted+effective.
                let mut cap = [0u8; 20];
                cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
                cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
                b.append_pax_extensions([("SCHILY.xattr.security.capability", &cap[..])])
                    .unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o755);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            L::RawFile(name, data) | L::RawLink(name, data) => {
                let mut h = tar::Header::new_old();
                let link = matches!(e, L::RawLink(..));
                {
                    let old = h.as_old_mut();
                    old.name[..name.len()].copy_from_slice(name);
                    if link {
                        old.linkname[..data.len()].copy_from_slice(data);
                    }
                }
                h.set_entry_type(if link {
                    tar::EntryType::Link
                } else {
                    tar::EntryType::Regular
                });
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                let body: &[u8] = if link { &[] } else { data };
                h.set_size(body.len() as u64);
                h.set_cksum();
                b.append(&h, body).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Layer compressions for hand-made OCI layers.
#[derive(Clone, Copy)]
pub enum Z {
    None,
    Gzip,
    Zstd,
}

/// Compresses a layer.
pub fn compress(tar: &[u8], z: Z) -> (Vec<u8>, &'static str) {
    match z {
        Z::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Z::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Z::Zstd => (
            zstd::encode_all(tar, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI image layout being written.
pub struct OciLayout {
    pub dir: PathBuf,
    pub index: Vec<serde_json::Value>,
}

/// A written image: its manifest descriptor.
#[derive(Clone, Debug)]
pub struct Written {
    pub digest: String,
    pub size: usize,
    pub config: String,
    pub layers: Vec<String>,
}

impl OciLayout {
    /// A new, empty layout in `dir`.
    pub fn new(dir: &Path) -> OciLayout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciLayout {
            dir: dir.to_path_buf(),
            index: Vec::new(),
        }
    }

    /// Stores a blob; returns its digest.
    pub fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        fs::write(self.dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    }

    /// Writes an image of `layers` (bottom first, as tars) for `arch`; returns
    /// the manifest descriptor. Not added to index.json.
    pub fn image(&self, layers: &[Vec<u8>], z: Z, arch: &str) -> Written {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut digests = Vec::new();
        for l in layers {
            let (blob, mt) = compress(l, z);
            let d = self.blob(&blob);
            diff_ids.push(sha(l));
            descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
            digests.push(d);
        }
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = self.blob(&config_bytes);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
            "layers": descs,
        });
        let mb = serde_json::to_vec(&manifest).unwrap();
        Written {
            digest: self.blob(&mb),
            size: mb.len(),
            config: config_digest,
            layers: digests,
        }
    }

    /// Adds a manifest to index.json under `name`.
    pub fn tag(&mut self, w: &Written, name: &str) {
        self.index.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": w.digest, "size": w.size,
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
        self.write_index();
    }

    /// Adds a multi-arch index of `images` ((arch, manifest)) under `name`.
    pub fn tag_index(&mut self, images: &[(&str, &Written)], name: &str) -> String {
        let manifests: Vec<_> = images
            .iter()
            .map(|(arch, w)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": w.digest, "size": w.size,
                    "platform": {"architecture": arch, "os": "linux"},
                })
            })
            .collect();
        let idx = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let d = self.blob(&idx);
        self.index.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d, "size": idx.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
        self.write_index();
        d
    }

    fn write_index(&self) {
        let idx = serde_json::json!({"schemaVersion": 2, "manifests": self.index});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }
}

/// Writes a classic `docker save` archive of `layers` (uncompressed tars,
/// bottom first) tagged `tag` into `out`.
pub fn docker_archive(layers: &[Vec<u8>], tag: &str, out: &Path) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", &sha(&config)[7..]);
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{:064x}/layer.tar", i + 1);
        add(&name, l);
        names.push(name);
    }
    add(&config_name, &config);
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": [tag], "Layers": names}
    ]))
    .unwrap();
    add("manifest.json", &manifest);
    b.finish().unwrap();
}

/// Tars a directory (an OCI layout) into `out` (an `oci-archive`), adding
/// `extra` members (e.g. a `manifest.json` to make the newer `docker save`
/// format).
pub fn tar_dir(dir: &Path, out: &Path, extra: &[(&str, Vec<u8>)]) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    for (name, data) in extra {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

/// `skopeo copy` (no TLS verification, for the loopback registry).
pub fn skopeo_copy(from: &str, to: &str, extra: &[&str]) {
    run_ok(
        Command::new(require_tool("skopeo"))
            .args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .args(extra)
            .arg(from)
            .arg(to),
    );
}

/// Flattens `spec` with the library into an uncompressed initrd; returns the
/// prepared image (its files stay while it lives) or the error message.
pub fn try_flatten_spec(
    spec: &str,
    options: sbkit::rootfs::ImageOptions,
) -> Result<sbkit::rootfs::image::Prepared, String> {
    let src = match sbkit::rootfs::Source::parse_with(spec, options).map_err(|e| e.to_string())? {
        sbkit::rootfs::Source::Image(i) => i,
        other => panic!("{spec} is not an image source: {other:?}"),
    };
    sbkit::rootfs::image::prepare(
        &src,
        None,
        &sbkit::initrd::InitrdOptions {
            compression: sbkit::initrd::Compression::None,
            ..Default::default()
        },
        &sbkit::progress::Quiet,
    )
    .map_err(|e| e.to_string())
}

/// [`try_flatten_spec`], panicking on error.
pub fn flatten_spec(
    spec: &str,
    options: sbkit::rootfs::ImageOptions,
) -> sbkit::rootfs::image::Prepared {
    try_flatten_spec(spec, options).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

/// Flattens `spec` with `options` and unpacks it into `dest`.
pub fn tree_with(spec: &str, options: sbkit::rootfs::ImageOptions, dest: &Path) -> Snapshot {
    let prepared = flatten_spec(spec, options);
    unpack_initrd(&prepared.initrd, dest);
    Snapshot::of(dest, &engine_only)
}

/// Flattens `spec` and unpacks the initrd into `dest`; returns the snapshot
/// (pseudo-file-system contents and engine-only paths left out).
pub fn our_tree(spec: &str, dest: &Path) -> Snapshot {
    let prepared = flatten_spec(spec, Default::default());
    unpack_initrd(&prepared.initrd, dest);
    Snapshot::of(dest, &engine_only)
}
