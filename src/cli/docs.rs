//! Man pages and shell completions, generated from the same clap commands
//! the binaries parse with (`cli::tools::binaries`), so they cannot drift.
//!
//! Layout under the output directory, one tree per binary so each image
//! copies exactly its own into `/usr/share`:
//! `BIN/man/man1/BIN[-SUB…].1`, `BIN/bash-completion/completions/BIN`,
//! `BIN/zsh/vendor-completions/_BIN`, `BIN/fish/vendor_completions.d/BIN.fish`.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Generating failed.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct DocsError {
    /// The file or directory.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DocsError + '_ {
    move |source| DocsError {
        path: path.display().to_string(),
        source,
    }
}

/// Where a shell's completion file for `bin` goes, relative to the binary's tree.
pub fn completion_path(shell: Shell, bin: &str) -> PathBuf {
    match shell {
        Shell::Bash => PathBuf::from(format!("bash-completion/completions/{bin}")),
        Shell::Zsh => PathBuf::from(format!("zsh/vendor-completions/_{bin}")),
        Shell::Fish => PathBuf::from(format!("fish/vendor_completions.d/{bin}.fish")),
        other => PathBuf::from(format!("completions/{bin}.{other}")),
    }
}

/// The shells completions are made for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes every binary's man pages (one per command and subcommand) and its
/// bash, zsh and fish completions under `dir`; returns the files written.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let mut written = Vec::new();
    for (bin, cmd) in crate::cli::tools::binaries() {
        let tree = dir.join(bin);
        let man = tree.join("man/man1");
        std::fs::create_dir_all(&man).map_err(io(&man))?;
        clap_mangen::generate_to(cmd.clone(), &man).map_err(io(&man))?;
        let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
            .map_err(io(&man))?
            .flatten()
            .map(|e| e.path())
            .collect();
        pages.sort();
        written.extend(pages);
        for shell in SHELLS {
            let path = tree.join(completion_path(shell, bin));
            let parent = path.parent().unwrap_or(&tree).to_path_buf();
            std::fs::create_dir_all(&parent).map_err(io(&parent))?;
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), bin, &mut text);
            std::fs::write(&path, text).map_err(io(&path))?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binary_gets_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        for bin in ["genkey", "build-uki", "enroll", "sbkit"] {
            assert!(files.contains(&dir.path().join(format!("{bin}/man/man1/{bin}.1"))));
            for shell in SHELLS {
                let f = dir.path().join(bin).join(completion_path(shell, bin));
                assert!(f.is_file(), "{}", f.display());
            }
        }
        assert!(files.contains(&dir.path().join("genkey/man/man1/genkey-token-create.1")));
        assert!(files.contains(&dir.path().join("build-uki/man/man1/build-uki-inspect.1")));
        assert!(files.contains(&dir.path().join("enroll/man/man1/enroll-ovmf.1")));
    }
}
