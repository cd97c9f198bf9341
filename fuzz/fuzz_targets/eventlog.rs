//! TPM firmware event logs (both formats) and the driver images they name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::efi::eventlog::{device_path_text, EventLog};

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = EventLog::parse(data) {
        let _ = log.driver_images();
    }
    let _ = device_path_text(data);
});
