//! Assembling a UKI: systemd-stub plus the payload sections, the PCR 11
//! prediction over exactly what the stub will measure, the signed
//! `.pcrsig`/`.pcrpkey`, and the Authenticode signature.

use crate::keys::{DigestAlgorithm, Signer};
use crate::pe::authenticode::{self, AuthenticodeError};
use crate::pe::{append_sections_with, AppendOptions, NewSection, PeLayout, SectionContent};

use super::pcr::{predict_contents, Pcr11Prediction, PcrError, PhasePath};
use super::pcrsig::{pcrpkey_pem, PcrSig, PcrSigError};
use super::sections::UkiSectionName as N;

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
    // File order: small sections first, the large initrd and kernel last.
    let mut sections: Vec<(&str, &[u8])> = vec![
        (N::Osrel.as_str(), payload.osrel),
        (N::Cmdline.as_str(), payload.cmdline.as_bytes()),
    ];
    if let Some(u) = payload.uname {
        sections.push((N::Uname.as_str(), u.as_bytes()));
    }
    if let Some(s) = payload.splash {
        sections.push((N::Splash.as_str(), s));
    }
    if let Some(d) = payload.dtb {
        sections.push((N::Dtb.as_str(), d));
    }
    if let Some(k) = &pcrpkey {
        sections.push((N::Pcrpkey.as_str(), k));
    }
    let payload_end = sections.len();
    sections.push((N::Initrd.as_str(), payload.initrd));
    sections.push((N::Linux.as_str(), payload.linux));

    let mut prediction = None;
    let mut pcrsig_bytes = Vec::new();
    if let Some(p) = policy {
        // The stub also measures its own sections of measured names (e.g. .sbat).
        let layout = PeLayout::parse(stub)?;
        let mut measured: Vec<(&str, SectionContent<'_>)> = sections
            .iter()
            .map(|&(n, file)| (n, SectionContent { file, zero_tail: 0 }))
            .collect();
        for n in measured_order {
            if sections.iter().any(|(s, _)| s == n) {
                continue;
            }
            if let Some(s) = layout.section(n) {
                measured.push((n.as_str(), layout.section_content(stub, s)?));
            }
        }
        let mut phases = vec![PhasePath::empty()];
        phases.extend(p.phases.iter().cloned());
        let mut banks = p.predicted_banks.clone();
        for b in &p.signed_banks {
            if !banks.contains(b) {
                banks.push(*b);
            }
        }
        let pred = predict_contents(&measured, measured_order, &banks, &phases)?;
        let sig = PcrSig::sign(p.signer, &pred, &p.signed_banks, &p.phases)?;
        pcrsig_bytes = sig.to_section_bytes();
        prediction = Some(pred);
    }
    if policy.is_some() {
        sections.insert(payload_end, (N::Pcrsig.as_str(), pcrsig_bytes.as_slice()));
    }
    let new: Vec<NewSection<'_>> = sections
        .iter()
        .map(|(name, data)| NewSection { name, data })
        .collect();
    // NX_COMPAT only when both the stub and the kernel declare it (systemd
    // 258's rule): the stub hands control to the kernel's own EFI entry, so
    // the promise is only true if the kernel keeps it too.
    let kernel_nx = PeLayout::parse(payload.linux).is_ok_and(|k| k.nx_compat());
    let options = AppendOptions {
        clear_nx_compat: !kernel_nx,
    };
    let image = append_sections_with(stub, &new, options)?;
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
