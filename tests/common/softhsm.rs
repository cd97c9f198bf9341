//! A private SoftHSM2 token store for tests that run our binaries: every
//! command gets the store's environment explicitly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::tools::{require_tool, run_ok};

/// The user PIN of test tokens.
pub const USER_PIN: &str = "246810";
const SO_PIN: &str = "13579135";
/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A token store with one token labelled `label`.
pub struct SoftHsm {
    conf: PathBuf,
    label: String,
}

impl SoftHsm {
    /// Creates the store in `dir` and initialises the token.
    pub fn create(dir: &Path, label: &str) -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} missing: run scripts/install-deps.sh (softhsm2)"
        );
        let tokens = dir.join("tokens");
        fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm {
            conf,
            label: label.to_string(),
        };
        run_ok(hsm.command("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            USER_PIN,
            "--so-pin",
            SO_PIN,
        ]));
        hsm
    }

    /// A command with this store's environment.
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(if tool.contains('/') {
            PathBuf::from(tool)
        } else {
            require_tool(tool)
        });
        self.apply(&mut c);
        c
    }

    /// Sets the store, module and PIN environment on `c`.
    pub fn apply(&self, c: &mut Command) {
        c.env("SOFTHSM2_CONF", &self.conf)
            .env("SBKIT_PKCS11_MODULE", MODULE)
            .env("SBKIT_PKCS11_PIN", USER_PIN);
    }

    /// Imports a PEM private key (and its public key) as `label` with CKA_ID `id_hex`.
    pub fn import(&self, key: &Path, label: &str, id_hex: &str) {
        run_ok(
            self.command("softhsm2-util")
                .arg("--import")
                .arg(key)
                .args([
                    "--label",
                    label,
                    "--id",
                    id_hex,
                    "--token",
                    &self.label,
                    "--pin",
                    USER_PIN,
                ]),
        );
    }
}
