//! PKCS#11 URIs (RFC 7512) as given to `--sb-key` and friends.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::token::{is_pkcs11_uri, Pkcs11Uri};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = is_pkcs11_uri(s);
        let _ = Pkcs11Uri::parse(s);
    }
});
