//! Compressors for the initramfs, restricted to formats and settings the
//! kernel's boot-time decompressors accept.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

/// Default zstd level.
///
/// Measured over /usr/lib (3.9 GB, 73k files) on 2 cores: level 1 gives
/// 1.49 GB, 3 gives 1.36 GB in ~18 s, 6 gives 1.28 GB in ~49 s, 9 gives
/// 1.24 GB in ~88 s; on a 125 MB subset level 19 took 46x as long as level 3
/// for 19% less. A UKI is rebuilt with every image, so level 3 (zstd's own
/// default) it is; users who ship over slow links can ask for more.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Highest zstd level accepted: the "ultra" levels 20-22 need a 128 MiB window
/// that the kernel would have to allocate at boot.
pub const MAX_ZSTD_LEVEL: i32 = 19;
/// Default xz preset (xz's own default).
pub const DEFAULT_XZ_PRESET: u32 = 6;
/// Default gzip level (gzip's own default).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// Most zstd workers used: about 150 MiB each at level 19, 25 MiB at level 3.
const MAX_ZSTD_WORKERS: u32 = 8;
/// Memory the xz encoder may use (liblzma's estimate); fewer threads are used
/// to stay under it (preset 6: 165 MiB per thread, preset 9: 1.2 GiB).
const XZ_MEMORY_BUDGET: u64 = 1 << 30;

/// Magic number of the legacy LZ4 format, the only LZ4 framing the kernel reads.
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Uncompressed bytes per legacy LZ4 block; the kernel's decoder
/// (lib/decompress_unlz4.c) decodes each block into a buffer of this size.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// How the cpio archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Zstandard (kernel 5.9+), multi-threaded, with a content checksum.
    Zstd {
        /// Level 1-19.
        level: i32,
    },
    /// xz with a CRC32 check (the kernel's XZ Embedded does not verify CRC64 or SHA-256).
    Xz {
        /// Preset 0-9.
        preset: u32,
    },
    /// gzip.
    Gzip {
        /// Level 1-9.
        level: u32,
    },
    /// LZ4 in the legacy format (`lz4 -l`).
    Lz4,
    /// No compression.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

impl Compression {
    /// The CLI name: `zstd`, `xz`, `gzip`, `lz4` or `none`.
    pub fn name(&self) -> &'static str {
        match self {
            Compression::Zstd { .. } => "zstd",
            Compression::Xz { .. } => "xz",
            Compression::Gzip { .. } => "gzip",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::Xz { preset } => write!(f, "xz:{preset}"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::Lz4 | Compression::None => f.write_str(self.name()),
        }
    }
}

/// A compression name that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: use zstd, xz, gzip, lz4 or none, optionally with a level (zstd:1-19, xz:0-9, gzip:1-9)")]
pub struct ParseCompressionError(String);

impl FromStr for Compression {
    type Err = ParseCompressionError;

    /// Parses `NAME` or `NAME:LEVEL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseCompressionError(s.to_string());
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l.parse::<u32>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let c = match (name, level) {
            ("zstd", l) => Compression::Zstd {
                level: l.map_or(DEFAULT_ZSTD_LEVEL, |l| l as i32),
            },
            ("xz", l) => Compression::Xz {
                preset: l.unwrap_or(DEFAULT_XZ_PRESET),
            },
            ("gzip", l) => Compression::Gzip {
                level: l.unwrap_or(DEFAULT_GZIP_LEVEL),
            },
            ("lz4", None) => Compression::Lz4,
            ("none", None) => Compression::None,
            _ => return Err(bad()),
        };
        if !c.level_in_range() {
            return Err(bad());
        }
        Ok(c)
    }
}

impl Compression {
    fn level_in_range(&self) -> bool {
        match *self {
            Compression::Zstd { level } => (1..=MAX_ZSTD_LEVEL).contains(&level),
            Compression::Xz { preset } => preset <= 9,
            Compression::Gzip { level } => (1..=9).contains(&level),
            Compression::Lz4 | Compression::None => true,
        }
    }
}

/// A compressing writer; [`Compressor::finish`] ends the stream and returns the output.
///
/// The output does not depend on `threads`: zstd and xz run their
/// multi-threaded encoders for every thread count, whose output depends only
/// on the level (zstd's job size and xz's block size follow from it). That
/// also lets thread counts be capped to bound memory on machines with many
/// cores.
pub struct Compressor<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(xz2::write::XzEncoder<W>),
    Gzip(flate2::write::GzEncoder<W>),
    Lz4(Lz4Legacy<W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    /// Starts compressing into `out` with up to `threads` worker threads.
    pub fn new(out: W, compression: Compression, threads: u32) -> io::Result<Self> {
        if !compression.level_in_range() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("compression level out of range: {compression}"),
            ));
        }
        let threads = threads.max(1);
        let inner = match compression {
            Compression::Zstd { level } => Inner::Zstd(zstd_encoder(out, level, threads)?),
            Compression::Xz { preset } => Inner::Xz(xz_encoder(out, preset, threads)?),
            Compression::Gzip { level } => Inner::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(level),
            )),
            Compression::Lz4 => Inner::Lz4(Lz4Legacy::new(out)),
            Compression::None => Inner::None(out),
        };
        Ok(Compressor { inner })
    }

    /// Flushes everything, ends the stream and returns the output.
    pub fn finish(self) -> io::Result<W> {
        let mut out = match self.inner {
            Inner::Zstd(e) => e.finish()?,
            Inner::Xz(e) => e.finish()?,
            Inner::Gzip(e) => e.finish()?,
            Inner::Lz4(e) => e.finish()?,
            Inner::None(w) => w,
        };
        out.flush()?;
        Ok(out)
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.inner {
            Inner::Zstd(e) => e,
            Inner::Xz(e) => e,
            Inner::Gzip(e) => e,
            Inner::Lz4(e) => e,
            Inner::None(w) => w,
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

fn zstd_encoder<W: Write>(
    out: W,
    level: i32,
    threads: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut e = zstd::stream::write::Encoder::new(out, level)?;
    e.include_checksum(true)?;
    // Always the multi-threaded encoder (even with one worker): its output is
    // the same for any worker count, unlike the single-threaded one's.
    e.multithread(threads.min(MAX_ZSTD_WORKERS))?;
    Ok(e)
}

fn xz_encoder<W: Write>(out: W, preset: u32, threads: u32) -> io::Result<xz2::write::XzEncoder<W>> {
    let mut builder = xz2::stream::MtStreamBuilder::new();
    builder
        .preset(preset)
        .check(xz2::stream::Check::Crc32)
        // Block until done instead of returning early; simpler for a Write.
        .timeout_ms(0);
    let threads = xz_threads(&mut builder, threads);
    let stream = builder
        .threads(threads)
        .encoder()
        .map_err(io::Error::other)?;
    Ok(xz2::write::XzEncoder::new_stream(out, stream))
}

/// The most threads up to `wanted` whose memory fits [`XZ_MEMORY_BUDGET`], at least 1.
fn xz_threads(builder: &mut xz2::stream::MtStreamBuilder, wanted: u32) -> u32 {
    (2..=wanted.min(64))
        .rev()
        .find(|&t| builder.threads(t).memusage() <= XZ_MEMORY_BUDGET)
        .unwrap_or(1)
}

/// The legacy LZ4 format: the magic, then blocks of a little-endian `u32`
/// compressed length and an LZ4 block of up to 8 MiB of input each.
struct Lz4Legacy<W: Write> {
    out: W,
    pending: Vec<u8>,
    block: Vec<u8>,
    started: bool,
}

impl<W: Write> Lz4Legacy<W> {
    fn new(out: W) -> Self {
        Lz4Legacy {
            out,
            pending: Vec::with_capacity(LZ4_LEGACY_BLOCK),
            block: vec![0u8; lz4_flex::block::get_maximum_output_size(LZ4_LEGACY_BLOCK)],
            started: false,
        }
    }

    fn start(&mut self) -> io::Result<()> {
        if !self.started {
            self.out.write_all(&LZ4_LEGACY_MAGIC.to_le_bytes())?;
            self.started = true;
        }
        Ok(())
    }

    fn emit_block(&mut self) -> io::Result<()> {
        self.start()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = lz4_flex::block::compress_into(&self.pending, &mut self.block)
            .map_err(io::Error::other)?;
        let len = u32::try_from(n).map_err(io::Error::other)?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&self.block[..n])?;
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.emit_block()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Lz4Legacy<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = LZ4_LEGACY_BLOCK - self.pending.len();
        let n = room.min(buf.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == LZ4_LEGACY_BLOCK {
            self.emit_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are only cut at 8 MiB so that the output does not depend on
        // when callers flush; flush only what is already compressed.
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        // Compressible but not trivial, and longer than one LZ4 block.
        let mut v = Vec::with_capacity(9 << 20);
        let mut x: u32 = 1;
        while v.len() < (9 << 20) + 12345 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(format!("line {} {}\n", v.len() % 977, x >> 28).as_bytes());
        }
        v
    }

    fn compress(data: &[u8], c: Compression, threads: u32) -> Vec<u8> {
        let mut w = Compressor::new(Vec::new(), c, threads).unwrap();
        for chunk in data.chunks(100_000) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    fn lz4_legacy_decode(mut z: &[u8]) -> Vec<u8> {
        assert_eq!(z[..4], LZ4_LEGACY_MAGIC.to_le_bytes());
        z = &z[4..];
        let mut out = Vec::new();
        while !z.is_empty() {
            let len = u32::from_le_bytes(z[..4].try_into().unwrap()) as usize;
            let block = lz4_flex::block::decompress(&z[4..4 + len], LZ4_LEGACY_BLOCK).unwrap();
            assert!(block.len() <= LZ4_LEGACY_BLOCK);
            out.extend_from_slice(&block);
            z = &z[4 + len..];
        }
        out
    }

    #[test]
    fn every_format_round_trips() {
        let data = sample();
        let z = compress(&data, Compression::default(), 2);
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), data);
        let z = compress(&data, Compression::Xz { preset: 1 }, 2);
        let mut out = Vec::new();
        xz2::read::XzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let z = compress(&data, Compression::Gzip { level: 1 }, 2);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let z = compress(&data, Compression::Lz4, 2);
        assert_eq!(lz4_legacy_decode(&z), data);
        assert_eq!(compress(&data, Compression::None, 2), data);
    }

    #[test]
    fn xz_uses_crc32() {
        let z = compress(b"hello", Compression::Xz { preset: 0 }, 1);
        // Stream flags: byte 7 holds the check type; 0x01 is CRC32.
        assert_eq!(&z[..6], b"\xfd7zXZ\0");
        assert_eq!(z[7], 0x01);
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let data = sample();
        for c in [Compression::default(), Compression::Xz { preset: 0 }] {
            let one = compress(&data, c, 1);
            assert_eq!(one, compress(&data, c, 2), "{c}");
            assert_eq!(one, compress(&data, c, 5), "{c}");
        }
    }

    #[test]
    fn xz_threads_stay_within_the_memory_budget() {
        let mut b = xz2::stream::MtStreamBuilder::new();
        b.preset(6);
        assert_eq!(xz_threads(&mut b, 2), 2);
        assert_eq!(xz_threads(&mut b, 64), 6);
        b.preset(9);
        assert_eq!(xz_threads(&mut b, 64), 1);
    }

    #[test]
    fn names_parse() {
        assert_eq!("zstd".parse(), Ok(Compression::default()));
        assert_eq!("zstd:19".parse(), Ok(Compression::Zstd { level: 19 }));
        assert_eq!("xz".parse(), Ok(Compression::Xz { preset: 6 }));
        assert_eq!("gzip:9".parse(), Ok(Compression::Gzip { level: 9 }));
        assert_eq!("lz4".parse(), Ok(Compression::Lz4));
        assert_eq!("none".parse(), Ok(Compression::None));
        for bad in [
            "zstd:20", "zstd:0", "xz:10", "gzip:0", "lz4:1", "bzip2", "", "zstd:x",
        ] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        for c in [
            Compression::default(),
            Compression::Lz4,
            Compression::Gzip { level: 2 },
        ] {
            assert_eq!(c.to_string().parse(), Ok(c));
        }
    }
}
