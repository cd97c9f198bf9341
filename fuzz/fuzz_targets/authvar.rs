//! Authenticated variables (`.auth` files, EFI_VARIABLE_AUTHENTICATION_2).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::efi::authvar::AuthenticatedVariable;

fuzz_target!(|data: &[u8]| {
    let _ = AuthenticatedVariable::looks_like(data);
    if let Ok(v) = AuthenticatedVariable::parse(data) {
        let _ = v.to_bytes();
    }
});
