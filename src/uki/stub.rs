//! systemd-stub inspection: which stub this is and what it measures.
//!
//! Owns reading a systemd-stub PE (`linuxx64.efi.stub`, or a finished UKI
//! built on one): its version from `.sdmagic`, whether it already carries an
//! Authenticode signature, its `.sbat`, and — what PCR 11 prediction depends
//! on — the set of sections it measures, in the order it measures them.
//!
//! The measured set is read from the stub binary itself: systemd compiles its
//! `unified_sections[]` name table (enum order, the measurement order) into
//! read-only data as consecutive NUL-terminated strings starting
//! `.linux\0.osrel\0.cmdline\0`. Version numbers alone mislead (distributions
//! backport measurement changes), so the version table here is only a fallback
//! for stubs whose table cannot be found, and [`MeasuredSet::source`] says
//! which method was used.

use std::path::Path;

use serde::Serialize;

use super::sections::{all_names, measured_names, UkiSectionName};
use crate::pe::{AlignmentReport, PeError, PeLayout};

/// `IMAGE_SCN_CNT_CODE`.
const SCN_CNT_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_MEM_EXECUTE`.
const SCN_MEM_EXECUTE: u32 = 0x2000_0000;

/// The order in which systemd-stub measures sections into PCR 11 (upstream's
/// `UnifiedSection` enum without `.pcrsig`; see [`UkiSectionName`]). A given
/// stub measures a subset.
pub const MEASUREMENT_ORDER: [&str; 13] = measured_names();

/// Every name that has appeared in a stub's section table, `.pcrsig` included.
/// The table in the binary ends at the first string not in this list (in
/// 254.26 the linker placed `.compat` right after `.pcrpkey`).
pub const UNIFIED_SECTIONS: [&str; 14] = all_names();

/// `.pcrsig`, the one name in the table that is never measured.
const PCRSIG_SECTION: &str = UkiSectionName::Pcrsig.as_str();

/// The start of every section table since systemd 252.
const TABLE_START: &[u8] = b".linux\0.osrel\0.cmdline\0";

/// The marker systemd-stub puts in `.sdmagic`.
const SDMAGIC_PREFIX: &[u8] = b"#### LoaderInfo: systemd-stub ";

/// A stub that cannot be inspected or used for PCR prediction.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    /// Reading the file failed.
    #[error("cannot read stub {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PE structure is unreadable.
    #[error("the stub is not a readable PE image: {0}")]
    Pe(#[from] PeError),
    /// `.sbat` is not text.
    #[error("the stub's .sbat section is not UTF-8 text (SBAT is CSV); the stub is corrupt, use the one from systemd-boot-efi")]
    SbatNotText,
    /// Neither the section table nor a known version says what is measured.
    #[error("cannot tell which sections this stub measures into PCR 11: {0}; use systemd-stub 252 or newer (package systemd-boot-efi)")]
    MeasuredSetUnknown(String),
}

/// The stub's version, from `.sdmagic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StubVersion {
    /// The whole version string, e.g. `254.26-1~bpo12+1`.
    pub full: String,
    /// The systemd major version, e.g. 254.
    pub major: u32,
}

/// How the measured set was determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeasuredSetSource {
    /// From the section-name table in the stub binary (authoritative).
    StubTable,
    /// From the version number (fallback; wrong for backports).
    VersionTable,
}

/// The sections a stub measures into PCR 11.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeasuredSet {
    /// Section names in measurement order.
    pub sections: Vec<String>,
    /// How they were determined.
    pub source: MeasuredSetSource,
    /// The raw table found in the binary (with `.pcrsig`), when found.
    pub table: Option<Vec<String>>,
}

/// What sbkit knows about a systemd-stub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StubInfo {
    /// The version, when `.sdmagic` names one.
    pub version: Option<StubVersion>,
    /// Whether the image already carries a certificate table (is signed).
    pub signed: bool,
    /// The `.sbat` text up to its terminating NUL, when present.
    pub sbat: Option<String>,
    /// The measured set, unless neither method could determine it.
    pub measured: Option<MeasuredSet>,
    /// Why a fallback was taken or a method failed, or a risk (alignment), for the operator.
    pub notes: Vec<String>,
    /// SectionAlignment, page alignment of its sections, NX_COMPAT.
    pub alignment: AlignmentReport,
}

impl StubInfo {
    /// The measured set, or an error explaining why it is unknown.
    pub fn measured(&self) -> Result<&MeasuredSet, StubError> {
        self.measured.as_ref().ok_or_else(|| {
            let reason = if self.notes.is_empty() {
                "no section table and no version found".to_string()
            } else {
                self.notes.join("; ")
            };
            StubError::MeasuredSetUnknown(reason)
        })
    }
}

/// Reads and inspects a stub file.
pub fn inspect_file(path: &Path) -> Result<StubInfo, StubError> {
    let data = std::fs::read(path).map_err(|source| StubError::Read {
        path: path.display().to_string(),
        source,
    })?;
    inspect(&data)
}

/// Inspects a systemd-stub (or a UKI built on one) held in memory.
pub fn inspect(pe: &[u8]) -> Result<StubInfo, StubError> {
    let layout = PeLayout::parse(pe)?;
    let signed = layout.certificate_table(pe)?.1 != 0;
    let mut notes = Vec::new();
    let alignment = layout.alignment_report();
    if !alignment.page_aligned {
        notes.push(format!(
            "the stub's own sections are not all on 4 KiB pages (SectionAlignment {:#x}{}{}): firmware that enforces page-granular memory protection (NX / W^X image protection) may refuse to load the UKI, hang or reboot-loop; sbkit puts every section it adds on a 4 KiB boundary but cannot move the stub's own, so prefer a stub built with 4 KiB SectionAlignment (systemd 253 or newer)",
            alignment.section_alignment,
            if alignment.unaligned_sections.is_empty() { "" } else { "; " },
            alignment.unaligned_sections.join(", ")
        ));
    }

    let mut sdmagic = None;
    let mut sbat = None;
    let mut tables: Vec<Vec<String>> = Vec::new();
    for h in &layout.sections {
        let name = h.name.as_str();
        // Only the file bytes matter here: a zero fill holds no strings.
        let data = layout.section_file(pe, h)?;
        match name {
            ".sdmagic" => sdmagic = Some(data),
            ".sbat" => {
                let text = data.split(|&b| b == 0).next().unwrap_or_default();
                let text = std::str::from_utf8(text).map_err(|_| StubError::SbatNotText)?;
                sbat = Some(text.to_string());
            }
            _ => {}
        }
        // Skip code, and the payload sections of a UKI: an initrd or kernel may
        // well contain a copy of some stub, whose table is not this stub's.
        let executable = h.characteristics & (SCN_MEM_EXECUTE | SCN_CNT_CODE);
        if executable == 0 && UkiSectionName::from_name(name).is_none() {
            for t in find_section_tables(data) {
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
    }

    let version = sdmagic
        .and_then(parse_sdmagic)
        .or_else(|| parse_sdmagic(pe));
    if version.is_none() {
        notes.push("no \"LoaderInfo: systemd-stub\" marker (.sdmagic): not a systemd-stub?".into());
    }

    let measured = match tables.len() {
        1 => {
            let table = tables.remove(0);
            Some(MeasuredSet {
                sections: measured_from_table(&table),
                source: MeasuredSetSource::StubTable,
                table: Some(table),
            })
        }
        n => {
            notes.push(if n == 0 {
                "no section-name table (\".linux\\0.osrel\\0.cmdline\\0…\") in the stub's data"
                    .into()
            } else {
                format!("{n} different section-name tables in the stub's data")
            });
            match &version {
                Some(v) => match measured_sections_for_version(v.major) {
                    Some(s) => {
                        notes.push(format!(
                            "measured set taken from the version table for systemd {}: wrong if the distribution backported measurement changes",
                            v.major
                        ));
                        Some(MeasuredSet {
                            sections: s.iter().map(|s| s.to_string()).collect(),
                            source: MeasuredSetSource::VersionTable,
                            table: None,
                        })
                    }
                    None => {
                        notes.push(format!(
                            "systemd-stub {} predates PCR 11 measurements (systemd 252)",
                            v.full
                        ));
                        None
                    }
                },
                None => None,
            }
        }
    };

    Ok(StubInfo {
        version,
        signed,
        sbat,
        measured,
        notes,
        alignment,
    })
}

/// Parses `#### LoaderInfo: systemd-stub 254.26-1~bpo12+1 ####` anywhere in `data`.
fn parse_sdmagic(data: &[u8]) -> Option<StubVersion> {
    let start = find(data, SDMAGIC_PREFIX)? + SDMAGIC_PREFIX.len();
    let rest = data.get(start..)?;
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(rest.len());
    let full = std::str::from_utf8(&rest[..end]).ok()?.to_string();
    let digits: String = full.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().ok()?;
    Some(StubVersion { full, major })
}

/// The first occurrence of `needle`: candidates are found by its first byte
/// (memchr-like), so a long run of other bytes is skipped quickly.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(rel) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from + rel;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// All section-name tables in `data`: runs of NUL-terminated strings starting
/// with `.linux .osrel .cmdline`, preceded by a NUL (or the data's start), read
/// while the strings are known section names. A run counts only if it holds
/// `.pcrsig` and `.pcrpkey` and its names follow [`UNIFIED_SECTIONS`] order, as
/// systemd's enum does ("PLEASE DO NOT REORDER").
pub fn find_section_tables(data: &[u8]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(rel) = data.get(from..).and_then(|d| find(d, TABLE_START)) {
        let at = from + rel;
        from = at + 1;
        if at > 0 && data.get(at - 1) != Some(&0) {
            continue;
        }
        let mut names = Vec::new();
        for s in data[at..]
            .split(|&b| b == 0)
            .take(UNIFIED_SECTIONS.len() + 1)
        {
            match std::str::from_utf8(s) {
                Ok(s) if UNIFIED_SECTIONS.contains(&s) => names.push(s.to_string()),
                _ => break,
            }
        }
        let rank = |n: &String| UNIFIED_SECTIONS.iter().position(|u| u == n);
        let ranks: Vec<_> = names.iter().map(rank).collect();
        let ordered = ranks.windows(2).all(|w| w[0] < w[1]);
        let complete =
            names.iter().any(|n| n == PCRSIG_SECTION) && names.iter().any(|n| n == ".pcrpkey");
        if ordered && complete && !found.contains(&names) {
            found.push(names);
        }
    }
    found
}

/// The measured set of a table: everything but `.pcrsig`, in
/// [`MEASUREMENT_ORDER`].
fn measured_from_table(table: &[String]) -> Vec<String> {
    MEASUREMENT_ORDER
        .iter()
        .filter(|m| table.iter().any(|t| t == *m))
        .map(|m| m.to_string())
        .collect()
}

/// What upstream systemd-stub of a major version measures, in order; `None`
/// before 252 (no PCR 11 measurements). Only a fallback: Debian's 254.26
/// matches upstream 254 here, but any distribution may backport changes.
pub fn measured_sections_for_version(major: u32) -> Option<Vec<&'static str>> {
    let added: &[(u32, &str)] = &[
        (252, ".linux"),
        (252, ".osrel"),
        (252, ".cmdline"),
        (252, ".initrd"),
        (256, ".ucode"),
        (252, ".splash"),
        (252, ".dtb"),
        (254, ".uname"),
        (254, ".sbat"),
        (252, ".pcrpkey"),
        (257, ".profile"),
        (257, ".dtbauto"),
        (257, ".hwids"),
    ];
    (major >= 252).then(|| {
        added
            .iter()
            .filter(|(since, _)| major >= *since)
            .map(|(_, n)| *n)
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(names: &[&str]) -> Vec<u8> {
        let mut v = b"\0params\0.compat\0".to_vec();
        for n in names {
            v.extend_from_slice(n.as_bytes());
            v.push(0);
        }
        v.extend_from_slice(b".compat\0\0\0BS->AllocatePool");
        v
    }

    #[test]
    fn finds_the_252_and_254_tables() {
        let t252 = [
            ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrsig", ".pcrpkey",
        ];
        let found = find_section_tables(&table(&t252));
        assert_eq!(found, vec![t252.map(String::from).to_vec()]);
        assert_eq!(
            measured_from_table(&found[0]),
            [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"]
        );
        let t254 = [
            ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".uname", ".sbat",
            ".pcrsig", ".pcrpkey",
        ];
        let found = find_section_tables(&table(&t254));
        assert_eq!(measured_from_table(&found[0]).len(), 9);
    }

    #[test]
    fn ignores_partial_or_embedded_runs() {
        assert!(find_section_tables(&table(&[".linux", ".osrel", ".cmdline"])).is_empty());
        assert!(find_section_tables(b"x.linux\0.osrel\0.cmdline\0.pcrsig\0.pcrpkey\0").is_empty());
        // Out of enum order: not systemd's table.
        assert!(find_section_tables(&table(&[
            ".linux", ".osrel", ".cmdline", ".pcrpkey", ".pcrsig"
        ]))
        .is_empty());
    }

    #[test]
    fn version_table_fallback() {
        assert_eq!(measured_sections_for_version(251), None);
        assert_eq!(measured_sections_for_version(252).unwrap().len(), 7);
        let v254 = measured_sections_for_version(254).unwrap();
        assert_eq!(&v254[6..8], [".uname", ".sbat"]);
        assert_eq!(measured_sections_for_version(256).unwrap()[4], ".ucode");
        assert_eq!(measured_sections_for_version(257).unwrap().len(), 13);
    }

    #[test]
    fn parses_sdmagic() {
        let v = parse_sdmagic(b"#### LoaderInfo: systemd-stub 254.26-1~bpo12+1 ####\0").unwrap();
        assert_eq!(v.full, "254.26-1~bpo12+1");
        assert_eq!(v.major, 254);
        assert_eq!(
            parse_sdmagic(b"#### LoaderInfo: systemd-boot 254 ####"),
            None
        );
    }
}
