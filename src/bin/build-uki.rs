//! `build-uki`: a root filesystem into signed Unified Kernel Images with a
//! signed TPM PCR 11 policy. Kairos-compatible command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sbkit::build_uki::{self, BuildUkiOptions, OutputType};
use sbkit::initrd::Compression;
use sbkit::keys::DigestAlgorithm;
use sbkit::media::loader::SecureBootEnroll;
use sbkit::rootfs::Source;
use sbkit::store::signing::{read_certificate, SigningKeys};
use sbkit::uki::pcr::{default_phase_paths, PhasePath, ALL_BANKS};
use sbkit::uki::pcrsig::DEFAULT_SIGNED_BANKS;

/// Build signed Unified Kernel Images (and their boot entries) from a root filesystem.
#[derive(Parser, Debug)]
#[command(name = "build-uki", version, args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// The OS: IMAGE (registry), docker://IMAGE, oci:DIR[:REF], oci-archive:FILE[:REF],
    /// docker-archive:FILE[:IMAGE], docker-daemon:IMAGE, tar:FILE or dir:ROOTFS.
    source: Option<String>,

    #[command(flatten)]
    image: sbkit::rootfs::ImageArgs,

    /// Output type: uki (signed .efi + entry .conf), iso, container.
    #[arg(short = 't', long = "output-type", default_value = "iso", value_parser = parse_output_type)]
    output_type: OutputType,

    /// Output directory.
    #[arg(short = 'd', long = "output-dir", default_value = ".")]
    output_dir: PathBuf,

    /// Key directory made by genkey (db.key, db.der, tpm2-pcr-private.pem).
    #[arg(short = 'k', long = "keys")]
    keys: Option<PathBuf>,

    /// Secure Boot signing key: a PEM file or a pkcs11: URI (instead of -k).
    #[arg(long = "sb-key", requires = "sb_cert")]
    sb_key: Option<String>,

    /// Certificate of --sb-key (PEM or DER).
    #[arg(long = "sb-cert", requires = "sb_key")]
    sb_cert: Option<PathBuf>,

    /// TPM PCR policy key: a PEM file or a pkcs11: URI (default: -k's tpm2-pcr-private.pem).
    #[arg(long = "tpm-pcr-private-key")]
    tpm_pcr_private_key: Option<String>,

    /// Name of the main entry (<name>.efi, <name>.conf).
    #[arg(short = 'n', long, default_value = "norole")]
    name: String,

    /// Kernel to use instead of the newest one in the rootfs.
    #[arg(long)]
    kernel: Option<PathBuf>,

    /// Use this initrd instead of packing the rootfs (the ukify/mkosi model).
    #[arg(long)]
    initrd: Option<PathBuf>,

    /// os-release file (default: the rootfs's).
    #[arg(long = "os-release")]
    os_release: Option<PathBuf>,

    /// systemd-stub (default: the rootfs's, else the build image's).
    #[arg(long)]
    stub: Option<PathBuf>,

    /// Kernel command line, replacing the default ("console=tty1 console=ttyS0", plus rdinit= when the rootfs has no /init).
    #[arg(long)]
    cmdline: Option<String>,

    /// Append to every entry's command line.
    #[arg(long = "extend-cmdline", conflicts_with = "extra_cmdline")]
    extend_cmdline: Option<String>,

    /// One more entry per value, with the default command line plus this.
    #[arg(long = "extra-cmdline")]
    extra_cmdline: Vec<String>,

    /// One more entry: "Title: arguments" (repeatable).
    #[arg(long = "single-efi-cmdline")]
    single_efi_cmdline: Vec<String>,

    /// Entry title (default: the os-release PRETTY_NAME).
    #[arg(long = "boot-branding")]
    boot_branding: Option<String>,

    /// Write the OS version into the entry files.
    #[arg(long = "include-version-in-config")]
    include_version_in_config: bool,

    /// Write the command line into the entry files.
    #[arg(long = "include-cmdline-in-config")]
    include_cmdline_in_config: bool,

    /// Directory whose files are added over the rootfs in the initrd.
    #[arg(long = "overlay-rootfs")]
    overlay_rootfs: Option<PathBuf>,

    /// Boot splash image (BMP).
    #[arg(long)]
    splash: Option<PathBuf>,

    /// Device tree blob.
    #[arg(long)]
    dtb: Option<PathBuf>,

    /// Initrd compression: zstd[:LEVEL] (default), xz, gzip, lz4, none.
    #[arg(long, default_value = "zstd")]
    compression: Compression,

    /// PCR banks to sign into .pcrsig (comma-separated; default all four, like ukify).
    #[arg(long = "pcr-banks", value_delimiter = ',', value_parser = parse_bank)]
    pcr_banks: Vec<DigestAlgorithm>,

    /// Phase paths to sign (repeatable; default enter-initrd, …:leave-initrd, …:sysinit, …:ready).
    #[arg(long = "phases")]
    phases: Vec<String>,

    /// Warn when a UKI is larger than this many MiB.
    #[arg(long = "size-warning-mib", default_value_t = 300)]
    size_warning_mib: u64,

    /// systemd-boot for the ISO (default: the rootfs's, else the build image's).
    #[arg(long)]
    sdboot: Option<PathBuf>,

    /// loader.conf secure-boot-enroll: manual, force, if-safe (systemd-boot 253+), off.
    /// Default: if-safe when the systemd-boot knows it, else manual.
    #[arg(long = "secure-boot-enroll")]
    secure_boot_enroll: Option<SecureBootEnroll>,

    /// systemd-boot menu timeout in seconds.
    #[arg(long = "loader-timeout", default_value_t = 5)]
    loader_timeout: u32,

    /// Directory whose files are added to the ISO.
    #[arg(long = "overlay-iso")]
    overlay_iso: Option<PathBuf>,

    /// Tag of the -t container image.
    #[arg(long = "container-tag")]
    container_tag: Option<String>,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a UKI's sections, signature and PCR policy.
    Inspect {
        /// The UKI.
        file: PathBuf,
        /// Check the signature against this key directory's db certificate.
        #[arg(long, conflicts_with = "cert")]
        keys: Option<PathBuf>,
        /// Check the signature against this certificate.
        #[arg(long)]
        cert: Option<PathBuf>,
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

fn parse_output_type(s: &str) -> Result<OutputType, String> {
    match s {
        "uki" => Ok(OutputType::Uki),
        "iso" => Ok(OutputType::Iso),
        "container" => Ok(OutputType::Container),
        other => Err(format!(
            "unknown output type {other:?}: use uki, iso or container"
        )),
    }
}

fn parse_bank(s: &str) -> Result<DigestAlgorithm, String> {
    ALL_BANKS
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| format!("unknown PCR bank {s:?}: use sha1, sha256, sha384, sha512"))
}

fn open_signer(spec: &str) -> anyhow::Result<Box<dyn sbkit::keys::Signer>> {
    sbkit::token::open_signer(spec).with_context(|| format!("opening key {spec}"))
}

fn signing_keys(args: &Args) -> anyhow::Result<SigningKeys> {
    let mut keys = match (&args.keys, &args.sb_key, &args.sb_cert) {
        (_, Some(key), Some(cert)) => SigningKeys {
            secure_boot: open_signer(key)?,
            secure_boot_cert: read_certificate(cert)?,
            pcr: None,
        },
        (Some(dir), None, None) => SigningKeys::from_key_dir(dir)?,
        _ => {
            anyhow::bail!("no signing key: give -k KEYDIR (from genkey) or --sb-key and --sb-cert")
        }
    };
    if let Some(spec) = &args.tpm_pcr_private_key {
        keys.pcr = Some(open_signer(spec)?);
    } else if args.sb_key.is_some() {
        // --sb-key with -k: the PCR key still comes from the key directory (only it is loaded).
        if let Some(dir) = &args.keys {
            keys.pcr = SigningKeys::pcr_from_key_dir(dir)?;
        }
    }
    Ok(keys)
}

fn inspect(
    file: PathBuf,
    keys: Option<PathBuf>,
    cert: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<bool> {
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let cert = match (keys, cert) {
        (Some(dir), _) => Some(sbkit::store::signing::secure_boot_certificate(&dir)?),
        (None, Some(c)) => Some(read_certificate(&c)?),
        (None, None) => None,
    };
    let report = build_uki::inspect::inspect(&bytes, cert.as_deref())
        .with_context(|| file.display().to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", build_uki::inspect::render(&report));
    }
    let pcr_ok = report.pcrsig.as_ref().is_none_or(|p| p.ok);
    Ok(report.signature.valid && pcr_ok)
}

fn build(args: Args) -> anyhow::Result<()> {
    let image_opts = args.image.options().map_err(anyhow::Error::msg)?;
    let source = args
        .source
        .as_deref()
        .map(|s| Source::parse_with(s, image_opts.clone()))
        .transpose()?;
    let keys = signing_keys(&args)?;
    let phases = if args.phases.is_empty() {
        default_phase_paths()
    } else {
        args.phases
            .iter()
            .map(|p| PhasePath::parse(p))
            .collect::<Result<_, _>>()?
    };
    let signed_banks = if args.pcr_banks.is_empty() {
        DEFAULT_SIGNED_BANKS.to_vec()
    } else {
        args.pcr_banks.clone()
    };
    let mtime = sbkit::cli::build_timestamp()?
        .unix_timestamp()
        .clamp(0, u32::MAX as i64) as u32;
    let mtime = if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
        mtime
    } else {
        0
    };
    let container_tag = args
        .container_tag
        .clone()
        .unwrap_or_else(|| format!("sbkit-uki/{}:latest", args.name));
    let opts = BuildUkiOptions {
        sdboot: args.sdboot,
        secure_boot_enroll: args.secure_boot_enroll,
        loader_timeout: args.loader_timeout,
        overlay_iso: args.overlay_iso,
        enroll_keys: args.keys.clone(),
        container_tag,
        source,
        kernel: args.kernel,
        initrd: args.initrd,
        os_release: args.os_release,
        stub: args.stub,
        overlay_rootfs: args.overlay_rootfs,
        splash: args.splash,
        dtb: args.dtb,
        cmdline: args.cmdline,
        extend_cmdline: args.extend_cmdline,
        extra_cmdline: args.extra_cmdline,
        single_efi_cmdline: args.single_efi_cmdline,
        name: args.name,
        boot_branding: args.boot_branding,
        include_version_in_config: args.include_version_in_config,
        include_cmdline_in_config: args.include_cmdline_in_config,
        output_dir: args.output_dir,
        output_type: args.output_type,
        keys,
        compression: args.compression,
        pcr_banks: ALL_BANKS.to_vec(),
        signed_banks,
        phases,
        size_warning_bytes: args.size_warning_mib << 20,
        mtime,
    };
    let progress = sbkit::cli::progress::Bars::new(args.json);
    let report = build_uki::run(&opts, &progress)
        .context("build-uki failed; no output of this run was left behind")?;
    sbkit::cli::warn_all(&report.warnings);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", build_uki::render_summary(&report));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Inspect {
            file,
            keys,
            cert,
            json,
        }) => match inspect(file, keys, cert, json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => sbkit::cli::fail(&e),
        },
        None => match build(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => sbkit::cli::fail(&e),
        },
    }
}
