//! `build-uki inspect`: what a UKI holds, whether its signature is good, and
//! whether its `.pcrsig` matches a fresh PCR 11 prediction.

use base64::Engine;
use serde::Serialize;

use crate::keys::DigestAlgorithm;
use crate::pe::authenticode;
use crate::uki::pcr::{default_phase_paths, predict_uki, read_pe_sections, PhasePath, ALL_BANKS};
use crate::uki::pcrsig::{policy_digest, PcrSig};
use crate::uki::stub;

/// One section.
#[derive(Clone, Debug, Serialize)]
pub struct SectionInfo {
    /// Name.
    pub name: String,
    /// VirtualSize.
    pub size: usize,
    /// SHA-256 of the VirtualSize bytes.
    pub sha256: String,
}

/// The signature verdict.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureVerdict {
    /// Whether the image carries a signature.
    pub present: bool,
    /// Whether it verifies (against the given certificate, or its own when none was given).
    pub valid: bool,
    /// Signer subject, when present.
    pub signer: Option<String>,
    /// Whether a certificate was given to check against.
    pub checked_against_given_certificate: bool,
    /// Why it failed.
    pub problem: Option<String>,
}

/// The `.pcrsig` verdict.
#[derive(Clone, Debug, Serialize)]
pub struct PcrSigVerdict {
    /// Entries in `.pcrsig`.
    pub entries: usize,
    /// Entries whose `pol` equals a fresh prediction for a known phase path
    /// (ukify's initrd set, the host-mode set build-uki signs for rootfses
    /// without `/etc/initrd-release`, or the empty path).
    pub matching_prediction: usize,
    /// The phase paths the matching entries were signed for (`""` is the empty path).
    pub signed_phases: Vec<String>,
    /// Entries whose `sig` verifies with `.pcrpkey`.
    pub valid_signatures: usize,
    /// True when every entry matches and verifies.
    pub ok: bool,
}

/// What inspect found.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    /// Sections in header order.
    pub sections: Vec<SectionInfo>,
    /// `.osrel` text.
    pub os_release: Option<String>,
    /// `.cmdline` text.
    pub cmdline: Option<String>,
    /// `.uname` text.
    pub uname: Option<String>,
    /// The stub's systemd version.
    pub stub_version: Option<String>,
    /// Sections the stub measures.
    pub measured_sections: Vec<String>,
    /// Predicted PCR 11 (sha256) for the empty phase path.
    pub pcr11_sha256: Option<String>,
    /// SectionAlignment, 4 KiB alignment of every section, NX_COMPAT.
    pub alignment: crate::pe::AlignmentReport,
    /// Signature verdict.
    pub signature: SignatureVerdict,
    /// `.pcrsig` verdict, when the UKI has one.
    pub pcrsig: Option<PcrSigVerdict>,
}

/// Inspect failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not a UKI.
    #[error("not a UKI: {0}")]
    NotUki(String),
}

fn text(sections: &[crate::uki::pcr::UkiSection<'_>], name: &str) -> Option<String> {
    // The file bytes: a zero fill adds nothing to text.
    sections.iter().find(|s| s.name == name).map(|s| {
        String::from_utf8_lossy(s.data)
            .trim_end_matches('\0')
            .to_string()
    })
}

/// Inspects a UKI; `certificate` (DER) is what the signature must verify against.
pub fn inspect(uki: &[u8], certificate: Option<&[u8]>) -> Result<InspectReport, InspectError> {
    let sections = read_pe_sections(uki).map_err(|e| InspectError::NotUki(e.to_string()))?;
    if !sections.iter().any(|s| s.name == ".linux") {
        return Err(InspectError::NotUki("it has no .linux section".into()));
    }
    let info = stub::inspect(uki).map_err(|e| InspectError::NotUki(e.to_string()))?;
    let alignment = crate::pe::PeLayout::parse(uki)
        .map_err(|e| InspectError::NotUki(e.to_string()))?
        .alignment_report();
    let measured = info
        .measured()
        .ok()
        .map(|m| m.sections.clone())
        .unwrap_or_default();

    let signature = match authenticode::verify(uki, certificate) {
        Ok(sig) => SignatureVerdict {
            present: true,
            valid: sig.digest_matches,
            signer: Some(sig.signer_subject),
            checked_against_given_certificate: certificate.is_some(),
            problem: (!sig.digest_matches)
                .then(|| "the image was changed after signing (digest mismatch)".to_string()),
        },
        Err(authenticode::AuthenticodeError::Unsigned) => SignatureVerdict {
            present: false,
            valid: false,
            signer: None,
            checked_against_given_certificate: certificate.is_some(),
            problem: Some("unsigned".into()),
        },
        Err(e) => SignatureVerdict {
            present: true,
            valid: false,
            signer: None,
            checked_against_given_certificate: certificate.is_some(),
            problem: Some(e.to_string()),
        },
    };

    // Every phase path build-uki or ukify signs by default, so a policy is
    // checked against what it was signed for, not against one fixed set.
    let mut phases = vec![PhasePath::empty()];
    phases.extend(default_phase_paths());
    for p in super::host_phase_paths() {
        if !phases.contains(&p) {
            phases.push(p);
        }
    }
    let prediction = (!measured.is_empty())
        .then(|| predict_uki(uki, &measured, &ALL_BANKS, &phases).ok())
        .flatten();
    let pcr11_sha256 = prediction.as_ref().and_then(|p| {
        p.value(DigestAlgorithm::Sha256, &PhasePath::empty())
            .map(hex::encode)
    });

    let pcrsig = sections.iter().find(|s| s.name == ".pcrsig").map(|s| {
        let doc = PcrSig::from_json(s.data).ok();
        let public = sections
            .iter()
            .find(|s| s.name == ".pcrpkey")
            .and_then(|k| openssl::pkey::PKey::public_key_from_pem(k.data).ok());
        let mut v = PcrSigVerdict {
            entries: 0,
            matching_prediction: 0,
            signed_phases: Vec::new(),
            valid_signatures: 0,
            ok: false,
        };
        if let Some(doc) = doc {
            for bank in ALL_BANKS {
                let expected: Vec<(String, String)> = prediction
                    .as_ref()
                    .map(|p| {
                        phases
                            .iter()
                            .filter_map(|ph| {
                                let val = p.value(bank, ph)?;
                                let pol = policy_digest(bank, val).ok()?;
                                Some((hex::encode(pol), ph.words().join(":")))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for e in doc.entries(bank) {
                    v.entries += 1;
                    if let Some((_, phase)) = expected.iter().find(|(pol, _)| *pol == e.pol) {
                        v.matching_prediction += 1;
                        if !v.signed_phases.contains(phase) {
                            v.signed_phases.push(phase.clone());
                        }
                    }
                    let good = (|| {
                        let key = public.as_ref()?;
                        let pol = hex::decode(&e.pol).ok()?;
                        let sig = base64::engine::general_purpose::STANDARD
                            .decode(&e.sig)
                            .ok()?;
                        let mut ver = openssl::sign::Verifier::new(bank.openssl_md(), key).ok()?;
                        ver.update(&pol).ok()?;
                        ver.verify(&sig).ok()
                    })();
                    if good == Some(true) {
                        v.valid_signatures += 1;
                    }
                }
            }
        }
        v.ok =
            v.entries > 0 && v.matching_prediction == v.entries && v.valid_signatures == v.entries;
        v
    });

    Ok(InspectReport {
        sections: sections
            .iter()
            .map(|s| SectionInfo {
                name: s.name.clone(),
                size: s.size() as usize,
                sha256: hex::encode(s.digest(DigestAlgorithm::Sha256)),
            })
            .collect(),
        os_release: text(&sections, ".osrel"),
        cmdline: text(&sections, ".cmdline"),
        uname: text(&sections, ".uname"),
        stub_version: info.version.map(|v| v.full),
        measured_sections: measured,
        alignment,
        pcr11_sha256,
        signature,
        pcrsig,
    })
}

/// The human rendering.
pub fn render(r: &InspectReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "sections:");
    for sec in &r.sections {
        let _ = writeln!(s, "  {:<10} {:>12}  {}", sec.name, sec.size, sec.sha256);
    }
    if let Some(v) = &r.stub_version {
        let _ = writeln!(
            s,
            "stub: systemd-stub {v}, measures {}",
            r.measured_sections.join(" ")
        );
    }
    let a = &r.alignment;
    let _ = writeln!(
        s,
        "alignment: SectionAlignment {:#x}, FileAlignment {:#x}, {}; NX_COMPAT {}",
        a.section_alignment,
        a.file_alignment,
        if a.page_aligned {
            "every section on a 4 KiB page".to_string()
        } else {
            format!("NOT 4 KiB aligned: {}", a.unaligned_sections.join(", "))
        },
        if a.nx_compat { "set" } else { "not set" }
    );
    if let Some(u) = &r.uname {
        let _ = writeln!(s, "uname: {u}");
    }
    if let Some(c) = &r.cmdline {
        let _ = writeln!(s, "cmdline: {c}");
    }
    if let Some(o) = &r.os_release {
        for l in o
            .lines()
            .filter(|l| l.starts_with("PRETTY_NAME") || l.starts_with("VERSION"))
        {
            let _ = writeln!(s, "os-release: {l}");
        }
    }
    let sig = &r.signature;
    let _ = writeln!(
        s,
        "signature: {}{}",
        if !sig.present {
            "none"
        } else if sig.valid {
            "valid"
        } else {
            "INVALID"
        },
        match (&sig.signer, &sig.problem) {
            (Some(who), None) => format!(
                " (signer {who}{})",
                if sig.checked_against_given_certificate {
                    ", checked against the given certificate"
                } else {
                    ", not checked against a trusted certificate: give --keys or --cert"
                }
            ),
            (_, Some(p)) => format!(" ({p})"),
            _ => String::new(),
        }
    );
    if let Some(p) = &r.pcr11_sha256 {
        let _ = writeln!(s, "predicted PCR 11 (sha256, before systemd-pcrphase): {p}");
    }
    match &r.pcrsig {
        Some(p) => {
            let _ = writeln!(
                s,
                ".pcrsig: {} ({} entries, {} match a fresh prediction, {} signatures valid; signed for phases: {})",
                if p.ok { "matches" } else { "DOES NOT MATCH" },
                p.entries,
                p.matching_prediction,
                p.valid_signatures,
                if p.signed_phases.is_empty() {
                    "none known".to_string()
                } else {
                    p.signed_phases
                        .iter()
                        .map(|ph| if ph.is_empty() { "(empty)" } else { ph.as_str() })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        None => {
            let _ = writeln!(s, ".pcrsig: none");
        }
    }
    s
}
