//! Encrypted key backups: format detection, openssl-enc and age decryption.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::backup;

fuzz_target!(|data: &[u8]| {
    let _ = backup::openssl_enc::decrypt(data, b"fuzz passphrase");
    let _ = backup::decrypt(data, b"fuzz passphrase", "fuzz");
});
