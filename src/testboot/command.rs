//! `sbkit test-boot`: make a variable store with our keys (by `enroll
//! ovmf`), boot the media with any disks and a TPM whose state may persist
//! across boots (Trusted Boot: a volume sealed in one boot unlocks in the
//! next), and report the verdict.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::machine::{run, BootMedia, Machine, MachineError, RunResult, OVMF_CODE, OVMF_VARS};
use crate::enroll::ovmf::{self, OvmfOptions};

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct TestBootOptions {
    /// A `.iso` or a `.efi` (UKI or boot loader).
    pub media: PathBuf,
    /// Key directory whose PK/KEK/db are enrolled.
    pub keys: PathBuf,
    /// Start in setup mode (no PK) instead, e.g. to let systemd-boot enroll.
    pub setup_mode: bool,
    /// Attach a TPM 2.0 (swtpm).
    pub tpm: bool,
    /// Keep the TPM's state in this directory (created when missing) instead of
    /// a temporary one; implies a TPM.
    pub tpm_state: Option<PathBuf>,
    /// Raw disk images to attach (virtio-blk, serials `sbkit-disk0`, …).
    pub disks: Vec<PathBuf>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Time limit.
    pub timeout: Duration,
    /// Text that must appear on the console before a boot counts.
    pub expect: Option<String>,
    /// Firmware code image.
    pub ovmf_code: PathBuf,
    /// Variable store template.
    pub ovmf_vars: PathBuf,
    /// Keep the serial log here (default: a temporary directory, then discarded).
    pub serial_log: Option<PathBuf>,
}

impl TestBootOptions {
    /// Defaults for `media` and `keys`: Debian's OVMF, 300 s, no TPM.
    pub fn new(media: PathBuf, keys: PathBuf) -> Self {
        TestBootOptions {
            media,
            keys,
            setup_mode: false,
            tpm: false,
            tpm_state: None,
            disks: Vec::new(),
            memory_mib: 1024,
            timeout: Duration::from_secs(300),
            expect: None,
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: OVMF_VARS.into(),
            serial_log: None,
        }
    }
}

/// A test boot could not run.
#[derive(Debug, thiserror::Error)]
pub enum TestBootError {
    /// Media type unknown.
    #[error("{0}: give a .iso or a .efi file")]
    Media(String),
    /// The variable store failed.
    #[error("making the variable store: {0}")]
    Vars(#[from] ovmf::OvmfError),
    /// QEMU failed.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// Temporary files.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct TestBootReport {
    /// The media booted.
    pub media: PathBuf,
    /// Setup mode or keys enrolled.
    pub setup_mode: bool,
    /// The run.
    pub result: RunResult,
    /// The serial log, when asked to keep it.
    pub serial_log: Option<PathBuf>,
    /// The disks attached, in order (serials `sbkit-disk0`, …).
    pub disks: Vec<PathBuf>,
    /// The TPM state directory kept for the next boot, when one was named.
    pub tpm_state: Option<PathBuf>,
}

/// Runs a test boot; `on_line` sees each console line and the stage reached.
pub fn test_boot(
    opts: &TestBootOptions,
    on_line: &mut dyn FnMut(&str, &str),
) -> Result<TestBootReport, TestBootError> {
    let work = tempfile::Builder::new()
        .prefix("sbkit-test-boot-")
        .tempdir()?;
    let vars = work.path().join("vars.fd");
    ovmf::run(&OvmfOptions {
        template: opts.ovmf_vars.clone(),
        keys: opts.keys.clone(),
        output: vars.clone(),
        setup_mode: opts.setup_mode,
    })?;
    let ext = opts
        .media
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let media = match ext.as_deref() {
        Some("iso") => BootMedia::Cdrom(opts.media.clone()),
        Some("efi") => {
            let esp = work.path().join("esp");
            std::fs::create_dir_all(esp.join("EFI/BOOT"))?;
            std::fs::copy(&opts.media, esp.join("EFI/BOOT/BOOTX64.EFI"))?;
            BootMedia::EspDir(esp)
        }
        _ => return Err(TestBootError::Media(opts.media.display().to_string())),
    };
    let serial_log = opts
        .serial_log
        .clone()
        .unwrap_or_else(|| work.path().join("serial.log"));
    let tpm_state = match &opts.tpm_state {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Some(dir.clone())
        }
        None => opts.tpm.then(|| work.path().join("tpm")),
    };
    let machine = Machine {
        ovmf_code: opts.ovmf_code.clone(),
        vars,
        media,
        tpm_state: tpm_state.clone(),
        disks: opts.disks.clone(),
        // A kept TPM state must see an orderly shutdown (see Machine::power_off_grace).
        power_off_grace: if opts.tpm_state.is_some() {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        },
        memory_mib: opts.memory_mib,
        timeout: opts.timeout,
        serial_log,
        expect: opts.expect.clone(),
        accel: std::env::var("SBKIT_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into()),
    };
    let result = run(&machine, on_line)?;
    Ok(TestBootReport {
        media: opts.media.clone(),
        setup_mode: opts.setup_mode,
        result,
        serial_log: opts.serial_log.clone(),
        disks: opts.disks.clone(),
        tpm_state: opts.tpm_state.clone(),
    })
}

/// Whether `p` looks like boot media we can test.
pub fn is_media(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("iso" | "efi" | "ISO" | "EFI")
    )
}
