//! The upgrade artifact: a `docker save`-format tarball whose single layer
//! holds the ESP files (UKIs under `EFI/kairos/`, entries under
//! `loader/entries/`), loadable with `docker load`.

use std::io::Write;

use sha2::Digest;

use super::fat::FileTree;

/// Writing the archive failed.
#[derive(Debug, thiserror::Error)]
#[error("writing the container archive: {0}")]
pub struct ContainerError(#[from] std::io::Error);

fn tar_header(path: &str, size: u64, mode: u32, mtime: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    // Paths here are short ASCII; set_path only fails on longer ones.
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

/// The layer tar of `files` (directories included, sorted, fixed owner and mtime).
fn layer_tar(files: &FileTree, mtime: u64) -> Result<Vec<u8>, ContainerError> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            dirs.insert(format!("{}/", parts[..i].join("/")));
        }
    }
    let mut entries: Vec<(String, Option<&Vec<u8>>)> =
        dirs.into_iter().map(|d| (d, None)).collect();
    entries.extend(files.iter().map(|(p, d)| (p.clone(), Some(d))));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, data) in entries {
        match data {
            None => b.append(
                &tar_header(&path, 0, 0o755, mtime, tar::EntryType::Directory),
                std::io::empty(),
            )?,
            Some(d) => b.append(
                &tar_header(&path, d.len() as u64, 0o644, mtime, tar::EntryType::Regular),
                d.as_slice(),
            )?,
        }
    }
    Ok(b.into_inner()?)
}

/// Writes the archive of an image tagged `tag` whose one layer holds `files`.
pub fn write_docker_archive(
    files: &FileTree,
    tag: &str,
    mtime: u64,
    out: impl Write,
) -> Result<(), ContainerError> {
    let layer = layer_tar(files, mtime)?;
    let diff_id = hex::encode(sha2::Sha256::digest(&layer));
    let created = time::OffsetDateTime::from_unix_timestamp(mtime as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Labels": {"org.opencontainers.image.title": "sbkit UKI upgrade artifact"}},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": created, "created_by": "sbkit build-uki -t container"}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_name = format!("{}.json", hex::encode(sha2::Sha256::digest(&config_bytes)));
    let layer_path = format!("{diff_id}/layer.tar");
    let manifest =
        serde_json::json!([{ "Config": config_name, "RepoTags": [tag], "Layers": [layer_path] }]);
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();

    let mut b = tar::Builder::new(out);
    b.append(
        &tar_header(
            &format!("{diff_id}/"),
            0,
            0o755,
            mtime,
            tar::EntryType::Directory,
        ),
        std::io::empty(),
    )?;
    b.append(
        &tar_header(
            &layer_path,
            layer.len() as u64,
            0o644,
            mtime,
            tar::EntryType::Regular,
        ),
        layer.as_slice(),
    )?;
    b.append(
        &tar_header(
            &config_name,
            config_bytes.len() as u64,
            0o644,
            mtime,
            tar::EntryType::Regular,
        ),
        config_bytes.as_slice(),
    )?;
    b.append(
        &tar_header(
            "manifest.json",
            manifest_bytes.len() as u64,
            0o644,
            mtime,
            tar::EntryType::Regular,
        ),
        manifest_bytes.as_slice(),
    )?;
    b.into_inner()?.flush()?;
    Ok(())
}
