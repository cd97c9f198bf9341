//! PCR 11 prediction without a TPM.
//!
//! Owns the arithmetic of what systemd-stub and systemd-pcrphase extend into
//! PCR 11, for every bank (sha1, sha256, sha384, sha512), and reading the
//! sections of a finished UKI the way the firmware loader maps them. Which
//! sections a stub measures, and in which order, is the caller's input (see
//! [`super::stub`]): this module only computes.
//!
//! The stub, for each measured section that is present and non-empty, extends
//! `H(name + NUL)` and then `H(content)` (content = VirtualSize bytes of the
//! loaded image). systemd-pcrphase later extends each word of the boot phase
//! path as `H(word)`, without NUL.
//!
//! A section's zero fill (VirtualSize beyond its file data) is hashed from a
//! small reused buffer, never materialised; PE reading is [`crate::pe`]'s.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::sections::{all_names, UkiSectionName};
use crate::keys::DigestAlgorithm;
use crate::pe::{PeError, PeLayout, SectionContent};

/// The PCR the stub and systemd-pcrphase measure into.
pub const PCR_INDEX: u32 = 11;

/// All PCR banks systemd knows, in the order systemd-measure prints them.
pub const ALL_BANKS: [DigestAlgorithm; 4] = [
    DigestAlgorithm::Sha1,
    DigestAlgorithm::Sha256,
    DigestAlgorithm::Sha384,
    DigestAlgorithm::Sha512,
];

/// The section the stub never measures: it carries the signature of the
/// expected measurement, so it cannot be an input to it.
pub const PCRSIG_SECTION: &str = UkiSectionName::Pcrsig.as_str();

/// A prediction that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PcrError {
    /// The file is not a PE image we can read.
    #[error("not a readable PE image: {0}; give a UKI built on systemd-stub (linuxx64.efi.stub)")]
    NotPe(String),
    /// A section header points outside the file.
    #[error("section {name} lies outside the file (offset {offset}, {size} bytes, file has {file_len}); the UKI is truncated or corrupt, rebuild it")]
    SectionOutOfFile {
        /// The section.
        name: String,
        /// PointerToRawData.
        offset: u32,
        /// SizeOfRawData.
        size: u32,
        /// The file's length.
        file_len: usize,
    },
    /// A measured section appears twice.
    #[error("section {0} appears more than once; systemd-stub measures only one, so the prediction would be ambiguous: build the UKI with a single {0}")]
    DuplicateSection(String),
    /// The measured-section list contains `.pcrsig`.
    #[error(".pcrsig is listed as measured; no systemd-stub measures it (it signs the measurement): remove it from the list")]
    PcrsigMeasured,
    /// No bank was asked for.
    #[error("no PCR bank selected; choose at least one of sha1, sha256, sha384, sha512")]
    NoBanks,
    /// A phase path that systemd-pcrphase cannot measure.
    #[error("invalid boot phase path {path:?}: {reason}")]
    BadPhase {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl From<PeError> for PcrError {
    fn from(e: PeError) -> Self {
        PcrError::NotPe(e.0)
    }
}

/// A boot phase path: the words systemd-pcrphase extends into PCR 11 after the
/// stub, written `enter-initrd:leave-initrd:…`.
///
/// Empty words are dropped, as systemd-measure does (`a::b` is `a:b`, `:` is
/// the empty path: the value right after the stub).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PhasePath(Vec<String>);

impl PhasePath {
    /// The empty path: PCR 11 as the stub leaves it, before any phase.
    pub fn empty() -> Self {
        PhasePath(Vec::new())
    }

    /// Parses `word:word:…`; words may not contain control characters.
    pub fn parse(path: &str) -> Result<Self, PcrError> {
        let words: Vec<String> = path
            .split(':')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        if words.iter().any(|w| w.chars().any(char::is_control)) {
            return Err(PcrError::BadPhase {
                path: path.to_string(),
                reason: "phase words must be printable text",
            });
        }
        Ok(PhasePath(words))
    }

    /// The words, in the order they are measured.
    pub fn words(&self) -> &[String] {
        &self.0
    }

    /// Whether this is the empty path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PhasePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(":"))
    }
}

impl FromStr for PhasePath {
    type Err = PcrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PhasePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The phase paths systemd-measure and ukify sign by default: the boot up to
/// the initrd, leaving it, early system init, and the booted system.
pub fn default_phase_paths() -> Vec<PhasePath> {
    [
        "enter-initrd",
        "enter-initrd:leave-initrd",
        "enter-initrd:leave-initrd:sysinit",
        "enter-initrd:leave-initrd:sysinit:ready",
    ]
    .iter()
    .map(|p| PhasePath(p.split(':').map(str::to_string).collect()))
    .collect()
}

fn serialize_hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// A section that went into the measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeasuredSection {
    /// The section name, e.g. `.linux`.
    pub name: String,
    /// The number of bytes measured (the VirtualSize).
    pub size: u64,
}

/// PCR 11 after one phase path, in one bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseValue {
    /// The phase path.
    pub phase: PhasePath,
    /// The PCR value, serialized as lower-case hex.
    #[serde(serialize_with = "serialize_hex")]
    pub value: Vec<u8>,
}

/// The predictions of one bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BankPrediction {
    /// The bank.
    pub bank: DigestAlgorithm,
    /// One value per requested phase path, in the order requested.
    pub phases: Vec<PhaseValue>,
}

/// The predicted PCR 11 values of a UKI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pcr11Prediction {
    /// The PCR index (11).
    pub pcr: u32,
    /// The sections measured, in measurement order.
    pub measured: Vec<MeasuredSection>,
    /// Sections given but not measured by this stub (e.g. `.pcrsig`, or
    /// `.uname` with a 252 stub), in input order.
    pub not_measured: Vec<String>,
    /// One entry per bank, in the order requested.
    pub banks: Vec<BankPrediction>,
}

impl Pcr11Prediction {
    /// The predicted value for `bank` after `phase`, if it was computed.
    pub fn value(&self, bank: DigestAlgorithm, phase: &PhasePath) -> Option<&[u8]> {
        self.banks
            .iter()
            .find(|b| b.bank == bank)?
            .phases
            .iter()
            .find(|p| &p.phase == phase)
            .map(|p| p.value.as_slice())
    }

    /// The phase paths computed, in order.
    pub fn phase_paths(&self) -> Vec<&PhasePath> {
        self.banks
            .first()
            .map(|b| b.phases.iter().map(|p| &p.phase).collect())
            .unwrap_or_default()
    }
}

/// TPM2_PCR_Extend in software: `PCR = H(PCR | digest)`.
fn extend(bank: DigestAlgorithm, pcr: &mut Vec<u8>, digest: &[u8]) {
    let mut buf = Vec::with_capacity(pcr.len() + digest.len());
    buf.extend_from_slice(pcr);
    buf.extend_from_slice(digest);
    *pcr = bank.digest(&buf);
}

/// The digest of a section as mapped (file bytes, then its zero fill),
/// computed incrementally.
pub fn content_digest(bank: DigestAlgorithm, content: &SectionContent<'_>) -> Vec<u8> {
    use openssl::sha::{Sha1, Sha256, Sha384, Sha512};
    if content.zero_tail == 0 {
        return bank.digest(content.file);
    }
    match bank {
        DigestAlgorithm::Sha1 => {
            let mut h = Sha1::new();
            content.feed(|b| h.update(b));
            h.finish().to_vec()
        }
        DigestAlgorithm::Sha256 => {
            let mut h = Sha256::new();
            content.feed(|b| h.update(b));
            h.finish().to_vec()
        }
        DigestAlgorithm::Sha384 => {
            let mut h = Sha384::new();
            content.feed(|b| h.update(b));
            h.finish().to_vec()
        }
        DigestAlgorithm::Sha512 => {
            let mut h = Sha512::new();
            content.feed(|b| h.update(b));
            h.finish().to_vec()
        }
    }
}

/// Predicts PCR 11 for the sections a caller assembles into a UKI.
///
/// `sections` are `(name, content)` pairs in any order (content = exactly the
/// bytes the stub will see, i.e. VirtualSize bytes); `measured_order` is the
/// stub's measured set in its measurement order (from
/// [`super::stub::StubInfo::measured`]). Sections not in `measured_order` are
/// ignored and listed in [`Pcr11Prediction::not_measured`]; empty ones are
/// skipped as the stub skips them. Duplicate banks and phase paths are
/// computed once.
pub fn predict<S: AsRef<str>>(
    sections: &[(&str, &[u8])],
    measured_order: &[S],
    banks: &[DigestAlgorithm],
    phases: &[PhasePath],
) -> Result<Pcr11Prediction, PcrError> {
    let contents: Vec<(&str, SectionContent<'_>)> = sections
        .iter()
        .map(|&(n, file)| (n, SectionContent { file, zero_tail: 0 }))
        .collect();
    predict_contents(&contents, measured_order, banks, phases)
}

/// [`predict`] over sections as the loader maps them (file bytes plus zero
/// fill), so a section's zero tail is hashed without being allocated.
pub fn predict_contents<S: AsRef<str>>(
    sections: &[(&str, SectionContent<'_>)],
    measured_order: &[S],
    banks: &[DigestAlgorithm],
    phases: &[PhasePath],
) -> Result<Pcr11Prediction, PcrError> {
    if banks.is_empty() {
        return Err(PcrError::NoBanks);
    }
    if measured_order.iter().any(|n| n.as_ref() == PCRSIG_SECTION) {
        return Err(PcrError::PcrsigMeasured);
    }
    let mut ordered: Vec<(&str, SectionContent<'_>)> = Vec::new();
    for name in measured_order {
        let name = name.as_ref();
        let mut found = sections.iter().filter(|(n, _)| *n == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(PcrError::DuplicateSection(name.to_string()));
        }
        if let Some(&(n, data)) = first {
            if !data.is_empty() {
                ordered.push((n, data));
            }
        }
    }
    let not_measured = sections
        .iter()
        .filter(|(n, _)| !measured_order.iter().any(|m| m.as_ref() == *n))
        .map(|(n, _)| n.to_string())
        .collect();

    let mut unique_phases: Vec<&PhasePath> = Vec::new();
    for p in phases {
        if !unique_phases.contains(&p) {
            unique_phases.push(p);
        }
    }
    let mut unique_banks: Vec<DigestAlgorithm> = Vec::new();
    for &b in banks {
        if !unique_banks.contains(&b) {
            unique_banks.push(b);
        }
    }

    let banks = unique_banks
        .into_iter()
        .map(|bank| {
            let mut pcr = vec![0u8; bank.output_len()];
            for (name, data) in &ordered {
                let mut tag = name.as_bytes().to_vec();
                tag.push(0);
                extend(bank, &mut pcr, &bank.digest(&tag));
                extend(bank, &mut pcr, &content_digest(bank, data));
            }
            let phases = unique_phases
                .iter()
                .map(|path| {
                    let mut value = pcr.clone();
                    for word in path.words() {
                        extend(bank, &mut value, &bank.digest(word.as_bytes()));
                    }
                    PhaseValue {
                        phase: (*path).clone(),
                        value,
                    }
                })
                .collect();
            BankPrediction { bank, phases }
        })
        .collect();

    Ok(Pcr11Prediction {
        pcr: PCR_INDEX,
        measured: ordered
            .iter()
            .map(|(n, d)| MeasuredSection {
                name: n.to_string(),
                size: d.len(),
            })
            .collect(),
        not_measured,
        banks,
    })
}

/// A section of a PE image as the firmware loader maps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiSection<'a> {
    /// The name from the section header, up to the first NUL.
    pub name: String,
    /// The bytes in the file, cut to VirtualSize.
    pub data: &'a [u8],
    /// The zeros the loader fills in when VirtualSize exceeds SizeOfRawData
    /// (the stub hashes memory, not the file); a count, never a buffer.
    pub zero_tail: u64,
    /// The section's characteristics flags.
    pub characteristics: u32,
}

impl<'a> UkiSection<'a> {
    /// The section as mapped: file bytes and zero fill.
    pub fn content(&self) -> SectionContent<'a> {
        SectionContent {
            file: self.data,
            zero_tail: self.zero_tail,
        }
    }

    /// VirtualSize: the number of bytes the loader maps (and the stub measures).
    pub fn size(&self) -> u64 {
        self.content().len()
    }

    /// The digest of the mapped bytes.
    pub fn digest(&self, bank: DigestAlgorithm) -> Vec<u8> {
        content_digest(bank, &self.content())
    }
}

/// Reads the sections of a PE image (PE32 or PE32+) in header order, through
/// [`crate::pe::PeLayout`].
pub fn read_pe_sections(pe: &[u8]) -> Result<Vec<UkiSection<'_>>, PcrError> {
    let layout = PeLayout::parse_headers(pe)?;
    layout
        .sections
        .iter()
        .map(|s| {
            let file = layout
                .section_file(pe, s)
                .map_err(|_| PcrError::SectionOutOfFile {
                    name: s.name.clone(),
                    offset: s.pointer_to_raw_data,
                    size: s.size_of_raw_data,
                    file_len: pe.len(),
                })?;
            let content = layout.section_content(pe, s)?;
            Ok(UkiSection {
                name: s.name.clone(),
                data: file,
                zero_tail: content.zero_tail,
                characteristics: s.characteristics,
            })
        })
        .collect()
}

/// Predicts PCR 11 for a finished UKI, reading its sections with
/// [`read_pe_sections`]; `measured_order` as in [`predict`]. The stub's own
/// sections (`.text`, `.data`, …) are ignored; UKI sections this stub does not
/// measure are listed in [`Pcr11Prediction::not_measured`].
pub fn predict_uki<S: AsRef<str>>(
    uki: &[u8],
    measured_order: &[S],
    banks: &[DigestAlgorithm],
    phases: &[PhasePath],
) -> Result<Pcr11Prediction, PcrError> {
    let sections = read_pe_sections(uki)?;
    // The stub's own sections (.text, .data, …) are not UKI payload; keep the
    // measured ones and the UKI sections this stub skips, for the report.
    let relevant: Vec<(&str, SectionContent<'_>)> = sections
        .iter()
        .filter(|s| {
            all_names().contains(&s.name.as_str())
                || measured_order.iter().any(|m| m.as_ref() == s.name)
        })
        .map(|s| (s.name.as_str(), s.content()))
        .collect();
    predict_contents(&relevant, measured_order, banks, phases)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEASURED_252: [&str; 7] = [
        ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
    ];

    #[test]
    fn empty_input_gives_zero_pcr_plus_phases() {
        let p = predict::<&str>(
            &[],
            &[],
            &[DigestAlgorithm::Sha256],
            &[PhasePath::empty(), PhasePath::parse("ready").unwrap()],
        )
        .unwrap();
        assert_eq!(
            p.value(DigestAlgorithm::Sha256, &PhasePath::empty()),
            Some(&[0u8; 32][..])
        );
        // extend(0, sha256("ready")) computed by hand.
        let mut expect = vec![0u8; 32];
        expect.extend_from_slice(&DigestAlgorithm::Sha256.digest(b"ready"));
        assert_eq!(
            p.value(DigestAlgorithm::Sha256, &PhasePath::parse("ready").unwrap())
                .unwrap(),
            DigestAlgorithm::Sha256.digest(&expect)
        );
    }

    #[test]
    fn order_follows_the_stub_not_the_input() {
        let a = predict(
            &[(".osrel", b"ID=x\n"), (".linux", b"kernel")],
            &MEASURED_252,
            &ALL_BANKS,
            &default_phase_paths(),
        )
        .unwrap();
        let b = predict(
            &[(".linux", b"kernel"), (".osrel", b"ID=x\n")],
            &MEASURED_252,
            &ALL_BANKS,
            &default_phase_paths(),
        )
        .unwrap();
        assert_eq!(a.banks, b.banks);
        assert_eq!(a.measured[0].name, ".linux");
        for (bank, len) in [(0, 20), (1, 32), (2, 48), (3, 64)] {
            assert_eq!(a.banks[bank].phases[0].value.len(), len);
        }
    }

    #[test]
    fn unmeasured_and_empty_sections_do_not_count() {
        let base = predict(&[(".linux", b"k")], &MEASURED_252, &ALL_BANKS, &[]).unwrap();
        let extra = predict(
            &[
                (".linux", b"k"),
                (".uname", b"6.1"),
                (".pcrsig", b"{}"),
                (".cmdline", b""),
            ],
            &MEASURED_252,
            &ALL_BANKS,
            &[],
        )
        .unwrap();
        assert_eq!(base.banks, extra.banks);
        assert_eq!(extra.not_measured, vec![".uname", ".pcrsig"]);
    }

    #[test]
    fn rejects_duplicates_pcrsig_and_no_banks() {
        assert!(matches!(
            predict(
                &[(".linux", b"a"), (".linux", b"b")],
                &MEASURED_252,
                &ALL_BANKS,
                &[]
            ),
            Err(PcrError::DuplicateSection(_))
        ));
        assert!(matches!(
            predict(&[], &[".linux", ".pcrsig"], &ALL_BANKS, &[]),
            Err(PcrError::PcrsigMeasured)
        ));
        assert!(matches!(
            predict(&[], &MEASURED_252, &[], &[]),
            Err(PcrError::NoBanks)
        ));
    }

    #[test]
    fn phase_paths_normalise_like_systemd_measure() {
        assert_eq!(PhasePath::parse("a::b").unwrap().to_string(), "a:b");
        assert!(PhasePath::parse(":").unwrap().is_empty());
        assert!(PhasePath::parse("").unwrap().is_empty());
        assert_eq!(PhasePath::parse(":a:").unwrap().words(), ["a"]);
        assert!(PhasePath::parse("a\nb").is_err());
        let d = default_phase_paths();
        assert_eq!(d.len(), 4);
        assert_eq!(d[3].to_string(), "enter-initrd:leave-initrd:sysinit:ready");
    }

    #[test]
    fn prediction_serializes_hex_and_phase_strings() {
        let p = predict(
            &[(".linux", b"k")],
            &MEASURED_252,
            &[DigestAlgorithm::Sha1],
            &[PhasePath::parse("enter-initrd").unwrap()],
        )
        .unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["banks"][0]["bank"], "sha1");
        assert_eq!(v["banks"][0]["phases"][0]["phase"], "enter-initrd");
        assert_eq!(
            v["banks"][0]["phases"][0]["value"].as_str().unwrap().len(),
            40
        );
    }

    /// A minimal PE32+ image: one section per (name, VirtualSize, raw data).
    fn tiny_pe(sections: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let headers = 0x40 + 4 + 20 + 240 + 40 * sections.len();
        let mut raw_at = headers.next_multiple_of(0x200);
        let mut pe = vec![0u8; 0x40];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        pe.extend_from_slice(b"PE\0\0");
        pe.extend_from_slice(&0x8664u16.to_le_bytes());
        pe.extend_from_slice(&(sections.len() as u16).to_le_bytes());
        pe.extend_from_slice(&[0; 12]);
        pe.extend_from_slice(&240u16.to_le_bytes());
        pe.extend_from_slice(&0x22u16.to_le_bytes());
        let mut opt = vec![0u8; 240];
        opt[..2].copy_from_slice(&0x20bu16.to_le_bytes());
        opt[32..36].copy_from_slice(&0x1000u32.to_le_bytes());
        opt[36..40].copy_from_slice(&0x200u32.to_le_bytes());
        opt[108..112].copy_from_slice(&16u32.to_le_bytes());
        pe.extend_from_slice(&opt);
        let mut bodies = Vec::new();
        for (i, (name, vsize, data)) in sections.iter().enumerate() {
            let mut h = [0u8; 40];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[8..12].copy_from_slice(&vsize.to_le_bytes());
            h[12..16].copy_from_slice(&(0x1000 * (i as u32 + 1)).to_le_bytes());
            h[16..20].copy_from_slice(&(data.len() as u32).to_le_bytes());
            h[20..24].copy_from_slice(&(raw_at as u32).to_le_bytes());
            h[36..40].copy_from_slice(&0x4000_0040u32.to_le_bytes());
            pe.extend_from_slice(&h);
            bodies.push((raw_at, data.to_vec()));
            raw_at = (raw_at + data.len()).next_multiple_of(0x200);
        }
        for (at, data) in bodies {
            pe.resize(at, 0);
            pe.extend_from_slice(&data);
        }
        pe
    }

    #[test]
    fn pe_sections_are_virtual_size_long() {
        let pe = tiny_pe(&[
            (".osrel", 3, b"ID=x\0\0\0\0"),
            (".cmdline", 6, b"ro"),
            (".initrd", 0, b"ignored"),
        ]);
        let s = read_pe_sections(&pe).unwrap();
        assert_eq!(s[0].name, ".osrel");
        assert_eq!(s[0].data, b"ID=");
        // The loader zero-fills beyond SizeOfRawData; the stub hashes that.
        assert_eq!((s[1].data, s[1].zero_tail), (&b"ro"[..], 4));
        assert_eq!(
            s[1].digest(DigestAlgorithm::Sha256),
            DigestAlgorithm::Sha256.digest(b"ro\0\0\0\0")
        );
        assert_eq!(s[2].size(), 0);
        let p = predict_uki(&pe, &MEASURED_252, &ALL_BANKS, &[PhasePath::empty()]).unwrap();
        let names: Vec<_> = p.measured.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, [".osrel", ".cmdline"], "empty .initrd is skipped");
        let by_hand = predict(
            &[(".cmdline", b"ro\0\0\0\0"), (".osrel", b"ID=")],
            &MEASURED_252,
            &ALL_BANKS,
            &[PhasePath::empty()],
        )
        .unwrap();
        assert_eq!(p.banks, by_hand.banks);
    }

    #[test]
    fn section_beyond_the_file_is_an_error() {
        let mut pe = tiny_pe(&[(".osrel", 4, b"ID=x")]);
        pe.truncate(pe.len() - 2);
        assert!(matches!(
            read_pe_sections(&pe),
            Err(PcrError::SectionOutOfFile { .. })
        ));
    }

    #[test]
    fn not_a_pe_is_an_error() {
        assert!(matches!(
            read_pe_sections(b"MZ but not really"),
            Err(PcrError::NotPe(_))
        ));
    }
}
