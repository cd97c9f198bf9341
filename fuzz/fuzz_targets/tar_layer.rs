//! Image layer reading: a tar stream flattened as a container image layer.
#![no_main]
use std::io::Read;

use libfuzzer_sys::fuzz_target;
use sbkit::initrd::Entry;
use sbkit::rootfs::flatten::{FlattenError, Flattener, Sink};
use sbkit::rootfs::options::Limits;

/// Reads and drops every entry's data.
struct Drain;

impl Sink for Drain {
    fn emit(&mut self, _entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), FlattenError> {
        if let Some(r) = data {
            let _ = std::io::copy(r, &mut std::io::sink());
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bytes: 64 << 20,
        max_entries: 10_000,
        max_path_len: 4096,
    };
    let mut f = Flattener::new(Drain, limits, true, 1 << 20);
    if f.layer(0, "fuzz", data, true).is_ok() {
        let _ = f.finish(|_| Ok::<&[u8], String>(data));
    }
});
