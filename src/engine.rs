//! The one Docker engine client: used by the launcher (tool containers,
//! image builds, `doctor`) and by the `docker-daemon:` image source. It
//! connects (`DOCKER_HOST` or the default socket), negotiates the API version
//! (the engine may be older than bollard's default), checks the engine
//! answers, and maps failures to messages that say what to do.

use bollard::Docker;

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No connection.
    #[error("cannot reach the Docker engine at {endpoint}: {message}. Start dockerd, set DOCKER_HOST, or run the tools directly with --native")]
    Unreachable {
        /// Where we looked.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// A file operation on the host around a run.
    #[error("cannot {what} {path}: {source}")]
    Host {
        /// What was being done (`create the output directory`).
        what: &'static str,
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An image is not in the engine.
    #[error(
        "no image {image:?} in the local engine ({message}); `docker images` lists what it has"
    )]
    NoImage {
        /// The image.
        image: String,
        /// The engine's answer.
        message: String,
    },
    /// An API call failed.
    #[error("Docker engine: {0}")]
    Api(#[from] bollard::errors::Error),
}

/// Where the engine is expected.
pub fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Connects and negotiates the API version.
pub async fn connect() -> Result<Docker, EngineError> {
    let unreachable = |message: String| EngineError::Unreachable {
        endpoint: endpoint(),
        message,
    };
    let docker = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    docker
        .ping()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}

/// An image of the engine: its id and size in bytes; [`EngineError::NoImage`] when absent.
pub async fn find_image(docker: &Docker, image: &str) -> Result<(String, u64), EngineError> {
    let info = docker
        .inspect_image(image)
        .await
        .map_err(|e| EngineError::NoImage {
            image: image.to_string(),
            message: e.to_string(),
        })?;
    let size = info.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
    Ok((info.id.unwrap_or_default(), size))
}

/// Streams the engine's `docker save` archive of `image` (best given by id,
/// so that a tag moved meanwhile cannot switch images) into `out`;
/// `on_chunk` sees each chunk's length (for progress).
pub async fn export_image(
    docker: &Docker,
    image: &str,
    out: &mut dyn std::io::Write,
    on_chunk: &mut dyn FnMut(u64),
) -> Result<(), EngineError> {
    use futures_util::StreamExt;
    let write_failed = |source| EngineError::Host {
        what: "write the exported image",
        path: image.to_string(),
        source,
    };
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).map_err(write_failed)?;
        on_chunk(chunk.len() as u64);
    }
    out.flush().map_err(write_failed)
}
