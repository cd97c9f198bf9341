//! What the user can say about reading an image: the platform to pick from a
//! multi-arch index, plain-HTTP registries, the Docker config holding
//! credentials, and the limits that stop hostile or runaway archives. Plain
//! options: the command-line spelling is `cli::image`'s.

use std::fmt;
use std::path::PathBuf;

/// Limits on what one image may expand to. Every layer entry is counted
/// against them while it streams, so a decompression bomb stops at the limit,
/// not when the disk or memory is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes of all layers together (tar headers included).
    pub max_bytes: u64,
    /// Entries of all layers together (whiteouts included).
    pub max_entries: u64,
    /// Length of one path inside a layer, in bytes.
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // The whole image ends up in RAM at boot: 16 GiB is already far
            // past anything a machine can boot from an initramfs.
            max_bytes: 16 << 30,
            max_entries: 2_000_000,
            // PATH_MAX: the kernel's unpacker cannot create longer names.
            max_path_len: 4096,
        }
    }
}

/// An OCI platform: `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v8`, `v7`, ... when it matters.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine running build-uki (`linux/amd64` on x86-64).
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: go_arch(std::env::consts::ARCH).into(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`, or a bare architecture (`arm64`, with os linux).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            format!("{s:?} is not a platform: give os/arch[/variant] such as linux/arm64/v8, or an architecture such as amd64")
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [arch] => Ok(Platform {
                os: "linux".into(),
                architecture: go_arch(arch).into(),
                variant: None,
            }),
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: go_arch(arch).into(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: os.to_string(),
                architecture: go_arch(arch).into(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Rust's and uname's architecture names to the Go names images use.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i686" | "i386" | "x86" => "386",
        "powerpc64le" | "ppc64le" => "ppc64le",
        other => other,
    }
}

/// How image sources are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOptions {
    /// The platform chosen from a multi-arch index.
    pub platform: Platform,
    /// Registries (host or host:port) that may be reached over plain HTTP;
    /// `*` allows every registry.
    pub insecure_registries: Vec<String>,
    /// The Docker config file with `auths` (default `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Limits on the expanded image.
    pub limits: Limits,
    /// Bytes of small files held back while a layer streams, so that a hard
    /// link to a file just written can still make it a link set (see
    /// `flatten`'s module doc). 0 disables the window.
    pub link_window: usize,
}

/// Default size of the hard-link window.
pub const DEFAULT_LINK_WINDOW: usize = 32 << 20;

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            platform: Platform::host(),
            insecure_registries: Vec::new(),
            docker_config: None,
            limits: Limits::default(),
            link_window: DEFAULT_LINK_WINDOW,
        }
    }
}

impl ImageOptions {
    /// Whether `registry` (host[:port]) may be reached over plain HTTP.
    pub fn insecure(&self, registry: &str) -> bool {
        self.insecure_registries
            .iter()
            .any(|r| r == "*" || r == registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_with_go_names() {
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert_eq!(
            Platform::parse("linux/aarch64/v8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!(Platform::parse("linux//x").is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}
