//! Image metadata documents: OCI indexes and manifests, their Docker v2
//! equivalents, the image config (only `rootfs.diff_ids` and the platform
//! matter here), media types, and choosing one platform from an index.
//!
//! The document types are `oci-spec`'s (the OCI image-spec's own model);
//! this module adds what a puller needs on top: which kind a fetched
//! document is, the Docker media types, layer compression, and choosing a
//! platform. Parsing is strict where it decides what bytes are trusted
//! (digests, media types, layer lists) and lenient about everything else.

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

/// A content descriptor (OCI image-spec, as `oci-spec` models it; Docker
/// schema 2 descriptors have the same shape).
pub use oci_spec::image::Descriptor;
/// An image config; only `rootfs.diff_ids` and the platform are read here.
pub use oci_spec::image::ImageConfiguration as ImageConfig;
/// An image index or Docker manifest list.
pub use oci_spec::image::ImageIndex as Index;
/// An image manifest (OCI or Docker schema 2).
pub use oci_spec::image::ImageManifest as Manifest;
/// A media type (known OCI types, anything else as `Other`).
pub use oci_spec::image::MediaType;
/// The platform of an index entry.
pub use oci_spec::image::Platform as DescriptorPlatform;

/// The media type of a descriptor, as written.
pub fn media_type(d: &Descriptor) -> &str {
    d.media_type().as_ref()
}

/// The digest of a descriptor in the form blobs are verified with
/// (`oci-spec` checked its syntax while parsing; this also refuses
/// algorithms this tool cannot compute).
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, String> {
    Digest::parse(d.digest().as_ref()).map_err(|e| e.to_string())
}

/// A descriptor for a document fetched by reference (a registry's top
/// manifest): its media type from the Content-Type, its digest and size.
pub fn descriptor_for(media_type: &str, digest: &Digest, size: u64) -> Result<Descriptor, String> {
    let d: oci_spec::image::Digest = digest
        .to_string()
        .parse()
        .map_err(|e: oci_spec::OciSpecError| e.to_string())?;
    Ok(Descriptor::new(MediaType::from(media_type), size, d))
}

fn describe_platform(p: &DescriptorPlatform) -> String {
    match p.variant() {
        Some(v) => format!("{}/{}/{}", p.os(), p.architecture(), v),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// A metadata document (as fetched) is one of these.
#[derive(Clone, Debug)]
pub enum Document {
    /// An index or manifest list (boxed, like the manifest: `oci-spec`'s
    /// types are several hundred bytes each).
    Index(Box<Index>),
    /// An image manifest.
    Manifest(Box<Manifest>),
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
        serde_json::from_slice::<Index>(bytes)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(|e| format!("index does not parse: {e}"))
    } else {
        serde_json::from_slice::<Manifest>(bytes)
            .map(|m| Document::Manifest(Box::new(m)))
            .map_err(|e| format!("manifest does not parse: {e}"))
    }
}

/// Parses an image config.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, String> {
    let c: ImageConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("image config does not parse: {e}"))?;
    if c.rootfs().typ() != "layers" {
        return Err(format!(
            "image config rootfs.type is {:?}, expected \"layers\"",
            c.rootfs().typ()
        ));
    }
    Ok(c)
}

/// Chooses the manifest for `want` from an index: exact os/arch, then the
/// variant when given (an entry without a variant matches any). Attestation
/// entries (`unknown/unknown`) are never chosen.
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Result<&'a Descriptor, String> {
    let manifests = index.manifests();
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == want.os
                    && p.architecture().to_string() == want.architecture
                    && match (&want.variant, p.variant()) {
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
    if let [only] = manifests.as_slice() {
        if only.platform().is_none() {
            return Ok(only);
        }
    }
    let have: Vec<String> = manifests
        .iter()
        .map(|d| {
            d.platform()
                .as_ref()
                .map_or_else(|| "(no platform)".into(), describe_platform)
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
        assert_eq!(
            arm.platform().as_ref().unwrap().architecture().to_string(),
            "arm64"
        );
        assert!(select_platform(&idx, &Platform::parse("linux/amd64").unwrap()).is_ok());
        let e = select_platform(&idx, &Platform::parse("riscv64").unwrap()).unwrap_err();
        assert!(
            e.contains("linux/arm64/v8") && e.contains("--platform"),
            "{e}"
        );
    }

    #[test]
    fn malformed_descriptors_are_refused_when_parsed() {
        let config = |digest: &str, size: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":{size}}},"layers":[]}}"#
            )
        };
        let good = config(&format!("sha256:{}", "a".repeat(64)), "2");
        let Document::Manifest(m) = parse_document(good.as_bytes(), None).unwrap() else {
            panic!("a manifest")
        };
        assert_eq!(m.config().size(), 2);
        assert!(descriptor_digest(m.config()).is_ok());
        for (digest, size) in [
            ("sha256:zz", "1"),
            ("sha256:../../etc/passwd", "1"),
            (&format!("sha256:{}", "A".repeat(64)) as &str, "1"),
            (&format!("sha256:{}", "a".repeat(64)), "-1"),
        ] {
            let e = parse_document(config(digest, size).as_bytes(), None).unwrap_err();
            assert!(
                e.starts_with("manifest does not parse"),
                "{digest} {size}: {e}"
            );
        }
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
