//! Content digests (`sha256:<hex>`) and the streaming hasher every blob goes
//! through before its bytes are trusted.
//!
//! Blobs are verified while they stream: [`HashingReader`] hashes what passes
//! through it, and the caller calls [`HashingReader::verify`] once the blob has
//! been read to its end. Bytes that went out before a mismatch is found were
//! only written to a temporary file, which is never published on error.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256, Sha512};

/// A content digest as written in manifests: `algorithm:hex`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// The digest algorithms of the OCI image spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `sha256`, what every registry and engine writes.
    Sha256,
    /// `sha512`, allowed by the spec.
    Sha512,
}

/// A digest string that is not `sha256:<64 hex>` or `sha512:<128 hex>`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a digest (expected sha256:<64 lowercase hex digits>)")]
pub struct BadDigest(pub String);

impl Digest {
    /// Parses `sha256:<hex>` (or `sha512:<hex>`); the hex must be lowercase
    /// and of the algorithm's length, so it is also safe as a file name.
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        let bad = || BadDigest(s.to_string());
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        let (algorithm, len) = match alg {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return Err(bad()),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// The algorithm name (`sha256`).
    pub fn algorithm(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, for progress messages.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// A hasher of this digest's algorithm.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }

    /// Whether `data` has this digest.
    pub fn matches(&self, data: &[u8]) -> bool {
        let mut h = self.hasher();
        h.update(data);
        h.finish() == *self
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex)
    }
}

/// An incremental hasher producing a [`Digest`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-512.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// What a finished [`HashingReader`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The digest of the bytes read.
    pub digest: Digest,
    /// How many bytes were read.
    pub len: u64,
}

/// Hashes and counts every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`, hashing with `expected`'s algorithm.
    pub fn new(inner: R, expected: &Digest) -> Self {
        HashingReader {
            inner,
            hasher: expected.hasher(),
            len: 0,
        }
    }

    /// Reads the rest of the stream (so trailing bytes are hashed too) and
    /// returns what was seen.
    pub fn finish(mut self) -> io::Result<Seen> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(Seen {
            digest: self.hasher.finish(),
            len: self.len,
        })
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_digests() {
        let d = Digest::sha256_of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        for bad in [
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            "sha256:../../etc/passwd",
            "md5:900150983cd24fb0d6963f7d28e17f72",
            "ba7816bf",
            "sha256:ba78",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_reader_includes_unread_trailing_bytes() {
        let data = b"hello world";
        let d = Digest::sha256_of(data);
        let mut r = HashingReader::new(&data[..], &d);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        let seen = r.finish().unwrap();
        assert_eq!(seen.digest, d);
        assert_eq!(seen.len, data.len() as u64);
    }
}
