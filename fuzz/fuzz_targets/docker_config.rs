//! Docker `config.json` credential lookup (read from a file, as in use).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::rootfs::options::ImageOptions;
use sbkit::rootfs::registry::credentials;

fuzz_target!(|data: &[u8]| {
    // A credential helper named by the input would be run: keep to `auths`.
    if data.windows(4).any(|w| w == b"cred") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, data).expect("write");
    let opts = ImageOptions {
        docker_config: Some(path),
        ..Default::default()
    };
    let _ = credentials(&opts, "registry.example");
    let _ = credentials(&opts, "docker.io");
});
