//! PE/COFF reading: headers, every section as mapped, alignment facts, the
//! sections a UKI reader sees, and the kernel release field.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::pe::PeLayout;

fuzz_target!(|data: &[u8]| {
    if let Ok(layout) = PeLayout::parse_headers(data) {
        let _ = layout.alignment_report();
        let _ = layout.certificate_table(data);
        for s in &layout.sections {
            let _ = layout.section_file(data, s);
            if let Ok(c) = layout.section_content(data, s) {
                let mut n = 0u64;
                c.feed(|b| n += b.len() as u64);
                assert_eq!(n, c.len());
            }
            let _ = layout.section_data(data, s);
        }
    }
    let _ = sbkit::uki::pcr::read_pe_sections(data);
    let _ = sbkit::uki::kernel::kernel_release(data);
    let _ = sbkit::media::loader::sdboot_version(data);
});
