//! The host launcher: the suite's tools run as OCI containers through the
//! Docker Engine API (bollard) — arguments parsed with the tools' own
//! grammar, only the paths they name mounted, no network unless an image is
//! pulled, the caller's user, a TTY for PIN prompts, only the token's own
//! device, exit codes kept.

pub mod doctor;
pub mod images;
pub mod passthrough;
pub mod paths;
pub mod run;

use std::path::{Path, PathBuf};

use bollard::Docker;

use crate::engine::EngineError;
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

/// The caller's home directory, which is never mounted as a whole.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| paths::absolute(Path::new(&h), Path::new("/")))
}

/// The container spec for `tool ARGS` run from `cwd`: the arguments parsed
/// with the tool's own grammar, only what they name mounted, no network
/// unless a registry image is read, the token only when one is asked for.
pub fn plan(
    tool: &str,
    args: &[String],
    cwd: &Path,
    token: bool,
    tty: bool,
) -> Result<RunSpec, LaunchError> {
    let t = translate(tool, args, cwd, home_dir().as_deref())?;
    let pass = passthrough::plan(&t.values, &|k| std::env::var(k).ok(), cwd);
    let mut mounts = t.mounts.clone();
    for m in pass.mounts {
        if !mounts.iter().any(|have| have.container == m.container) {
            mounts.push(m);
        }
    }
    let token = if token || t.wants_token(tool) {
        TokenAccess::detect()
    } else {
        TokenAccess::None
    };
    Ok(RunSpec {
        image: image_for(tool),
        network: t.wants_network(tool),
        args: t.args,
        entrypoint: None,
        mounts,
        staged: t.staged,
        user: Some(caller_user()),
        tty,
        token,
        // Not mounted: relative paths the tool resolves itself (defaults such
        // as genkey's `keys`) land in the mounts made for them below it.
        workdir: Some(paths::container_path(cwd)),
        env: pass.env,
        create_dirs: t.create_dirs,
        // genkey generates keys in memory: with IPC_LOCK it can mlockall them.
        cap_add: if tool == "genkey" {
            vec!["IPC_LOCK".into()]
        } else {
            Vec::new()
        },
        tool: tool.to_string(),
    })
}

/// A source that names an image only the local engine has.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The arguments (a parse error is clap's own message).
    #[error(transparent)]
    Translate(#[from] paths::TranslateError),
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
    // The container has no engine socket: a docker-daemon: image is exported too.
    let (image, explicit) = match source.strip_prefix("docker-daemon:") {
        Some(image) => (image, true),
        None => (source, false),
    };
    let has_prefix = [
        "dir:",
        "oci:",
        "oci-archive:",
        "docker-archive:",
        "tar:",
        "docker://",
    ]
    .iter()
    .any(|p| source.starts_with(p));
    if !explicit && (has_prefix || Path::new(source).exists()) {
        return Ok(None);
    }
    let source = image;
    match crate::engine::find_image(docker, source).await {
        Ok((id, _)) => {
            let target = dir.join("image.tar");
            let export = |message: String| LaunchError::Export {
                image: source.into(),
                message,
            };
            let mut f = std::fs::File::create(&target).map_err(|e| export(e.to_string()))?;
            crate::engine::export_image(docker, &id, &mut f, &mut |_| {})
                .await
                .map_err(|e| export(e.to_string()))?;
            Ok(Some(format!("docker-archive:{}", target.display())))
        }
        Err(_) => {
            // A reference with a registry host (a dot or port before the first slash) is pulled by build-uki.
            let first = source.split('/').next().unwrap_or("");
            if !explicit
                && source.contains('/')
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
