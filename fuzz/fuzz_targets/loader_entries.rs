//! Boot loader entries from user strings (`--single-efi-cmdline "Title: args"`,
//! `--extra-cmdline`, titles), rendered as `loader/entries/*.conf`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sbkit::uki::entries::{entry_conf, plan_entries, slug, CmdlinePlan};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = s.split('\u{1}');
    let name = parts.next().unwrap_or_default();
    let title = parts.next().unwrap_or_default();
    let plan = CmdlinePlan {
        base: parts.next().unwrap_or_default().to_string(),
        extend: parts.next().map(str::to_string),
        extra: parts.next().map(str::to_string).into_iter().collect(),
        single: parts.map(str::to_string).collect(),
    };
    let _ = slug(title);
    if let Ok(entries) = plan_entries(name, title, &plan) {
        for e in &entries {
            let _ = entry_conf(e, Some("1"), true);
        }
    }
});
