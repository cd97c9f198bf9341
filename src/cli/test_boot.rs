//! `sbkit test-boot`'s command line and its native run (QEMU on this host);
//! the launcher runs the same arguments in the sbkit-qemu image.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::path_arg::{InOutFile, InputDir, InputFile, OutputDir, OutputFile};
use crate::testboot::{test_boot, TestBootOptions};

/// Boot a UKI (.efi) or ISO in OVMF with Secure Boot enforced and our keys
/// enrolled; exit 0 when it booted with Secure Boot on, 1 booted without,
/// 2 refused, 3 timed out.
#[derive(clap::Args, Debug, Clone)]
pub struct TestBootArgs {
    /// The .iso or .efi to boot.
    pub media: InputFile,
    /// Key directory (from genkey) to enroll.
    #[arg(short, long)]
    pub keys: InputDir,
    /// Start in setup mode (no keys), e.g. for systemd-boot's auto-enroll.
    #[arg(long = "setup-mode")]
    pub setup_mode: bool,
    /// Attach a TPM 2.0 (swtpm).
    #[arg(long)]
    pub tpm: bool,
    /// Keep the TPM's state in DIR across boots (implies --tpm): a volume sealed
    /// to the TPM in one boot can be unlocked in the next. After the verdict the
    /// guest gets 30 s to power off by itself (an orderly TPM shutdown).
    #[arg(long = "tpm-state", value_name = "DIR")]
    pub tpm_state: Option<OutputDir>,
    /// Attach a raw disk image (virtio-blk, read-write; serial sbkit-disk0, 1, …
    /// in the order given). Repeatable.
    #[arg(long = "disk", value_name = "IMG")]
    pub disks: Vec<InOutFile>,
    /// Guest memory in MiB (a whole OS packed into the initrd needs more).
    #[arg(long = "memory-mib", default_value_t = 1024)]
    pub memory_mib: u32,
    /// Seconds before giving up.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Text that must appear on the console before the boot counts.
    #[arg(long)]
    pub expect: Option<String>,
    /// Stream the serial console to stderr.
    #[arg(long)]
    pub console: bool,
    /// Keep the serial log here.
    #[arg(long = "serial-log")]
    pub serial_log: Option<OutputFile>,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Boots on this host and prints the verdict; the exit code is the verdict's.
pub fn run_native(args: TestBootArgs) -> anyhow::Result<ExitCode> {
    let mut opts = TestBootOptions::new(args.media.into(), args.keys.into());
    opts.setup_mode = args.setup_mode;
    opts.tpm = args.tpm || args.tpm_state.is_some();
    opts.tpm_state = args.tpm_state.map(Into::into);
    opts.disks = args.disks.into_iter().map(Into::into).collect();
    opts.memory_mib = args.memory_mib;
    opts.timeout = Duration::from_secs(args.timeout);
    opts.expect = args.expect;
    opts.serial_log = args.serial_log.map(Into::into);
    let console = args.console;
    let spinner = crate::cli::spinner(console || args.json);
    let report = test_boot(&opts, &mut |line, stage| {
        if console {
            eprintln!("{line}");
        } else {
            spinner.set_message(format!("booting: {stage}"));
        }
    });
    spinner.finish_and_clear();
    let report = report.context("test boot failed to run")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} ({:.0} s)",
            report.media.display(),
            report.result.verdict.describe(),
            report.result.seconds
        );
    }
    Ok(ExitCode::from(report.result.verdict.exit_code()))
}
