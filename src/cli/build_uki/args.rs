//! build-uki's command line: the build arguments (Kairos-compatible) and
//! `inspect`, with every host path typed by its use (see `cli::path_arg`).

use clap::{Parser, Subcommand};

use crate::build_uki::OutputType;
use crate::cli::image::ImageArgs;
use crate::cli::path_arg::{InputDir, InputFile, KeyRef, OutputDir, SourceRef};
use crate::initrd::Compression;
use crate::keys::DigestAlgorithm;
use crate::media::loader::SecureBootEnroll;
use crate::uki::pcr::ALL_BANKS;

/// Build signed Unified Kernel Images (and their boot entries) from a root filesystem.
#[derive(Parser, Debug)]
#[command(name = "build-uki", version, args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
pub struct BuildUkiArgs {
    /// A subcommand instead of a build.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The OS: IMAGE (registry), docker://IMAGE, oci:DIR[:REF], oci-archive:FILE[:REF],
    /// docker-archive:FILE[:IMAGE], docker-daemon:IMAGE, tar:FILE or dir:ROOTFS.
    pub source: Option<SourceRef>,

    /// How image sources are read.
    #[command(flatten)]
    pub image: ImageArgs,

    /// Output type: uki (signed .efi + entry .conf), iso, container.
    #[arg(short = 't', long = "output-type", default_value = "iso", value_parser = parse_output_type)]
    pub output_type: OutputType,

    /// Output directory.
    #[arg(short = 'd', long = "output-dir", default_value = ".")]
    pub output_dir: OutputDir,

    /// Key directory made by genkey (db.key, db.der, tpm2-pcr-private.pem).
    #[arg(short = 'k', long = "keys")]
    pub keys: Option<InputDir>,

    /// Secure Boot signing key: a PEM file or a pkcs11: URI (instead of -k).
    #[arg(long = "sb-key", requires = "sb_cert")]
    pub sb_key: Option<KeyRef>,

    /// Certificate of --sb-key (PEM or DER).
    #[arg(long = "sb-cert", requires = "sb_key")]
    pub sb_cert: Option<InputFile>,

    /// TPM PCR policy key: a PEM file or a pkcs11: URI (default: -k's tpm2-pcr-private.pem).
    #[arg(long = "tpm-pcr-private-key")]
    pub tpm_pcr_private_key: Option<KeyRef>,

    /// Name of the main entry (<name>.efi, <name>.conf).
    #[arg(short = 'n', long, default_value = "norole")]
    pub name: String,

    /// Kernel to use instead of the newest one in the rootfs.
    #[arg(long)]
    pub kernel: Option<InputFile>,

    /// Use this initrd instead of packing the rootfs (the ukify/mkosi model).
    #[arg(long)]
    pub initrd: Option<InputFile>,

    /// os-release file (default: the rootfs's).
    #[arg(long = "os-release")]
    pub os_release: Option<InputFile>,

    /// systemd-stub (default: the rootfs's, else the build image's).
    #[arg(long)]
    pub stub: Option<InputFile>,

    /// Kernel command line, replacing the default ("console=tty1 console=ttyS0", plus rdinit= when the rootfs has no /init).
    #[arg(long)]
    pub cmdline: Option<String>,

    /// Append to every entry's command line.
    #[arg(long = "extend-cmdline", conflicts_with = "extra_cmdline")]
    pub extend_cmdline: Option<String>,

    /// One more entry per value, with the default command line plus this.
    #[arg(long = "extra-cmdline")]
    pub extra_cmdline: Vec<String>,

    /// One more entry: "Title: arguments" (repeatable).
    #[arg(long = "single-efi-cmdline")]
    pub single_efi_cmdline: Vec<String>,

    /// Entry title (default: the os-release PRETTY_NAME).
    #[arg(long = "boot-branding")]
    pub boot_branding: Option<String>,

    /// Write the OS version into the entry files.
    #[arg(long = "include-version-in-config")]
    pub include_version_in_config: bool,

    /// Write the command line into the entry files.
    #[arg(long = "include-cmdline-in-config")]
    pub include_cmdline_in_config: bool,

    /// Directory whose files are added over the rootfs in the initrd.
    #[arg(long = "overlay-rootfs")]
    pub overlay_rootfs: Option<InputDir>,

    /// Boot splash image (BMP).
    #[arg(long)]
    pub splash: Option<InputFile>,

    /// Device tree blob.
    #[arg(long)]
    pub dtb: Option<InputFile>,

    /// Initrd compression: zstd[:LEVEL] (default), xz, gzip, lz4, none.
    #[arg(long, default_value = "zstd")]
    pub compression: Compression,

    /// PCR banks to sign into .pcrsig (comma-separated; default all four, like ukify).
    #[arg(long = "pcr-banks", value_delimiter = ',', value_parser = parse_bank)]
    pub pcr_banks: Vec<DigestAlgorithm>,

    /// Phase paths to sign (repeatable; default enter-initrd, …:leave-initrd, …:sysinit, …:ready).
    #[arg(long = "phases")]
    pub phases: Vec<String>,

    /// Warn when a UKI is larger than this many MiB.
    #[arg(long = "size-warning-mib", default_value_t = 300)]
    pub size_warning_mib: u64,

    /// systemd-boot for the ISO (default: the rootfs's, else the build image's).
    #[arg(long)]
    pub sdboot: Option<InputFile>,

    /// loader.conf secure-boot-enroll: manual, force, if-safe (systemd-boot 253+), off.
    /// Default: if-safe when the systemd-boot knows it, else manual.
    #[arg(long = "secure-boot-enroll")]
    pub secure_boot_enroll: Option<SecureBootEnroll>,

    /// systemd-boot menu timeout in seconds.
    #[arg(long = "loader-timeout", default_value_t = 5)]
    pub loader_timeout: u32,

    /// Directory whose files are added to the ISO.
    #[arg(long = "overlay-iso")]
    pub overlay_iso: Option<InputDir>,

    /// Tag of the -t container image.
    #[arg(long = "container-tag")]
    pub container_tag: Option<String>,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// build-uki's subcommands (without one, it builds).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a UKI's sections, signature and PCR policy.
    Inspect {
        /// The UKI.
        file: InputFile,
        /// Check the signature against this key directory's db certificate.
        #[arg(long, conflicts_with = "cert")]
        keys: Option<InputDir>,
        /// Check the signature against this certificate.
        #[arg(long)]
        cert: Option<InputFile>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

const AFTER_HELP: &str = "\
Examples:
  build-uki dir:/rootfs -t uki -d build/ -k keys/
  build-uki --kernel vmlinuz --initrd initrd.img --os-release os-release --cmdline \"...\" -t uki -d build/ -k keys/
  build-uki dir:/rootfs -t uki -d build/ --sb-key \"pkcs11:token=mkosi;id=%02;type=private\" --sb-cert db.pem --tpm-pcr-private-key pcr.pem
  build-uki inspect build/norole.efi --keys keys/
SOURCE_DATE_EPOCH makes the initrd (and so the UKI) reproducible.";

/// `uki`, `iso` or `container`.
pub fn parse_output_type(s: &str) -> Result<OutputType, String> {
    match s {
        "uki" => Ok(OutputType::Uki),
        "iso" => Ok(OutputType::Iso),
        "container" => Ok(OutputType::Container),
        other => Err(format!(
            "unknown output type {other:?}: use uki, iso or container"
        )),
    }
}

/// A PCR bank by its name (`sha256`).
pub fn parse_bank(s: &str) -> Result<DigestAlgorithm, String> {
    ALL_BANKS
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| format!("unknown PCR bank {s:?}: use sha1, sha256, sha384, sha512"))
}
