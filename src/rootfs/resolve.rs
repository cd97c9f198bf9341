//! From a source to a verified list of layers: follow index → manifest →
//! config, checking every document against its digest before parsing it, and
//! pick the platform from a multi-arch index. Local layouts (`oci:`,
//! `oci-archive:`) and `docker save` archives (classic and OCI-layout) are
//! resolved here; registries resolve through the same [`resolve_descriptor`].

use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;

use super::digest::Digest;
use super::error::ImageError;
use super::layer::LayerRef;
use super::manifest::{
    self, descriptor_digest, media_type, parse_config, parse_document, select_platform, Descriptor,
    Document, LayerCompression,
};
use super::options::Platform;
use super::store::{Store, MAX_DOCUMENT};

/// Opens the raw blob of a layer.
pub trait BlobOpener: Send + Sync {
    /// The blob of layer `index` (bottom = 0) as stored.
    fn open(&self, index: usize, layer: &LayerRef) -> Result<Box<dyn Read + Send>, ImageError>;
}

/// An image ready to be flattened.
pub struct Resolved {
    /// Layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// Opens their blobs.
    pub opener: Arc<dyn BlobOpener>,
    /// What was resolved, for the report: source, manifest and config digests.
    pub description: String,
    /// Notes for the user.
    pub notes: Vec<String>,
}

/// Fetches a metadata blob by descriptor (already digest-checked by the caller of
/// [`checked`]).
pub type FetchFn<'a> = dyn FnMut(&Descriptor, &str) -> Result<Vec<u8>, ImageError> + 'a;

/// Checks a fetched document against its descriptor's digest and size.
pub fn checked(desc: &Descriptor, what: &str, bytes: Vec<u8>) -> Result<Vec<u8>, ImageError> {
    let digest = descriptor_digest(desc).map_err(|problem| ImageError::Blob {
        digest: desc.digest().to_string(),
        what: what.into(),
        problem,
    })?;
    if !digest.matches(&bytes) {
        return Err(ImageError::DigestMismatch {
            digest: digest.to_string(),
            what: what.into(),
            actual: Digest::sha256_of(&bytes).to_string(),
            len: bytes.len() as u64,
        });
    }
    if desc.size() != bytes.len() as u64 {
        return Err(ImageError::SizeMismatch {
            digest: digest.to_string(),
            what: what.into(),
            expected: desc.size(),
            actual: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The outcome of following a descriptor to an image manifest.
pub struct ImageManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Layers, bottom first, with diff_ids from the config.
    pub layers: Vec<LayerRef>,
    /// The config's digest.
    pub config: Digest,
    /// `os/arch` from the config.
    pub platform: String,
}

/// Follows `desc` (an index or a manifest) to an image manifest for
/// `platform`, fetching documents with `fetch`, and reads its config.
pub fn resolve_descriptor(
    desc: &Descriptor,
    platform: &Platform,
    fetch: &mut FetchFn<'_>,
) -> Result<ImageManifest, ImageError> {
    let mut desc = desc.clone();
    for _ in 0..4 {
        let what = if media_type(&desc).contains("index") || media_type(&desc).contains("list") {
            "index"
        } else {
            "manifest"
        };
        let bytes = checked(&desc, what, fetch(&desc, what)?)?;
        let doc = parse_document(&bytes, Some(media_type(&desc))).map_err(|problem| {
            ImageError::Blob {
                digest: desc.digest().to_string(),
                what: what.into(),
                problem,
            }
        })?;
        match doc {
            Document::Index(index) => {
                desc = select_platform(&index, platform)
                    .map_err(|problem| ImageError::Blob {
                        digest: desc.digest().to_string(),
                        what: "index".into(),
                        problem,
                    })?
                    .clone();
            }
            Document::Manifest(m) => return manifest_layers(&desc, &m, fetch),
        }
    }
    Err(ImageError::Blob {
        digest: desc.digest().to_string(),
        what: "index".into(),
        problem: "indexes nested more than 4 deep".into(),
    })
}

fn manifest_layers(
    desc: &Descriptor,
    m: &manifest::Manifest,
    fetch: &mut FetchFn<'_>,
) -> Result<ImageManifest, ImageError> {
    let config_desc = m.config();
    let config_bytes = checked(config_desc, "config", fetch(config_desc, "config")?)?;
    let config = parse_config(&config_bytes).map_err(|problem| ImageError::Blob {
        digest: config_desc.digest().to_string(),
        what: "config".into(),
        problem,
    })?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != m.layers().len() {
        return Err(ImageError::Blob {
            digest: desc.digest().to_string(),
            what: "manifest".into(),
            problem: format!(
                "it lists {} layers but its config has {} diff_ids",
                m.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let n = m.layers().len();
    let mut layers = Vec::with_capacity(n);
    for (i, (l, diff)) in m.layers().iter().zip(diff_ids).enumerate() {
        let what = format!("layer {}/{n}", i + 1);
        let bad = |problem: String| ImageError::Blob {
            digest: l.digest().to_string(),
            what: what.clone(),
            problem,
        };
        let compression = LayerCompression::from_media_type(media_type(l)).ok_or_else(|| {
            bad(format!(
                "unknown layer media type {:?}; only OCI/Docker tar layers (plain, gzip, zstd) can be applied",
                media_type(l)
            ))
        })?;
        layers.push(LayerRef {
            digest: descriptor_digest(l).map_err(&bad)?,
            diff_id: Some(Digest::parse(diff).map_err(|e| bad(e.to_string()))?),
            size: Some(l.size()),
            compression: Some(compression),
            what,
            verify: true,
        });
    }
    Ok(ImageManifest {
        digest: descriptor_digest(desc).map_err(|problem| ImageError::Blob {
            digest: desc.digest().to_string(),
            what: "manifest".into(),
            problem,
        })?,
        layers,
        config: descriptor_digest(config_desc).map_err(|problem| ImageError::Blob {
            digest: config_desc.digest().to_string(),
            what: "config".into(),
            problem,
        })?,
        platform: format!("{}/{}", config.os(), config.architecture()),
    })
}

/// The blob path of a digest inside an OCI layout.
fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// Opens layer blobs of a store by path.
struct StoreOpener {
    store: Arc<dyn Store>,
    paths: Vec<String>,
}

impl BlobOpener for StoreOpener {
    fn open(&self, index: usize, layer: &LayerRef) -> Result<Box<dyn Read + Send>, ImageError> {
        let path = self.paths.get(index).ok_or_else(|| ImageError::Blob {
            digest: layer.digest.to_string(),
            what: layer.what.clone(),
            problem: "no such layer".into(),
        })?;
        match self.store.open(path)? {
            Some((r, _)) => Ok(r),
            None => Err(ImageError::Blob {
                digest: layer.digest.to_string(),
                what: layer.what.clone(),
                problem: format!("missing from {} (no {path})", self.store.name()),
            }),
        }
    }
}

fn fetch_from_store<'a>(
    store: &'a dyn Store,
) -> impl FnMut(&Descriptor, &str) -> Result<Vec<u8>, ImageError> + 'a {
    move |desc: &Descriptor, what: &str| {
        let d = descriptor_digest(desc).map_err(|problem| ImageError::Blob {
            digest: desc.digest().to_string(),
            what: what.into(),
            problem,
        })?;
        if desc.size() > MAX_DOCUMENT {
            return Err(ImageError::Blob {
                digest: d.to_string(),
                what: what.into(),
                problem: format!("{} bytes is too large for a {what}", desc.size()),
            });
        }
        store
            .read_small(&blob_path(&d))?
            .ok_or_else(|| ImageError::Blob {
                digest: d.to_string(),
                what: what.into(),
                problem: format!("missing from {}", store.name()),
            })
    }
}

/// Resolves an OCI layout (directory or archive store). `reference` picks a
/// manifest by its `org.opencontainers.image.ref.name` annotation.
pub fn resolve_oci(
    store: Arc<dyn Store>,
    spec: &str,
    reference: Option<&str>,
    platform: &Platform,
) -> Result<Resolved, ImageError> {
    let index_bytes = store
        .read_small("index.json")?
        .ok_or_else(|| ImageError::source(spec, "no index.json: not an OCI image layout"))?;
    if store.read_small("oci-layout")?.is_none() {
        return Err(ImageError::source(
            spec,
            "no oci-layout file: not an OCI image layout",
        ));
    }
    let index: manifest::Index = match parse_document(&index_bytes, None) {
        Ok(Document::Index(i)) => *i,
        Ok(Document::Manifest(_)) => {
            return Err(ImageError::source(
                spec,
                "index.json is a manifest, not an index",
            ))
        }
        Err(problem) => return Err(ImageError::source(spec, format!("index.json: {problem}"))),
    };
    let names = |d: &Descriptor| -> Vec<String> {
        [
            "org.opencontainers.image.ref.name",
            "io.containerd.image.name",
        ]
        .iter()
        .filter_map(|k| d.annotations().as_ref().and_then(|a| a.get(*k)).cloned())
        .collect()
    };
    let chosen: Descriptor = match reference {
        Some(r) => index
            .manifests()
            .iter()
            .find(|d| {
                names(d).iter().any(|n| {
                    n == r || n.ends_with(&format!(":{r}")) || n.ends_with(&format!("/{r}"))
                })
            })
            .cloned()
            .ok_or_else(|| {
                let all: Vec<String> = index.manifests().iter().flat_map(names).collect();
                ImageError::source(
                    spec,
                    format!(
                        "no image named {r:?} in index.json (it has: {})",
                        if all.is_empty() {
                            "no names".into()
                        } else {
                            all.join(", ")
                        }
                    ),
                )
            })?,
        None if index.manifests().len() == 1 => index.manifests()[0].clone(),
        None => {
            // Several entries: a multi-arch layout, or several named images.
            match select_platform(&index, platform) {
                Ok(d) => d.clone(),
                Err(problem) => {
                    let all: Vec<String> = index.manifests().iter().flat_map(names).collect();
                    return Err(ImageError::source(
                        spec,
                        format!(
                            "{problem}; or name one image as {spec}:REF (names: {})",
                            all.join(", ")
                        ),
                    ));
                }
            }
        }
    };
    let m = {
        let mut fetch = fetch_from_store(store.as_ref());
        resolve_descriptor(&chosen, platform, &mut fetch)?
    };
    let paths = m.layers.iter().map(|l| blob_path(&l.digest)).collect();
    Ok(Resolved {
        description: format!(
            "{spec} (manifest {}, config {}, {}, {} layers)",
            m.digest,
            m.config,
            m.platform,
            m.layers.len()
        ),
        layers: m.layers,
        opener: Arc::new(StoreOpener { store, paths }),
        notes: Vec::new(),
    })
}

/// One image of a `docker save` manifest.json.
#[derive(Debug, Deserialize)]
struct SaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Resolves a `docker save` archive (classic `<id>/layer.tar` layout, or the
/// OCI layout newer engines write, both described by `manifest.json`).
pub fn resolve_docker_archive(
    store: Arc<dyn Store>,
    spec: &str,
    reference: Option<&str>,
) -> Result<Resolved, ImageError> {
    let bytes = store
        .read_small("manifest.json")?
        .ok_or_else(|| ImageError::source(spec, "no manifest.json: not a `docker save` archive"))?;
    let entries: Vec<SaveEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::source(spec, format!("manifest.json does not parse: {e}")))?;
    let tags = |e: &SaveEntry| e.repo_tags.clone().unwrap_or_default();
    let entry = match reference {
        Some(r) => {
            let want = if r.contains(':') {
                r.to_string()
            } else {
                format!("{r}:latest")
            };
            entries
                .iter()
                .find(|e| {
                    tags(e)
                        .iter()
                        .any(|t| *t == want || t.ends_with(&format!("/{want}")))
                })
                .ok_or_else(|| {
                    let all: Vec<String> = entries.iter().flat_map(tags).collect();
                    ImageError::source(
                        spec,
                        format!("no image tagged {r:?} (it has: {})", all.join(", ")),
                    )
                })?
        }
        None if entries.len() == 1 => &entries[0],
        None => {
            let all: Vec<String> = entries.iter().flat_map(tags).collect();
            return Err(ImageError::source(
                spec,
                format!(
                    "the archive holds {} images; name one as {spec}:IMAGE (tags: {})",
                    entries.len(),
                    all.join(", ")
                ),
            ));
        }
    };
    // The config's name is its digest: `<hex>.json` (classic) or `blobs/sha256/<hex>`.
    let config_digest = digest_of_path(&entry.config).ok_or_else(|| {
        ImageError::source(
            spec,
            format!("config {:?} is not named by its digest", entry.config),
        )
    })?;
    let config_bytes = store
        .read_small(&entry.config)?
        .ok_or_else(|| ImageError::Blob {
            digest: config_digest.to_string(),
            what: "config".into(),
            problem: format!("missing from {spec}"),
        })?;
    if !config_digest.matches(&config_bytes) {
        return Err(ImageError::DigestMismatch {
            digest: config_digest.to_string(),
            what: "config".into(),
            actual: Digest::sha256_of(&config_bytes).to_string(),
            len: config_bytes.len() as u64,
        });
    }
    let config = parse_config(&config_bytes).map_err(|problem| ImageError::Blob {
        digest: config_digest.to_string(),
        what: "config".into(),
        problem,
    })?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(ImageError::source(
            spec,
            format!(
                "manifest.json lists {} layers but the config has {} diff_ids",
                entry.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let n = entry.layers.len();
    let mut layers = Vec::with_capacity(n);
    for (i, (path, diff)) in entry.layers.iter().zip(diff_ids).enumerate() {
        let what = format!("layer {}/{n}", i + 1);
        let diff = Digest::parse(diff).map_err(|e| ImageError::Blob {
            digest: diff.clone(),
            what: what.clone(),
            problem: e.to_string(),
        })?;
        let layer = match digest_of_path(path).filter(|_| path.starts_with("blobs/")) {
            // OCI-layout save: the blob is named by its digest and may be compressed.
            Some(d) => LayerRef {
                digest: d,
                diff_id: Some(diff),
                size: None,
                compression: None,
                what,
                verify: true,
            },
            // Classic save: `<id>/layer.tar`, an uncompressed tar whose digest is the diff_id.
            None => LayerRef {
                digest: diff,
                diff_id: None,
                size: None,
                compression: Some(LayerCompression::None),
                what,
                verify: true,
            },
        };
        layers.push(layer);
    }
    let tag = tags(entry)
        .first()
        .cloned()
        .unwrap_or_else(|| "untagged".into());
    Ok(Resolved {
        description: format!(
            "{spec} ({tag}, config {config_digest}, {}/{}, {n} layers)",
            config.os(),
            config.architecture()
        ),
        layers,
        opener: Arc::new(StoreOpener {
            store,
            paths: entry.layers.clone(),
        }),
        notes: Vec::new(),
    })
}

/// `blobs/sha256/<hex>` or `<hex>.json` → the digest.
fn digest_of_path(path: &str) -> Option<Digest> {
    let name = path.rsplit('/').next()?;
    let hex = name.strip_suffix(".json").unwrap_or(name);
    let alg = if path.starts_with("blobs/") {
        path.split('/').nth(1)?
    } else {
        "sha256"
    };
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// Resolves a flattened filesystem tarball (`tar:FILE`, e.g. `docker export`
/// output): one layer, no digests to check, whiteout names taken literally.
pub fn resolve_tar(file: &std::path::Path, spec: &str) -> Result<(Resolved, u64), ImageError> {
    struct FileOpener(std::path::PathBuf);
    impl BlobOpener for FileOpener {
        fn open(&self, _: usize, _: &LayerRef) -> Result<Box<dyn Read + Send>, ImageError> {
            let f = super::store::open_regular(&self.0, true)?;
            Ok(Box::new(f))
        }
    }
    let len = super::store::open_regular(file, true)?
        .metadata()
        .map_err(ImageError::io(file))?
        .len();
    // No digest is known; the layer is hashed anyway and compared to itself.
    let placeholder = Digest::sha256_of(spec.as_bytes());
    Ok((
        Resolved {
            layers: vec![LayerRef {
                digest: placeholder,
                diff_id: None,
                size: None,
                compression: None,
                what: "tarball".into(),
                verify: false,
            }],
            opener: Arc::new(FileOpener(file.to_path_buf())),
            description: format!("{spec} (flattened tarball, {len} bytes)"),
            notes: vec![format!(
                "{spec} is a plain tarball: it has no digests, so its content is not verified"
            )],
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths_name_their_digest() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_of_path(&format!("{hex}.json")).unwrap().to_string(),
            format!("sha256:{hex}")
        );
        assert_eq!(
            digest_of_path(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .to_string(),
            format!("sha256:{hex}")
        );
        assert!(digest_of_path("abc/layer.tar").is_none());
    }
}
