//! The terminal side of [`crate::progress`]: each library task becomes an
//! indicatif bar (a known total) or spinner (none yet) on stderr, all in one
//! `MultiProgress` so concurrent tasks stack instead of overwriting each other.

use crate::progress::{Progress, Task, Unit};

/// Progress bars on stderr; hidden when stderr is not a terminal or `quiet` is set.
pub struct Bars {
    multi: indicatif::MultiProgress,
}

impl Bars {
    /// Bars on stderr, or hidden ones for `--json` and non-terminals.
    pub fn new(quiet: bool) -> Self {
        Bars {
            multi: super::multi_progress(quiet),
        }
    }
}

struct Bar {
    bar: indicatif::ProgressBar,
    unit: Unit,
    styled_as_bar: std::sync::atomic::AtomicBool,
}

fn style(unit: Unit, with_total: bool) -> indicatif::ProgressStyle {
    let template = match (unit, with_total) {
        (Unit::Bytes, true) => "{prefix} {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
        (Unit::Bytes, false) => "{spinner} {prefix} {msg} {bytes}",
        (Unit::Items, true) => "{prefix} {msg} {bar:30} {pos}/{len}",
        (Unit::Items, false) => "{spinner} {prefix} {msg}: {pos}",
    };
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

impl Task for Bar {
    fn set_total(&self, total: u64) {
        self.bar.set_length(total);
        // A spinner becomes a bar once the total is known.
        if total > 0
            && !self
                .styled_as_bar
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.bar.set_style(style(self.unit, true));
        }
    }
    fn set_done(&self, done: u64) {
        self.bar.set_position(done);
    }
    fn advance(&self, by: u64) {
        self.bar.inc(by);
    }
    fn set_message(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn start(&self, label: &str, unit: Unit, total: Option<u64>) -> Box<dyn Task> {
        let with_total = total.is_some_and(|t| t > 0);
        let bar = self.multi.add(match total {
            Some(t) if t > 0 => indicatif::ProgressBar::new(t),
            _ => indicatif::ProgressBar::new_spinner(),
        });
        bar.set_style(style(unit, with_total));
        bar.set_prefix(label.to_string());
        Box::new(Bar {
            bar,
            unit,
            styled_as_bar: std::sync::atomic::AtomicBool::new(with_total),
        })
    }
}
