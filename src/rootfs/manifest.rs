//! Image metadata documents: OCI indexes and manifests, their Docker v2
//! equivalents, the image config (only `rootfs.diff_ids` and the platform
//! matter here), media types, and choosing one platform from an index.
//!
//! Parsing is strict where it decides what bytes are trusted (digests, media
//! types, layer lists) and lenient about everything else.

use serde::Deserialize;

use super::digest::Digest;
use super::options::Platform;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (multi-arch).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The `Accept` header a registry client sends for manifests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerCompression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl LayerCompression {
    /// The compression a layer media type names; `None` for a type that is not a
    /// Linux filesystem layer this tool can apply.
    pub fn from_media_type(mt: &str) -> Option<LayerCompression> {
        // The non-distributable ("foreign") variants are the same formats;
        // their blobs are fetched the same way when the source has them.
        Some(match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => LayerCompression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => LayerCompression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                LayerCompression::Zstd
            }
            _ => return None,
        })
    }

    /// Guesses from the first bytes (for `docker save` layers, which carry no media type).
    pub fn sniff(head: &[u8]) -> LayerCompression {
        if head.starts_with(&[0x1f, 0x8b]) {
            LayerCompression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            LayerCompression::Zstd
        } else {
            LayerCompression::None
        }
    }
}

/// A content descriptor.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type of the referenced content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
    /// Annotations (the OCI layout's `org.opencontainers.image.ref.name`).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Descriptor {
    /// The parsed digest; `what` names the document for the message.
    pub fn digest(&self) -> Result<Digest, String> {
        Digest::parse(&self.digest).map_err(|e| e.to_string())
    }
}

/// The platform of an index entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct DescriptorPlatform {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    #[serde(default)]
    pub variant: Option<String>,
}

impl DescriptorPlatform {
    fn describe(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// An image index or manifest list.
#[derive(Clone, Debug, Deserialize)]
pub struct Index {
    /// `2`.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The entries.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    /// `2`.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The media type, when the document states it.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config this tool reads.
#[derive(Clone, Debug, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Layer digests of the uncompressed tars.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, Deserialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layer tars, bottom first.
    pub diff_ids: Vec<String>,
}

/// A metadata document (as fetched) is one of these.
#[derive(Clone, Debug)]
pub enum Document {
    /// An index or manifest list.
    Index(Index),
    /// An image manifest.
    Manifest(Manifest),
}

/// Parses a manifest or index, by its declared media type (`hint`, e.g. a
/// descriptor's or a Content-Type) or, failing that, by its shape.
pub fn parse_document(bytes: &[u8], hint: Option<&str>) -> Result<Document, String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u32>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    if probe.schema_version != Some(2) {
        return Err(format!(
            "schemaVersion {:?} is not supported (only schema 2 manifests; Docker schema 1 images must be re-pushed by a current engine)",
            probe.schema_version
        ));
    }
    let declared = probe
        .media_type
        .as_deref()
        .or(hint.filter(|h| !h.is_empty() && *h != "application/json"));
    let is_index = match declared {
        Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        Some(other) => return Err(format!("unknown manifest media type {other:?}")),
        None => probe.manifests.is_some() && probe.config.is_none(),
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(Document::Index)
            .map_err(|e| format!("index does not parse: {e}"))
    } else {
        serde_json::from_slice(bytes)
            .map(Document::Manifest)
            .map_err(|e| format!("manifest does not parse: {e}"))
    }
}

/// Parses an image config.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, String> {
    let c: ImageConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("image config does not parse: {e}"))?;
    if c.rootfs.kind != "layers" {
        return Err(format!(
            "image config rootfs.type is {:?}, expected \"layers\"",
            c.rootfs.kind
        ));
    }
    Ok(c)
}

/// Chooses the manifest for `want` from an index: exact os/arch, then the
/// variant when given (an entry without a variant matches any). Attestation
/// entries (`unknown/unknown`) are never chosen.
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Result<&'a Descriptor, String> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == want.os
                    && p.architecture == want.architecture
                    && match (&want.variant, &p.variant) {
                        (Some(w), Some(v)) => w == v,
                        _ => true,
                    }
            })
        })
        .collect();
    if let Some(d) = candidates.first() {
        return Ok(d);
    }
    // A single entry without a platform (an OCI layout of one image) is that image.
    if index.manifests.len() == 1 && index.manifests[0].platform.is_none() {
        return Ok(&index.manifests[0]);
    }
    let have: Vec<String> = index
        .manifests
        .iter()
        .map(|d| {
            d.platform
                .as_ref()
                .map_or_else(|| "(no platform)".into(), |p| p.describe())
        })
        .collect();
    Err(format!(
        "no image for platform {want} in the index (it has: {}); choose one with --platform or --arch",
        have.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>) -> String {
        let v = variant.map_or(String::new(), |v| format!(",\"variant\":\"{v}\""));
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"{v}}}}}"#,
            "a".repeat(64)
        )
    }

    #[test]
    fn index_selection_matches_platform_and_variant() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{},{}]}}"#,
            desc("amd64", None),
            desc("arm64", Some("v8")),
            desc("unknown", None)
        );
        let Document::Index(idx) = parse_document(text.as_bytes(), None).unwrap() else {
            panic!("an index")
        };
        let arm = select_platform(&idx, &Platform::parse("linux/arm64/v8").unwrap()).unwrap();
        assert_eq!(arm.platform.as_ref().unwrap().architecture, "arm64");
        assert!(select_platform(&idx, &Platform::parse("linux/amd64").unwrap()).is_ok());
        let e = select_platform(&idx, &Platform::parse("riscv64").unwrap()).unwrap_err();
        assert!(
            e.contains("linux/arm64/v8") && e.contains("--platform"),
            "{e}"
        );
    }

    #[test]
    fn unknown_media_types_and_schema1_are_refused() {
        let e = parse_document(br#"{"schemaVersion":1}"#, None).unwrap_err();
        assert!(e.contains("schema"), "{e}");
        let e = parse_document(
            br#"{"schemaVersion":2,"mediaType":"application/x-nope","config":{}}"#,
            None,
        )
        .unwrap_err();
        assert!(e.contains("x-nope"), "{e}");
        assert!(parse_document(b"{not json", None).is_err());
        assert_eq!(
            LayerCompression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(LayerCompression::Zstd)
        );
        assert_eq!(LayerCompression::from_media_type("text/plain"), None);
    }
}
