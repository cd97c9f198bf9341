//! Where a token PIN comes from, and what the token says about retries.
//!
//! Never the command line: the environment (`SBKIT_PKCS11_PIN`), a file
//! (`SBKIT_PKCS11_PIN_FILE`, or the URI's `pin-source=`), else a prompt on
//! the terminal. PINs live in [`Zeroizing`] buffers and are wiped when dropped.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Environment variable holding the PIN itself.
pub const PIN_ENV: &str = "SBKIT_PKCS11_PIN";
/// Environment variable naming a file that holds the PIN.
pub const PIN_FILE_ENV: &str = "SBKIT_PKCS11_PIN_FILE";

/// A PIN, wiped from memory when dropped.
pub type Pin = Zeroizing<Vec<u8>>;

/// Where a PIN came from; decides whether it may be asked for again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinOrigin {
    /// `SBKIT_PKCS11_PIN`.
    Env,
    /// A file: `SBKIT_PKCS11_PIN_FILE` or the URI's `pin-source`.
    File(PathBuf),
    /// Typed at the terminal prompt.
    Terminal,
}

impl std::fmt::Display for PinOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinOrigin::Env => write!(f, "${PIN_ENV}"),
            PinOrigin::File(p) => write!(f, "PIN file {}", p.display()),
            PinOrigin::Terminal => f.write_str("the PIN typed at the prompt"),
        }
    }
}

/// A PIN could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// No source gave a PIN and there is no terminal to ask on.
    #[error("the token {token} needs a PIN and there is no terminal to ask for it: set {PIN_ENV}, or {PIN_FILE_ENV} to a file holding the PIN, or add pin-source=<file> to the URI (never pin-value=)")]
    NoSource {
        /// The token, for the message.
        token: String,
    },
    /// The PIN file cannot be read.
    #[error("cannot read the PIN file {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The PIN file is empty.
    #[error("the PIN file {0} is empty: write the PIN into it (a trailing newline is ignored)")]
    EmptyFile(PathBuf),
    /// `pin-source=` names something other than a file.
    #[error(
        "pin-source={0:?} is not supported: use a file path or a file: URI (commands are not run)"
    )]
    UnsupportedSource(String),
    /// The terminal prompt failed.
    #[error("cannot read the PIN from the terminal: {0}")]
    Prompt(std::io::Error),
}

/// The file a `pin-source=` value names (`file:` URI or plain path).
pub fn pin_source_path(source: &str) -> Result<PathBuf, PinError> {
    if let Some(rest) = source.strip_prefix("file://") {
        // file:///path (empty authority) or file://localhost/path.
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if path.starts_with('/') {
            return Ok(PathBuf::from(path));
        }
        return Err(PinError::UnsupportedSource(source.to_string()));
    }
    if let Some(path) = source.strip_prefix("file:") {
        return Ok(PathBuf::from(path));
    }
    if source.starts_with('|') || source.contains("://") || source.is_empty() {
        return Err(PinError::UnsupportedSource(source.to_string()));
    }
    Ok(PathBuf::from(source))
}

/// Reads a PIN file; one trailing newline (`\n` or `\r\n`) is not part of the PIN.
pub fn read_pin_file(path: &Path) -> Result<Pin, PinError> {
    let mut bytes = Zeroizing::new(std::fs::read(path).map_err(|source| PinError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?);
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(PinError::EmptyFile(path.to_path_buf()));
    }
    Ok(bytes)
}

/// A PIN from the non-interactive sources, in order: `SBKIT_PKCS11_PIN`,
/// `SBKIT_PKCS11_PIN_FILE`, the URI's `pin-source`. `None` if none is set.
///
/// An empty `SBKIT_PKCS11_PIN` counts as unset, as `docker run -e VAR=` gives.
pub fn configured_pin(uri_pin_source: Option<&str>) -> Result<Option<(Pin, PinOrigin)>, PinError> {
    if let Some(v) = std::env::var_os(PIN_ENV) {
        let pin = Zeroizing::new(v.into_encoded_bytes());
        if !pin.is_empty() {
            return Ok(Some((pin, PinOrigin::Env)));
        }
    }
    if let Some(path) = std::env::var_os(PIN_FILE_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return Ok(Some((read_pin_file(&path)?, PinOrigin::File(path))));
    }
    if let Some(source) = uri_pin_source {
        let path = pin_source_path(source)?;
        return Ok(Some((read_pin_file(&path)?, PinOrigin::File(path))));
    }
    Ok(None)
}

/// Whether a terminal prompt is possible: someone must be able to type
/// (stdin) and see the prompt's context (stderr).
pub fn can_prompt() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks for the PIN on the terminal, without echo.
pub fn prompt_pin(prompt: &str, token: &str) -> Result<Pin, PinError> {
    if !can_prompt() {
        return Err(PinError::NoSource {
            token: token.to_string(),
        });
    }
    let typed = Zeroizing::new(rpassword::prompt_password(prompt).map_err(PinError::Prompt)?);
    Ok(Zeroizing::new(typed.as_bytes().to_vec()))
}

/// What a token's flags say about the user PIN's retry counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryState {
    /// CKF_USER_PIN_COUNT_LOW: a wrong PIN was entered since the last right one.
    pub count_low: bool,
    /// CKF_USER_PIN_FINAL_TRY: one wrong PIN more locks the PIN.
    pub final_try: bool,
    /// CKF_USER_PIN_LOCKED: the PIN is locked.
    pub locked: bool,
}

impl RetryState {
    /// Human description of the retry counter, as the token reports it.
    pub fn describe(&self) -> &'static str {
        if self.locked {
            "the PIN is locked (no tries remain)"
        } else if self.final_try {
            "one try remains: a wrong PIN now locks the PIN"
        } else if self.count_low {
            "the retry counter is low (a wrong PIN was entered before; PKCS#11 does not say how \
             many tries remain, only that it is more than one)"
        } else {
            "the token reports no retry-counter flag (tries are not low, or the token does not \
             count: SoftHSM2 never locks)"
        }
    }
}

/// What to do before logging in, given the token's retry state.
#[derive(Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Go ahead.
    Proceed,
    /// Go ahead, after printing this warning.
    Warn(String),
    /// Do not try a PIN.
    Refuse(RefuseReason),
}

/// Why a login is not attempted.
#[derive(Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The PIN is locked.
    Locked,
    /// The next wrong PIN would lock it and that was not allowed.
    FinalTry,
}

/// Decides whether to try a PIN: never on a locked PIN, on the final try
/// only when `allow_final_try`, and with a warning when the counter is low.
pub fn retry_decision(state: RetryState, allow_final_try: bool, token: &str) -> RetryDecision {
    if state.locked {
        RetryDecision::Refuse(RefuseReason::Locked)
    } else if state.final_try && !allow_final_try {
        RetryDecision::Refuse(RefuseReason::FinalTry)
    } else if state.final_try {
        RetryDecision::Warn(format!(
            "token {token}: one PIN try remains; a wrong PIN now locks it (trying, as allowed)"
        ))
    } else if state.count_low {
        RetryDecision::Warn(format!(
            "token {token}: {}; check the PIN before the token locks",
            state.describe()
        ))
    } else {
        RetryDecision::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_file_drops_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "1234\r\n").unwrap();
        assert_eq!(&read_pin_file(&p).unwrap()[..], b"1234");
        std::fs::write(&p, "12 34\n\n").unwrap();
        assert_eq!(&read_pin_file(&p).unwrap()[..], b"12 34\n");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(read_pin_file(&p), Err(PinError::EmptyFile(_))));
        let e = read_pin_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn pin_source_forms() {
        assert_eq!(
            pin_source_path("/run/pin").unwrap(),
            PathBuf::from("/run/pin")
        );
        assert_eq!(
            pin_source_path("file:/run/pin").unwrap(),
            PathBuf::from("/run/pin")
        );
        assert_eq!(
            pin_source_path("file:///run/pin").unwrap(),
            PathBuf::from("/run/pin")
        );
        assert_eq!(
            pin_source_path("file://localhost/run/pin").unwrap(),
            PathBuf::from("/run/pin")
        );
        assert!(pin_source_path("|/usr/bin/get-pin").is_err());
        assert!(pin_source_path("https://example.org/pin").is_err());
    }

    #[test]
    fn retry_policy() {
        let t = "mkosi";
        assert_eq!(
            retry_decision(RetryState::default(), false, t),
            RetryDecision::Proceed
        );
        let low = RetryState {
            count_low: true,
            ..Default::default()
        };
        assert!(matches!(
            retry_decision(low, false, t),
            RetryDecision::Warn(_)
        ));
        let last = RetryState {
            count_low: true,
            final_try: true,
            locked: false,
        };
        assert_eq!(
            retry_decision(last, false, t),
            RetryDecision::Refuse(RefuseReason::FinalTry)
        );
        assert!(
            matches!(retry_decision(last, true, t), RetryDecision::Warn(w) if w.contains("one PIN try"))
        );
        let locked = RetryState {
            locked: true,
            ..Default::default()
        };
        assert_eq!(
            retry_decision(locked, true, t),
            RetryDecision::Refuse(RefuseReason::Locked)
        );
    }
}
