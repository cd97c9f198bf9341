//! Running one virtual machine: OVMF with Secure Boot (SMM build), an
//! optional swtpm TPM 2.0 (its state directory may be kept across boots), the
//! media as a CD-ROM or an ESP directory, extra raw disks on virtio-blk, the
//! serial console read line by line until a verdict or the time limit.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::verdict::{Verdict, Watcher};

/// Debian's OVMF build that enforces Secure Boot (needs SMM).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Debian's empty variable store template.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// What to boot.
#[derive(Clone, Debug)]
pub enum BootMedia {
    /// An ISO as a CD-ROM.
    Cdrom(PathBuf),
    /// A directory served as a FAT disk (an ESP with `EFI/BOOT/BOOTX64.EFI`).
    EspDir(PathBuf),
}

/// A test machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Firmware code.
    pub ovmf_code: PathBuf,
    /// The variable store (changed by the boot).
    pub vars: PathBuf,
    /// The media.
    pub media: BootMedia,
    /// swtpm state directory, for a TPM. A directory kept between boots keeps
    /// the TPM's seeds, so objects sealed in one boot unseal in the next.
    pub tpm_state: Option<PathBuf>,
    /// After the verdict, how long the guest may take to power off by itself
    /// before QEMU is stopped. Stopping QEMU is a power loss to the TPM: swtpm
    /// counts each one against its dictionary-attack limit (3 by default) and
    /// then refuses to unseal, so a TPM state kept across boots wants the guest
    /// to shut down (the kernel sends TPM2_Shutdown). Zero: stop at once.
    pub power_off_grace: Duration,
    /// Raw disk images attached read-write on virtio-blk, in order, with the
    /// serial numbers `sbkit-disk0`, `sbkit-disk1`, … (what a guest sees in
    /// `/sys/block/vd*/serial` and `/dev/disk/by-id/virtio-sbkit-diskN`).
    pub disks: Vec<PathBuf>,
    /// Guest memory.
    pub memory_mib: u32,
    /// Time limit.
    pub timeout: Duration,
    /// Where the console is copied.
    pub serial_log: PathBuf,
    /// Text that must appear before a boot counts.
    pub expect: Option<String>,
    /// `-accel` value (`tcg` unless told otherwise: KVM often lacks SMM).
    pub accel: String,
}

/// The machine could not run.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// A program is missing.
    #[error("cannot start {program}: {source}; install it (Debian: qemu-system-x86 from bookworm-backports, ovmf, swtpm) or use the sbkit-qemu image")]
    Spawn {
        /// Which.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is missing.
    #[error("{0} is missing; install Debian's ovmf package or use the sbkit-qemu image")]
    Missing(String),
    /// A disk image given with `--disk` is not a file.
    #[error("disk image {0} is not a file (--disk takes an existing raw image)")]
    MissingDisk(String),
    /// swtpm did not come up.
    #[error("swtpm did not create its socket in {0}")]
    Tpm(String),
    /// The log could not be written.
    #[error("writing {path}: {source}")]
    Log {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunResult {
    /// The verdict.
    pub verdict: Verdict,
    /// How long it took.
    pub seconds: f64,
    /// The serial log file.
    #[serde(skip)]
    pub serial_log: PathBuf,
}

fn start_tpm(dir: &Path) -> Result<(Killed, PathBuf), MachineError> {
    std::fs::create_dir_all(dir).map_err(|e| MachineError::Spawn {
        program: "swtpm".into(),
        source: e,
    })?;
    let socket = dir.join("swtpm.sock");
    let _ = std::fs::remove_file(&socket);
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", dir.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| MachineError::Spawn {
            program: "swtpm".into(),
            source,
        })?;
    let guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(MachineError::Tpm(dir.display().to_string()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((guard, socket))
}

/// The virtio serial number of the `index`-th extra disk: `sbkit-disk<index>`.
pub fn disk_serial(index: usize) -> String {
    format!("sbkit-disk{index}")
}

/// A value inside a QEMU `-drive` option list: commas doubled, as QEMU reads them.
fn qemu_option_value(value: &str) -> String {
    value.replace(',', ",,")
}

/// Boots the machine; `on_line` sees every console line (for streaming).
pub fn run(m: &Machine, on_line: &mut dyn FnMut(&str, &str)) -> Result<RunResult, MachineError> {
    for f in [&m.ovmf_code, &m.vars] {
        if !f.exists() {
            return Err(MachineError::Missing(f.display().to_string()));
        }
    }
    for disk in &m.disks {
        if !disk.is_file() {
            return Err(MachineError::MissingDisk(disk.display().to_string()));
        }
    }
    let tpm = m.tpm_state.as_deref().map(start_tpm).transpose()?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        "q35,smm=on",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
    ])
    .args([
        "-global",
        "ICH9-LPC.disable_s3=1",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
    ])
    .args(["-serial", "stdio", "-smp", "1", "-accel", &m.accel])
    .args(["-m", &m.memory_mib.to_string()])
    .arg("-drive")
    .arg(format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={}",
        m.ovmf_code.display()
    ))
    .arg("-drive")
    .arg(format!(
        "if=pflash,format=raw,unit=1,file={}",
        m.vars.display()
    ));
    match &m.media {
        BootMedia::Cdrom(iso) => {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=cd,media=cdrom,readonly=on,format=raw,file={}",
                    iso.display()
                ))
                .args(["-device", "ide-cd,drive=cd,bootindex=1"]);
        }
        BootMedia::EspDir(dir) => {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=esp,format=raw,file=fat:rw:{}",
                    dir.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=esp,bootindex=1"]);
        }
    }
    for (index, disk) in m.disks.iter().enumerate() {
        cmd.arg("-drive")
            .arg(format!(
                "if=none,id=disk{index},format=raw,file={}",
                qemu_option_value(&disk.display().to_string())
            ))
            .arg("-device")
            .arg(format!(
                "virtio-blk-pci,drive=disk{index},serial={}",
                disk_serial(index)
            ));
    }
    if let Some((_, socket)) = &tpm {
        cmd.arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", socket.display()))
            .args([
                "-tpmdev",
                "emulator,id=tpm0,chardev=chrtpm",
                "-device",
                "tpm-crb,tpmdev=tpm0",
            ]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| MachineError::Spawn {
        program: "qemu-system-x86_64".into(),
        source,
    })?;
    let stdout = child.stdout.take();
    let mut qemu = Killed(child);

    let (tx, rx) = mpsc::channel::<String>();
    if let Some(out) = stdout {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            // Firmware output mixes \r and escape codes; split on either line end.
            while let Ok(n) = reader.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                for part in String::from_utf8_lossy(&buf).split('\r') {
                    if tx.send(part.trim_end_matches('\n').to_string()).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
    }
    let mut log = std::fs::File::create(&m.serial_log).map_err(|source| MachineError::Log {
        path: m.serial_log.display().to_string(),
        source,
    })?;
    let start = Instant::now();
    let mut watcher = Watcher::new(m.expect.clone());
    let verdict = loop {
        let left = m.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break Verdict::TimedOut {
                stage: watcher.stage().to_string(),
            };
        }
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                on_line(&line, watcher.stage());
                if line.contains("Kernel panic") {
                    break Verdict::Ended {
                        stage: format!("kernel panic: {}", line.trim()),
                    };
                }
                if let Some(v) = watcher.line(&line) {
                    break v;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Verdict::Ended {
                    stage: watcher.stage().to_string(),
                }
            }
        }
    };
    let grace_end = Instant::now() + m.power_off_grace;
    while Instant::now() < grace_end {
        if matches!(qemu.0.try_wait(), Ok(Some(_))) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                on_line(&line, watcher.stage());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // QEMU closed its console: it is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = qemu.0.wait();
                break;
            }
        }
    }
    let _ = qemu.0.kill();
    let _ = qemu.0.wait();
    drop(tpm);
    Ok(RunResult {
        verdict,
        seconds: start.elapsed().as_secs_f64(),
        serial_log: m.serial_log.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_get_ordered_serials_and_commas_are_escaped_for_qemu() {
        assert_eq!(disk_serial(0), "sbkit-disk0");
        assert_eq!(disk_serial(3), "sbkit-disk3");
        assert_eq!(qemu_option_value("/tmp/a,b/c.img"), "/tmp/a,,b/c.img");
        assert_eq!(qemu_option_value("/plain.img"), "/plain.img");
    }

    #[test]
    fn a_missing_disk_is_named_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("code.fd");
        let vars = dir.path().join("vars.fd");
        std::fs::write(&code, b"").unwrap();
        std::fs::write(&vars, b"").unwrap();
        let machine = Machine {
            ovmf_code: code,
            vars,
            media: BootMedia::EspDir(dir.path().to_path_buf()),
            tpm_state: None,
            power_off_grace: Duration::ZERO,
            disks: vec![dir.path().join("absent.img")],
            memory_mib: 64,
            timeout: Duration::from_secs(1),
            serial_log: dir.path().join("serial.log"),
            expect: None,
            accel: "tcg".into(),
        };
        match run(&machine, &mut |_, _| {}) {
            Err(MachineError::MissingDisk(what)) => assert!(what.ends_with("absent.img"), "{what}"),
            other => panic!("expected MissingDisk(absent.img), got {other:?}"),
        }
    }
}
