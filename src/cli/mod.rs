//! Pieces the binaries share: reproducible timestamps, progress bars, error output.

pub mod progress;

use std::process::ExitCode;

use time::OffsetDateTime;

/// The build time: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn build_timestamp() -> anyhow::Result<OffsetDateTime> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            let secs: i64 = v.trim().parse().map_err(|_| {
                anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds since 1970; unset it or fix it")
            })?;
            OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v} is out of range"))
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
