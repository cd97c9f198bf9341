//! Assembling a UKI: systemd-stub plus the payload sections, the PCR 11
//! prediction over exactly what the stub will measure, the signed
//! `.pcrsig`/`.pcrpkey`, and the Authenticode signature.

use crate::keys::{DigestAlgorithm, Signer};
use crate::pe::authenticode::{self, AuthenticodeError};
use crate::pe::{append_sections, NewSection, PeLayout};

use super::pcr::{predict, Pcr11Prediction, PcrError, PhasePath};
use super::pcrsig::{pcrpkey_pem, PcrSig, PcrSigError};

/// Assembly failed.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// Appending failed (signed stub, no room, …).
    #[error(transparent)]
    Append(#[from] crate::pe::append::AppendError),
    /// The prediction failed.
    #[error(transparent)]
    Pcr(#[from] PcrError),
    /// Signing the policy failed.
    #[error(transparent)]
    PcrSig(#[from] PcrSigError),
    /// Authenticode failed.
    #[error(transparent)]
    Authenticode(#[from] AuthenticodeError),
    /// The stub does not parse.
    #[error(transparent)]
    Pe(#[from] crate::pe::PeError),
}

/// The payload of one UKI.
#[derive(Clone, Copy, Debug)]
pub struct UkiPayload<'a> {
    /// The kernel (EFI-stub PE).
    pub linux: &'a [u8],
    /// The initrd.
    pub initrd: &'a [u8],
    /// os-release text.
    pub osrel: &'a [u8],
    /// Kernel command line.
    pub cmdline: &'a str,
    /// Kernel release for `.uname`.
    pub uname: Option<&'a str>,
    /// Boot splash (BMP).
    pub splash: Option<&'a [u8]>,
    /// Device tree.
    pub dtb: Option<&'a [u8]>,
}

/// How the PCR 11 policy is signed.
pub struct PcrPolicy<'a> {
    /// The PCR key.
    pub signer: &'a dyn Signer,
    /// Banks to predict (reported).
    pub predicted_banks: Vec<DigestAlgorithm>,
    /// Banks to sign into `.pcrsig`.
    pub signed_banks: Vec<DigestAlgorithm>,
    /// Phase paths to sign.
    pub phases: Vec<PhasePath>,
}

/// An assembled (not yet Authenticode-signed) UKI.
pub struct AssembledUki {
    /// The PE image.
    pub image: Vec<u8>,
    /// The PCR 11 prediction (with the empty phase path too), when a PCR key was given.
    pub prediction: Option<Pcr11Prediction>,
}

/// Builds the UKI image from `stub`, measuring with `measured_order`.
pub fn assemble(
    stub: &[u8],
    payload: &UkiPayload<'_>,
    measured_order: &[String],
    policy: Option<&PcrPolicy<'_>>,
) -> Result<AssembledUki, AssembleError> {
    let pcrpkey = match policy {
        Some(p) => Some(pcrpkey_pem(&p.signer.public_key_der())?),
        None => None,
    };
    let mut sections: Vec<(&str, &[u8])> = vec![
        (".osrel", payload.osrel),
        (".cmdline", payload.cmdline.as_bytes()),
    ];
    if let Some(u) = payload.uname {
        sections.push((".uname", u.as_bytes()));
    }
    if let Some(s) = payload.splash {
        sections.push((".splash", s));
    }
    if let Some(d) = payload.dtb {
        sections.push((".dtb", d));
    }
    if let Some(k) = &pcrpkey {
        sections.push((".pcrpkey", k));
    }
    let payload_end = sections.len();
    sections.push((".initrd", payload.initrd));
    sections.push((".linux", payload.linux));

    let mut prediction = None;
    let mut pcrsig_bytes = Vec::new();
    if let Some(p) = policy {
        // The stub also measures its own sections of measured names (e.g. .sbat).
        let layout = PeLayout::parse(stub)?;
        let stub_owned: Vec<(String, Vec<u8>)> = measured_order
            .iter()
            .filter(|n| !sections.iter().any(|(s, _)| s == n))
            .filter_map(|n| {
                layout
                    .section(n)
                    .map(|s| (n.clone(), layout.section_data(stub, s)))
            })
            .collect();
        let mut measured: Vec<(&str, &[u8])> = sections.clone();
        measured.extend(stub_owned.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
        let mut phases = vec![PhasePath::empty()];
        phases.extend(p.phases.iter().cloned());
        let mut banks = p.predicted_banks.clone();
        for b in &p.signed_banks {
            if !banks.contains(b) {
                banks.push(*b);
            }
        }
        let pred = predict(&measured, measured_order, &banks, &phases)?;
        let sig = PcrSig::sign(p.signer, &pred, &p.signed_banks, &p.phases)?;
        pcrsig_bytes = sig.to_section_bytes();
        prediction = Some(pred);
    }
    if policy.is_some() {
        sections.insert(payload_end, (".pcrsig", pcrsig_bytes.as_slice()));
    }
    let new: Vec<NewSection<'_>> = sections
        .iter()
        .map(|(name, data)| NewSection { name, data })
        .collect();
    let image = append_sections(stub, &new)?;
    Ok(AssembledUki { image, prediction })
}

/// Signs an assembled image with the Secure Boot (db) key.
pub fn sign(
    image: &[u8],
    signer: &dyn Signer,
    certificate_der: &[u8],
) -> Result<Vec<u8>, AssembleError> {
    Ok(authenticode::sign(
        image,
        signer,
        certificate_der,
        DigestAlgorithm::Sha256,
    )?)
}
