//! Reading a boot's serial console: what the firmware and the kernel said,
//! and what that means for Secure Boot.

use serde::Serialize;

/// How a test boot ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// The kernel started; `secure_boot` is what it reported.
    Booted {
        /// Whether the kernel saw Secure Boot enforced.
        secure_boot: bool,
        /// The line that decided it.
        evidence: String,
    },
    /// The firmware refused the image.
    Refused {
        /// The firmware's message.
        message: String,
    },
    /// Nothing conclusive before the time limit.
    TimedOut {
        /// The last stage reached.
        stage: String,
    },
    /// QEMU ended without a verdict (crash, power-off before the kernel).
    Ended {
        /// The last stage reached.
        stage: String,
    },
}

impl Verdict {
    /// The process exit code for this verdict: 0 booted with Secure Boot on,
    /// 1 booted without it, 2 refused, 3 timed out or ended.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Booted {
                secure_boot: true, ..
            } => 0,
            Verdict::Booted {
                secure_boot: false, ..
            } => 1,
            Verdict::Refused { .. } => 2,
            Verdict::TimedOut { .. } | Verdict::Ended { .. } => 3,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Booted {
                secure_boot: true,
                evidence,
            } => format!("booted with Secure Boot on ({evidence})"),
            Verdict::Booted {
                secure_boot: false,
                evidence,
            } => format!("booted, but Secure Boot is OFF ({evidence})"),
            Verdict::Refused { message } => format!("refused by the firmware: {message}"),
            Verdict::TimedOut { stage } => format!("timed out; last stage reached: {stage}"),
            Verdict::Ended { stage } => {
                format!("the machine stopped without a verdict; last stage reached: {stage}")
            }
        }
    }
}

/// Watches console lines and decides.
#[derive(Debug, Default)]
pub struct Watcher {
    stage: String,
    kernel_started: bool,
    expect: Option<String>,
    expect_seen: bool,
    secure_boot: Option<(bool, String)>,
}

/// Firmware messages that mean the image was refused.
const REFUSALS: [&str; 3] = [
    "Access Denied",
    "Security Violation",
    "Image Authentication failed",
];

impl Watcher {
    /// A watcher; with `expect`, a boot only counts once that text appears too.
    pub fn new(expect: Option<String>) -> Self {
        Watcher {
            stage: "firmware".into(),
            expect,
            ..Default::default()
        }
    }

    /// The stage reached so far.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Feeds one console line; returns a verdict once one is certain.
    pub fn line(&mut self, line: &str) -> Option<Verdict> {
        let line = line.trim();
        if let Some(r) = REFUSALS.iter().find(|r| line.contains(*r)) {
            return Some(Verdict::Refused {
                message: if line.is_empty() {
                    (*r).to_string()
                } else {
                    line.to_string()
                },
            });
        }
        if line.contains("BdsDxe: starting") || line.contains("BdsDxe: loading") {
            self.stage = "firmware boot manager: starting the boot image".into();
        }
        if line.contains("EFI stub:") {
            self.stage = "Linux EFI stub".into();
        }
        if line.contains("Linux version") {
            self.kernel_started = true;
            self.stage = "Linux kernel".into();
        }
        if line.contains("secureboot: Secure boot enabled") {
            self.secure_boot = Some((true, line.to_string()));
        } else if line.contains("secureboot: Secure boot disabled")
            || line.contains("secureboot: Secure boot could not be determined")
        {
            self.secure_boot = Some((false, line.to_string()));
        }
        if let Some(e) = &self.expect {
            if line.contains(e.as_str()) {
                self.expect_seen = true;
                self.stage = format!("expected text seen: {e}");
            }
        }
        let ready = self.kernel_started && (self.expect.is_none() || self.expect_seen);
        match (&self.secure_boot, ready) {
            (Some((on, evidence)), true) => Some(Verdict::Booted {
                secure_boot: *on,
                evidence: evidence.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_from_firmware_and_kernel_lines() {
        let mut w = Watcher::new(None);
        assert_eq!(w.line("BdsDxe: starting Boot0001"), None);
        assert_eq!(w.line("[    0.000000] Linux version 6.1.0"), None);
        let v = w
            .line("[    0.000000] secureboot: Secure boot enabled")
            .unwrap();
        assert_eq!(v.exit_code(), 0);
        let mut w = Watcher::new(None);
        let v = w
            .line("BdsDxe: failed to start Boot0001 \"UEFI QEMU\": Access Denied")
            .unwrap();
        assert!(matches!(v, Verdict::Refused { .. }));
        let mut w = Watcher::new(Some("MARKER".into()));
        w.line("Linux version 6");
        assert_eq!(w.line("secureboot: Secure boot enabled"), None);
        assert_eq!(w.line("MARKER").unwrap().exit_code(), 0);
    }
}
