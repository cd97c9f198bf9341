//! The `build-uki` binary: its grammar ([`args`]) and its run, flags turned
//! into `crate::build_uki` options in one place.

pub mod args;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use crate::build_uki::{self, BuildUkiOptions};
use crate::cli::path_arg::{InputDir, InputFile};
use crate::rootfs::Source;
use crate::store::signing::{read_certificate, SigningKeys};
use crate::uki::pcr::{PhasePath, ALL_BANKS};
use crate::uki::pcrsig::DEFAULT_SIGNED_BANKS;
pub use args::{BuildUkiArgs, Command};

/// build-uki's clap command, with completion hints from the path marks.
pub fn command() -> clap::Command {
    crate::cli::path_arg::with_hints(BuildUkiArgs::command())
}

fn open_signer(spec: &str) -> anyhow::Result<Box<dyn crate::keys::Signer>> {
    crate::token::open_signer(spec).with_context(|| format!("opening key {spec}"))
}

fn signing_keys(args: &BuildUkiArgs) -> anyhow::Result<SigningKeys> {
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

/// Runs `inspect`; `Ok(false)` when the signature or the PCR signature does not verify.
pub fn inspect(
    file: InputFile,
    keys: Option<InputDir>,
    cert: Option<InputFile>,
    json: bool,
) -> anyhow::Result<bool> {
    let bytes = std::fs::read(&*file).with_context(|| format!("reading {}", file.display()))?;
    let cert = match (keys, cert) {
        (Some(dir), _) => Some(crate::store::signing::secure_boot_certificate(&dir)?),
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

/// Runs a build.
pub fn build(args: BuildUkiArgs) -> anyhow::Result<()> {
    let image_opts = args.image.options().map_err(anyhow::Error::msg)?;
    let source = args
        .source
        .as_deref()
        .map(|s| Source::parse_with(s, image_opts.clone()))
        .transpose()?;
    let keys = signing_keys(&args)?;
    // Empty: build-uki chooses from the rootfs's boot model.
    let phases = args
        .phases
        .iter()
        .map(|p| PhasePath::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let signed_banks = if args.pcr_banks.is_empty() {
        DEFAULT_SIGNED_BANKS.to_vec()
    } else {
        args.pcr_banks.clone()
    };
    let mtime = crate::cli::build_timestamp()?
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
        sdboot: args.sdboot.map(Into::into),
        secure_boot_enroll: args.secure_boot_enroll,
        loader_timeout: args.loader_timeout,
        overlay_iso: args.overlay_iso.map(Into::into),
        enroll_keys: args.keys.clone().map(Into::into),
        container_tag,
        source,
        kernel: args.kernel.map(Into::into),
        initrd: args.initrd.map(Into::into),
        os_release: args.os_release.map(Into::into),
        stub: args.stub.map(Into::into),
        overlay_rootfs: args.overlay_rootfs.map(Into::into),
        splash: args.splash.map(Into::into),
        dtb: args.dtb.map(Into::into),
        cmdline: args.cmdline,
        extend_cmdline: args.extend_cmdline,
        extra_cmdline: args.extra_cmdline,
        single_efi_cmdline: args.single_efi_cmdline,
        name: args.name,
        boot_branding: args.boot_branding,
        include_version_in_config: args.include_version_in_config,
        include_cmdline_in_config: args.include_cmdline_in_config,
        output_dir: args.output_dir.into(),
        output_type: args.output_type,
        keys,
        compression: args.compression,
        pcr_banks: ALL_BANKS.to_vec(),
        signed_banks,
        phases,
        size_warning_bytes: args.size_warning_mib << 20,
        mtime,
    };
    let progress = crate::cli::progress::Bars::new(args.json);
    let report = build_uki::run(&opts, &progress)
        .context("build-uki failed; no output of this run was left behind")?;
    crate::cli::warn_all(&report.warnings);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", build_uki::render_summary(&report));
    }
    Ok(())
}

/// The binary's `main`: parse, run, and map the outcome to an exit code.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let args = match BuildUkiArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match args.command {
        Some(Command::Inspect {
            file,
            keys,
            cert,
            json,
        }) => match inspect(file, keys, cert, json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => crate::cli::fail(&e),
        },
        None => match build(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => crate::cli::fail(&e),
        },
    }
}
