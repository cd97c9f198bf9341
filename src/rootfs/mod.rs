//! Where an OS comes from: image source specifications (`dir:PATH` today;
//! registries and archives come with their own modules), and finding the
//! kernel, systemd-stub, systemd-boot and os-release inside a root filesystem.

pub mod discover;

use std::path::PathBuf;

/// An image source given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A root filesystem directory: `dir:/rootfs` (or a plain existing path).
    Dir(PathBuf),
}

/// A source specification that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Known transport not supported yet.
    #[error("{0:?}: this source type is not supported by this version yet; unpack the image into a directory (e.g. `docker export $(docker create IMAGE) | tar -x -C rootfs`) and use dir:rootfs")]
    Unsupported(String),
    /// The directory does not exist.
    #[error("{0}: no such directory; give dir:PATH to a root filesystem")]
    Missing(String),
}

impl Source {
    /// Parses `dir:PATH`, or a plain path to an existing directory.
    pub fn parse(spec: &str) -> Result<Source, SourceError> {
        if let Some(path) = spec.strip_prefix("dir:") {
            let p = PathBuf::from(path);
            if !p.is_dir() {
                return Err(SourceError::Missing(path.to_string()));
            }
            return Ok(Source::Dir(p));
        }
        let known = [
            "oci:",
            "oci-archive:",
            "docker-archive:",
            "docker-daemon:",
            "tar:",
            "docker://",
        ];
        if known.iter().any(|k| spec.starts_with(k)) {
            return Err(SourceError::Unsupported(spec.to_string()));
        }
        let p = PathBuf::from(spec);
        if p.is_dir() {
            return Ok(Source::Dir(p));
        }
        Err(SourceError::Unsupported(spec.to_string()))
    }
}
