//! The UKI section names, as one typed list in systemd-stub's own order.
//!
//! The order is systemd's `UnifiedSection` enum (the UAPI UKI specification's
//! names): the stub measures the sections it knows in exactly this order,
//! skipping `.pcrsig` (it carries the signature of the measurement, so it
//! cannot be an input to it). PCR 11 prediction, stub inspection and assembly
//! all take names from here.

use serde::Serialize;

/// One UKI section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum UkiSectionName {
    /// `.linux`: the kernel (EFI-stub PE).
    Linux,
    /// `.osrel`: os-release text.
    Osrel,
    /// `.cmdline`: the kernel command line.
    Cmdline,
    /// `.initrd`: the initrd.
    Initrd,
    /// `.ucode`: a CPU microcode initrd (systemd 256+).
    Ucode,
    /// `.splash`: a BMP boot splash.
    Splash,
    /// `.dtb`: a device tree.
    Dtb,
    /// `.uname`: the kernel release (measured from 254).
    Uname,
    /// `.sbat`: SBAT revocation metadata (measured from 255, or a backport).
    Sbat,
    /// `.pcrsig`: the signed PCR 11 policy (never measured).
    Pcrsig,
    /// `.pcrpkey`: the public key of that policy.
    Pcrpkey,
    /// `.profile`: a multi-profile UKI's profile (257+).
    Profile,
    /// `.dtbauto`: device trees chosen by compatible string (257+).
    Dtbauto,
    /// `.hwids`: hardware IDs for `.dtbauto` (257+).
    Hwids,
}

impl UkiSectionName {
    /// Every name, in systemd's enum order (the measurement order).
    pub const ALL: [UkiSectionName; 14] = [
        Self::Linux,
        Self::Osrel,
        Self::Cmdline,
        Self::Initrd,
        Self::Ucode,
        Self::Splash,
        Self::Dtb,
        Self::Uname,
        Self::Sbat,
        Self::Pcrsig,
        Self::Pcrpkey,
        Self::Profile,
        Self::Dtbauto,
        Self::Hwids,
    ];

    /// The section header name, e.g. `.linux`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Linux => ".linux",
            Self::Osrel => ".osrel",
            Self::Cmdline => ".cmdline",
            Self::Initrd => ".initrd",
            Self::Ucode => ".ucode",
            Self::Splash => ".splash",
            Self::Dtb => ".dtb",
            Self::Uname => ".uname",
            Self::Sbat => ".sbat",
            Self::Pcrsig => ".pcrsig",
            Self::Pcrpkey => ".pcrpkey",
            Self::Profile => ".profile",
            Self::Dtbauto => ".dtbauto",
            Self::Hwids => ".hwids",
        }
    }

    /// The name for a section header name, if it is a UKI section.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a stub that knows this section measures it (all but `.pcrsig`).
    pub const fn is_measured(self) -> bool {
        !matches!(self, Self::Pcrsig)
    }
}

impl std::fmt::Display for UkiSectionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The names of [`UkiSectionName::ALL`] as strings.
pub const fn all_names() -> [&'static str; 14] {
    let mut out = [""; 14];
    let mut i = 0;
    while i < 14 {
        out[i] = UkiSectionName::ALL[i].as_str();
        i += 1;
    }
    out
}

/// The measured names in measurement order (every name but `.pcrsig`).
pub const fn measured_names() -> [&'static str; 13] {
    let mut out = [""; 13];
    let (mut i, mut j) = (0, 0);
    while i < 14 {
        if UkiSectionName::ALL[i].is_measured() {
            out[j] = UkiSectionName::ALL[i].as_str();
            j += 1;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_list_in_enum_order() {
        assert_eq!(all_names()[0], ".linux");
        assert_eq!(all_names()[9], ".pcrsig");
        assert!(!measured_names().contains(&".pcrsig"));
        assert_eq!(measured_names()[9], ".pcrpkey");
        for n in UkiSectionName::ALL {
            assert_eq!(UkiSectionName::from_name(n.as_str()), Some(n));
        }
        let mut sorted = UkiSectionName::ALL;
        sorted.sort();
        assert_eq!(
            sorted,
            UkiSectionName::ALL,
            "the derive order is the enum order"
        );
        assert_eq!(UkiSectionName::from_name(".text"), None);
    }
}
