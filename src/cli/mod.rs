//! The command-line side of the suite: each binary's grammar and run (one
//! module per tool, clap definitions with their path arguments marked, see
//! [`path_arg`]), man pages and completions generated from them ([`docs`]),
//! and the pieces the binaries share: reproducible timestamps, progress
//! bars, error output.

pub mod build_uki;
pub mod docs;
pub mod enroll;
pub mod genkey;
pub mod image;
pub mod path_arg;
pub mod sbkit;
pub mod test_boot;
pub mod tools;

pub mod progress;

use std::process::ExitCode;

use time::OffsetDateTime;

/// The last second certificates can express (9999-12-31T23:59:59Z, the end of GeneralizedTime).
pub const MAX_SOURCE_DATE_EPOCH: i64 = 253_402_300_799;

/// The build time: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn build_timestamp() -> anyhow::Result<OffsetDateTime> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            let secs: i64 = v.trim().parse().map_err(|_| {
                anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds since 1970; unset it or fix it")
            })?;
            if !(0..=MAX_SOURCE_DATE_EPOCH).contains(&secs) {
                anyhow::bail!(
                    "SOURCE_DATE_EPOCH={secs} is out of range: it must be between 0 (1970-01-01) and \
                     {MAX_SOURCE_DATE_EPOCH} (9999-12-31); unset it or set it to a time in that range, \
                     e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)"
                );
            }
            OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={secs} is out of range; unset it"))
        }
        _ => Ok(OffsetDateTime::now_utc()),
    }
}

/// A spinner on stderr; hidden when stderr is not a terminal or `quiet` is set.
pub fn spinner(quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Prints warnings to stderr.
pub fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Prints an error chain to stderr and returns the failure exit code.
pub fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

/// A container for several progress bars on stderr; hidden when stderr is not a terminal or `quiet` is set.
pub fn multi_progress(quiet: bool) -> indicatif::MultiProgress {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    indicatif::MultiProgress::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case sets SOURCE_DATE_EPOCH in this process: one test, in sequence.
    #[test]
    fn source_date_epoch_out_of_range_says_so_with_the_fix() {
        for bad in ["-1", "-86400", "253402300800", "999999999999999"] {
            std::env::set_var("SOURCE_DATE_EPOCH", bad);
            let e = build_timestamp().unwrap_err().to_string();
            assert!(
                e.contains("out of range") && e.contains("unset it"),
                "{bad}: {e}"
            );
        }
        std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
        assert_eq!(build_timestamp().unwrap().unix_timestamp(), 1_700_000_000);
        std::env::set_var("SOURCE_DATE_EPOCH", "soon");
        assert!(build_timestamp()
            .unwrap_err()
            .to_string()
            .contains("whole number"));
        std::env::remove_var("SOURCE_DATE_EPOCH");
    }
}
