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
        hsm.add_token(label);
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

    /// Initialises one more token labelled `label` in the first free slot
    /// (two YubiKeys are two tokens with the same label).
    pub fn add_token(&self, label: &str) {
        run_ok(self.command("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            USER_PIN,
            "--so-pin",
            SO_PIN,
        ]));
    }

    /// Serial numbers of the initialised tokens labelled `label`, as
    /// `softhsm2-util --show-slots` prints them.
    pub fn serials(&self, label: &str) -> Vec<String> {
        let out = run_ok(self.command("softhsm2-util").arg("--show-slots"));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut serials = Vec::new();
        let mut serial = String::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix("Serial number:") {
                serial = s.trim().to_string();
            }
            if let Some(l) = line.strip_prefix("Label:") {
                if l.trim() == label && !serial.is_empty() {
                    serials.push(serial.clone());
                }
            }
        }
        serials
    }

    /// `pkcs11-tool` on this store's token with serial number `serial`.
    /// Tokens that share a label are told apart by slot: pkcs11-tool's slot
    /// list is the independent view of which slot holds that serial.
    pub fn pkcs11_tool(&self, serial: &str) -> Command {
        let slots = run_ok(self.command("pkcs11-tool").args(["--module", MODULE, "-L"]));
        let text = String::from_utf8_lossy(&slots.stdout).into_owned();
        let mut slot = None;
        let mut current = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("Slot ") {
                current = rest
                    .split_whitespace()
                    .nth(1)
                    .map(|s| s.trim_start_matches('(').trim_end_matches("):").to_string());
            }
            if line.contains("serial num") && line.contains(serial) {
                slot = current.clone();
            }
        }
        let slot = slot.unwrap_or_else(|| panic!("no slot with serial {serial} in\n{text}"));
        let mut c = self.command("pkcs11-tool");
        c.args(["--module", MODULE, "--slot", &slot]);
        c
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
