//! The errors of reading an image: each names the source, blob or path and
//! says what to do.

use std::path::PathBuf;

use super::flatten::FlattenError;

/// Reading, verifying or flattening an image failed; no output was published.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The source specification or the source itself is unusable.
    #[error("{source_name}: {problem}")]
    Source {
        /// The source as given.
        source_name: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A blob (manifest, config or layer) is missing or unreadable.
    #[error("blob {digest} ({what}): {problem}")]
    Blob {
        /// Its digest.
        digest: String,
        /// What it is (`config`, `layer 2/5`, `manifest`).
        what: String,
        /// The problem.
        problem: String,
    },
    /// A blob's bytes do not hash to the digest that names them.
    #[error("blob {digest} ({what}) does not match its digest: its {len} bytes hash to {actual}; the image is corrupt or was tampered with, nothing was written (pull or export it again)")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// What it is.
        what: String,
        /// What the bytes hash to.
        actual: String,
        /// How many bytes were hashed.
        len: u64,
    },
    /// A blob's length differs from the descriptor's size.
    #[error("blob {digest} ({what}) has {actual} bytes but its descriptor says {expected}; the image is corrupt or truncated")]
    SizeMismatch {
        /// Its digest.
        digest: String,
        /// What it is.
        what: String,
        /// The descriptor's size.
        expected: u64,
        /// The bytes found.
        actual: u64,
    },
    /// A layer decompresses past the size limit.
    #[error("blob {digest} ({what}) decompresses past the limit of {limit} bytes for the whole image; it is a decompression bomb or larger than expected (raise --max-image-size if it is trusted)")]
    TooLarge {
        /// Its digest.
        digest: String,
        /// What it is.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The layer's compressed stream is corrupt or truncated.
    #[error("blob {digest} ({what}): {compression} stream is corrupt or truncated: {problem}")]
    Compression {
        /// Its digest.
        digest: String,
        /// What it is.
        what: String,
        /// gzip / zstd.
        compression: &'static str,
        /// The decoder's message.
        problem: String,
    },
    /// Flattening the layers failed.
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    /// Talking to a registry failed.
    #[error("registry {registry}: {problem}")]
    Registry {
        /// host[:port].
        registry: String,
        /// The problem and the fix.
        problem: String,
    },
    /// Talking to the Docker engine failed.
    #[error("docker engine: {0}")]
    Daemon(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A boot component is not in the image.
    #[error("{0}")]
    Missing(String),
}

impl ImageError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }

    /// A problem with the source `name`.
    pub fn source(name: &str, problem: impl Into<String>) -> ImageError {
        ImageError::Source {
            source_name: name.to_string(),
            problem: problem.into(),
        }
    }
}
