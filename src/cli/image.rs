//! The image-source arguments of build-uki (platform, plain-HTTP registries,
//! credentials, limits), turned into `rootfs::ImageOptions` in one place.

use crate::cli::path_arg::InputFile;
use crate::rootfs::{ImageOptions, Platform};

/// Command-line arguments for image sources (flatten them into a clap parser).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ImageArgs {
    /// Reach these registries (host[:port], comma-separated; `*` for every one)
    /// over plain HTTP when they do not speak HTTPS. A value is required, so
    /// that a forgotten one never turns TLS off for every registry.
    #[arg(
        long = "allow-insecure-registries",
        value_name = "REGISTRIES",
        value_delimiter = ','
    )]
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
    pub docker_config: Option<InputFile>,

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
        o.docker_config = self.docker_config.clone().map(Into::into);
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
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        image: ImageArgs,
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn insecure_registries_need_a_value() {
        let e = T::try_parse_from(["t", "--allow-insecure-registries"])
            .err()
            .unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{e}");
        let t = T::try_parse_from(["t", "--allow-insecure-registries=a:5000,b"]).unwrap();
        assert_eq!(
            t.image.options().unwrap().insecure_registries,
            ["a:5000", "b"]
        );
        let t = T::try_parse_from(["t", "--allow-insecure-registries", "*"]).unwrap();
        assert!(t.image.options().unwrap().insecure("any.example"));
    }
}
