//! Reading and editing the headers of a PE/COFF image in place: the few
//! fields UKI assembly and Authenticode need, at their exact offsets.

/// `IMAGE_DIRECTORY_ENTRY_SECURITY`: the certificate table.
pub const SECURITY_DIRECTORY: usize = 4;
/// Size of one section header.
pub const SECTION_HEADER_SIZE: usize = 40;
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
    /// The sections, in header order.
    pub sections: Vec<Section>,
}

/// Little-endian field access with bounds checks.
pub(crate) fn read_u16(b: &[u8], off: usize) -> Result<u16, PeError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| PeError(format!("file ends before offset {off}")))
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> Result<u32, PeError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| PeError(format!("file ends before offset {off}")))
}

pub(crate) fn write_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn write_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

impl PeLayout {
    /// Parses the headers of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, PeError> {
        if b.get(..2) != Some(b"MZ") {
            return Err(PeError("no MZ signature".into()));
        }
        let pe_offset = read_u32(b, 0x3c)? as usize;
        if b.get(pe_offset..pe_offset + 4) != Some(b"PE\0\0") {
            return Err(PeError(format!("no PE signature at offset {pe_offset}")));
        }
        let coff_offset = pe_offset + 4;
        let number_of_sections = read_u16(b, coff_offset + 2)? as usize;
        let size_of_optional = read_u16(b, coff_offset + 16)? as usize;
        let optional_offset = coff_offset + 20;
        let magic = read_u16(b, optional_offset)?;
        let pe32_plus = match magic {
            PE32_PLUS_MAGIC => true,
            PE32_MAGIC => false,
            other => return Err(PeError(format!("unknown optional header magic {other:#x}"))),
        };
        let (rva_count_offset, dirs_offset) = if pe32_plus {
            (optional_offset + 108, optional_offset + 112)
        } else {
            (optional_offset + 92, optional_offset + 96)
        };
        let number_of_directories = read_u32(b, rva_count_offset)?;
        let section_table_offset = optional_offset + size_of_optional;
        if dirs_offset + 8 * number_of_directories as usize > section_table_offset {
            return Err(PeError(
                "data directories overrun the optional header".into(),
            ));
        }
        let mut sections = Vec::with_capacity(number_of_sections);
        for i in 0..number_of_sections {
            let h = section_table_offset + i * SECTION_HEADER_SIZE;
            let raw_name = b
                .get(h..h + 8)
                .ok_or_else(|| PeError(format!("section header {i} is cut off")))?;
            let name = String::from_utf8_lossy(raw_name)
                .trim_end_matches('\0')
                .to_string();
            sections.push(Section {
                name,
                virtual_size: read_u32(b, h + 8)?,
                virtual_address: read_u32(b, h + 12)?,
                size_of_raw_data: read_u32(b, h + 16)?,
                pointer_to_raw_data: read_u32(b, h + 20)?,
                characteristics: read_u32(b, h + 36)?,
                header_offset: h,
            });
        }
        let layout = PeLayout {
            coff_offset,
            optional_offset,
            pe32_plus,
            checksum_offset: optional_offset + 64,
            data_directories_offset: dirs_offset,
            number_of_directories,
            section_table_offset,
            section_alignment: read_u32(b, optional_offset + 32)?,
            file_alignment: read_u32(b, optional_offset + 36)?,
            size_of_headers: read_u32(b, optional_offset + 60)?,
            sections,
        };
        if layout.file_alignment == 0 || layout.section_alignment == 0 {
            return Err(PeError("zero file or section alignment".into()));
        }
        for s in &layout.sections {
            let end = s.pointer_to_raw_data as usize + s.size_of_raw_data as usize;
            if s.size_of_raw_data > 0 && end > b.len() {
                return Err(PeError(format!(
                    "section {} runs past the end of the file ({end} > {})",
                    s.name,
                    b.len()
                )));
            }
        }
        Ok(layout)
    }

    /// Offset of data directory `index`'s (VirtualAddress, Size) pair.
    pub fn directory_offset(&self, index: usize) -> Option<usize> {
        (index < self.number_of_directories as usize)
            .then(|| self.data_directories_offset + 8 * index)
    }

    /// The certificate table as (file offset, size); (0, 0) when unsigned.
    pub fn certificate_table(&self, b: &[u8]) -> Result<(u32, u32), PeError> {
        match self.directory_offset(SECURITY_DIRECTORY) {
            Some(off) => Ok((read_u32(b, off)?, read_u32(b, off + 4)?)),
            None => Ok((0, 0)),
        }
    }

    /// The raw bytes of a section over its `VirtualSize` (what the stub measures),
    /// zero-filled past `SizeOfRawData`.
    pub fn section_data(&self, b: &[u8], s: &Section) -> Vec<u8> {
        let start = s.pointer_to_raw_data as usize;
        let raw = (s.size_of_raw_data.min(s.virtual_size)) as usize;
        let mut v = b.get(start..start + raw).unwrap_or_default().to_vec();
        v.resize(s.virtual_size as usize, 0);
        v
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
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
