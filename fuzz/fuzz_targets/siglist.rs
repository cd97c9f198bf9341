//! EFI signature lists (`db`, `dbx`, `.esl` files): parse, walk, re-encode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::efi::siglist::SignatureDatabase;

fuzz_target!(|data: &[u8]| {
    if let Ok(db) = SignatureDatabase::parse(data) {
        for (_owner, entry) in db.entries() {
            let _ = entry;
        }
        // What parses re-encodes (entry sizes are uniform per list).
        let _ = db.to_bytes();
    }
});
