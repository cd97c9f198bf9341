//! Microsoft's public UEFI certificates, shipped inside sbkit, and the choice
//! of which go into KEK and db.
//!
//! Most PCs load option ROMs (GPU, NIC, storage firmware) signed by the
//! Microsoft UEFI CA; enrolling a db without it can leave such a machine with
//! no display or no boot device. That is why `all` is the default.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::guid::MICROSOFT_OWNER;
use super::siglist::SignatureList;

/// One shipped Microsoft certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VendorCert {
    /// Short stable name (the file name without `.pem`).
    pub name: &'static str,
    /// Subject common name.
    pub common_name: &'static str,
    /// SHA-256 of the DER certificate, as published.
    pub sha256: &'static str,
    pem: &'static [u8],
}

macro_rules! vendor_cert {
    ($name:literal, $cn:literal, $sha:literal) => {
        VendorCert {
            name: $name,
            common_name: $cn,
            sha256: $sha,
            pem: include_bytes!(concat!("../../data/microsoft/", $name, ".pem")),
        }
    };
}

/// Microsoft Corporation KEK CA 2011.
pub const MS_KEK_2011: VendorCert = vendor_cert!(
    "ms-kek-2011",
    "Microsoft Corporation KEK CA 2011",
    "a1117f516a32cefcba3f2d1ace10a87972fd6bbe8fe0d0b996e09e65d802a503"
);
/// Microsoft Corporation KEK 2K CA 2023.
pub const MS_KEK_2023: VendorCert = vendor_cert!(
    "ms-kek-2023",
    "Microsoft Corporation KEK 2K CA 2023",
    "3cd3f0309edae228767a976dd40d9f4affc4fbd5218f2e8cc3c9dd97e8ac6f9d"
);
/// Microsoft Windows Production PCA 2011.
pub const WINDOWS_2011: VendorCert = vendor_cert!(
    "windows-2011",
    "Microsoft Windows Production PCA 2011",
    "e8e95f0733a55e8bad7be0a1413ee23c51fcea64b3c8fa6a786935fddcc71961"
);
/// Microsoft Corporation UEFI CA 2011 (third-party boot loaders and option ROMs).
pub const MS_UEFI_2011: VendorCert = vendor_cert!(
    "ms-uefi-2011",
    "Microsoft Corporation UEFI CA 2011",
    "48e99b991f57fc52f76149599bff0a58c47154229b9f8d603ac40d3500248507"
);
/// Windows UEFI CA 2023.
pub const WINDOWS_2023: VendorCert = vendor_cert!(
    "windows-2023",
    "Windows UEFI CA 2023",
    "076f1fea90ac29155ebf77c17682f75f1fdd1be196da302dc8461e350a9ae330"
);
/// Microsoft UEFI CA 2023 (third-party boot loaders).
pub const MS_UEFI_2023: VendorCert = vendor_cert!(
    "ms-uefi-2023",
    "Microsoft UEFI CA 2023",
    "f6124e34125bee3fe6d79a574eaa7b91c0e7bd9d929c1a321178efd611dad901"
);
/// Microsoft Option ROM UEFI CA 2023.
pub const MS_UEFI_ROM_2023: VendorCert = vendor_cert!(
    "ms-uefi-rom-2023",
    "Microsoft Option ROM UEFI CA 2023",
    "e5be3e64c6e66a281457ecdece0d6d0787577aad2a3a0144262c10c14ba8d8f1"
);
/// Windows OEM Devices PK: Microsoft's PK for OEM devices. Never put in a user's PK.
pub const MS_OEM_PK_2023: VendorCert = vendor_cert!(
    "ms-oem-pk-2023",
    "Windows OEM Devices PK",
    "2f569e8edaf9657dc4951c29598725255c7f821472db71374211fe44d082546f"
);

/// Every shipped certificate.
pub const ALL_CERTS: [VendorCert; 8] = [
    MS_KEK_2011,
    MS_KEK_2023,
    WINDOWS_2011,
    MS_UEFI_2011,
    WINDOWS_2023,
    MS_UEFI_2023,
    MS_UEFI_ROM_2023,
    MS_OEM_PK_2023,
];

impl VendorCert {
    /// The DER certificate.
    pub fn der(&self) -> Vec<u8> {
        // The PEM files are compiled in and checked by the tests below.
        crate::keys::cert::certificates_from_pem(self.pem)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// A signature list holding this certificate with Microsoft's owner GUID.
    pub fn signature_list(&self) -> SignatureList {
        SignatureList::x509(MICROSOFT_OWNER, &self.der())
    }

    /// The shipped certificate whose DER is `der`, if any.
    pub fn find_by_der(der: &[u8]) -> Option<VendorCert> {
        use sha2::Digest;
        let fp = hex::encode(sha2::Sha256::digest(der));
        ALL_CERTS.into_iter().find(|c| c.sha256 == fp)
    }
}

/// Which Microsoft certificates to enroll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MicrosoftSelection {
    /// Both generations: KEK CA 2011 and 2023 in KEK; Windows PCA 2011, UEFI CA
    /// 2011, Windows UEFI CA 2023, UEFI CA 2023 and Option ROM CA 2023 in db.
    #[default]
    All,
    /// Only the 2023 generation (KEK 2K CA 2023; Windows UEFI CA 2023, UEFI CA
    /// 2023, Option ROM CA 2023).
    #[serde(rename = "2023")]
    Only2023,
    /// No Windows: both KEK CAs (for revocation updates) and the third-party
    /// UEFI CAs (2011, 2023, Option ROM 2023) for shim and option ROMs.
    UefiCa,
    /// Only what option ROMs need to load: UEFI CA 2011 and Option ROM CA 2023
    /// in db, nothing in KEK.
    OptionRom,
    /// No Microsoft certificate at all.
    None,
}

/// A selection name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown Microsoft selection {0:?}: use all, 2023, uefi-ca, option-rom or none")]
pub struct UnknownSelection(String);

impl MicrosoftSelection {
    /// The certificates this selection puts into KEK.
    pub fn kek(self) -> Vec<VendorCert> {
        match self {
            MicrosoftSelection::All | MicrosoftSelection::UefiCa => vec![MS_KEK_2011, MS_KEK_2023],
            MicrosoftSelection::Only2023 => vec![MS_KEK_2023],
            MicrosoftSelection::OptionRom | MicrosoftSelection::None => vec![],
        }
    }

    /// The certificates this selection puts into db.
    pub fn db(self) -> Vec<VendorCert> {
        match self {
            MicrosoftSelection::All => vec![
                WINDOWS_2011,
                MS_UEFI_2011,
                WINDOWS_2023,
                MS_UEFI_2023,
                MS_UEFI_ROM_2023,
            ],
            MicrosoftSelection::Only2023 => vec![WINDOWS_2023, MS_UEFI_2023, MS_UEFI_ROM_2023],
            MicrosoftSelection::UefiCa => vec![MS_UEFI_2011, MS_UEFI_2023, MS_UEFI_ROM_2023],
            MicrosoftSelection::OptionRom => vec![MS_UEFI_2011, MS_UEFI_ROM_2023],
            MicrosoftSelection::None => vec![],
        }
    }

    /// Whether option ROMs signed by Microsoft still load (some UEFI CA is in db).
    pub fn keeps_option_roms(self) -> bool {
        self.db()
            .iter()
            .any(|c| *c == MS_UEFI_2011 || *c == MS_UEFI_ROM_2023)
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            MicrosoftSelection::All => "all",
            MicrosoftSelection::Only2023 => "2023",
            MicrosoftSelection::UefiCa => "uefi-ca",
            MicrosoftSelection::OptionRom => "option-rom",
            MicrosoftSelection::None => "none",
        }
    }
}

impl fmt::Display for MicrosoftSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MicrosoftSelection {
    type Err = UnknownSelection;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            MicrosoftSelection::All,
            MicrosoftSelection::Only2023,
            MicrosoftSelection::UefiCa,
            MicrosoftSelection::OptionRom,
            MicrosoftSelection::None,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| UnknownSelection(s.to_string()))
    }
}

/// Why enrolling without Microsoft's UEFI CA can brick a machine; printed when a user chooses it.
pub const OPTION_ROM_WARNING: &str = "Without the Microsoft UEFI CA in db, option ROMs signed by \
Microsoft (graphics cards, network and storage controllers) are not loaded once Secure Boot is \
enforced: the machine can lose its display or its boot device and may not reach the firmware \
setup to undo it. Only do this on machines you know have no such option ROMs (check the TPM \
event log), or keep --microsoft option-rom.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::cert::CertSummary;

    #[test]
    fn shipped_certificates_match_their_published_fingerprints_and_names() {
        for c in ALL_CERTS {
            let der = c.der();
            assert!(!der.is_empty(), "{} has no PEM certificate", c.name);
            let s = CertSummary::from_der(&der).unwrap();
            assert_eq!(s.sha256, c.sha256, "{}", c.name);
            assert!(
                s.subject.contains(c.common_name),
                "{}: {}",
                c.name,
                s.subject
            );
        }
    }

    #[test]
    fn selections_match_the_documented_roles() {
        assert_eq!(MicrosoftSelection::All.kek().len(), 2);
        assert_eq!(MicrosoftSelection::All.db().len(), 5);
        assert!(!MicrosoftSelection::All.db().contains(&MS_OEM_PK_2023));
        assert!(MicrosoftSelection::OptionRom.keeps_option_roms());
        assert!(!MicrosoftSelection::None.keeps_option_roms());
        assert!(MicrosoftSelection::Only2023
            .db()
            .iter()
            .chain(MicrosoftSelection::Only2023.kek().iter())
            .all(|c| c.name.ends_with("2023")));
        assert_eq!(
            "uefi-ca".parse::<MicrosoftSelection>().unwrap(),
            MicrosoftSelection::UefiCa
        );
        assert!("windows".parse::<MicrosoftSelection>().is_err());
    }
}
