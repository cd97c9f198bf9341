//! Names and values that become file names or lines of a configuration file,
//! checked in one place before anything is written.
//!
//! An entry name becomes `<name>.efi` and `<name>.conf` in the output
//! directory and on the ESP; a title, a version and a command line become
//! lines of `loader/entries/<name>.conf`, which systemd-boot reads one line
//! per key. So a `/` or `..` in a name would write outside the output
//! directory, and a newline in a value would add a line (`efi /EFI/evil.efi`)
//! that the boot loader obeys. Every such value passes through here; key and
//! layout names that become file names use [`file_stem`] too.

/// The longest file stem accepted: leaves room for the suffixes build-uki
/// adds (`_extra12`, `_debug_shell`, `.conf`) under the usual 255-byte limit.
pub const MAX_NAME_LEN: usize = 128;

/// The longest one-line configuration value accepted (a title or a version).
pub const MAX_LINE_LEN: usize = 1024;

/// The kernel's command-line limit on x86 (`COMMAND_LINE_SIZE`, including the
/// terminating NUL): a longer `.cmdline` is cut by the kernel.
pub const KERNEL_CMDLINE_LIMIT: usize = 2048;

/// The longest command line accepted at all; between
/// [`KERNEL_CMDLINE_LIMIT`] and this a warning is given instead.
pub const MAX_CMDLINE_LEN: usize = 64 * 1024;

/// A name or value that cannot be used; the message names the flag, the
/// problem and the fix.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?}: {problem}; {fix}")]
pub struct BadName {
    /// Which flag or field (`-n`, `--boot-branding`, `os-release PRETTY_NAME`).
    pub what: String,
    /// The value, as given (shown escaped).
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

fn bad(what: &str, value: &str, problem: impl Into<String>, fix: &str) -> BadName {
    BadName {
        what: what.to_string(),
        value: value.to_string(),
        problem: problem.into(),
        fix: fix.to_string(),
    }
}

/// Characters allowed in a file stem besides ASCII letters and digits.
const NAME_PUNCTUATION: &[char] = &['-', '_', '.', '+', '@'];

/// Checks a name that becomes a file name (an entry name, a key name, a
/// layout name): ASCII letters, digits and `- _ . + @`, not starting with
/// `.` (no hidden files, no `.` or `..`), at most [`MAX_NAME_LEN`] bytes.
pub fn file_stem(what: &str, value: &str) -> Result<(), BadName> {
    const FIX: &str = "use letters, digits and - _ . + @ only (e.g. norole, recovery-2)";
    if value.is_empty() {
        return Err(bad(what, value, "is empty", FIX));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(bad(
            what,
            value,
            format!("is {} bytes long, over {MAX_NAME_LEN}", value.len()),
            "use a shorter name",
        ));
    }
    if let Some(c) = value.chars().find(|c| *c == '/' || *c == '\\') {
        return Err(bad(
            what,
            value,
            format!("contains the path separator {c:?}: a name must not choose a directory"),
            FIX,
        ));
    }
    if value.starts_with('.') {
        return Err(bad(
            what,
            value,
            "starts with '.' (a hidden file, or . and .. which name directories)",
            FIX,
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !NAME_PUNCTUATION.contains(c))
    {
        return Err(bad(what, value, format!("contains {c:?}"), FIX));
    }
    Ok(())
}

/// Checks a value written as one line of a configuration file (a title, a
/// version): no control characters (a newline would start a new line that
/// the boot loader reads as its own key), at most [`MAX_LINE_LEN`] bytes.
pub fn config_line(what: &str, value: &str) -> Result<(), BadName> {
    if value.len() > MAX_LINE_LEN {
        return Err(bad(
            what,
            value,
            format!("is {} bytes long, over {MAX_LINE_LEN}", value.len()),
            "shorten it",
        ));
    }
    no_control(what, value)
}

/// Checks a kernel command line (embedded in `.cmdline`, and with
/// `--include-cmdline-in-config` written as a `cmdline` line): no control
/// characters, at most [`MAX_CMDLINE_LEN`] bytes. Returns a warning when it
/// is longer than the kernel keeps ([`KERNEL_CMDLINE_LIMIT`]).
pub fn cmdline(what: &str, value: &str) -> Result<Option<String>, BadName> {
    if value.len() > MAX_CMDLINE_LEN {
        return Err(bad(
            what,
            value,
            format!("is {} bytes long, over {MAX_CMDLINE_LEN}", value.len()),
            "shorten it (the kernel keeps at most 2047 bytes)",
        ));
    }
    no_control(what, value)?;
    Ok((value.len() >= KERNEL_CMDLINE_LIMIT).then(|| {
        format!(
            "{what} is {} bytes long: the kernel keeps at most {} bytes of its command line (COMMAND_LINE_SIZE on x86) and cuts the rest; shorten it",
            value.len(),
            KERNEL_CMDLINE_LIMIT - 1
        )
    }))
}

fn no_control(what: &str, value: &str) -> Result<(), BadName> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(bad(
            what,
            value,
            format!(
                "contains the control character {c:?}: in a loader entry it would start a line of its own"
            ),
            "write it on one line, without newlines, tabs or other control characters",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_stay_in_their_directory() {
        for ok in ["norole", "recovery-2", "a.b_c+d@e", "X"] {
            assert_eq!(file_stem("-n", ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../escape",
            "a/b",
            "a\\b",
            ".hidden",
            "a\nb",
            "a b",
            "é",
            "a\0b",
        ] {
            let e = file_stem("-n", bad).unwrap_err();
            assert!(e.to_string().starts_with("-n "), "{e}");
            assert!(e.to_string().contains("; "), "{e}");
        }
        assert!(file_stem("-n", &"a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(file_stem("-n", &"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn config_lines_hold_one_line() {
        assert!(config_line("--boot-branding", "My OS 1.0 (ÿ)").is_ok());
        let e = config_line("--boot-branding", "x\nefi /EFI/evil.efi").unwrap_err();
        assert!(e.to_string().contains("'\\n'"), "{e}");
        assert!(config_line("t", "a\rb").is_err());
        assert!(config_line("t", &"a".repeat(MAX_LINE_LEN + 1)).is_err());
    }

    #[test]
    fn long_command_lines_warn_and_newlines_refuse() {
        assert_eq!(cmdline("--cmdline", "console=ttyS0"), Ok(None));
        assert_eq!(cmdline("--cmdline", &"a".repeat(2047)), Ok(None));
        let w = cmdline("--cmdline", &"a".repeat(2048)).unwrap().unwrap();
        assert!(w.contains("2047"), "{w}");
        assert!(cmdline("--cmdline", "quiet\nefi /EFI/evil.efi").is_err());
        assert!(cmdline("--cmdline", &"a".repeat(MAX_CMDLINE_LEN + 1)).is_err());
    }
}
