//! One layer blob as a verified, decompressed, size-limited tar stream.
//!
//! `raw bytes → digest check → gunzip/unzstd → limit → diff_id check`: the
//! checks run on the bytes as they pass, and when the decompressed stream
//! ends the rest of the raw blob is drained and both digests (and the size)
//! are compared. A failure turns into an `io::Error` for the tar reader and
//! the precise [`ImageError`] is left in a shared [`ErrorSlot`], so the
//! message names the blob and the problem rather than "tar: unexpected EOF".
//!
//! [`spawn`] runs that chain on a thread of its own, handing 256 KiB chunks
//! through a bounded channel, so decompression and hashing overlap with
//! archiving and compression on another core.

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use super::digest::{Digest, Hasher, HashingReader};
use super::error::ImageError;
use super::manifest::LayerCompression;

/// A layer of a resolved image.
#[derive(Clone, Debug)]
pub struct LayerRef {
    /// Digest of the blob as stored (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar (the config's `diff_ids`), when known.
    pub diff_id: Option<Digest>,
    /// Size of the blob from its descriptor, when known.
    pub size: Option<u64>,
    /// Compression; `None` to sniff it from the first bytes (`docker save`).
    pub compression: Option<LayerCompression>,
    /// For messages: `layer 2/5`.
    pub what: String,
    /// Whether `digest` is known and checked (false only for a plain
    /// `tar:` file, which no digest names).
    pub verify: bool,
}

/// Where the precise error of a failed layer stream is left.
#[derive(Clone, Default)]
pub struct ErrorSlot(Arc<Mutex<Option<ImageError>>>);

impl ErrorSlot {
    /// Records the first error.
    pub fn set(&self, e: ImageError) {
        if let Ok(mut slot) = self.0.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
    }

    /// Takes the recorded error.
    pub fn take(&self) -> Option<ImageError> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// Bytes decompressed so far by all layers of one image, against the limit.
#[derive(Clone)]
pub struct Budget {
    used: Arc<AtomicU64>,
    limit: u64,
}

impl Budget {
    /// A budget of `limit` decompressed bytes.
    pub fn new(limit: u64) -> Budget {
        Budget {
            used: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// Bytes used so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// A raw blob stream, hashed as it is read.
type Hashed = HashingReader<Box<dyn Read + Send>>;

enum Decoder {
    Plain(Box<Hashed>),
    Gzip(Box<flate2::read::MultiGzDecoder<Hashed>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Hashed>>>),
    Done,
}

impl Decoder {
    fn name(&self) -> &'static str {
        match self {
            Decoder::Gzip(_) => "gzip",
            Decoder::Zstd(_) => "zstd",
            _ => "tar",
        }
    }
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
            Decoder::Done => Ok(0),
        }
    }
}

/// A layer's decompressed tar, verified as it is read (see the module doc).
pub struct VerifiedLayer {
    layer: LayerRef,
    decoder: Decoder,
    diff: Option<Hasher>,
    budget: Budget,
    slot: ErrorSlot,
    failed: bool,
}

impl VerifiedLayer {
    /// Wraps the raw blob stream of `layer`.
    pub fn new(
        raw: Box<dyn Read + Send>,
        layer: &LayerRef,
        budget: Budget,
        slot: ErrorSlot,
    ) -> Result<VerifiedLayer, ImageError> {
        let mut raw = raw;
        let compression = match layer.compression {
            Some(c) => c,
            None => {
                // Sniff without losing the bytes: read the head, then chain
                // it back in front (the hasher sees the chained stream).
                let mut head = [0u8; 4];
                let mut got = 0;
                while got < head.len() {
                    let n = raw.read(&mut head[got..]).map_err(|e| ImageError::Blob {
                        digest: layer.digest.to_string(),
                        what: layer.what.clone(),
                        problem: format!("cannot read: {e}"),
                    })?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                let c = LayerCompression::sniff(&head[..got]);
                let chained: Box<dyn Read + Send> =
                    Box::new(io::Cursor::new(head[..got].to_vec()).chain(raw));
                return Self::build(chained, c, layer, budget, slot);
            }
        };
        Self::build(raw, compression, layer, budget, slot)
    }

    fn build(
        inner: Box<dyn Read + Send>,
        compression: LayerCompression,
        layer: &LayerRef,
        budget: Budget,
        slot: ErrorSlot,
    ) -> Result<VerifiedLayer, ImageError> {
        let hashed = HashingReader::new(inner, &layer.digest);
        let decoder = match compression {
            LayerCompression::None => Decoder::Plain(Box::new(hashed)),
            LayerCompression::Gzip => {
                Decoder::Gzip(Box::new(flate2::read::MultiGzDecoder::new(hashed)))
            }
            LayerCompression::Zstd => {
                let d = zstd::stream::read::Decoder::new(hashed).map_err(|e| {
                    ImageError::Compression {
                        digest: layer.digest.to_string(),
                        what: layer.what.clone(),
                        compression: "zstd",
                        problem: e.to_string(),
                    }
                })?;
                Decoder::Zstd(Box::new(d))
            }
        };
        Ok(VerifiedLayer {
            diff: layer.diff_id.as_ref().map(Digest::hasher),
            layer: layer.clone(),
            decoder,
            budget,
            slot,
            failed: false,
        })
    }

    fn fail(&mut self, e: ImageError) -> io::Error {
        let msg = e.to_string();
        self.slot.set(e);
        self.failed = true;
        io::Error::other(msg)
    }

    /// The end of the decompressed stream: drain the raw blob, compare.
    fn finish(&mut self) -> Result<(), ImageError> {
        let decoder = std::mem::replace(&mut self.decoder, Decoder::Done);
        let raw = match decoder {
            Decoder::Plain(r) => *r,
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish().into_inner(),
            Decoder::Done => return Ok(()),
        };
        let digest = self.layer.digest.to_string();
        let what = self.layer.what.clone();
        let seen = raw.finish().map_err(|e| ImageError::Blob {
            digest: digest.clone(),
            what: what.clone(),
            problem: format!("cannot read: {e}"),
        })?;
        if self.layer.verify && seen.digest != self.layer.digest {
            return Err(ImageError::DigestMismatch {
                digest,
                what,
                actual: seen.digest.to_string(),
                len: seen.len,
            });
        }
        if let Some(expected) = self.layer.size {
            if expected != seen.len {
                return Err(ImageError::SizeMismatch {
                    digest,
                    what,
                    expected,
                    actual: seen.len,
                });
            }
        }
        if let (Some(h), Some(want)) = (self.diff.take(), &self.layer.diff_id) {
            let got = h.finish();
            if &got != want {
                return Err(ImageError::DigestMismatch {
                    digest: want.to_string(),
                    what: format!("{what}, uncompressed (diff_id)"),
                    actual: got.to_string(),
                    len: 0,
                });
            }
        }
        Ok(())
    }
}

impl Read for VerifiedLayer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("layer failed verification"));
        }
        if matches!(self.decoder, Decoder::Done) {
            return Ok(0);
        }
        let n = match self.decoder.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let e = ImageError::Compression {
                    digest: self.layer.digest.to_string(),
                    what: self.layer.what.clone(),
                    compression: self.decoder.name(),
                    problem: e.to_string(),
                };
                return Err(self.fail(e));
            }
        };
        if n == 0 {
            return match self.finish() {
                Ok(()) => Ok(0),
                Err(e) => Err(self.fail(e)),
            };
        }
        let used = self.budget.used.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if used > self.budget.limit {
            let e = ImageError::TooLarge {
                digest: self.layer.digest.to_string(),
                what: self.layer.what.clone(),
                limit: self.budget.limit,
            };
            return Err(self.fail(e));
        }
        if let Some(h) = self.diff.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Chunk size handed between the reading thread and the archiver.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight: 16 × 256 KiB = 4 MiB per layer stream.
const IN_FLIGHT: usize = 16;

/// The receiving end of [`spawn`].
pub struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => {
                    self.done = true;
                    return Ok(0);
                }
                Ok(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the layer reader stopped"));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `open` and the verified layer chain on a scoped thread; the returned
/// reader yields the decompressed tar. Dropping the reader early stops the
/// thread at its next chunk.
pub fn spawn<'scope, 'env, F>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    open: F,
) -> ChannelReader
where
    F: FnOnce() -> Result<VerifiedLayer, ImageError> + Send + 'scope,
{
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
    scope.spawn(move || {
        let mut layer = match open() {
            Ok(l) => l,
            Err(e) => {
                let msg = e.to_string();
                let _ = tx.send(Err(io::Error::other(msg)));
                return;
            }
        };
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let mut filled = 0;
            let mut end = false;
            while filled < CHUNK {
                match layer.read(&mut chunk[filled..]) {
                    Ok(0) => {
                        end = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            chunk.truncate(filled);
            if filled > 0 && tx.send(Ok(chunk)).is_err() {
                return;
            }
            if end {
                let _ = tx.send(Ok(Vec::new()));
                return;
            }
        }
    });
    ChannelReader {
        rx,
        buf: Vec::new(),
        pos: 0,
        done: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn layer_of(blob: &[u8], tar: &[u8], c: Option<LayerCompression>) -> LayerRef {
        LayerRef {
            digest: Digest::sha256_of(blob),
            diff_id: Some(Digest::sha256_of(tar)),
            size: Some(blob.len() as u64),
            compression: c,
            what: "layer 1/1".into(),
            verify: true,
        }
    }

    fn read(blob: Vec<u8>, layer: &LayerRef, limit: u64) -> (io::Result<Vec<u8>>, ErrorSlot) {
        let slot = ErrorSlot::default();
        let mut v = VerifiedLayer::new(
            Box::new(io::Cursor::new(blob)),
            layer,
            Budget::new(limit),
            slot.clone(),
        )
        .unwrap();
        let mut out = Vec::new();
        let r = v.read_to_end(&mut out).map(|_| out);
        (r, slot)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn verifies_both_digests_and_sniffs() {
        let tar = vec![7u8; 10_000];
        let gz = gzip(&tar);
        for c in [Some(LayerCompression::Gzip), None] {
            let l = layer_of(&gz, &tar, c);
            let (r, _) = read(gz.clone(), &l, u64::MAX);
            assert_eq!(r.unwrap(), tar);
        }
        let mut bad = layer_of(&gz, &tar, None);
        bad.digest = Digest::sha256_of(b"other");
        let (r, slot) = read(gz.clone(), &bad, u64::MAX);
        assert!(r.is_err());
        assert!(matches!(
            slot.take(),
            Some(ImageError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn truncation_and_bombs_are_named() {
        let tar = vec![0u8; 1 << 20];
        let gz = gzip(&tar);
        let cut = gz[..gz.len() / 2].to_vec();
        let l = layer_of(&gz, &tar, Some(LayerCompression::Gzip));
        let (r, slot) = read(cut, &l, u64::MAX);
        assert!(r.is_err());
        let e = slot.take().unwrap().to_string();
        assert!(
            e.contains("gzip") && e.contains(&l.digest.to_string()),
            "{e}"
        );
        let (r, slot) = read(gz, &l, 1000);
        assert!(r.is_err());
        assert!(matches!(slot.take(), Some(ImageError::TooLarge { .. })));
    }
}
