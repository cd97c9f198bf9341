//! systemd-boot configuration: `loader/loader.conf`, and which
//! `secure-boot-enroll` values the shipped systemd-boot understands.

use serde::Serialize;

use crate::pe::PeLayout;

/// `secure-boot-enroll` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecureBootEnroll {
    /// Offer enrollment in the menu.
    Manual,
    /// Enroll without asking, in setup mode.
    Force,
    /// Enroll without asking only where it is safe (virtual machines); systemd 253+.
    IfSafe,
    /// Never enroll.
    Off,
}

/// A bad `--secure-boot-enroll` value or one the systemd-boot cannot take.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Unknown value.
    #[error("--secure-boot-enroll {0:?}: use manual, force, if-safe or off")]
    Unknown(String),
    /// if-safe with an old systemd-boot.
    #[error("--secure-boot-enroll if-safe needs systemd-boot 253 or newer; this one is {0}. Use manual or force")]
    Unsupported(String),
}

impl std::str::FromStr for SecureBootEnroll {
    type Err = LoaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(Self::Manual),
            "force" => Ok(Self::Force),
            "if-safe" => Ok(Self::IfSafe),
            "off" => Ok(Self::Off),
            other => Err(LoaderError::Unknown(other.to_string())),
        }
    }
}

impl SecureBootEnroll {
    /// The loader.conf word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Force => "force",
            Self::IfSafe => "if-safe",
            Self::Off => "off",
        }
    }
}

/// The systemd version of a systemd-boot (or stub) binary, from `.sdmagic`
/// (`#### LoaderInfo: systemd-boot 254.26-1~bpo12+1 ####`): (major, full).
pub fn sdboot_version(pe: &[u8]) -> Option<(u32, String)> {
    let layout = PeLayout::parse(pe).ok()?;
    let magic = layout.section(".sdmagic")?;
    let text = String::from_utf8_lossy(&layout.section_data(pe, magic)).into_owned();
    let full = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?
        .to_string();
    let major = full.split(['.', '-', '~']).next()?.parse().ok()?;
    Some((major, full))
}

/// Chooses the `secure-boot-enroll` value: the requested one if this
/// systemd-boot knows it, else `if-safe` on 253+ and `manual` before.
pub fn choose_enroll(
    requested: Option<SecureBootEnroll>,
    sdboot_major: Option<u32>,
) -> Result<SecureBootEnroll, LoaderError> {
    let knows_if_safe = sdboot_major.is_some_and(|m| m >= 253);
    match requested {
        Some(SecureBootEnroll::IfSafe) if !knows_if_safe => Err(LoaderError::Unsupported(
            sdboot_major
                .map(|m| m.to_string())
                .unwrap_or_else(|| "of unknown version".into()),
        )),
        Some(v) => Ok(v),
        None if knows_if_safe => Ok(SecureBootEnroll::IfSafe),
        None => Ok(SecureBootEnroll::Manual),
    }
}

/// The text of `loader/loader.conf`.
pub fn loader_conf(default_entry: &str, timeout: u32, enroll: SecureBootEnroll) -> String {
    format!(
        "default {default_entry}.conf\ntimeout {timeout}\nconsole-mode keep\neditor no\nsecure-boot-enroll {}\n",
        enroll.word()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_safe_only_from_253() {
        assert_eq!(
            choose_enroll(None, Some(252)).unwrap(),
            SecureBootEnroll::Manual
        );
        assert_eq!(
            choose_enroll(None, Some(254)).unwrap(),
            SecureBootEnroll::IfSafe
        );
        assert!(choose_enroll(Some(SecureBootEnroll::IfSafe), Some(252)).is_err());
        assert_eq!(
            choose_enroll(Some(SecureBootEnroll::Force), Some(252)).unwrap(),
            SecureBootEnroll::Force
        );
        assert!(loader_conf("norole", 5, SecureBootEnroll::Force)
            .contains("secure-boot-enroll force\n"));
    }
}
