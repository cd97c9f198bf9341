//! Boot tests in QEMU with OVMF (Debian's `ovmf` package, Secure Boot build): locate the
//! firmware, make variable stores with virt-fw-vars, boot a kernel, disk or ISO, and watch
//! the serial console for markers.
//!
//! The firmware is the final judge of our signatures, so the store is made in user mode
//! (PK enrolled, SetupMode 0): there the firmware checks every authenticated write and
//! every image. In setup mode it checks nothing, which would prove nothing.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::guest;

pub use super::tools::{require_tool, INSTALL_SCRIPT};

/// The OVMF images of a boot: read-only code and a variable-store template.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// `OVMF_CODE_4M.secboot.fd`: the SMM build that enforces Secure Boot.
    pub code: PathBuf,
    /// `OVMF_VARS_4M.fd`: an empty store (no keys), copied for each boot.
    pub vars_template: PathBuf,
}

impl Firmware {
    /// Debian's 4 MiB Secure Boot OVMF; panics naming the package when it is missing.
    pub fn ovmf_secboot() -> Firmware {
        let dir = Path::new("/usr/share/OVMF");
        let firmware = Firmware {
            code: dir.join("OVMF_CODE_4M.secboot.fd"),
            vars_template: dir.join("OVMF_VARS_4M.fd"),
        };
        for file in [&firmware.code, &firmware.vars_template] {
            assert!(
                file.is_file(),
                "{} is missing: install Debian's `ovmf` package ({INSTALL_SCRIPT})",
                file.display()
            );
        }
        firmware
    }
}

/// A certificate to enroll in a Secure Boot database, with its owner GUID.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// Owner GUID (SignatureOwner of the ESL entry), e.g. `manifest.json`'s `owner_guid`.
    pub owner: String,
    /// X.509 certificate, PEM or DER.
    pub cert: PathBuf,
}

impl Enrolled {
    /// A certificate with its owner.
    pub fn new(owner: &str, cert: &Path) -> Enrolled {
        Enrolled {
            owner: owner.to_string(),
            cert: cert.to_path_buf(),
        }
    }
}

/// What to put in a fresh OVMF variable store (made from the firmware's template).
#[derive(Debug, Clone, Default)]
pub struct VarStore {
    /// PK. With a PK the firmware is in user mode (SetupMode 0) and checks KEK/db writes.
    pub pk: Option<Enrolled>,
    /// KEK entries.
    pub kek: Vec<Enrolled>,
    /// db entries. virt-fw-vars stamps db with the newest certificate's notBefore, so a
    /// later `db.auth` must carry a strictly later EFI_TIME to replace it.
    pub db: Vec<Enrolled>,
    /// Secure Boot enforcement (OVMF's SecureBootEnable, written either way). Off, a store
    /// with a PK is still in user mode: authenticated writes are checked, images are not.
    pub secure_boot: bool,
}

impl VarStore {
    /// Writes the store to `out` with virt-fw-vars and returns its printout
    /// (`virt-fw-vars -p`), handy in assertion messages.
    pub fn write(&self, firmware: &Firmware, out: &Path) -> String {
        let tool = require_tool("virt-fw-vars");
        let mut cmd = Command::new(&tool);
        cmd.arg("--input").arg(&firmware.vars_template);
        cmd.arg("--output").arg(out);
        if let Some(pk) = &self.pk {
            cmd.arg("--set-pk").arg(&pk.owner).arg(&pk.cert);
        }
        for kek in &self.kek {
            cmd.arg("--add-kek").arg(&kek.owner).arg(&kek.cert);
        }
        for db in &self.db {
            cmd.arg("--add-db").arg(&db.owner).arg(&db.cert);
        }
        if self.secure_boot {
            cmd.arg("--secure-boot");
        } else {
            // Explicitly: edk2 creates SecureBootEnable = on at start when a PK exists
            // and the variable does not (seen: SecureBoot reads 01 without this).
            cmd.arg("--set-false").arg("SecureBootEnable");
        }
        run_checked(&mut cmd);
        print_vars(out)
    }
}

/// `virt-fw-vars --print` of a store: one line per variable.
pub fn print_vars(vars: &Path) -> String {
    let tool = require_tool("virt-fw-vars");
    run_checked(Command::new(tool).arg("--input").arg(vars).arg("--print"))
}

/// The variable names in a [`print_vars`] printout (lines `Name   : type: value`).
pub fn var_names(printout: &str) -> Vec<String> {
    printout
        .lines()
        .filter(|line| line.contains(" : "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn run_checked(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What the firmware boots.
#[derive(Debug, Clone)]
pub enum Media {
    /// QEMU's `-kernel/-initrd/-append` (fw_cfg). OVMF 2022.11 falls back to its legacy
    /// Linux loader when the image fails Secure Boot verification, so this boots an
    /// unsigned kernel even with Secure Boot enforced: use it for guests that test
    /// variables, never to test image verification.
    Kernel {
        /// bzImage.
        kernel: PathBuf,
        /// Initramfs (e.g. from [`guest::Initramfs::write_gz`]).
        initrd: PathBuf,
        /// Kernel command line.
        append: String,
    },
    /// A directory served as a FAT disk (QEMU vvfat, read-write), e.g. an ESP tree with
    /// `EFI/BOOT/BOOTX64.EFI`. vvfat's FAT16 holds about 500 MB at most.
    EspDir(PathBuf),
    /// A raw disk image (partitioned, with an ESP), on virtio-blk.
    Disk(PathBuf),
    /// An ISO 9660 image with an El Torito EFI entry, on the q35 AHCI CD drive.
    Cdrom(PathBuf),
}

impl Media {
    /// The standard guest kernel with an initramfs and [`guest::DEFAULT_APPEND`].
    pub fn guest_kernel(assets: &guest::Assets, initrd: &Path) -> Media {
        Media::Kernel {
            kernel: assets.kernel(),
            initrd: initrd.to_path_buf(),
            append: guest::DEFAULT_APPEND.to_string(),
        }
    }
}

/// A software TPM 2.0 (swtpm) attached to the guest as `tpm-crb`.
#[derive(Debug, Clone)]
pub struct Tpm {
    /// swtpm state directory; kept between boots that share it (PCRs reset per boot).
    pub state_dir: PathBuf,
}

/// Everything about one boot.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// Firmware code image.
    pub firmware: Firmware,
    /// The variable store this boot uses and may change (pflash unit 1).
    pub vars: PathBuf,
    /// What to boot.
    pub media: Media,
    /// A TPM for the guest, or none.
    pub tpm: Option<Tpm>,
    /// Where the serial console is written.
    pub serial_log: PathBuf,
    /// The boot is stopped (and marked timed out) after this long.
    pub timeout: Duration,
    /// Lines containing one of these end the boot as a success.
    pub success: Vec<String>,
    /// Lines containing one of these end the boot as a failure (checked first).
    pub failure: Vec<String>,
    /// Stop QEMU as soon as a marker appears (saves the guest's shutdown). When false,
    /// wait for QEMU to exit by itself (e.g. to let the guest flush writes).
    pub stop_on_marker: bool,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<String>,
    /// Let the guest reset (firmware enrollment reboots); by default a reset ends QEMU.
    pub allow_reboot: bool,
}

/// Failure markers every boot watches for: a kernel panic, and OVMF's refusal of an
/// image (BdsDxe prints "Access Denied" when Secure Boot verification fails).
pub const DEFAULT_FAILURE_MARKERS: [&str; 3] = ["Kernel panic", "Access Denied", guest::MARK_FAIL];

impl BootSpec {
    /// A boot of `media` with the guest's markers ([`guest::MARK_PASS`] for success),
    /// the default failure markers, 512 MiB and a 240 s timeout (a guest needs ~10 s
    /// under TCG; the margin is for a loaded CI machine).
    pub fn new(firmware: Firmware, vars: &Path, media: Media, serial_log: &Path) -> BootSpec {
        BootSpec {
            firmware,
            vars: vars.to_path_buf(),
            media,
            tpm: None,
            serial_log: serial_log.to_path_buf(),
            timeout: Duration::from_secs(240),
            success: vec![guest::MARK_PASS.to_string()],
            failure: DEFAULT_FAILURE_MARKERS.map(str::to_string).to_vec(),
            stop_on_marker: true,
            memory_mib: 512,
            extra_args: Vec::new(),
            allow_reboot: false,
        }
    }

    /// The QEMU command line (without the program), for running and for messages.
    pub fn qemu_args(&self, tpm_socket: Option<&Path>) -> Vec<String> {
        let mut args: Vec<String> = [
            "-machine",
            "q35,smm=on",
            // Only the firmware in SMM may write the variable flash; without this the
            // guest OS could rewrite the store behind the firmware's checks.
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
            // The edk2 SMM build does not support S3 resume with SMM on q35.
            "-global",
            "ICH9-LPC.disable_s3=1",
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-smp",
            "1",
        ]
        .map(str::to_string)
        .to_vec();
        if !self.allow_reboot {
            args.push("-no-reboot".into());
        }
        args.extend(["-accel".into(), accelerator()]);
        args.extend(["-m".into(), self.memory_mib.to_string()]);
        args.push("-drive".into());
        args.push(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            self.firmware.code.display()
        ));
        args.push("-drive".into());
        args.push(format!(
            "if=pflash,format=raw,unit=1,file={}",
            self.vars.display()
        ));
        args.push("-serial".into());
        args.push(format!("file:{}", self.serial_log.display()));
        match &self.media {
            Media::Kernel {
                kernel,
                initrd,
                append,
            } => {
                args.push("-kernel".into());
                args.push(kernel.display().to_string());
                args.push("-initrd".into());
                args.push(initrd.display().to_string());
                args.push("-append".into());
                args.push(append.clone());
            }
            Media::EspDir(dir) => {
                args.push("-drive".into());
                args.push(format!(
                    "if=none,id=esp,format=raw,file=fat:rw:{}",
                    dir.display()
                ));
                args.push("-device".into());
                args.push("virtio-blk-pci,drive=esp,bootindex=1".into());
            }
            Media::Disk(image) => {
                args.push("-drive".into());
                args.push(format!(
                    "if=none,id=disk,format=raw,file={}",
                    image.display()
                ));
                args.push("-device".into());
                args.push("virtio-blk-pci,drive=disk,bootindex=1".into());
            }
            Media::Cdrom(iso) => {
                args.push("-drive".into());
                args.push(format!(
                    "if=none,id=cd,media=cdrom,readonly=on,format=raw,file={}",
                    iso.display()
                ));
                args.push("-device".into());
                args.push("ide-cd,drive=cd,bus=ide.0,bootindex=1".into());
            }
        }
        if let Some(socket) = tpm_socket {
            args.push("-chardev".into());
            args.push(format!("socket,id=chrtpm,path={}", socket.display()));
            args.extend(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"].map(String::from));
            args.extend(["-device", "tpm-crb,tpmdev=tpm0"].map(String::from));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// `$SBKIT_QEMU_ACCEL`, else TCG. Not auto-detected: the CI machines expose a /dev/kvm
/// whose hypervisor lacks SMM, which the Secure Boot firmware needs (QEMU then fails
/// with "System Management Mode not supported by this hypervisor").
fn accelerator() -> String {
    std::env::var("SBKIT_QEMU_ACCEL")
        .ok()
        .filter(|accel| !accel.is_empty())
        .unwrap_or_else(|| "tcg".to_string())
}

/// Which marker ended a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// A success marker, with the line it was found in.
    Success(String),
    /// A failure marker, with the line it was found in.
    Failure(String),
}

/// The result of a boot.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// The serial console, lossily decoded, `\r` and terminal escapes removed.
    pub log: String,
    /// Where the raw serial log is.
    pub serial_log: PathBuf,
    /// The marker that ended the boot, if any.
    pub matched: Option<Matched>,
    /// Whether the timeout stopped the boot.
    pub timed_out: bool,
    /// Wall time from starting QEMU to the end of the boot.
    pub elapsed: Duration,
    /// Time from starting QEMU to the first marker (None without a marker).
    pub marker_after: Option<Duration>,
    /// QEMU's exit status as text ("killed" when we stopped it).
    pub exit: String,
    /// What QEMU printed on stderr.
    pub qemu_stderr: String,
    /// The QEMU command line, for reproducing the boot by hand.
    pub command: String,
}

impl BootOutcome {
    /// Whether a success marker ended the boot.
    pub fn succeeded(&self) -> bool {
        matches!(self.matched, Some(Matched::Success(_)))
    }

    /// The last `lines` lines of the serial log.
    pub fn tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A summary for assertion messages: how the boot ended, the command, QEMU's
    /// stderr and the log tail.
    pub fn context(&self) -> String {
        format!(
            "boot ended: {:?}, timed out: {}, after {:.1?}, qemu exit: {}\n\
             command: qemu-system-x86_64 {}\n\
             qemu stderr: {}\n\
             serial log ({}), last 40 lines:\n{}",
            self.matched,
            self.timed_out,
            self.elapsed,
            self.exit,
            self.command,
            self.qemu_stderr.trim(),
            self.serial_log.display(),
            self.tail(40)
        )
    }

    /// Panics with [`BootOutcome::context`] unless a success marker ended the boot.
    pub fn assert_success(&self) {
        assert!(self.succeeded(), "guest did not pass\n{}", self.context());
    }

    /// The value of a `KEY=value` word on the first line starting with `prefix`, e.g.
    /// `value("SBKIT-TEST write-own", "rc")`. Words are separated by whitespace.
    pub fn value(&self, prefix: &str, key: &str) -> Option<String> {
        let line = self
            .log
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))?;
        let want = format!("{key}=");
        line[prefix.len()..]
            .split_whitespace()
            .find_map(|word| word.strip_prefix(want.as_str()))
            .map(str::to_string)
    }

    /// A firmware variable the guest's `/init` printed (hex of the value bytes).
    pub fn efivar(&self, name: &str) -> Option<String> {
        guest::efivar_from_log(&self.log, name)
    }

    /// Panics unless the guest saw the firmware in user mode (SetupMode 0), where the
    /// firmware checks authenticated writes, and with the given SecureBoot value.
    pub fn assert_user_mode(&self, secure_boot: bool) {
        let setup_mode = self.efivar("SetupMode");
        assert_eq!(
            setup_mode.as_deref(),
            Some("00"),
            "guest must run in user mode (SetupMode 00)\n{}",
            self.context()
        );
        let want = if secure_boot { "01" } else { "00" };
        assert_eq!(
            self.efivar("SecureBoot").as_deref(),
            Some(want),
            "guest's SecureBoot variable\n{}",
            self.context()
        );
    }
}

impl fmt::Display for BootOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context())
    }
}

/// A running swtpm, stopped (by its pid, via `Child::kill`) when dropped.
struct SwTpm {
    child: Child,
    socket: PathBuf,
}

impl SwTpm {
    fn start(tpm: &Tpm) -> SwTpm {
        let swtpm = require_tool("swtpm");
        fs::create_dir_all(&tpm.state_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", tpm.state_dir.display()));
        let socket = tpm.state_dir.join("swtpm.sock");
        let _ = fs::remove_file(&socket);
        let child = Command::new(swtpm)
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", tpm.state_dir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--log")
            .arg(format!(
                "file={},level=1",
                tpm.state_dir.join("swtpm.log").display()
            ))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting swtpm: {e}"));
        let mut swtpm = SwTpm { child, socket };
        // QEMU fails at once if the socket is not there yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !swtpm.socket.exists() {
            if let Ok(Some(status)) = swtpm.child.try_wait() {
                panic!("swtpm exited before creating its socket: {status}");
            }
            assert!(Instant::now() < deadline, "swtpm did not create its socket");
            thread::sleep(Duration::from_millis(20));
        }
        swtpm
    }
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        // swtpm exits by itself when QEMU closes the socket; this is for early stops.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots `spec` and watches the serial log until a marker, QEMU's exit, or the timeout.
/// QEMU is stopped (killed by its pid) on a marker (when `stop_on_marker`) or timeout.
pub fn boot(spec: &BootSpec) -> BootOutcome {
    let qemu = require_tool("qemu-system-x86_64");
    let tpm = spec.tpm.as_ref().map(SwTpm::start);
    let args = spec.qemu_args(tpm.as_ref().map(|t| t.socket.as_path()));
    let _ = fs::remove_file(&spec.serial_log);
    let stderr_path = spec.serial_log.with_extension("qemu-stderr");
    let stderr = fs::File::create(&stderr_path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", stderr_path.display()));
    let started = Instant::now();
    let mut child = Command::new(&qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", qemu.display()));

    let mut matched = None;
    let mut marker_after = None;
    let mut timed_out = false;
    let mut exit = None;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for qemu") {
            exit = Some(status.to_string());
        }
        // Read after checking for exit, so the last lines of an exited QEMU are seen.
        if matched.is_none() {
            let log = read_log(&spec.serial_log);
            matched = find_marker(&log, spec);
            if matched.is_some() {
                marker_after = Some(started.elapsed());
            }
        }
        if exit.is_some() || (matched.is_some() && spec.stop_on_marker) {
            break;
        }
        if started.elapsed() >= spec.timeout {
            timed_out = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let exit = exit.unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        "killed".to_string()
    });
    drop(tpm);
    BootOutcome {
        log: read_log(&spec.serial_log),
        serial_log: spec.serial_log.clone(),
        matched,
        timed_out,
        elapsed: started.elapsed(),
        marker_after,
        exit,
        qemu_stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
        command: args.join(" "),
    }
}

/// The serial log as text: `\r` and ANSI escape sequences (OVMF clears the screen) gone.
fn read_log(path: &Path) -> String {
    let raw = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' => {
                // CSI: ESC [ parameters… final byte in '@'..='~'.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The first marker on a complete line (a partial last line may still be growing).
fn find_marker(log: &str, spec: &BootSpec) -> Option<Matched> {
    let complete = match log.rfind('\n') {
        Some(end) => &log[..end],
        None => return None,
    };
    for line in complete.lines() {
        if spec.failure.iter().any(|m| line.contains(m.as_str())) {
            return Some(Matched::Failure(line.to_string()));
        }
        if spec.success.iter().any(|m| line.contains(m.as_str())) {
            return Some(Matched::Success(line.to_string()));
        }
    }
    None
}
