//! Reaching the Docker engine: `DOCKER_HOST` or the default socket, with the
//! API version negotiated (the engine may be older than bollard's default).

use bollard::Docker;

/// The engine is unreachable.
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
    /// An output directory could not be made on the host.
    #[error("cannot create the output directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
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
