//! EFI signature lists (`db`, `dbx`, `.esl` files): parse, walk, re-encode;
//! and the PCR 7 planner's append merge (edk2's rule) over the same bytes.
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
    // The first half as a variable's value, the second as appended lists.
    let (existing, appended) = data.split_at(data.len() / 2);
    let _ = sbkit::tpm::pcr7::append_signature_lists("db", existing, appended);
});
