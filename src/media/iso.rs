//! Bootable ISO 9660 images with xorriso: the FAT `efiboot.img` appended as
//! a GPT EFI System Partition (hybrid: bootable from CD and from USB) and
//! named by a UEFI El Torito no-emulation entry; volume label `UKI_ISO_INSTALL`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kairos volume label.
pub const VOLUME_LABEL: &str = "UKI_ISO_INSTALL";
/// GPT type of an EFI System Partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// xorriso failed or is missing.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// Not installed.
    #[error("xorriso is needed to write the ISO and was not found ({0}); install it (Debian: apt-get install xorriso)")]
    Missing(std::io::Error),
    /// It failed.
    #[error("xorriso failed ({status}): {stderr}")]
    Failed {
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
}

/// Writes `out` from the ESP image and an ISO root directory (files visible on the CD).
/// `mtime` (`SOURCE_DATE_EPOCH`, 0 for none) fixes every date and the
/// derived GUIDs, so the same inputs give the same ISO.
pub fn write_iso(
    efiboot: &Path,
    iso_root: &Path,
    out: &Path,
    label: &str,
    mtime: u64,
) -> Result<(), IsoError> {
    let mut cmd = Command::new(xorriso());
    if mtime > 0 {
        cmd.env("SOURCE_DATE_EPOCH", mtime.to_string());
    }
    let output = cmd
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-iso-level",
            "3",
            "-full-iso9660-filenames",
            "-joliet",
            "-joliet-long",
            "-rational-rock",
        ])
        .args(["-volid", label])
        .args(["-append_partition", "2", ESP_TYPE])
        .arg(efiboot)
        .arg("-appended_part_as_gpt")
        .args([
            "-eltorito-alt-boot",
            "-e",
            "--interval:appended_partition_2:all::",
            "-no-emul-boot",
        ])
        .arg("-o")
        .arg(out)
        .arg(iso_root)
        .output()
        .map_err(IsoError::Missing)?;
    if !output.status.success() {
        return Err(IsoError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn xorriso() -> PathBuf {
    std::env::var_os("SBKIT_XORRISO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("xorriso"))
}
