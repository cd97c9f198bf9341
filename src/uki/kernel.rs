//! Facts about a Linux kernel image: that it is an EFI-stub PE, and its
//! release string (`uname -r`), read from the x86 boot protocol header.

use crate::pe::PeLayout;

/// The kernel image is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Not a PE (no EFI stub).
    #[error("{path} is not a PE image ({reason}); a UKI needs a kernel built with the EFI stub (CONFIG_EFI_STUB), e.g. /boot/vmlinuz-* of a distribution kernel — not a compressed vmlinux or an initrd")]
    NotPe {
        /// The file.
        path: String,
        /// What the PE parser said.
        reason: String,
    },
}

/// Checks that `bytes` are an EFI-stub kernel.
pub fn check_kernel(bytes: &[u8], path: &str) -> Result<(), KernelError> {
    PeLayout::parse(bytes)
        .map(drop)
        .map_err(|e| KernelError::NotPe {
            path: path.to_string(),
            reason: e.0,
        })
}

/// The kernel release (first word of the version string), e.g. `6.1.0-56-amd64`.
///
/// x86 bzImage: the setup header's `kernel_version` field (offset 0x20e) holds
/// a pointer, relative to 0x200, to a NUL-terminated version string; the
/// header is only valid when the `HdrS` magic is at 0x202.
pub fn kernel_release(bytes: &[u8]) -> Option<String> {
    if bytes.get(0x202..0x206) != Some(b"HdrS") {
        return None;
    }
    let ptr = u16::from_le_bytes([*bytes.get(0x20e)?, *bytes.get(0x20f)?]) as usize;
    let start = ptr + 0x200;
    let tail = bytes.get(start..)?;
    let end = tail
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(tail.len())
        .min(256);
    let text = std::str::from_utf8(&tail[..end]).ok()?;
    let release = text.split_whitespace().next()?;
    (!release.is_empty()).then(|| release.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_release_from_the_setup_header() {
        let mut k = vec![0u8; 0x400];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let s = b"6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        k[0x300..0x300 + s.len()].copy_from_slice(s);
        assert_eq!(kernel_release(&k).as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(kernel_release(&[0; 16]), None);
    }
}
