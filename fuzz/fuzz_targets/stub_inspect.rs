//! systemd-stub inspection, PCR 11 prediction and `build-uki inspect` over
//! a hostile UKI.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::uki::pcr::{predict_uki, PhasePath, ALL_BANKS};
use sbkit::uki::stub;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = stub::inspect(data) {
        let set = info.measured.map(|m| m.sections).unwrap_or_else(|| {
            stub::MEASUREMENT_ORDER
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let _ = predict_uki(data, &set, &ALL_BANKS, &[PhasePath::empty()]);
    }
    let _ = stub::find_section_tables(data);
    let _ = sbkit::build_uki::inspect::inspect(data, None);
});
