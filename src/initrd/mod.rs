//! Initramfs from a whole root filesystem, streamed: walk → cpio → compressor → output.
//!
//! `build-uki` puts an entire rootfs into the UKI's `.initrd` (the Kairos
//! trusted-boot model), so the archive keeps what the image says: owners,
//! modes (setuid/setgid/sticky), symlinks, hard links, device nodes and FIFOs,
//! unlike peers that reset every owner to root.
//!
//! The pieces are separate so that a later source (container image layers
//! streamed without unpacking) can reuse all but the walk:
//! - [`entry`]: the entry model ([`Entry`]), independent of where files come from.
//! - [`tree`]: a directory walk (plus an overlay directory) into sorted entries.
//! - [`archive`]: entries to cpio, with deterministic inode numbers.
//! - [`cpio`]: the newc format writer.
//! - [`compress`]: zstd, xz (CRC32), gzip, legacy lz4, none.
//!
//! Reproducibility: entries are sorted by path bytes, inode numbers are
//! assigned in that order, every mtime is [`InitrdOptions::mtime`], and the
//! compressors' output does not depend on the number of cores. Two builds of
//! the same tree are byte-identical.
//!
//! Memory is bounded by the entry list (metadata only) and fixed buffers; file
//! data is streamed. On error the output holds a partial archive: write to a
//! temporary file and rename it only on success.

pub mod archive;
pub mod compress;
pub mod cpio;
pub mod entry;
pub mod tree;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use archive::ArchiveWriter;
pub use compress::{Compression, Compressor};
pub use entry::{DeviceNumber, Entry, EntryKind, HardLink};

use crate::progress::Task;
use cpio::CpioError;

/// Buffer between the archive writer and the compressor; fixed size.
const STAGE_BUF_LEN: usize = 256 * 1024;
/// Progress is reported in steps of this many bytes, to keep the bar cheap.
const PROGRESS_STEP: u64 = 1 << 20;

/// How an initramfs is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitrdOptions {
    /// Compression of the archive.
    pub compression: Compression,
    /// Modification time of every entry, seconds since 1970 (see [`source_date_epoch`]).
    pub mtime: u32,
    /// Do not descend into other file systems mounted below the rootfs.
    pub one_file_system: bool,
    /// Compressor threads; `None` means one per available core. The output is
    /// the same for every value.
    pub threads: Option<u32>,
}

impl Default for InitrdOptions {
    fn default() -> Self {
        InitrdOptions {
            compression: Compression::default(),
            mtime: 0,
            one_file_system: true,
            threads: None,
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitrdStats {
    /// Entries in the archive (the trailer not counted).
    pub entries: u64,
    /// Length of the cpio archive.
    pub uncompressed_bytes: u64,
    /// Bytes written to the output.
    pub compressed_bytes: u64,
}

/// Why an initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// The rootfs (or overlay) path is not a directory.
    #[error("{path} is not a directory; pass the unpacked root file system (the directory holding usr/, etc/, ...)")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// Listing or examining part of the tree failed.
    #[error("cannot read {path}: {source}; the whole rootfs must be readable (run as root for a rootfs with root-owned files)")]
    Walk {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file's type is none cpio can carry.
    #[error("{path} has an unsupported file type (mode {mode:o}); remove it from the rootfs")]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// Its `st_mode`.
        mode: u32,
    },
    /// The overlay has a directory where the rootfs has none, or the reverse.
    #[error("overlay entry {path} is a {overlay} but the rootfs has a {rootfs} there; an overlay can replace files, not turn directories into files or the reverse (if the rootfs has a symlink such as lib -> usr/lib, put the files under the symlink's target in the overlay)")]
    OverlayConflict {
        /// Path inside the archive.
        path: PathBuf,
        /// What the rootfs has there.
        rootfs: &'static str,
        /// What the overlay has there.
        overlay: &'static str,
    },
    /// Reading a file's data failed.
    #[error("cannot read {path}: {source}; make it readable or remove it from the rootfs")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file changed between the walk and the copy.
    #[error("{path} changed while the initrd was built ({detail}); build from a rootfs nothing else is modifying")]
    Changed {
        /// The file.
        path: PathBuf,
        /// What changed.
        detail: String,
    },
    /// An entry does not fit the cpio newc format or the kernel's limits.
    #[error("{path} cannot go into an initramfs: {source}; remove it from the rootfs")]
    Unrepresentable {
        /// The file.
        path: PathBuf,
        /// The format limit it breaks.
        source: CpioError,
    },
    /// Writing or compressing the output failed.
    #[error("cannot write the initrd: {0}; check free space where the output goes")]
    Output(#[source] io::Error),
    /// `SOURCE_DATE_EPOCH` is not usable as a cpio mtime.
    #[error("SOURCE_DATE_EPOCH={0:?} is not a whole number of seconds between 0 and 4294967295; unset it or fix it")]
    SourceDateEpoch(String),
}

/// The entry mtime from `SOURCE_DATE_EPOCH`, or 0 when it is unset or empty.
pub fn source_date_epoch() -> Result<u32, InitrdError> {
    parse_epoch(&std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default())
}

fn parse_epoch(v: &str) -> Result<u32, InitrdError> {
    if v.trim().is_empty() {
        return Ok(0);
    }
    v.trim()
        .parse::<u32>()
        .map_err(|_| InitrdError::SourceDateEpoch(v.to_string()))
}

/// Builds a compressed initramfs of `root` (with `overlay` laid over it) into `out`.
///
/// The tree is walked first (metadata only) to know the archive length, which
/// becomes `progress`'s total; the task then advances with archive bytes
/// written. See [`tree`] for what is kept and skipped.
pub fn build_initrd(
    root: &Path,
    overlay: Option<&Path>,
    out: impl Write,
    opts: &InitrdOptions,
    progress: &dyn Task,
) -> Result<InitrdStats, InitrdError> {
    let entries = tree::collect(root, overlay, opts.one_file_system)?;
    write_initrd(&entries, out, opts, progress)
}

/// Writes the archive of walked `entries` (their data read from
/// [`Entry::source`]) through the compressor into `out`.
pub fn write_initrd(
    entries: &[Entry],
    out: impl Write,
    opts: &InitrdOptions,
    progress: &dyn Task,
) -> Result<InitrdStats, InitrdError> {
    progress.set_total(archive::archive_len(entries));
    progress.set_done(0);
    let threads = opts.threads.unwrap_or_else(available_cores);
    let counted = Counting {
        inner: out,
        count: 0,
    };
    let compressor =
        Compressor::new(counted, opts.compression, threads).map_err(InitrdError::Output)?;
    let staged = BufWriter::with_capacity(STAGE_BUF_LEN, compressor);
    let reporting = Progress::new(staged, progress);
    let mut archive = ArchiveWriter::new(reporting, opts.mtime);
    for entry in entries {
        add_entry(&mut archive, entry)?;
    }
    let entry_count = archive.entries();
    let (reporting, uncompressed_bytes) = archive.finish().map_err(output_error)?;
    let staged = reporting.into_inner();
    let compressor = staged
        .into_inner()
        .map_err(|e| InitrdError::Output(e.into_error()))?;
    let counted = compressor.finish().map_err(InitrdError::Output)?;
    Ok(InitrdStats {
        entries: entry_count,
        uncompressed_bytes,
        compressed_bytes: counted.count,
    })
}

fn available_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

fn add_entry<W: Write>(archive: &mut ArchiveWriter<W>, entry: &Entry) -> Result<(), InitrdError> {
    let result = match (&entry.source, entry.carries_data()) {
        (Some(source), true) => {
            let mut file = open_source(entry, source)?;
            archive.add(entry, Some(&mut file))
        }
        _ => archive.add(entry, None),
    };
    result.map_err(|e| entry_error(e, entry))
}

/// Opens a walked file and checks it is still the one the walk saw.
fn open_source(entry: &Entry, source: &entry::Source) -> Result<File, InitrdError> {
    let read_error = |e| InitrdError::ReadFile {
        path: source.path.clone(),
        source: e,
    };
    let file = File::open(&source.path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    // Guards against a swap (e.g. for a symlink) between walk and open, which
    // `open` would follow.
    if (meta.dev(), meta.ino()) != (source.dev, source.ino) || !meta.is_file() {
        return Err(changed(source, "replaced by another file".into()));
    }
    if meta.len() != entry.size {
        let detail = format!("size {} at the walk, {} now", entry.size, meta.len());
        return Err(changed(source, detail));
    }
    Ok(file)
}

fn changed(source: &entry::Source, detail: String) -> InitrdError {
    InitrdError::Changed {
        path: source.path.clone(),
        detail,
    }
}

fn entry_error(e: CpioError, entry: &Entry) -> InitrdError {
    let path = entry
        .source
        .as_ref()
        .map_or_else(|| entry.path.clone(), |s| s.path.clone());
    match e {
        CpioError::Write(e) => InitrdError::Output(e),
        CpioError::Read(source) => InitrdError::ReadFile { path, source },
        CpioError::LengthMismatch { expected, found } => InitrdError::Changed {
            path,
            detail: if found > expected {
                format!("grew past {expected} bytes")
            } else {
                format!("shrank from {expected} to {found} bytes")
            },
        },
        other => InitrdError::Unrepresentable {
            path,
            source: other,
        },
    }
}

fn output_error(e: CpioError) -> InitrdError {
    match e {
        CpioError::Write(e) => InitrdError::Output(e),
        other => InitrdError::Output(io::Error::other(other)),
    }
}

/// Counts bytes written through it.
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

/// Advances a progress task with the bytes written through it, in steps.
struct Progress<'a, W: Write> {
    inner: W,
    bar: &'a dyn Task,
    pending: u64,
}

impl<'a, W: Write> Progress<'a, W> {
    fn new(inner: W, bar: &'a dyn Task) -> Self {
        Progress {
            inner,
            bar,
            pending: 0,
        }
    }

    fn into_inner(mut self) -> W {
        self.bar.advance(self.pending);
        self.pending = 0;
        self.inner
    }
}

impl<W: Write> Write for Progress<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pending += n as u64;
        if self.pending >= PROGRESS_STEP {
            self.bar.advance(self.pending);
            self.pending = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Records what the initrd writer reports.
    #[derive(Default)]
    struct Recorder {
        total: AtomicU64,
        done: AtomicU64,
    }

    impl Task for Recorder {
        fn set_total(&self, total: u64) {
            self.total.store(total, Ordering::Relaxed);
        }
        fn set_done(&self, done: u64) {
            self.done.store(done, Ordering::Relaxed);
        }
        fn advance(&self, by: u64) {
            self.done.fetch_add(by, Ordering::Relaxed);
        }
        fn set_message(&self, _: &str) {}
        fn finish(&self) {}
    }

    fn rootfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/tool"), vec![b'x'; 300_000]).unwrap();
        std::fs::write(r.join("init"), b"#!/bin/sh\n").unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        std::fs::hard_link(r.join("init"), r.join("init2")).unwrap();
        t
    }

    fn build(root: &Path, opts: &InitrdOptions) -> (Vec<u8>, InitrdStats) {
        let mut out = Vec::new();
        let bar = Recorder::default();
        let stats = build_initrd(root, None, &mut out, opts, &bar).unwrap();
        assert_eq!(bar.done.load(Ordering::Relaxed), stats.uncompressed_bytes);
        assert_eq!(bar.total.load(Ordering::Relaxed), stats.uncompressed_bytes);
        (out, stats)
    }

    #[test]
    fn stats_count_entries_and_bytes() {
        let t = rootfs();
        let opts = InitrdOptions {
            compression: Compression::None,
            ..InitrdOptions::default()
        };
        let (out, stats) = build(t.path(), &opts);
        assert_eq!(stats.entries, 7);
        assert_eq!(stats.uncompressed_bytes, out.len() as u64);
        assert_eq!(stats.compressed_bytes, out.len() as u64);
        let (z, zstats) = build(t.path(), &InitrdOptions::default());
        assert_eq!(zstats.compressed_bytes, z.len() as u64);
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), out);
    }

    #[test]
    fn builds_are_reproducible() {
        let t = rootfs();
        let opts = InitrdOptions {
            mtime: 1_700_000_000,
            ..InitrdOptions::default()
        };
        assert_eq!(build(t.path(), &opts).0, build(t.path(), &opts).0);
    }

    #[test]
    fn a_file_removed_after_the_walk_is_named() {
        let t = rootfs();
        let entries = tree::collect(t.path(), None, true).unwrap();
        std::fs::remove_file(t.path().join("usr/bin/tool")).unwrap();
        let bar = Recorder::default();
        let e = write_initrd(&entries, io::sink(), &InitrdOptions::default(), &bar).unwrap_err();
        assert!(
            matches!(&e, InitrdError::ReadFile { path, .. } if path.ends_with("usr/bin/tool")),
            "{e}"
        );
        assert!(e.to_string().contains("usr/bin/tool"));
    }

    #[test]
    fn a_file_that_grew_after_the_walk_is_refused() {
        let t = rootfs();
        let entries = tree::collect(t.path(), None, true).unwrap();
        std::fs::write(t.path().join("init"), b"#!/bin/sh\nexec something\n").unwrap();
        let bar = Recorder::default();
        let e = write_initrd(&entries, io::sink(), &InitrdOptions::default(), &bar).unwrap_err();
        assert!(
            matches!(&e, InitrdError::Changed { path, .. } if path.ends_with("init")),
            "{e}"
        );
    }

    #[test]
    fn source_date_epoch_must_fit() {
        // The parser only: the environment is shared between tests.
        assert_eq!(parse_epoch("").unwrap(), 0);
        assert_eq!(parse_epoch(" 1700000000\n").unwrap(), 1_700_000_000);
        for bad in ["-1", "4294967296", "1.5", "soon"] {
            assert!(
                matches!(parse_epoch(bad), Err(InitrdError::SourceDateEpoch(_))),
                "{bad}"
            );
        }
    }
}
