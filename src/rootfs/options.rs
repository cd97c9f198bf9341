//! What the user can say about reading an image: the platform to pick from a
//! multi-arch index, plain-HTTP registries, the Docker config holding
//! credentials, and the limits that stop hostile or runaway archives; plus the
//! `clap` arguments that carry them, so every binary spells them the same.

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

/// Command-line arguments for image sources (flatten them into a clap parser).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ImageArgs {
    /// Reach these registries (host[:port], comma-separated, or `*`) over plain HTTP
    /// when they do not speak HTTPS. Alone, it allows every registry.
    #[arg(long = "allow-insecure-registries", value_name = "REGISTRIES", num_args = 0..=1, default_missing_value = "*", value_delimiter = ',')]
    pub allow_insecure_registries: Vec<String>,

    /// Platform to pick from a multi-arch image: os/arch[/variant] (default: this machine's).
    #[arg(
        long = "platform",
        value_name = "OS/ARCH[/VARIANT]",
        conflicts_with = "arch"
    )]
    pub platform: Option<String>,

    /// Architecture to pick from a multi-arch image (amd64, arm64, ...).
    #[arg(long = "arch", value_name = "ARCH")]
    pub arch: Option<String>,

    /// Docker config file with registry credentials (default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json).
    #[arg(long = "docker-config", value_name = "FILE")]
    pub docker_config: Option<PathBuf>,

    /// Refuse an image whose layers expand past this size (bytes; K, M, G suffixes).
    #[arg(long = "max-image-size", value_name = "SIZE", value_parser = parse_size)]
    pub max_image_size: Option<u64>,

    /// Refuse an image whose layers hold more entries than this.
    #[arg(long = "max-image-entries", value_name = "N")]
    pub max_image_entries: Option<u64>,

    /// Refuse layer paths longer than this many bytes.
    #[arg(long = "max-path-length", value_name = "BYTES")]
    pub max_path_length: Option<usize>,
}

impl ImageArgs {
    /// The options these arguments describe.
    pub fn options(&self) -> Result<ImageOptions, String> {
        let mut o = ImageOptions::default();
        if let Some(p) = self.platform.as_deref().or(self.arch.as_deref()) {
            o.platform = Platform::parse(p)?;
        }
        o.insecure_registries = self.allow_insecure_registries.clone();
        o.docker_config = self.docker_config.clone();
        if let Some(v) = self.max_image_size {
            o.limits.max_bytes = v;
        }
        if let Some(v) = self.max_image_entries {
            o.limits.max_entries = v;
        }
        if let Some(v) = self.max_path_length {
            o.limits.max_path_len = v;
        }
        Ok(o)
    }
}

/// Parses `123`, `64K`, `512M`, `2G` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 512M, 16G)"))
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

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
    }
}
