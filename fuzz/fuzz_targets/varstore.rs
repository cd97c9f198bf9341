//! edk2 (OVMF) variable stores: parse, then write back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::efi::varstore::VarStore;

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = VarStore::parse(data.to_vec()) {
        let _ = store.used();
        let _ = store.to_bytes();
    }
});
