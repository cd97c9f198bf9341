//! Running one tool container: created with the translated arguments, the
//! mounts, the caller's user, a TTY when one is attached, token access when
//! asked; output streamed; the exit code passed through; Ctrl-C stops and
//! removes it.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, DeviceMapping, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, RemoveContainerOptions,
    StartContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::paths::{container_path, Mount, StagedOutputs};
use crate::engine::EngineError;

/// The host's pcscd socket.
pub const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";

/// USB interface class of smart-card readers (CCID), which tokens present.
const USB_CLASS_SMART_CARD: &str = "0b";

/// How a token reaches the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TokenAccess {
    /// No token.
    None,
    /// The host runs pcscd: its socket (only) is mounted.
    PcscdSocket(PathBuf),
    /// USB passthrough of these device nodes only: the tokens' own.
    Usb(Vec<PathBuf>),
}

impl TokenAccess {
    /// What this host offers: the pcscd socket when pcscd runs, else the
    /// device nodes of the USB devices with a smart-card interface.
    pub fn detect() -> TokenAccess {
        let socket = PathBuf::from(PCSCD_SOCKET);
        if socket.exists() {
            return TokenAccess::PcscdSocket(socket);
        }
        TokenAccess::Usb(smart_card_devices(Path::new("/sys/bus/usb/devices")))
    }
}

/// `/dev/bus/usb/BBB/DDD` of every USB device under `sysfs` that has a
/// smart-card (CCID) interface: the tokens, and nothing else on the bus.
pub fn smart_card_devices(sysfs: &Path) -> Vec<PathBuf> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(sysfs) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Interfaces are named DEVICE:CONFIG.INTERFACE.
        let Some((device, _)) = name.split_once(':') else {
            continue;
        };
        if read(entry.path().join("bInterfaceClass")).as_deref() != Some(USB_CLASS_SMART_CARD) {
            continue;
        }
        let dev = sysfs.join(device);
        let (Some(bus), Some(num)) = (
            read(dev.join("busnum")).and_then(|b| b.parse::<u32>().ok()),
            read(dev.join("devnum")).and_then(|d| d.parse::<u32>().ok()),
        ) else {
            continue;
        };
        let node = PathBuf::from(format!("/dev/bus/usb/{bus:03}/{num:03}"));
        if !out.contains(&node) {
            out.push(node);
        }
    }
    out.sort();
    out
}

/// Everything about one tool run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSpec {
    /// Image.
    pub image: String,
    /// Arguments after the entrypoint.
    pub args: Vec<String>,
    /// Command instead of the image's entrypoint (for the QEMU image).
    pub entrypoint: Option<Vec<String>>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// `uid:gid`.
    pub user: Option<String>,
    /// Allocate a TTY (PIN prompts).
    pub tty: bool,
    /// Token access.
    pub token: TokenAccess,
    /// Working directory in the container.
    pub workdir: Option<PathBuf>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Host directories to create (as the caller) before the container starts.
    pub create_dirs: Vec<PathBuf>,
    /// Capabilities to add (IPC_LOCK lets genkey lock all its memory while it holds a key).
    pub cap_add: Vec<String>,
    /// Output files written through directories made for them.
    pub staged: Vec<StagedOutputs>,
    /// Whether the container gets the default network; else NetworkMode "none".
    pub network: bool,
    /// The tool (a label on the container, for `docker ps`).
    pub tool: String,
}

/// Label on every container the launcher creates; its value is the tool.
pub const TOOL_LABEL: &str = "org.sbkit.tool";

/// The engine's create body for a spec (with `extra` mounts, the staging directories).
pub fn create_body(spec: &RunSpec, extra: &[Mount]) -> ContainerCreateBody {
    let mut binds: Vec<String> = spec.mounts.iter().chain(extra).map(Mount::bind).collect();
    let mut devices = Vec::new();
    match &spec.token {
        TokenAccess::None => {}
        TokenAccess::PcscdSocket(socket) => {
            binds.push(format!("{}:{}", socket.display(), socket.display()))
        }
        // Each device mapping allows exactly its own node in the device cgroup.
        TokenAccess::Usb(devs) => {
            devices = devs
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.display().to_string()),
                    path_in_container: Some(d.display().to_string()),
                    cgroup_permissions: Some("rwm".into()),
                })
                .collect();
        }
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.args.clone()),
        entrypoint: spec.entrypoint.clone(),
        user: spec.user.clone(),
        tty: Some(spec.tty),
        open_stdin: Some(spec.tty),
        attach_stdin: Some(spec.tty),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        working_dir: spec.workdir.as_ref().map(|w| w.display().to_string()),
        env: Some(spec.env.clone()),
        labels: Some([(TOOL_LABEL.to_string(), spec.tool.clone())].into()),
        network_disabled: None,
        host_config: Some(HostConfig {
            binds: Some(binds),
            devices: Some(devices),
            network_mode: (!spec.network).then(|| "none".to_string()),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the container; returns its id.
pub async fn create(
    docker: &Docker,
    spec: &RunSpec,
    extra: &[Mount],
) -> Result<String, EngineError> {
    let created = docker
        .create_container(
            Some(CreateContainerOptions::default()),
            create_body(spec, extra),
        )
        .await?;
    Ok(created.id)
}

/// Removes a container, forcibly.
pub async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
}

/// Puts the host terminal into raw mode while a TTY container runs, so keys
/// (and PINs) go to the container unechoed; restored on drop.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enable(on: bool) -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        if !on {
            return RawTerminal(None);
        }
        let stdin = std::io::stdin();
        match tcgetattr(&stdin) {
            Ok(saved) => {
                let mut raw = saved.clone();
                cfmakeraw(&mut raw);
                let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
                RawTerminal(Some(saved))
            }
            Err(_) => RawTerminal(None),
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Set to keep tool containers after they exit (their id is printed), to
/// see with `docker inspect` exactly what a tool was given.
pub const KEEP_ENV: &str = "SBKIT_KEEP_CONTAINER";

/// A staging directory for output files, removed when dropped.
struct Stage {
    dir: tempfile::TempDir,
    outputs: StagedOutputs,
    /// Inodes of files that existed before (linked in, so the tool sees them).
    before: Vec<(OsString, u64)>,
}

impl Stage {
    fn make(outputs: &StagedOutputs) -> Result<Stage, EngineError> {
        use std::os::unix::fs::MetadataExt;
        let fail = |source| EngineError::Host {
            what: "make a directory for the tool's output files in",
            path: outputs.parent.display().to_string(),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix(".sbkit-out-")
            .tempdir_in(&outputs.parent)
            .map_err(fail)?;
        let mut before = Vec::new();
        for name in &outputs.names {
            let target = outputs.parent.join(name);
            if let Ok(meta) = std::fs::symlink_metadata(&target) {
                if meta.is_file() {
                    // The tool sees the file it would see natively (and refuses
                    // to overwrite it, or replaces it, as it would).
                    std::fs::hard_link(&target, dir.path().join(name)).map_err(fail)?;
                    before.push((name.clone(), meta.ino()));
                }
            }
        }
        Ok(Stage {
            dir,
            outputs: outputs.clone(),
            before,
        })
    }

    fn mount(&self) -> Mount {
        Mount {
            host: self.dir.path().to_path_buf(),
            container: container_path(&self.outputs.parent),
            read_only: false,
        }
    }

    /// Moves what the tool wrote into place (a file it left as it was stays as it is).
    fn settle(self) -> Result<(), EngineError> {
        use std::os::unix::fs::MetadataExt;
        for name in &self.outputs.names {
            let from = self.dir.path().join(name);
            let Ok(meta) = std::fs::symlink_metadata(&from) else {
                continue;
            };
            if !meta.is_file()
                || self
                    .before
                    .iter()
                    .any(|(n, ino)| n == name && *ino == meta.ino())
            {
                continue;
            }
            let to = self.outputs.parent.join(name);
            std::fs::rename(&from, &to).map_err(|source| EngineError::Host {
                what: "move the tool's output into place at",
                path: to.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Runs the container to the end and returns its exit code; the container
/// is removed (unless [`KEEP_ENV`] is set) and staged outputs moved into place.
pub async fn run(docker: &Docker, spec: &RunSpec) -> Result<i64, EngineError> {
    for dir in &spec.create_dirs {
        // Private by default: an output directory may receive keys.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| EngineError::Host {
                what: "create the output directory",
                path: dir.display().to_string(),
                source,
            })?;
    }
    let stages = spec
        .staged
        .iter()
        .map(Stage::make)
        .collect::<Result<Vec<_>, _>>()?;
    let extra: Vec<Mount> = stages.iter().map(Stage::mount).collect();
    let id = create(docker, spec, &extra).await?;
    let result = run_created(docker, &id, spec.tty).await;
    if std::env::var_os(KEEP_ENV).is_some() {
        eprintln!("sbkit: kept container {id}");
    } else {
        remove(docker, &id).await;
    }
    for stage in stages {
        stage.settle()?;
    }
    result
}

async fn run_created(docker: &Docker, id: &str, tty: bool) -> Result<i64, EngineError> {
    let attached = docker
        .attach_container(
            id,
            Some(AttachContainerOptions {
                stream: true,
                stdin: tty,
                stdout: true,
                stderr: true,
                logs: true,
                ..Default::default()
            }),
        )
        .await?;
    docker
        .start_container(id, None::<StartContainerOptions>)
        .await?;
    let _raw = RawTerminal::enable(tty);
    let mut output = attached.output;
    let mut input = attached.input;
    if tty {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
        });
    }
    let pump = async {
        let mut out = tokio::io::stdout();
        let mut err = tokio::io::stderr();
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    let _ = err.write_all(&message).await;
                    let _ = err.flush().await;
                }
                Ok(o) => {
                    let _ = out.write_all(&o.into_bytes()).await;
                    let _ = out.flush().await;
                }
                Err(_) => break,
            }
        }
    };
    let wait = async {
        let mut w = docker.wait_container(id, None::<WaitContainerOptions>);
        match w.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(EngineError::from(e)),
            None => Ok(1),
        }
    };
    tokio::select! {
        (_, code) = async { tokio::join!(pump, wait) } => code,
        _ = tokio::signal::ctrl_c() => {
            let _ = docker.kill_container(id, Some(KillContainerOptions { signal: "SIGKILL".into() })).await;
            eprintln!("\ninterrupted: container stopped and removed");
            Ok(130)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs device directory: `busnum`/`devnum`, and one interface of `class`.
    fn device(sysfs: &Path, name: &str, bus: u32, num: u32, class: &str) {
        let dev = sysfs.join(name);
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("busnum"), format!("{bus}\n")).unwrap();
        std::fs::write(dev.join("devnum"), format!("{num}\n")).unwrap();
        let intf = sysfs.join(format!("{name}:1.0"));
        std::fs::create_dir_all(&intf).unwrap();
        std::fs::write(intf.join("bInterfaceClass"), format!("{class}\n")).unwrap();
    }

    #[test]
    fn only_smart_card_devices_are_passed_through() {
        let d = tempfile::tempdir().unwrap();
        device(d.path(), "1-1", 1, 4, "0b"); // a YubiKey's CCID interface
        device(d.path(), "1-2", 1, 5, "03"); // a keyboard
        device(d.path(), "2-1", 2, 17, "08"); // a USB stick
        assert_eq!(
            smart_card_devices(d.path()),
            [PathBuf::from("/dev/bus/usb/001/004")]
        );
        assert!(smart_card_devices(&d.path().join("none")).is_empty());
    }

    #[test]
    fn the_create_body_has_no_network_and_no_usb_rule() {
        let spec = RunSpec {
            image: "i".into(),
            args: vec![],
            entrypoint: None,
            mounts: vec![],
            user: None,
            tty: false,
            token: TokenAccess::Usb(vec![PathBuf::from("/dev/bus/usb/001/004")]),
            workdir: None,
            env: vec![],
            create_dirs: vec![],
            cap_add: vec![],
            staged: vec![],
            network: false,
            tool: "genkey".into(),
        };
        let body = create_body(&spec, &[]);
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.devices.unwrap().len(), 1);
        assert!(host.device_cgroup_rules.is_none());
    }
}
