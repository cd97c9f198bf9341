//! Where an OS comes from, and getting it out: image source specifications
//! ([`Source`]), reading images from registries, OCI layouts, `docker save`
//! archives, the local engine and tarballs, verifying every blob, flattening
//! the layers into an initramfs stream, and finding the kernel, systemd-stub,
//! systemd-boot and os-release inside a root filesystem.
//!
//! - [`discover`]: boot files inside a rootfs directory.
//! - [`boot_files`]: the kernels, stub, systemd-boot, os-release and init of
//!   a rootfs or image, as one value.
//! - [`options`]: platform, insecure registries, credentials file, limits.
//! - [`digest`], [`manifest`]: content digests and OCI/Docker documents.
//! - [`store`], [`resolve`], [`registry`], [`daemon`]: the transports, down to
//!   a verified list of layers.
//! - [`layer`]: one layer blob as a verified, decompressed, limited stream.
//! - [`flatten`]: layers, top-down, into initramfs entries.
//! - [`image`]: all of it into a compressed initrd plus the boot files.

pub mod boot_files;
pub mod daemon;
pub mod digest;
pub mod discover;
pub mod error;
pub mod flatten;
pub mod image;
pub mod layer;
pub mod manifest;
pub mod options;
pub mod registry;
pub mod resolve;
pub mod store;

use std::path::{Path, PathBuf};

pub use error::ImageError;
pub use options::{ImageOptions, Limits, Platform};

/// An image source given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A root filesystem directory: `dir:/rootfs` (or a plain existing path).
    Dir(PathBuf),
    /// A container image, flattened while it streams into the initrd.
    Image(Box<ImageSource>),
}

/// A container image source and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSource {
    /// The specification as given, for messages.
    pub spec: String,
    /// Where the image is.
    pub transport: Transport,
    /// Platform, registries, credentials, limits.
    pub options: ImageOptions,
}

/// Where a container image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `IMAGE` or `docker://IMAGE`: a registry.
    Registry(registry::Reference),
    /// `oci:DIR[:REF]`: an OCI image layout directory.
    Oci {
        /// The layout.
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name` to pick.
        reference: Option<String>,
    },
    /// `oci-archive:FILE[:REF]`: a tar of an OCI layout.
    OciArchive {
        /// The archive.
        file: PathBuf,
        /// The ref name to pick.
        reference: Option<String>,
    },
    /// `docker-archive:FILE[:IMAGE]`: `docker save` output (classic or OCI layout).
    DockerArchive {
        /// The archive.
        file: PathBuf,
        /// The repo tag to pick when it holds several images.
        reference: Option<String>,
    },
    /// `docker-daemon:IMAGE`: an image of the local engine.
    DockerDaemon(String),
    /// `tar:FILE`: a flattened filesystem tarball (`docker export`).
    Tar(PathBuf),
}

/// A source specification that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The specification names nothing usable.
    #[error("{0:?}: not a source: give dir:PATH, IMAGE (registry), docker://IMAGE, oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:IMAGE], docker-daemon:IMAGE or tar:FILE")]
    Unsupported(String),
    /// The directory does not exist.
    #[error("{0}: no such directory; give dir:PATH to a root filesystem")]
    Missing(String),
    /// A file or directory of an image source does not exist.
    #[error("{spec}: {path} does not exist")]
    MissingPath {
        /// The specification.
        spec: String,
        /// The path.
        path: String,
    },
    /// A path of an image source exists but is the wrong kind of file (a
    /// FIFO or device would block or read a disk).
    #[error("{spec}: {path} is not {wanted} (a FIFO or a device would block the build or read a disk); point the source at {wanted}")]
    WrongKind {
        /// The specification.
        spec: String,
        /// The path.
        path: String,
        /// What it must be.
        wanted: &'static str,
    },
    /// A registry reference that does not parse.
    #[error("{0}")]
    BadReference(String),
}

/// Splits `PATH[:REF]`: the whole string when it names an existing path, else
/// at the first colon before which an existing path ends (a reference such as
/// `acme/os:1.2` holds colons of its own).
fn path_and_ref(rest: &str) -> (PathBuf, Option<String>) {
    if Path::new(rest).exists() {
        return (PathBuf::from(rest), None);
    }
    for (i, _) in rest.match_indices(':') {
        let (p, r) = (&rest[..i], &rest[i + 1..]);
        if !r.is_empty() && Path::new(p).exists() {
            return (PathBuf::from(p), Some(r.to_string()));
        }
    }
    (PathBuf::from(rest), None)
}

impl Source {
    /// Parses a source with default image options (see [`Source::parse_with`]).
    pub fn parse(spec: &str) -> Result<Source, SourceError> {
        Self::parse_with(spec, ImageOptions::default())
    }

    /// Parses `dir:PATH`, `oci:`, `oci-archive:`, `docker-archive:`,
    /// `docker-daemon:`, `tar:`, `docker://IMAGE`; a plain existing directory
    /// is a rootfs, anything else a registry image reference.
    pub fn parse_with(spec: &str, options: ImageOptions) -> Result<Source, SourceError> {
        if let Some(path) = spec.strip_prefix("dir:") {
            let p = PathBuf::from(path);
            if !p.is_dir() {
                return Err(SourceError::Missing(path.to_string()));
            }
            return Ok(Source::Dir(p));
        }
        // Absent, or there but not what the transport reads.
        let missing = |p: &Path, wanted: &'static str| match std::fs::symlink_metadata(p) {
            Ok(_) => SourceError::WrongKind {
                spec: spec.to_string(),
                path: p.display().to_string(),
                wanted,
            },
            Err(_) => SourceError::MissingPath {
                spec: spec.to_string(),
                path: p.display().to_string(),
            },
        };
        let transport = if let Some(rest) = spec.strip_prefix("oci:") {
            let (dir, reference) = path_and_ref(rest);
            if !dir.is_dir() {
                return Err(missing(&dir, "a directory"));
            }
            Transport::Oci { dir, reference }
        } else if let Some(rest) = spec.strip_prefix("oci-archive:") {
            let (file, reference) = path_and_ref(rest);
            if !file.is_file() {
                return Err(missing(&file, "a regular file"));
            }
            Transport::OciArchive { file, reference }
        } else if let Some(rest) = spec.strip_prefix("docker-archive:") {
            let (file, reference) = path_and_ref(rest);
            if !file.is_file() {
                return Err(missing(&file, "a regular file"));
            }
            Transport::DockerArchive { file, reference }
        } else if let Some(rest) = spec.strip_prefix("tar:") {
            let file = PathBuf::from(rest);
            if !file.is_file() {
                return Err(missing(&file, "a regular file"));
            }
            Transport::Tar(file)
        } else if let Some(image) = spec.strip_prefix("docker-daemon:") {
            if image.is_empty() {
                return Err(SourceError::Unsupported(spec.to_string()));
            }
            Transport::DockerDaemon(image.to_string())
        } else if let Some(image) = spec.strip_prefix("docker://") {
            Transport::Registry(
                registry::Reference::parse(image).map_err(SourceError::BadReference)?,
            )
        } else {
            let p = PathBuf::from(spec);
            if p.is_dir() {
                return Ok(Source::Dir(p));
            }
            match registry::Reference::parse(spec) {
                Ok(r) => Transport::Registry(r),
                Err(_) => return Err(SourceError::Unsupported(spec.to_string())),
            }
        };
        Ok(Source::Image(Box::new(ImageSource {
            spec: spec.to_string(),
            transport,
            options,
        })))
    }

    /// The rootfs directory of a `dir:` source.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Source::Dir(p) => Some(p),
            Source::Image(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_transports() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().display().to_string();
        assert_eq!(Source::parse(&d).unwrap(), Source::Dir(t.path().into()));
        let file = t.path().join("img.tar");
        std::fs::write(&file, b"").unwrap();
        let f = file.display().to_string();
        let Source::Image(i) = Source::parse(&format!("docker-archive:{f}:acme/os:1")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            i.transport,
            Transport::DockerArchive {
                file: file.clone(),
                reference: Some("acme/os:1".into())
            }
        );
        let Source::Image(i) = Source::parse("registry.example:5000/acme/os:1.2").unwrap() else {
            panic!()
        };
        assert!(matches!(i.transport, Transport::Registry(_)));
        assert!(matches!(
            Source::parse("oci:/nonexistent/x"),
            Err(SourceError::MissingPath { .. })
        ));
        assert!(Source::parse("Not A Reference").is_err());
    }
}
