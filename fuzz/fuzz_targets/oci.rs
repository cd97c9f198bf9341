//! OCI/Docker image manifests, indexes and configs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::rootfs::manifest::{parse_config, parse_document, Document};

fuzz_target!(|data: &[u8]| {
    if let Ok(Document::Manifest(m)) = parse_document(data, None) {
        let _ = m;
    }
    let _ = parse_document(data, Some("application/vnd.oci.image.index.v1+json"));
    let _ = parse_document(
        data,
        Some("application/vnd.docker.distribution.manifest.v2+json"),
    );
    let _ = parse_config(data);
});
