//! The host launcher: the suite's tools run as OCI containers through the
//! Docker Engine API (bollard) — host paths mounted and translated, the
//! caller's user, a TTY for PIN prompts, token passthrough, exit codes kept.

pub mod doctor;
pub mod engine;
pub mod images;
pub mod paths;
pub mod run;

use std::path::{Path, PathBuf};

use bollard::Docker;

use engine::EngineError;
use paths::translate;
use run::{RunSpec, TokenAccess};

/// The image of a tool: `SBKIT_IMAGE_<TOOL>` (e.g. `SBKIT_IMAGE_BUILD_UKI`)
/// when set, else the tool's name with the `latest` tag, as the Kairos
/// documentation runs them (`docker run genkey …`).
pub fn image_for(tool: &str) -> String {
    let var = format!(
        "SBKIT_IMAGE_{}",
        tool.to_ascii_uppercase().replace('-', "_")
    );
    std::env::var(var).unwrap_or_else(|_| format!("{tool}:latest"))
}

/// `uid:gid` of this process, so files made in the container belong to the caller.
pub fn caller_user() -> String {
    format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid())
}

/// Whether the arguments need a token: a `pkcs11:` URI anywhere, or genkey's token commands.
pub fn wants_token(tool: &str, args: &[String]) -> bool {
    args.iter().any(|a| a.contains("pkcs11:"))
        || (tool == "genkey" && args.iter().any(|a| a == "token" || a == "--token"))
}

/// Environment passed into tool containers (never secrets given on the host's command line).
const PASSED_ENV: [&str; 3] = [
    "SOURCE_DATE_EPOCH",
    "SBKIT_PKCS11_MODULE",
    "SBKIT_QEMU_ACCEL",
];

/// The container spec for `tool ARGS` run from `cwd`.
pub fn plan(tool: &str, args: &[String], cwd: &Path, token: bool, tty: bool) -> RunSpec {
    let t = translate(tool, args, cwd);
    let create_dirs = t.create_dirs;
    let mut mounts = t.mounts;
    // The working directory is mounted too, so relative paths the tool prints make sense.
    if !mounts.iter().any(|m| m.host == cwd) {
        mounts.push(paths::Mount {
            host: cwd.to_path_buf(),
            container: paths::container_path(cwd),
            read_only: true,
        });
    }
    RunSpec {
        image: image_for(tool),
        args: t.args,
        entrypoint: None,
        mounts,
        user: Some(caller_user()),
        tty,
        token: if token || wants_token(tool, args) {
            TokenAccess::detect()
        } else {
            TokenAccess::None
        },
        workdir: Some(paths::container_path(cwd)),
        env: PASSED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
            .collect(),
        create_dirs,
        // genkey generates keys in memory: with IPC_LOCK it can mlockall them.
        cap_add: if tool == "genkey" {
            vec!["IPC_LOCK".into()]
        } else {
            Vec::new()
        },
    }
}

/// A source that names an image only the local engine has.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An image that exists nowhere we can see.
    #[error("image {0:?} is not in the local engine and names no registry (like registry.example:5000/{0}); build or load it first (docker images lists what the engine has)")]
    NoSuchImage(String),
    /// Export failed.
    #[error("exporting {image} from the engine: {message}")]
    Export {
        /// The image.
        image: String,
        /// Why.
        message: String,
    },
}

/// For build-uki: when SOURCE is an image only the local engine has, export
/// it to `dir/image.tar` and return the `docker-archive:` source that replaces it.
pub async fn export_local_image(
    docker: &Docker,
    source: &str,
    dir: &Path,
) -> Result<Option<String>, LaunchError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let has_prefix = [
        "dir:",
        "oci:",
        "oci-archive:",
        "docker-archive:",
        "tar:",
        "docker-daemon:",
        "docker://",
    ]
    .iter()
    .any(|p| source.starts_with(p));
    if has_prefix || Path::new(source).exists() {
        return Ok(None);
    }
    match docker.inspect_image(source).await {
        Ok(_) => {
            let target = dir.join("image.tar");
            let mut f =
                tokio::fs::File::create(&target)
                    .await
                    .map_err(|e| LaunchError::Export {
                        image: source.into(),
                        message: e.to_string(),
                    })?;
            let mut stream = docker.export_image(source);
            while let Some(chunk) = stream.next().await {
                let bytes = chunk.map_err(|e| LaunchError::Export {
                    image: source.into(),
                    message: e.to_string(),
                })?;
                f.write_all(&bytes).await.map_err(|e| LaunchError::Export {
                    image: source.into(),
                    message: e.to_string(),
                })?;
            }
            f.flush().await.map_err(|e| LaunchError::Export {
                image: source.into(),
                message: e.to_string(),
            })?;
            Ok(Some(format!("docker-archive:{}", target.display())))
        }
        Err(_) => {
            // A reference with a registry host (a dot or port before the first slash) is pulled by build-uki.
            let first = source.split('/').next().unwrap_or("");
            if source.contains('/')
                && (first.contains('.') || first.contains(':') || first == "localhost")
            {
                Ok(None)
            } else {
                Err(LaunchError::NoSuchImage(source.into()))
            }
        }
    }
}

/// The tool's working directory on the host.
pub fn current_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}
