//! Reading and editing the headers of a PE/COFF image in place: the few
//! fields UKI assembly and Authenticode need, at their exact offsets.
//! All untrusted offsets go through [`super::reader::Bytes`].

use super::reader::Bytes;

/// `IMAGE_DIRECTORY_ENTRY_SECURITY`: the certificate table.
pub const SECURITY_DIRECTORY: usize = 4;
/// Size of one section header.
pub const SECTION_HEADER_SIZE: usize = 40;
/// The page size firmware memory protection works in.
pub const PAGE_SIZE: u32 = 4096;
/// `IMAGE_DLLCHARACTERISTICS_NX_COMPAT`.
pub const DLLCHARACTERISTICS_NX_COMPAT: u16 = 0x0100;
/// The most zero fill (VirtualSize beyond SizeOfRawData) a section may
/// declare before readers refuse it: hashing 4 GiB of zeros per PCR bank is an
/// attack, and no UKI section has any.
pub const MAX_ZERO_FILL: u64 = 64 << 20;
const PE32_MAGIC: u16 = 0x10b;
const PE32_PLUS_MAGIC: u16 = 0x20b;

/// A byte string that is not a PE image we can work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid PE image ({0})")]
pub struct PeError(pub String);

/// One section header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Name, up to 8 bytes, NULs removed.
    pub name: String,
    /// `VirtualSize`: bytes that matter.
    pub virtual_size: u32,
    /// `VirtualAddress` (RVA).
    pub virtual_address: u32,
    /// `SizeOfRawData`: bytes in the file, a multiple of FileAlignment.
    pub size_of_raw_data: u32,
    /// `PointerToRawData`: file offset.
    pub pointer_to_raw_data: u32,
    /// `Characteristics`.
    pub characteristics: u32,
    /// File offset of this header.
    pub header_offset: usize,
}

/// Header offsets and values of a parsed image.
#[derive(Clone, Debug)]
pub struct PeLayout {
    /// Offset of the COFF file header (after `PE\0\0`).
    pub coff_offset: usize,
    /// Offset of the optional header.
    pub optional_offset: usize,
    /// Whether this is PE32+ (64-bit).
    pub pe32_plus: bool,
    /// Offset of the `CheckSum` field.
    pub checksum_offset: usize,
    /// Offset of the data directory array.
    pub data_directories_offset: usize,
    /// `NumberOfRvaAndSizes`.
    pub number_of_directories: u32,
    /// Offset of the first section header.
    pub section_table_offset: usize,
    /// `SectionAlignment`.
    pub section_alignment: u32,
    /// `FileAlignment`.
    pub file_alignment: u32,
    /// `SizeOfHeaders`.
    pub size_of_headers: u32,
    /// `SizeOfImage`.
    pub size_of_image: u32,
    /// `DllCharacteristics`.
    pub dll_characteristics: u16,
    /// COFF `Machine` (0x8664 x64, 0xaa64 AArch64, …).
    pub machine: u16,
    /// `ImageBase`: the preferred load address.
    pub image_base: u64,
    /// Offset just past the last section header.
    pub section_table_end: usize,
    /// The sections, in header order.
    pub sections: Vec<Section>,
}

/// Little-endian field access with bounds checks (see [`super::reader`]).
pub(crate) fn read_u16(b: &[u8], off: usize) -> Result<u16, PeError> {
    Bytes::new(b).u16(off as u64, "field")
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> Result<u32, PeError> {
    Bytes::new(b).u32(off as u64, "field")
}

/// Writes a field of an image we built or validated ourselves; offsets come
/// from [`PeLayout::parse`] of that same buffer, so they are in bounds.
pub(crate) fn write_u32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off.saturating_add(4)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// See [`write_u32`].
pub(crate) fn write_u16(b: &mut [u8], off: usize, v: u16) {
    if let Some(s) = b.get_mut(off..off.saturating_add(2)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

impl PeLayout {
    /// Parses the headers of `b`. Every offset and length is checked against
    /// the file: the result's offsets can be used to index `b`, and every
    /// section's file data lies inside `b`.
    pub fn parse(b: &[u8]) -> Result<Self, PeError> {
        let layout = Self::parse_headers(b)?;
        let r = Bytes::new(b);
        for s in &layout.sections {
            if s.size_of_raw_data > 0 {
                r.range(
                    s.pointer_to_raw_data as u64,
                    s.size_of_raw_data as u64,
                    &format!("section {} (header at {:#x})", s.name, s.header_offset),
                )?;
            }
        }
        Ok(layout)
    }

    /// Parses and checks the headers only: section file ranges are left to
    /// [`PeLayout::section_file`] (readers that report per section use this).
    pub fn parse_headers(b: &[u8]) -> Result<Self, PeError> {
        let r = Bytes::new(b);
        if b.get(..2) != Some(b"MZ") {
            return Err(PeError("no MZ signature at offset 0".into()));
        }
        let pe_offset = r.u32(0x3c, "e_lfanew")? as u64;
        if r.range(pe_offset, 4, "PE signature")? != b"PE\0\0" {
            return Err(PeError(format!("no PE signature at offset {pe_offset:#x}")));
        }
        let coff_offset = pe_offset + 4;
        let machine = r.u16(coff_offset, "COFF Machine")?;
        let number_of_sections = r.u16(coff_offset + 2, "NumberOfSections")? as u64;
        let size_of_optional = r.u16(coff_offset + 16, "SizeOfOptionalHeader")? as u64;
        let optional_offset = coff_offset + 20;
        let magic = r.u16(optional_offset, "optional header magic")?;
        let pe32_plus = match magic {
            PE32_PLUS_MAGIC => true,
            PE32_MAGIC => false,
            other => {
                return Err(PeError(format!(
                    "unknown optional header magic {other:#x} at offset {optional_offset:#x}"
                )))
            }
        };
        let (rva_count_offset, dirs_offset) = if pe32_plus {
            (optional_offset + 108, optional_offset + 112)
        } else {
            (optional_offset + 92, optional_offset + 96)
        };
        let number_of_directories = r.u32(rva_count_offset, "NumberOfRvaAndSizes")?;
        let section_table_offset = optional_offset + size_of_optional;
        let dirs_end = dirs_offset + 8 * number_of_directories as u64;
        if dirs_end > section_table_offset {
            return Err(PeError(format!(
                "{number_of_directories} data directories from offset {dirs_offset:#x} overrun the optional header (it ends at {section_table_offset:#x})"
            )));
        }
        let table = r.range(
            section_table_offset,
            number_of_sections * SECTION_HEADER_SIZE as u64,
            "section table",
        )?;
        let section_table_end = section_table_offset + table.len() as u64;
        let mut sections = Vec::with_capacity(number_of_sections as usize);
        for (i, h) in table.chunks_exact(SECTION_HEADER_SIZE).enumerate() {
            let field = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            // The loader and systemd-stub compare the 8 raw bytes up to the first NUL.
            let raw_name = h[..8].split(|&c| c == 0).next().unwrap_or_default();
            sections.push(Section {
                name: String::from_utf8_lossy(raw_name).into_owned(),
                virtual_size: field(8),
                virtual_address: field(12),
                size_of_raw_data: field(16),
                pointer_to_raw_data: field(20),
                characteristics: field(36),
                header_offset: (section_table_offset as usize) + i * SECTION_HEADER_SIZE,
            });
        }
        let layout = PeLayout {
            machine,
            image_base: if pe32_plus {
                let lo = r.u32(optional_offset + 24, "ImageBase")? as u64;
                let hi = r.u32(optional_offset + 28, "ImageBase")? as u64;
                hi << 32 | lo
            } else {
                r.u32(optional_offset + 28, "ImageBase")? as u64
            },
            coff_offset: coff_offset as usize,
            optional_offset: optional_offset as usize,
            pe32_plus,
            checksum_offset: (optional_offset + 64) as usize,
            data_directories_offset: dirs_offset as usize,
            number_of_directories,
            section_table_offset: section_table_offset as usize,
            section_table_end: section_table_end as usize,
            section_alignment: r.u32(optional_offset + 32, "SectionAlignment")?,
            file_alignment: r.u32(optional_offset + 36, "FileAlignment")?,
            size_of_image: r.u32(optional_offset + 56, "SizeOfImage")?,
            size_of_headers: r.u32(optional_offset + 60, "SizeOfHeaders")?,
            dll_characteristics: r.u16(optional_offset + 70, "DllCharacteristics")?,
            sections,
        };
        if layout.file_alignment == 0 || layout.section_alignment == 0 {
            return Err(PeError(format!(
                "zero FileAlignment or SectionAlignment at offset {:#x}",
                optional_offset + 32
            )));
        }
        if u64::from(layout.size_of_headers) > r.len() {
            return Err(PeError(format!(
                "SizeOfHeaders {:#x} (offset {:#x}) is larger than the file ({} bytes)",
                layout.size_of_headers,
                optional_offset + 60,
                r.len()
            )));
        }
        layout.certificate_table(b)?;
        Ok(layout)
    }

    /// Offset of data directory `index`'s (VirtualAddress, Size) pair.
    pub fn directory_offset(&self, index: usize) -> Option<usize> {
        (index < self.number_of_directories as usize)
            .then(|| self.data_directories_offset + 8 * index)
    }

    /// The certificate table as (file offset, size); (0, 0) when unsigned.
    /// A table must lie after the section headers and inside the file, and
    /// hold at least one `WIN_CERTIFICATE` header (8 bytes).
    pub fn certificate_table(&self, b: &[u8]) -> Result<(u32, u32), PeError> {
        let Some(dir) = self.directory_offset(SECURITY_DIRECTORY) else {
            return Ok((0, 0));
        };
        let r = Bytes::new(b);
        let offset = r.u32(dir as u64, "certificate table directory")?;
        let size = r.u32(dir as u64 + 4, "certificate table directory")?;
        if size == 0 {
            return Ok((0, 0));
        }
        if size < 8 {
            return Err(PeError(format!(
                "the certificate table at offset {offset:#x} is {size} bytes long, shorter than one WIN_CERTIFICATE header (8 bytes)"
            )));
        }
        if (offset as usize) < self.section_table_end {
            return Err(PeError(format!(
                "the certificate table at offset {offset:#x} lies inside the headers (they end at {:#x})",
                self.section_table_end
            )));
        }
        r.range(offset as u64, size as u64, "certificate table")?;
        Ok((offset, size))
    }

    /// What a section holds as the loader maps it: its file data (at most
    /// VirtualSize bytes) and the zeros the loader fills in after it. The
    /// zeros are a count, never a buffer; more than [`MAX_ZERO_FILL`] bytes of
    /// them is refused (no UKI section has any; a hostile header may claim 4 GiB).
    pub fn section_content<'a>(
        &self,
        b: &'a [u8],
        s: &Section,
    ) -> Result<SectionContent<'a>, PeError> {
        let file = self.section_file(b, s)?;
        let zero_tail = s.virtual_size as u64 - file.len() as u64;
        if zero_tail > MAX_ZERO_FILL {
            return Err(PeError(format!(
                "section {} (header at {:#x}) declares VirtualSize {:#x} but holds {:#x} bytes: {} MiB of zero fill is more than any UKI section has (limit {} MiB)",
                s.name,
                s.header_offset,
                s.virtual_size,
                s.size_of_raw_data,
                zero_tail >> 20,
                MAX_ZERO_FILL >> 20
            )));
        }
        Ok(SectionContent { file, zero_tail })
    }

    /// A section's bytes in the file, cut to VirtualSize (no zero fill).
    pub fn section_file<'a>(&self, b: &'a [u8], s: &Section) -> Result<&'a [u8], PeError> {
        let in_file = s.size_of_raw_data.min(s.virtual_size) as u64;
        Bytes::new(b).range(
            s.pointer_to_raw_data as u64,
            in_file,
            &format!("section {} (header at {:#x})", s.name, s.header_offset),
        )
    }

    /// The raw bytes of a section over its `VirtualSize` (what the stub
    /// measures), zero-filled past `SizeOfRawData`. Meant for small sections
    /// (`.sdmagic`, `.sbat`): a section outside the file, or one with more
    /// than [`MAX_ZERO_FILL`] of zero fill, gives only what the file holds.
    /// Use [`PeLayout::section_content`] to hash without copying.
    pub fn section_data(&self, b: &[u8], s: &Section) -> Vec<u8> {
        match self.section_content(b, s) {
            Ok(c) => {
                let mut v = c.file.to_vec();
                v.resize(c.file.len() + c.zero_tail as usize, 0);
                v
            }
            Err(_) => {
                let start = (s.pointer_to_raw_data as usize).min(b.len());
                let len = s.size_of_raw_data.min(s.virtual_size) as usize;
                b[start..start.saturating_add(len).min(b.len())].to_vec()
            }
        }
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Whether the image declares `IMAGE_DLLCHARACTERISTICS_NX_COMPAT`.
    pub fn nx_compat(&self) -> bool {
        self.dll_characteristics & DLLCHARACTERISTICS_NX_COMPAT != 0
    }

    /// Offset of the `DllCharacteristics` field.
    pub fn dll_characteristics_offset(&self) -> usize {
        self.optional_offset + 70
    }

    /// Alignment and NX facts firmware memory protection depends on.
    pub fn alignment_report(&self) -> AlignmentReport {
        let unaligned: Vec<String> = self
            .sections
            .iter()
            .filter(|s| s.virtual_address % PAGE_SIZE != 0)
            .map(|s| format!("{} at {:#x}", s.name, s.virtual_address))
            .collect();
        AlignmentReport {
            section_alignment: self.section_alignment,
            file_alignment: self.file_alignment,
            page_aligned: unaligned.is_empty() && self.size_of_image % PAGE_SIZE == 0,
            unaligned_sections: unaligned,
            nx_compat: self.nx_compat(),
        }
    }
}

/// A section's contents as the loader maps them: file bytes, then zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionContent<'a> {
    /// The bytes in the file (at most VirtualSize).
    pub file: &'a [u8],
    /// How many zero bytes the loader appends (VirtualSize beyond the file data).
    pub zero_tail: u64,
}

impl SectionContent<'_> {
    /// VirtualSize: the length the loader maps.
    pub fn len(&self) -> u64 {
        self.file.len() as u64 + self.zero_tail
    }

    /// Whether the section maps no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Feeds the mapped bytes to `sink` in pieces: the file data, then the
    /// zero tail from one small reused buffer.
    pub fn feed(&self, mut sink: impl FnMut(&[u8])) {
        sink(self.file);
        let zeros = [0u8; 64 * 1024];
        let mut left = self.zero_tail;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            sink(&zeros[..n]);
            left -= n as u64;
        }
    }
}

/// Alignment and NX facts of an image (for `inspect` and build warnings).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AlignmentReport {
    /// `SectionAlignment` as declared.
    pub section_alignment: u32,
    /// `FileAlignment` as declared.
    pub file_alignment: u32,
    /// Every section starts on a 4 KiB virtual address and SizeOfImage is a
    /// multiple of 4 KiB: what firmware memory protection needs.
    pub page_aligned: bool,
    /// Sections whose virtual address is not 4 KiB aligned (`name at 0xRVA`).
    pub unaligned_sections: Vec<String>,
    /// `IMAGE_DLLCHARACTERISTICS_NX_COMPAT` is set.
    pub nx_compat: bool,
}

/// Rounds `v` up to a multiple of `align` (a power of two or any non-zero value).
pub fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// The PE checksum (as `IMAGEHLP`'s CheckSumMappedFile computes it), with
/// the CheckSum field itself counted as zero.
pub fn pe_checksum(b: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        let word = if i == checksum_offset || i == checksum_offset + 2 {
            0
        } else if i + 1 < b.len() {
            u16::from_le_bytes([b[i], b[i + 1]]) as u64
        } else {
            b[i] as u64
        };
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(b.len() as u32)
}
