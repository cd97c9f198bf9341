//! Appending sections to a PE image: how a UKI is made from systemd-stub.
//!
//! No crate re-lays out a PE, so this is our own: new raw data aligned to
//! FileAlignment, VirtualSize exact, SizeOfImage recomputed, a leftover COFF
//! symbol table dropped, and room made for the new section headers or a clear
//! failure.
//!
//! Every added section starts on a 4 KiB virtual address whatever the base
//! image's SectionAlignment (Debian bookworm's systemd 252 stub declares
//! 0x200): firmware that maps images with page-granular memory protection
//! hangs or reboot-loops on data sharing a page with code. The declared
//! SectionAlignment stays the stub's own: 4 KiB is a multiple of any smaller
//! power of two, so the new addresses are valid under it, while raising it
//! would claim a page alignment the stub's own sections (252's `.sdmagic` at
//! 0x19100) do not have — edk2's image protection checks each section against
//! the declared value and a loader trusting a false 4 KiB would apply page
//! permissions across section boundaries. SizeOfImage is rounded to 4 KiB (a
//! multiple of either alignment). The Authenticode digest covers these header
//! fields as written, and PCR 11 covers section contents only, so neither
//! depends on the choice.

use super::image::{
    align_up, pe_checksum, read_u16, read_u32, write_u16, write_u32, PeError, PeLayout,
    DLLCHARACTERISTICS_NX_COMPAT, PAGE_SIZE, SECTION_HEADER_SIZE,
};

/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`.
pub const READ_ONLY_DATA: u32 = 0x4000_0040;

/// A section to add; borrowed, so a large initrd is not copied per UKI.
#[derive(Clone, Copy, Debug)]
pub struct NewSection<'a> {
    /// Name, at most 8 bytes (e.g. `.linux`).
    pub name: &'a str,
    /// Contents; VirtualSize is exactly this length.
    pub data: &'a [u8],
}

/// Appending failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The base image does not parse.
    #[error(transparent)]
    Pe(#[from] PeError),
    /// The base image is signed; appending would invalidate the signature silently.
    #[error("the stub is already signed; use an unsigned systemd-stub (e.g. from systemd-boot-efi), or strip its signature first (sbattach --remove)")]
    Signed,
    /// A name does not fit a section header.
    #[error("section name {0:?} is longer than 8 bytes")]
    NameTooLong(String),
    /// No room for the new headers.
    #[error("the stub has no room for {needed} more section headers: its headers would reach byte {end}, past the first section's address {limit:#x}; use a stub built with room for headers")]
    NoRoom {
        /// How many headers were to be added.
        needed: usize,
        /// Where the headers would end.
        end: usize,
        /// The lowest section RVA.
        limit: u32,
    },
    /// The image would exceed the format's limits.
    #[error("image too large: {0}")]
    TooLarge(String),
}

/// Choices beyond the section list.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppendOptions {
    /// Clear `IMAGE_DLLCHARACTERISTICS_NX_COMPAT` in the result (a UKI whose
    /// kernel does not declare it must not promise it: systemd 258's rule).
    /// NX is never set where the base image lacks it.
    pub clear_nx_compat: bool,
}

/// Returns `base` with `sections` appended.
pub fn append_sections(base: &[u8], sections: &[NewSection<'_>]) -> Result<Vec<u8>, AppendError> {
    append_sections_with(base, sections, AppendOptions::default())
}

/// [`append_sections`] with options.
pub fn append_sections_with(
    base: &[u8],
    sections: &[NewSection<'_>],
    options: AppendOptions,
) -> Result<Vec<u8>, AppendError> {
    let layout = PeLayout::parse(base)?;
    for (what, v) in [
        ("FileAlignment", layout.file_alignment),
        ("SectionAlignment", layout.section_alignment),
    ] {
        if !v.is_power_of_two() || v > 0x1_0000 && what == "FileAlignment" {
            return Err(PeError(format!(
                "{what} {v:#x} is not a power of two{}; the image is corrupt",
                if what == "FileAlignment" {
                    " up to 64 KiB"
                } else {
                    ""
                }
            ))
            .into());
        }
    }
    if layout.certificate_table(base)?.1 != 0 {
        return Err(AppendError::Signed);
    }
    for s in sections {
        if s.name.len() > 8 {
            return Err(AppendError::NameTooLong(s.name.to_string()));
        }
    }
    // Everything before the first section's data is kept as the headers: a
    // base whose SizeOfHeaders or section data lies inside its own headers
    // would lose them (found by the pe_append fuzz target).
    if (layout.size_of_headers as usize) < layout.section_table_end {
        return Err(PeError(format!(
            "SizeOfHeaders {:#x} is smaller than the headers themselves (they end at {:#x}); the image is corrupt",
            layout.size_of_headers, layout.section_table_end
        ))
        .into());
    }
    if let Some(s) = layout.sections.iter().find(|s| {
        s.size_of_raw_data > 0 && (s.pointer_to_raw_data as usize) < layout.section_table_end
    }) {
        return Err(PeError(format!(
            "section {}'s file data at {:#x} overlaps the headers (they end at {:#x}); the image is corrupt",
            s.name, s.pointer_to_raw_data, layout.section_table_end
        ))
        .into());
    }
    let old_count = layout.sections.len();
    if old_count + sections.len() > 96 {
        return Err(AppendError::TooLarge("more than 96 sections".into()));
    }

    // Only headers and section data are kept: trailing bytes (a COFF symbol
    // table, debug junk) would otherwise sit between sections and shift.
    let body_start = layout
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .map(|s| s.pointer_to_raw_data)
        .min()
        .unwrap_or(layout.size_of_headers) as usize;
    // Parse checked every section's file range, so these sums fit the file.
    let body_end = layout
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .map(|s| s.pointer_to_raw_data as usize + s.size_of_raw_data as usize)
        .max()
        .unwrap_or(body_start)
        .max(body_start);

    let headers_end =
        layout.section_table_offset + (old_count + sections.len()) * SECTION_HEADER_SIZE;
    let falign = layout.file_alignment as u64;
    // New sections start on pages whatever the base declares (see the module doc).
    let salign = (layout.section_alignment as u64).max(PAGE_SIZE as u64);
    let mut new_size_of_headers = layout.size_of_headers as usize;
    if headers_end > new_size_of_headers.min(body_start) {
        new_size_of_headers = align_up(headers_end as u64, falign) as usize;
        let lowest_rva = layout
            .sections
            .iter()
            .map(|s| s.virtual_address)
            .min()
            .unwrap_or(u32::MAX);
        if new_size_of_headers as u64 > lowest_rva as u64 {
            return Err(AppendError::NoRoom {
                needed: sections.len(),
                end: headers_end,
                limit: lowest_rva,
            });
        }
    }
    let shift = new_size_of_headers.saturating_sub(body_start);

    let mut out = Vec::with_capacity(
        body_end + shift + sections.iter().map(|s| s.data.len() + 4096).sum::<usize>(),
    );
    out.extend_from_slice(&base[..body_start.min(base.len())]);
    out.resize(body_start + shift, 0);
    out.extend_from_slice(&base[body_start..body_end]);

    // Existing sections move with the body.
    if shift > 0 {
        for s in &layout.sections {
            if s.size_of_raw_data > 0 {
                let moved =
                    u32::try_from(s.pointer_to_raw_data as u64 + shift as u64).map_err(|_| {
                        AppendError::TooLarge(format!("section {} passes 4 GiB", s.name))
                    })?;
                write_u32(&mut out, s.header_offset + 20, moved);
            }
        }
        write_u32(
            &mut out,
            layout.optional_offset + 60,
            new_size_of_headers as u32,
        );
    }
    // Drop the COFF symbol table: its data was cut with the trailing bytes.
    write_u32(&mut out, layout.coff_offset + 8, 0);
    write_u32(&mut out, layout.coff_offset + 12, 0);

    let mut next_rva = layout
        .sections
        .iter()
        .map(|s| s.virtual_address as u64 + s.virtual_size.max(s.size_of_raw_data) as u64)
        .max()
        .unwrap_or(0);
    let mut initialized = read_u32(&out, layout.optional_offset + 8)? as u64;
    for (i, s) in sections.iter().enumerate() {
        let rva = align_up(next_rva, salign);
        let raw_ptr = align_up(out.len() as u64, falign);
        let raw_size = align_up(s.data.len() as u64, falign);
        if rva + s.data.len() as u64 > u32::MAX as u64 || raw_ptr + raw_size > u32::MAX as u64 {
            return Err(AppendError::TooLarge(format!(
                "section {} passes 4 GiB",
                s.name
            )));
        }
        out.resize(raw_ptr as usize, 0);
        out.extend_from_slice(s.data);
        out.resize((raw_ptr + raw_size) as usize, 0);

        let h = layout.section_table_offset + (old_count + i) * SECTION_HEADER_SIZE;
        if h + SECTION_HEADER_SIZE > out.len() {
            return Err(AppendError::NoRoom {
                needed: sections.len(),
                end: headers_end,
                limit: 0,
            });
        }
        let mut header = [0u8; SECTION_HEADER_SIZE];
        header[..s.name.len()].copy_from_slice(s.name.as_bytes());
        header[8..12].copy_from_slice(&(s.data.len() as u32).to_le_bytes());
        header[12..16].copy_from_slice(&(rva as u32).to_le_bytes());
        header[16..20].copy_from_slice(&(raw_size as u32).to_le_bytes());
        header[20..24].copy_from_slice(&(raw_ptr as u32).to_le_bytes());
        header[36..40].copy_from_slice(&READ_ONLY_DATA.to_le_bytes());
        out[h..h + SECTION_HEADER_SIZE].copy_from_slice(&header);

        next_rva = rva + s.data.len() as u64;
        initialized += raw_size;
    }
    let count = read_u16(&out, layout.coff_offset + 2)? as usize + sections.len();
    write_u16(&mut out, layout.coff_offset + 2, count as u16);
    let size_of_image = align_up(next_rva, salign);
    write_u32(&mut out, layout.optional_offset + 56, size_of_image as u32);
    write_u32(
        &mut out,
        layout.optional_offset + 8,
        initialized.min(u32::MAX as u64) as u32,
    );
    if options.clear_nx_compat {
        let off = layout.dll_characteristics_offset();
        let value = read_u16(&out, off)? & !DLLCHARACTERISTICS_NX_COMPAT;
        write_u16(&mut out, off, value);
    }
    let checksum = pe_checksum(&out, layout.checksum_offset);
    write_u32(&mut out, layout.checksum_offset, checksum);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE32+ image with no sections and the given SizeOfHeaders.
    fn bare_pe(size_of_headers: u32) -> Vec<u8> {
        let mut pe = vec![0u8; 0x400];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe[0x44..0x46].copy_from_slice(&0x8664u16.to_le_bytes());
        pe[0x54..0x56].copy_from_slice(&240u16.to_le_bytes());
        let opt = 0x58;
        pe[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        pe[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
        pe[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
        pe[opt + 60..opt + 64].copy_from_slice(&size_of_headers.to_le_bytes());
        pe[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        pe
    }

    /// Fuzz finding (pe_append): SizeOfHeaders 0 made the headers vanish
    /// from the output. Refused now; a sane value works and stays a PE.
    #[test]
    fn headers_are_never_dropped() {
        let s = [NewSection {
            name: ".osrel",
            data: b"ID=x",
        }];
        let e = append_sections(&bare_pe(0), &s).unwrap_err();
        assert!(e.to_string().contains("SizeOfHeaders 0x0"), "{e}");
        let out = append_sections(&bare_pe(0x400), &s).unwrap();
        let layout = PeLayout::parse(&out).unwrap();
        assert_eq!(layout.sections[0].virtual_address % PAGE_SIZE, 0);
        assert_eq!(layout.section_data(&out, &layout.sections[0]), b"ID=x");
    }
}
