//! From an image source to a compressed initramfs and the boot files, in one
//! pass over the layers.
//!
//! `resolve` (digests checked) → per layer, top first: blob → digest →
//! decompress → limit → diff_id (on a reader thread) → `flatten` → cpio
//! (`initrd::ArchiveWriter`) → compressor (all cores) → a file in a private
//! temporary directory, which the caller reads and which disappears with
//! [`Prepared`]. An error anywhere (a digest that does not match at the end
//! of a layer included) drops the temporary directory: no partial output.
//!
//! The kernel, systemd-stub, systemd-boot and os-release are needed after the
//! stream, so while entries go by, regular files whose name can be one of
//! them (`vmlinuz*`, `linuxx64.efi.stub`, `systemd-bootx64.efi`,
//! `os-release`) are also copied aside. After the last layer, the final tree
//! resolves the usual paths (following the image's symlinks inside the
//! image) into a [`BootFiles`], the same value a rootfs directory gives.
//!
//! Peak memory, whatever the image size: the flatten index (≈ 100 bytes per
//! path of the image plus the path), the hard-link window (32 MiB by
//! default), 4 MiB of layer chunks in flight, the compressor's buffers
//! (zstd: a few MiB per thread at the default level), fixed I/O buffers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::initrd::cpio::CpioError;
use crate::initrd::tree::{walk, WalkOptions};
use crate::initrd::{ArchiveWriter, Compressor, Entry, EntryKind, InitrdOptions, InitrdStats};

use super::boot_files::{BootFile, BootFiles, Kernel, INIT_CANDIDATES, OS_RELEASE_PATHS};
use super::discover::{sort_kernels, KernelCandidate, SDBOOT_PATH, STUB_PATH};
use super::error::ImageError;
use super::flatten::{FlattenError, FlattenReport, Flattener, Sink, Tree};
use super::layer::{self, Budget, ErrorSlot, VerifiedLayer};
use super::resolve::{self, Resolved};
use super::store::{DirStore, TarStore};
use super::{ImageSource, Transport};
use crate::progress::{Progress, Task, Unit};

/// Files copied aside while streaming are limited to this much in total.
const CAPTURE_LIMIT: u64 = 1 << 30;

/// A flattened image: the initrd and the boot files, in temporary storage
/// that is removed when this is dropped.
pub struct Prepared {
    /// Holds the initrd and the boot files; removed on drop.
    _work: tempfile::TempDir,
    /// The compressed initramfs.
    pub initrd: PathBuf,
    /// Initramfs statistics.
    pub stats: InitrdStats,
    /// What was built from: source, manifest and config digests.
    pub description: String,
    /// Notes for the user (lost capabilities, repaired links, ...).
    pub notes: Vec<String>,
    /// The flattener's counts.
    pub report: FlattenReport,
    /// The image's kernels, stub, systemd-boot, os-release and init, as its
    /// final tree resolves them (the files live in the temporary storage).
    pub boot: BootFiles,
}

/// Where entries go: cpio into the compressor, plus the copies aside.
struct InitrdSink<W: Write> {
    archive: ArchiveWriter<W>,
    captures: HashMap<Vec<u8>, PathBuf>,
    capture_dir: PathBuf,
    captured: u64,
    capture_skipped: Vec<String>,
    bar: Arc<dyn Task>,
}

/// Whether a file of this name may be a boot file.
fn wanted(path: &[u8]) -> bool {
    let name = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    name.starts_with(b"vmlinuz")
        || name == b"linuxx64.efi.stub"
        || name == b"systemd-bootx64.efi"
        || name == b"os-release"
}

impl<W: Write> Sink for InitrdSink<W> {
    fn emit(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), FlattenError> {
        use std::os::unix::ffi::OsStrExt;
        let path = entry.path.as_os_str().as_bytes();
        let capture = entry.carries_data() && wanted(path);
        let result = match data {
            Some(d) if capture && self.captured + entry.size <= CAPTURE_LIMIT => {
                let file = self.capture_dir.join(self.captures.len().to_string());
                let mut out = File::create(&file).map_err(FlattenError::Output)?;
                let mut tee = Tee {
                    inner: d,
                    copy: &mut out,
                };
                let r = self.archive.add(entry, Some(&mut tee));
                self.captured += entry.size;
                self.captures.insert(path.to_vec(), file);
                r
            }
            Some(d) => {
                if capture {
                    self.capture_skipped
                        .push(String::from_utf8_lossy(path).into_owned());
                }
                self.archive.add(entry, Some(d))
            }
            None => self.archive.add(entry, None),
        };
        self.bar.advance(1);
        result.map_err(|e| match e {
            CpioError::Write(e) => FlattenError::Output(e),
            other => FlattenError::Unrepresentable {
                path: entry.path.display().to_string(),
                source: other,
            },
        })
    }
}

/// Copies what is read through it into a second writer.
struct Tee<'a, 'b> {
    inner: &'a mut dyn Read,
    copy: &'b mut File,
}

impl Read for Tee<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Counts the bytes written through it.
struct Counting<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Resolves the source (digests checked) without reading layers. `work` holds
/// a spooled engine export for `docker-daemon:`.
fn resolve_source(
    src: &ImageSource,
    work: &Path,
    progress: &dyn Progress,
) -> Result<Resolved, ImageError> {
    let spec = src.spec.as_str();
    let opts = &src.options;
    match &src.transport {
        Transport::Registry(r) => super::registry::resolve_registry(r, opts, progress),
        Transport::Oci { dir, reference } => resolve::resolve_oci(
            Arc::new(DirStore::new(dir)),
            spec,
            reference.as_deref(),
            &opts.platform,
        ),
        Transport::OciArchive { file, reference } => resolve::resolve_oci(
            Arc::new(TarStore::open(file)?),
            spec,
            reference.as_deref(),
            &opts.platform,
        ),
        Transport::DockerArchive { file, reference } => {
            let store = TarStore::open(file)?;
            if !store.has("manifest.json") && store.has("index.json") {
                // An OCI archive given as docker-archive: read it as one.
                return resolve::resolve_oci(
                    Arc::new(store),
                    spec,
                    reference.as_deref(),
                    &opts.platform,
                );
            }
            resolve::resolve_docker_archive(Arc::new(store), spec, reference.as_deref())
        }
        Transport::DockerDaemon(image) => {
            let path = work.join("engine-export.tar");
            let mut f = File::create(&path).map_err(ImageError::io(&path))?;
            let id = super::daemon::save(image, &mut f, progress)?;
            drop(f);
            let mut r =
                resolve::resolve_docker_archive(Arc::new(TarStore::open(&path)?), spec, None)?;
            r.description = format!("{spec} (engine image {id}); {}", r.description);
            Ok(r)
        }
        Transport::Tar(file) => Ok(resolve::resolve_tar(file, spec)?.0),
    }
}

/// Flattens the image of `src` into a compressed initramfs (see the module doc).
/// `overlay` adds files over the image (as `--overlay-rootfs` does for `dir:`).
pub fn prepare(
    src: &ImageSource,
    overlay: Option<&Path>,
    opts: &InitrdOptions,
    progress: &dyn Progress,
) -> Result<Prepared, ImageError> {
    let work = tempfile::Builder::new()
        .prefix("sbkit-image-")
        .tempdir()
        .map_err(ImageError::io(std::env::temp_dir()))?;
    let resolved = resolve_source(src, work.path(), progress)?;
    let capture_dir = work.path().join("captures");
    std::fs::create_dir(&capture_dir).map_err(ImageError::io(&capture_dir))?;
    let initrd_path = work.path().join("initrd");
    let out = File::create(&initrd_path).map_err(ImageError::io(&initrd_path))?;
    let threads = opts.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
    });
    let counted = Counting {
        inner: out,
        count: 0,
    };
    let compressor = Compressor::new(counted, opts.compression, threads)
        .map_err(ImageError::io(&initrd_path))?;
    let staged = BufWriter::with_capacity(256 * 1024, compressor);
    let bar: Arc<dyn Task> = Arc::from(progress.start("initrd entries", Unit::Items, None));
    let sink = InitrdSink {
        archive: ArchiveWriter::new(staged, opts.mtime),
        captures: HashMap::new(),
        capture_dir,
        captured: 0,
        capture_skipped: Vec::new(),
        bar: bar.clone(),
    };
    let limits = src.options.limits;
    let mut flattener = Flattener::new(sink, limits, true, src.options.link_window);
    let budget = Budget::new(limits.max_bytes);
    let slot = ErrorSlot::default();
    let whiteouts = !matches!(src.transport, Transport::Tar(_));
    let n = resolved.layers.len();
    // Errors from a layer stream carry the precise cause in the slot.
    let precise = |e: FlattenError, slot: &ErrorSlot| -> ImageError {
        match (&e, slot.take()) {
            (FlattenError::Tar { .. } | FlattenError::Reopen { .. }, Some(p)) => p,
            _ => ImageError::Flatten(e),
        }
    };
    std::thread::scope(|scope| -> Result<(), ImageError> {
        for index in (0..n).rev() {
            let layer = resolved.layers[index].clone();
            bar.set_message(&format!(
                "flattening {} ({})",
                layer.what,
                layer.digest.short()
            ));
            let opener = resolved.opener.clone();
            let (b, s) = (budget.clone(), slot.clone());
            let l2 = layer.clone();
            let reader = layer::spawn(scope, move || {
                let raw = opener.open(index, &l2)?;
                VerifiedLayer::new(raw, &l2, b, s)
            });
            let label = format!("{} {}", layer.what, layer.digest);
            let idx = u32::try_from(index).unwrap_or(u32::MAX);
            flattener
                .layer(idx, &label, reader, whiteouts)
                .map_err(|e| precise(e, &slot))?;
        }
        Ok(())
    })?;
    let reopen_slot = slot.clone();
    let (mut sink, tree, report) = flattener
        .finish(|index| {
            let i = index as usize;
            let layer = resolved
                .layers
                .get(i)
                .ok_or_else(|| format!("no layer {i}"))?;
            let raw = resolved.opener.open(i, layer).map_err(|e| e.to_string())?;
            VerifiedLayer::new(raw, layer, budget.clone(), reopen_slot.clone())
                .map_err(|e| e.to_string())
        })
        .map_err(|e| precise(e, &slot))?;
    if let Some(dir) = overlay {
        add_overlay(&mut sink, &tree, dir)?;
    }
    bar.finish();
    let entries = sink.archive.entries();
    let (staged, uncompressed_bytes) = sink
        .archive
        .finish()
        .map_err(|e| ImageError::Flatten(cpio_output(e)))?;
    let compressor = staged
        .into_inner()
        .map_err(|e| ImageError::io(&initrd_path)(e.into_error()))?;
    let mut counted = compressor.finish().map_err(ImageError::io(&initrd_path))?;
    counted.flush().map_err(ImageError::io(&initrd_path))?;
    let stats = InitrdStats {
        entries,
        uncompressed_bytes,
        compressed_bytes: counted.count,
    };
    let mut notes = resolved.notes;
    notes.extend(describe(&report));
    if !sink.capture_skipped.is_empty() {
        notes.push(format!(
            "not kept aside for boot-file discovery (over {} MiB of candidates): {}",
            CAPTURE_LIMIT >> 20,
            sink.capture_skipped.join(", ")
        ));
    }
    let boot = boot_files(&tree, &sink.captures, &src.spec, &mut notes);
    Ok(Prepared {
        _work: work,
        initrd: initrd_path,
        stats,
        description: resolved.description,
        notes,
        report,
        boot,
    })
}

fn cpio_output(e: CpioError) -> FlattenError {
    match e {
        CpioError::Write(e) => FlattenError::Output(e),
        other => FlattenError::Output(io::Error::other(other)),
    }
}

/// Notes from the flatten report.
fn describe(r: &FlattenReport) -> Vec<String> {
    let mut notes = Vec::new();
    if !r.capabilities_lost.is_empty() {
        let shown: Vec<&str> = r
            .capabilities_lost
            .iter()
            .take(20)
            .map(String::as_str)
            .collect();
        notes.push(format!(
            "{} file(s) lose their file capabilities (security.capability): an initramfs (cpio newc) cannot carry extended attributes, so they run without them unless the system sets them again at boot (setcap): {}{}",
            r.capabilities_lost.len(),
            shown.join(", "),
            if r.capabilities_lost.len() > 20 { ", ..." } else { "" }
        ));
    }
    if r.other_xattrs > 0 {
        notes.push(format!(
            "{} other extended attribute(s) in the layers are not carried by the initramfs",
            r.other_xattrs
        ));
    }
    if !r.relinked_layers.is_empty() {
        notes.push(format!(
            "hard links to files larger than the link window were repaired by reading {} layer(s) a second time",
            r.relinked_layers.len()
        ));
    }
    notes
}

/// Lays `--overlay-rootfs` over the flattened image: files replace the
/// image's, directories the image has keep its owner and mode, a directory
/// against a non-directory is refused.
fn add_overlay<W: Write>(
    sink: &mut InitrdSink<W>,
    tree: &Tree,
    dir: &Path,
) -> Result<(), ImageError> {
    use std::os::unix::ffi::OsStrExt;
    let entries = walk(
        dir,
        WalkOptions {
            one_file_system: true,
            skip_pseudo: false,
        },
    )
    .map_err(|e| ImageError::source(&dir.display().to_string(), e.to_string()))?;
    for mut e in entries {
        let key: &[u8] = if e.path == Path::new(".") {
            b""
        } else {
            e.path.as_os_str().as_bytes()
        };
        let below = tree.get(key).map(|n| n.kind);
        match (below, e.kind) {
            (Some(EntryKind::Directory), EntryKind::Directory) => continue,
            (Some(EntryKind::Directory), _) | (Some(_), EntryKind::Directory) => {
                return Err(ImageError::source(
                    &dir.display().to_string(),
                    format!(
                        "overlay entry {} is a {} but the image has a {} there; an overlay can replace files, not turn directories into files or the reverse",
                        e.path.display(),
                        e.kind.describe(),
                        below.map_or("nothing", EntryKind::describe)
                    ),
                ))
            }
            _ => {}
        }
        // Hard-link sets of the overlay become copies: their set numbers would
        // collide with the image's.
        e.hardlink = None;
        let data = match (&e.source, e.kind) {
            (Some(s), EntryKind::Regular) => {
                Some(File::open(&s.path).map_err(ImageError::io(&s.path))?)
            }
            _ => None,
        };
        match data {
            Some(mut f) => sink.emit(&e, Some(&mut f))?,
            None => sink.emit(&e, None)?,
        }
    }
    Ok(())
}

/// The image's boot files as its final tree resolves them (following the
/// image's symlinks inside the image), pointing at the copies kept aside.
fn boot_files(
    tree: &Tree,
    captures: &HashMap<Vec<u8>, PathBuf>,
    spec: &str,
    notes: &mut Vec<String>,
) -> BootFiles {
    let mut file = |path: &str| -> Option<BootFile> {
        let (_, node) = tree.resolve(path)?;
        if node.kind != EntryKind::Regular {
            return None;
        }
        let data_path = node.data_path.as_ref()?;
        match captures.get(data_path) {
            Some(copy) => Some(BootFile {
                shown: format!("{spec}:/{path}"),
                path: copy.clone(),
            }),
            None => {
                notes.push(format!(
                    "/{path} is stored in the image as /{}, a name build-uki does not keep aside; give it explicitly (--kernel, --stub, --os-release)",
                    String::from_utf8_lossy(data_path)
                ));
                None
            }
        }
    };
    let name_ok = |n: &[u8]| !n.is_empty() && n != b"." && n != b".." && !n.contains(&b'/');
    let mut candidates = Vec::new();
    if let Some((boot, node)) = tree.resolve("boot") {
        if node.kind == EntryKind::Directory {
            for name in tree.children(&boot) {
                if let Some(rest) = name.strip_prefix(b"vmlinuz") {
                    if name_ok(&name) {
                        candidates.push(KernelCandidate {
                            path: PathBuf::from(format!("boot/{}", String::from_utf8_lossy(&name))),
                            version: String::from_utf8_lossy(rest)
                                .trim_start_matches('-')
                                .to_string(),
                        });
                    }
                }
            }
        }
    }
    for modules in ["usr/lib/modules", "lib/modules"] {
        if let Some((dir, node)) = tree.resolve(modules) {
            if node.kind == EntryKind::Directory {
                for v in tree.children(&dir) {
                    if name_ok(&v) {
                        let version = String::from_utf8_lossy(&v).into_owned();
                        candidates.push(KernelCandidate {
                            path: PathBuf::from(format!("{modules}/{version}/vmlinuz")),
                            version,
                        });
                    }
                }
            }
        }
    }
    // Only kernels that are regular files with a copy kept aside count.
    candidates.retain(|k| {
        tree.resolve(&k.path.to_string_lossy())
            .is_some_and(|(_, n)| n.kind == EntryKind::Regular)
    });
    sort_kernels(&mut candidates);
    let kernels = candidates
        .into_iter()
        .filter_map(|k| {
            file(&k.path.to_string_lossy()).map(|f| Kernel {
                version: k.version,
                file: f,
            })
        })
        .collect();
    let stub = file(STUB_PATH);
    let sdboot = file(SDBOOT_PATH);
    let os_release = OS_RELEASE_PATHS.iter().find_map(|p| file(p));
    let present = |p: &str| tree.resolve(p).is_some();
    BootFiles {
        origin: spec.to_string(),
        kernels,
        stub,
        sdboot,
        os_release,
        has_init: present(INIT_CANDIDATES[0]),
        init_program: INIT_CANDIDATES[1..]
            .iter()
            .find(|p| present(p))
            .map(|p| p.to_string()),
        trusted_boot: super::boot_files::TrustedBootTraits::probe(present),
    }
}
