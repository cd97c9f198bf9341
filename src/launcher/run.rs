//! Running one tool container: created with the translated arguments, the
//! mounts, the caller's user, a TTY when one is attached, token access when
//! asked; output streamed; the exit code passed through; Ctrl-C stops and
//! removes it.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, DeviceMapping, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, RemoveContainerOptions,
    StartContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::engine::EngineError;
use super::paths::Mount;

/// The host's pcscd socket directory.
pub const PCSCD_DIR: &str = "/run/pcscd";
/// The device cgroup rule for USB character devices (major 189).
pub const USB_CGROUP_RULE: &str = "c 189:* rmw";

/// How a token reaches the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TokenAccess {
    /// No token.
    None,
    /// The host runs pcscd: its socket directory is mounted.
    PcscdSocket(PathBuf),
    /// USB passthrough: these device nodes plus the USB cgroup rule.
    Usb(Vec<PathBuf>),
}

impl TokenAccess {
    /// What this host offers: the pcscd socket when pcscd runs, else the USB devices.
    pub fn detect() -> TokenAccess {
        let socket = PathBuf::from(PCSCD_DIR).join("pcscd.comm");
        if socket.exists() {
            return TokenAccess::PcscdSocket(PathBuf::from(PCSCD_DIR));
        }
        let mut devices = Vec::new();
        if let Ok(buses) = std::fs::read_dir("/dev/bus/usb") {
            for bus in buses.flatten() {
                if let Ok(devs) = std::fs::read_dir(bus.path()) {
                    devices.extend(devs.flatten().map(|d| d.path()));
                }
            }
        }
        devices.sort();
        TokenAccess::Usb(devices)
    }
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
}

/// The engine's create body for a spec.
pub fn create_body(spec: &RunSpec) -> ContainerCreateBody {
    let mut binds: Vec<String> = spec.mounts.iter().map(Mount::bind).collect();
    let mut devices = Vec::new();
    let mut rules = Vec::new();
    match &spec.token {
        TokenAccess::None => {}
        TokenAccess::PcscdSocket(dir) => binds.push(format!("{}:{}", dir.display(), dir.display())),
        TokenAccess::Usb(devs) => {
            devices = devs
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.display().to_string()),
                    path_in_container: Some(d.display().to_string()),
                    cgroup_permissions: Some("rwm".into()),
                })
                .collect();
            rules.push(USB_CGROUP_RULE.to_string());
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
        host_config: Some(HostConfig {
            binds: Some(binds),
            devices: Some(devices),
            device_cgroup_rules: Some(rules),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the container; returns its id.
pub async fn create(docker: &Docker, spec: &RunSpec) -> Result<String, EngineError> {
    let created = docker
        .create_container(Some(CreateContainerOptions::default()), create_body(spec))
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

/// Runs the container to the end and returns its exit code; the container is removed.
pub async fn run(docker: &Docker, spec: &RunSpec) -> Result<i64, EngineError> {
    for dir in &spec.create_dirs {
        // Private by default: an output directory may receive keys.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| EngineError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
    }
    let id = create(docker, spec).await?;
    let result = run_created(docker, &id, spec.tty).await;
    remove(docker, &id).await;
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
