//! Images that exist only in the local Docker engine (`docker-daemon:IMAGE`),
//! through the Engine API (bollard).
//!
//! The engine's only way to hand out an image's layers is `GET
//! /images/{name}/get`, the `docker save` stream, and it writes that stream
//! in name order (layer directories sorted by id), not in layer order. A
//! top-down flatten needs the top layer first, so the stream is spooled to an
//! unlinked temporary file (deleted when the build ends, whatever happens)
//! and then read in place like a `docker-archive:`. That is one sequential
//! copy of the image's uncompressed layers in `$TMPDIR`; nothing is unpacked.

use super::error::ImageError;
use crate::progress::{Progress, Unit};

/// The engine, through the crate's one client (`crate::engine`).
async fn connect() -> Result<bollard::Docker, ImageError> {
    crate::engine::connect()
        .await
        .map_err(|e| ImageError::Daemon(e.to_string()))
}

/// Saves `image` from the engine into `out`; returns the image id.
pub fn save(
    image: &str,
    out: &mut std::fs::File,
    progress: &dyn Progress,
) -> Result<String, ImageError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ImageError::Daemon(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let docker = connect().await?;
        let (id, size) = crate::engine::find_image(&docker, image)
            .await
            .map_err(|e| ImageError::Daemon(e.to_string()))?;
        let bar = progress.start(
            "exporting from the engine",
            Unit::Bytes,
            (size > 0).then_some(size),
        );
        bar.set_message(image);
        // By id: a tag moved by someone else meanwhile cannot switch images.
        crate::engine::export_image(&docker, &id, out, &mut |n| bar.advance(n))
            .await
            .map_err(|e| match e {
                crate::engine::EngineError::Host { source, .. } => ImageError::Daemon(format!(
                    "spooling {image} to the temporary directory: {source}; free space in $TMPDIR"
                )),
                other => ImageError::Daemon(format!("exporting {image}: {other}")),
            })?;
        bar.finish();
        Ok(id)
    })
}
