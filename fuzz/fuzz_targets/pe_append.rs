//! Section appending (UKI assembly) over a hostile base image; what it
//! produces must parse again with every new section on a 4 KiB page.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::pe::{append_sections_with, AppendOptions, NewSection, PeLayout};

fuzz_target!(|data: &[u8]| {
    let sections = [
        NewSection {
            name: ".osrel",
            data: b"ID=fuzz\n",
        },
        NewSection {
            name: ".linux",
            data: &[0x90; 700],
        },
    ];
    let options = AppendOptions {
        clear_nx_compat: data.first().is_some_and(|b| b & 1 == 1),
    };
    if let Ok(out) = append_sections_with(data, &sections, options) {
        let layout = PeLayout::parse(&out).expect("our output parses");
        for s in &layout.sections[layout.sections.len() - 2..] {
            assert_eq!(s.virtual_address % 4096, 0, "{} not on a page", s.name);
        }
    }
});
