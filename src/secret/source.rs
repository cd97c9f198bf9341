//! Where a secret (backup passphrase, PIN, PUK) comes from: a terminal
//! prompt, a file, or an environment variable — never the command line,
//! where it would land in shell history and `ps` output.
//!
//! On the command line a secret is named by its *source*: `prompt`,
//! `file:/path`, or `env:VARIABLE`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use zeroize::Zeroize;

use super::memory::LockedBytes;

/// Longest secret accepted from any source.
pub const MAX_SECRET_LEN: usize = 1024;

/// Where to read one secret from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Ask on the terminal, without echo (twice for a new secret).
    Prompt,
    /// The contents of a file; one trailing newline is not part of it.
    File(PathBuf),
    /// The value of an environment variable.
    Env(String),
}

/// A secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The source text is not `prompt`, `file:PATH` or `env:VAR`.
    #[error("{what}: the value given ({length} characters, not shown) is not a secret source; write prompt, file:/path/to/file or env:VARIABLE (the secret itself is never accepted on the command line: it would end up in shell history and `ps`)")]
    BadSource {
        /// Which secret.
        what: String,
        /// How long the value was; the value itself may be the secret, so no part of it is kept.
        length: usize,
    },
    /// A prompt was asked for but there is no terminal.
    #[error("{what}: no terminal to prompt on; give it as file:/path or env:VARIABLE")]
    NoTerminal {
        /// Which secret.
        what: String,
    },
    /// The file cannot be read.
    #[error("{what}: cannot read {path}: {cause}")]
    Read {
        /// Which secret.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The environment variable is not set.
    #[error("{what}: environment variable {var} is not set or empty")]
    NoVariable {
        /// Which secret.
        what: String,
        /// The variable.
        var: String,
    },
    /// Empty secret.
    #[error("{what}: empty")]
    Empty {
        /// Which secret.
        what: String,
    },
    /// Longer than [`MAX_SECRET_LEN`].
    #[error("{what}: longer than {MAX_SECRET_LEN} bytes")]
    TooLong {
        /// Which secret.
        what: String,
    },
    /// The two prompts differed.
    #[error("{what}: the two entries differ; nothing was changed")]
    Mismatch {
        /// Which secret.
        what: String,
    },
    /// Reading the terminal failed.
    #[error("{what}: cannot read from the terminal: {cause}")]
    Prompt {
        /// Which secret.
        what: String,
        /// Why.
        cause: std::io::Error,
    },
}

impl FromStr for SecretSource {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "prompt" || s == "tty" {
            return Ok(SecretSource::Prompt);
        }
        if let Some(p) = s.strip_prefix("file:") {
            if !p.is_empty() {
                return Ok(SecretSource::File(PathBuf::from(p)));
            }
        }
        if let Some(v) = s.strip_prefix("env:") {
            if !v.is_empty() && !v.contains('=') {
                return Ok(SecretSource::Env(v.to_string()));
            }
        }
        // The text may be the secret itself: not one character of it is echoed
        // (even a prefix narrows a guess and lands in logs).
        Err(SecretError::BadSource {
            what: "secret".into(),
            length: s.chars().count(),
        })
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Prompt => f.write_str("prompt"),
            SecretSource::File(p) => write!(f, "file:{}", p.display()),
            SecretSource::Env(v) => write!(f, "env:{v}"),
        }
    }
}

fn strip_newline(b: &mut LockedBytes) {
    if b.last() == Some(&b'\n') {
        b.truncate(b.len() - 1);
        if b.last() == Some(&b'\r') {
            b.truncate(b.len() - 1);
        }
    }
}

/// Reads a secret file into locked memory.
pub fn read_file(what: &str, path: &Path) -> Result<LockedBytes, SecretError> {
    let read_err = |source| SecretError::Read {
        what: what.to_string(),
        path: path.to_path_buf(),
        cause: source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_SECRET_LEN as u64 + 2 {
        return Err(SecretError::TooLong {
            what: what.to_string(),
        });
    }
    let mut raw = std::fs::read(path).map_err(read_err)?;
    let mut b = LockedBytes::with_capacity(MAX_SECRET_LEN + 2);
    let fits = b.extend_from_slice(&raw);
    raw.zeroize();
    fits.map_err(|_| SecretError::TooLong {
        what: what.to_string(),
    })?;
    strip_newline(&mut b);
    Ok(b)
}

/// Whether a terminal prompt is possible.
pub fn can_prompt() -> bool {
    std::io::stderr().is_terminal()
        && (std::io::stdin().is_terminal() || std::path::Path::new("/dev/tty").exists())
}

fn prompt_once(what: &str, prompt: &str) -> Result<LockedBytes, SecretError> {
    let typed = rpassword::prompt_password(prompt).map_err(|source| SecretError::Prompt {
        what: what.to_string(),
        cause: source,
    })?;
    let mut bytes = typed.into_bytes();
    let too_long = bytes.len() > MAX_SECRET_LEN;
    let b = LockedBytes::take(std::mem::take(&mut bytes));
    if too_long {
        return Err(SecretError::TooLong {
            what: what.to_string(),
        });
    }
    Ok(b)
}

impl SecretSource {
    /// Reads the secret. `what` names it in prompts and errors ("backup
    /// passphrase"); `new` asks twice at a prompt (a typo in a new
    /// passphrase would lock the backup for good).
    pub fn read(&self, what: &str, new: bool) -> Result<LockedBytes, SecretError> {
        let b = match self {
            SecretSource::Prompt => {
                if !can_prompt() {
                    return Err(SecretError::NoTerminal {
                        what: what.to_string(),
                    });
                }
                let first = prompt_once(what, &format!("{what}: "))?;
                if new {
                    let again = prompt_once(what, &format!("{what} (again): "))?;
                    if first != again {
                        return Err(SecretError::Mismatch {
                            what: what.to_string(),
                        });
                    }
                }
                first
            }
            SecretSource::File(p) => read_file(what, p)?,
            SecretSource::Env(var) => {
                let v = std::env::var_os(var).ok_or_else(|| SecretError::NoVariable {
                    what: what.to_string(),
                    var: var.clone(),
                })?;
                let mut raw = v.into_encoded_bytes();
                let too_long = raw.len() > MAX_SECRET_LEN;
                let b = LockedBytes::take(std::mem::take(&mut raw));
                if too_long {
                    return Err(SecretError::TooLong {
                        what: what.to_string(),
                    });
                }
                if b.is_empty() {
                    return Err(SecretError::NoVariable {
                        what: what.to_string(),
                        var: var.clone(),
                    });
                }
                b
            }
        };
        if b.is_empty() {
            return Err(SecretError::Empty {
                what: what.to_string(),
            });
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_never_echoes_a_secret() {
        assert_eq!(
            "prompt".parse::<SecretSource>().unwrap(),
            SecretSource::Prompt
        );
        assert_eq!(
            "file:/run/pass".parse::<SecretSource>().unwrap(),
            SecretSource::File("/run/pass".into())
        );
        assert_eq!(
            "env:BACKUP_PASS".parse::<SecretSource>().unwrap(),
            SecretSource::Env("BACKUP_PASS".into())
        );
        let e = "hunter2secret"
            .parse::<SecretSource>()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hun"), "no part of the secret is echoed: {e}");
        assert!(e.contains("13 characters, not shown"), "{e}");
        assert!(e.contains("file:"), "{e}");
        assert!("file:".parse::<SecretSource>().is_err());
    }

    #[test]
    fn file_and_env_sources() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "correct horse\n").unwrap();
        let s = SecretSource::File(p.clone())
            .read("passphrase", true)
            .unwrap();
        assert_eq!(&s[..], b"correct horse");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            SecretSource::File(p).read("passphrase", false),
            Err(SecretError::Empty { .. })
        ));
        let e = SecretSource::Env("SBKIT_TEST_SURELY_UNSET_VAR".into())
            .read("PIN", false)
            .unwrap_err();
        assert!(e.to_string().contains("SBKIT_TEST_SURELY_UNSET_VAR"), "{e}");
    }
}
