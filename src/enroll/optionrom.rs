//! The option-ROM guard: enrolling a db that lacks Microsoft's UEFI CA on a
//! machine whose firmware loads option ROMs signed by it (graphics, network,
//! storage cards) leaves those devices dead once Secure Boot is enforced,
//! possibly including the display needed to undo it.
//!
//! The TPM event log tells which driver images the firmware loaded from
//! outside itself (`EV_EFI_BOOT_SERVICES_DRIVER`, as sbctl checks). The guard
//! passes when db keeps a Microsoft CA that signs option ROMs (UEFI CA 2011 or
//! Option ROM UEFI CA 2023), when the log shows no such driver, or when every
//! such driver's SHA-256 is itself in db as a hash entry. Otherwise, and when
//! the log is missing or unreadable (nothing is known), it refuses.

use std::path::Path;

use serde::Serialize;

use crate::efi::eventlog::{DriverImage, EventLog};
use crate::efi::guid::{EFI_CERT_SHA256, EFI_CERT_X509};
use crate::efi::microsoft::{VendorCert, MS_UEFI_2011, MS_UEFI_ROM_2023};
use crate::efi::SignatureDatabase;

/// Where Linux exposes the firmware's TPM event log.
pub const DEFAULT_EVENTLOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// What the guard concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// db keeps a Microsoft CA that signs option ROMs: they keep loading.
    MicrosoftCaInDb,
    /// The event log shows no driver loaded from outside the firmware.
    NoOptionRoms,
    /// Every such driver's hash is in db.
    DriversInDbByHash,
    /// Drivers were loaded and db would refuse them.
    OptionRomsWouldBeRefused,
    /// There is no event log to look at.
    NoEventLog,
    /// The event log cannot be parsed.
    UnreadableEventLog,
}

impl Verdict {
    /// Whether enrolling is safe as far as option ROMs go.
    pub fn is_safe(self) -> bool {
        matches!(
            self,
            Verdict::MicrosoftCaInDb | Verdict::NoOptionRoms | Verdict::DriversInDbByHash
        )
    }
}

/// The guard's findings.
#[derive(Clone, Debug, Serialize)]
pub struct OptionRomCheck {
    /// The conclusion.
    pub verdict: Verdict,
    /// The event log consulted.
    pub eventlog: String,
    /// The Microsoft option-ROM CAs in db (names of the shipped certificates).
    pub microsoft_cas: Vec<String>,
    /// Driver images the log shows (empty when it was not read).
    pub drivers: Vec<DriverImage>,
    /// Why the log could not be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_problem: Option<String>,
}

impl OptionRomCheck {
    /// A paragraph for the user: what was found and, when unsafe, what to do.
    pub fn explain(&self) -> String {
        let drivers = || {
            self.drivers
                .iter()
                .map(|d| {
                    format!(
                        "  - {} (PCR {}) {} sha256 {}",
                        d.event_type,
                        d.pcr,
                        d.device_path.as_deref().unwrap_or("<no device path>"),
                        d.sha256.as_deref().unwrap_or("<none>")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let fix = "Fix: keep Microsoft's option-ROM CAs in db (`genkey NAME -o DIR --reuse-keys \
--microsoft option-rom`, or any selection but none), or — only if you know the machine needs \
none of these drivers to show a screen and reach its boot disk — pass \
--yes-this-might-brick-my-machine.";
        match self.verdict {
            Verdict::MicrosoftCaInDb => format!(
                "option ROMs: db keeps {} (Microsoft CA for option ROMs); they keep loading",
                self.microsoft_cas.join(", ")
            ),
            Verdict::NoOptionRoms => format!(
                "option ROMs: none loaded according to {} (no EV_EFI_BOOT_SERVICES_DRIVER event)",
                self.eventlog
            ),
            Verdict::DriversInDbByHash => format!(
                "option ROMs: every driver image in {} is allowed by a hash in db:\n{}",
                self.eventlog,
                drivers()
            ),
            Verdict::OptionRomsWouldBeRefused => format!(
                "the firmware loaded {} driver image(s) from outside itself (option ROMs of \
graphics, network or storage cards), per the TPM event log {}:\n{}\nThe db to be enrolled has \
no Microsoft UEFI CA 2011 or Option ROM UEFI CA 2023, so once Secure Boot is enforced the \
firmware will refuse these drivers: the machine can lose its display or its boot device, \
possibly with no way into the firmware setup to undo it.\n{fix}",
                self.drivers.len(),
                self.eventlog,
                drivers()
            ),
            Verdict::NoEventLog | Verdict::UnreadableEventLog => format!(
                "cannot tell whether the firmware loads option ROMs: {}. The db to be enrolled \
has no Microsoft UEFI CA 2011 or Option ROM UEFI CA 2023, so option ROMs (graphics, network, \
storage cards) would be refused once Secure Boot is enforced. With a TPM, mount securityfs \
(mount -t securityfs securityfs /sys/kernel/security) or point --eventlog at a copy of the \
log.\n{fix}",
                self.log_problem.as_deref().unwrap_or("no event log")
            ),
        }
    }
}

/// Runs the guard for `db` (the list to be enrolled) with the event log at `eventlog`.
pub fn check(db: &SignatureDatabase, eventlog: &Path) -> OptionRomCheck {
    let microsoft_cas: Vec<String> = db
        .entries()
        .filter(|(t, _)| *t == EFI_CERT_X509)
        .filter_map(|(_, e)| VendorCert::find_by_der(&e.data))
        .filter(|c| *c == MS_UEFI_2011 || *c == MS_UEFI_ROM_2023)
        .map(|c| c.common_name.to_string())
        .collect();
    let mut result = OptionRomCheck {
        verdict: Verdict::NoEventLog,
        eventlog: eventlog.display().to_string(),
        microsoft_cas,
        drivers: Vec::new(),
        log_problem: None,
    };
    let log = match std::fs::read(eventlog) {
        Ok(bytes) => {
            EventLog::parse(&bytes).map_err(|e| (Verdict::UnreadableEventLog, e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
            Verdict::NoEventLog,
            format!("no TPM event log at {}", eventlog.display()),
        )),
        Err(e) => Err((
            Verdict::UnreadableEventLog,
            format!("cannot read {}: {e}", eventlog.display()),
        )),
    };
    match log {
        Ok(log) => {
            result.drivers = log.driver_images();
            result.verdict = if result.drivers.is_empty() {
                Verdict::NoOptionRoms
            } else if result.drivers.iter().all(|d| {
                d.sha256
                    .as_ref()
                    .and_then(|h| hex::decode(h).ok())
                    .is_some_and(|h| db.contains(EFI_CERT_SHA256, &h))
            }) {
                Verdict::DriversInDbByHash
            } else {
                Verdict::OptionRomsWouldBeRefused
            };
        }
        Err((verdict, problem)) => {
            result.verdict = verdict;
            result.log_problem = Some(problem);
        }
    }
    // A Microsoft option-ROM CA in db makes whatever the log says harmless.
    if !result.microsoft_cas.is_empty() {
        result.verdict = Verdict::MicrosoftCaInDb;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efi::eventlog::EV_EFI_BOOT_SERVICES_DRIVER;
    use crate::efi::{Guid, SignatureEntry, SignatureList};

    /// A TPM 1.2 (SHA-1 format) log with one boot-services driver event.
    fn sha1_log_with_driver() -> Vec<u8> {
        let mut log = Vec::new();
        log.extend_from_slice(&2u32.to_le_bytes());
        log.extend_from_slice(&EV_EFI_BOOT_SERVICES_DRIVER.to_le_bytes());
        log.extend_from_slice(&[9; 20]);
        log.extend_from_slice(&0u32.to_le_bytes());
        log
    }

    #[test]
    fn verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, sha1_log_with_driver()).unwrap();
        let empty = SignatureDatabase::default();
        let c = check(&empty, &log);
        assert_eq!(c.verdict, Verdict::OptionRomsWouldBeRefused);
        assert!(c.explain().contains("--yes-this-might-brick-my-machine"));
        assert_eq!(
            check(&empty, &dir.path().join("none")).verdict,
            Verdict::NoEventLog
        );
        // A SHA-1-only log gives no SHA-256 to match a db hash entry against.
        let hashes = SignatureDatabase {
            lists: vec![SignatureList::sha256(vec![SignatureEntry {
                owner: Guid::random(),
                data: vec![9; 32],
            }])],
        };
        assert_eq!(
            check(&hashes, &log).verdict,
            Verdict::OptionRomsWouldBeRefused
        );
        let ms = SignatureDatabase {
            lists: vec![MS_UEFI_ROM_2023.signature_list()],
        };
        let c = check(&ms, &log);
        assert_eq!(c.verdict, Verdict::MicrosoftCaInDb);
        assert!(c.verdict.is_safe());
    }

    #[test]
    fn drivers_whose_hash_is_in_db_are_allowed() {
        use crate::efi::eventlog::TPM_ALG_SHA256;
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 2]);
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        spec.extend_from_slice(&32u16.to_le_bytes());
        spec.push(0);
        let mut log = Vec::new();
        log.extend_from_slice(&0u32.to_le_bytes());
        log.extend_from_slice(&3u32.to_le_bytes());
        log.extend_from_slice(&[0; 20]);
        log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        log.extend_from_slice(&spec);
        log.extend_from_slice(&2u32.to_le_bytes());
        log.extend_from_slice(&EV_EFI_BOOT_SERVICES_DRIVER.to_le_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        log.extend_from_slice(&[0x5a; 32]);
        log.extend_from_slice(&0u32.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, log).unwrap();
        let db = SignatureDatabase {
            lists: vec![SignatureList::sha256(vec![SignatureEntry {
                owner: Guid::random(),
                data: vec![0x5a; 32],
            }])],
        };
        assert_eq!(check(&db, &path).verdict, Verdict::DriversInDbByHash);
    }
}
