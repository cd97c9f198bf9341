//! Authenticode: the image digest and signature parsing/verification.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::keys::DigestAlgorithm;
use sbkit::pe::authenticode;

fuzz_target!(|data: &[u8]| {
    let _ = authenticode::image_digest(data, DigestAlgorithm::Sha256);
    let _ = authenticode::verify(data, None);
});
