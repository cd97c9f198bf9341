//! The edk2 (OVMF) non-volatile variable store: reading it and writing it back.
//!
//! An OVMF `*_VARS.fd` image starts with a firmware volume (FV) whose file
//! system GUID is `EFI_SYSTEM_NV_DATA_FV_GUID`. After the FV header comes a
//! `VARIABLE_STORE_HEADER` (signature `EFI_AUTHENTICATED_VARIABLE_GUID`,
//! size, format `0x5A`, state `0xFE`), then `AUTHENTICATED_VARIABLE_HEADER`
//! records back to back, each starting on a 4-byte boundary, and erased flash
//! (`0xFF`) up to the end of the store. What follows the store in the image
//! (the fault-tolerant-write working block and spare area) is kept byte for
//! byte. The facts were checked against edk2's `VariableFormat.h` and
//! virt-firmware's reader; OVMF boots the result in the tests.
//!
//! Pure bytes in, bytes out: the caller reads and writes files.

use super::guid::Guid;
use super::time::{EfiTime, EFI_TIME_SIZE};

/// `EFI_SYSTEM_NV_DATA_FV_GUID`: the file system GUID of the variable firmware volume.
pub const NV_DATA_FV: Guid = Guid::from_str_const("fff12b8d-7696-4c8b-a985-2747075b4f50");
/// `EFI_AUTHENTICATED_VARIABLE_GUID`: the signature of a store of authenticated variables.
pub const AUTHENTICATED_VARIABLE_STORE: Guid =
    Guid::from_str_const("aaf32c78-947b-439a-a180-2e144ec37792");
/// `EFI_VARIABLE_GUID`: the signature of a store without authenticated variables.
pub const PLAIN_VARIABLE_STORE: Guid = Guid::from_str_const("ddcf3616-3275-4164-98b6-fe85707ffe7d");
/// `EFI_SECURE_BOOT_ENABLE_DISABLE`: vendor GUID of edk2's `SecureBootEnable`.
pub const SECURE_BOOT_ENABLE_DISABLE: Guid =
    Guid::from_str_const("f0a30bc7-af08-4556-99c4-001009c93a44");
/// `EFI_CUSTOM_MODE_ENABLE_GUID`: vendor GUID of edk2's `CustomMode`.
pub const CUSTOM_MODE_ENABLE: Guid = Guid::from_str_const("c076ec0c-7028-4399-a072-71ee5c448b9f");
/// The owner GUID OVMF's EnrollDefaultKeys (and virt-fw-vars) give their placeholder dbx entry.
pub const OVMF_ENROLL_DEFAULT_KEYS: Guid =
    Guid::from_str_const("a0baa8a3-041d-48a8-bc87-c36d121b5e3d");

/// `EFI_FVH_SIGNATURE`, "_FVH".
const FVH_SIGNATURE: &[u8; 4] = b"_FVH";
/// Bytes of `EFI_FIRMWARE_VOLUME_HEADER` before its block map.
const FV_HEADER_FIXED: usize = 56;
/// `VARIABLE_STORE_HEADER`: GUID, Size u32, Format u8, State u8, Reserved u16, Reserved1 u32.
const STORE_HEADER_SIZE: usize = 16 + 4 + 1 + 1 + 2 + 4;
/// `VARIABLE_STORE_FORMATTED`.
const STORE_FORMATTED: u8 = 0x5a;
/// `VARIABLE_STORE_HEALTHY`.
const STORE_HEALTHY: u8 = 0xfe;
/// `VARIABLE_DATA`, the `StartId` of every record.
const START_ID: u16 = 0x55aa;
/// `VAR_ADDED`: a complete, live record.
const VAR_ADDED: u8 = 0x3f;
/// `VAR_IN_DELETED_TRANSITION`: cleared in a record that is being replaced.
const VAR_IN_DELETED_TRANSITION: u8 = 0xfe;
/// `AUTHENTICATED_VARIABLE_HEADER`: StartId, State, Reserved, Attributes,
/// MonotonicCount, TimeStamp, PubKeyIndex, NameSize, DataSize, VendorGuid.
pub const RECORD_HEADER_SIZE: usize = 2 + 1 + 1 + 4 + 8 + EFI_TIME_SIZE + 4 + 4 + 4 + 16;
/// Records start on this boundary (`HEADER_ALIGNMENT`); name and data are not padded on x64.
const RECORD_ALIGNMENT: usize = 4;
/// Erased flash.
const ERASED: u8 = 0xff;

/// One variable of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The name, e.g. `db`.
    pub name: String,
    /// The vendor GUID.
    pub vendor: Guid,
    /// `EFI_VARIABLE_*` attributes.
    pub attributes: u32,
    /// `MonotonicCount` (count-based authenticated variables only; 0 otherwise).
    pub monotonic_count: u64,
    /// The stored `TimeStamp` bytes (time-based authenticated variables; zeros otherwise).
    pub timestamp: [u8; EFI_TIME_SIZE],
    /// `PubKeyIndex` (count-based authenticated variables only; 0 otherwise).
    pub pubkey_index: u32,
    /// The value.
    pub data: Vec<u8>,
}

impl Variable {
    /// A variable with a value and attributes, no timestamp.
    pub fn new(name: &str, vendor: Guid, attributes: u32, data: Vec<u8>) -> Self {
        Variable {
            name: name.to_string(),
            vendor,
            attributes,
            monotonic_count: 0,
            timestamp: [0; EFI_TIME_SIZE],
            pubkey_index: 0,
            data,
        }
    }

    /// The timestamp, when one is set (a zero year means none).
    pub fn time(&self) -> Option<EfiTime> {
        EfiTime::from_bytes(&self.timestamp).filter(|t| t.year != 0)
    }

    /// The name as stored: UTF-16LE with a terminating NUL.
    fn name_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.name.len() * 2 + 2);
        for unit in self.name.encode_utf16().chain(std::iter::once(0)) {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out
    }

    /// The size of this variable's record, without alignment padding.
    pub fn record_size(&self) -> usize {
        RECORD_HEADER_SIZE + self.name_bytes().len() + self.data.len()
    }

    fn write_record(&self, out: &mut Vec<u8>) {
        let name = self.name_bytes();
        out.extend_from_slice(&START_ID.to_le_bytes());
        out.push(VAR_ADDED);
        out.push(0); // Reserved
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&self.monotonic_count.to_le_bytes());
        out.extend_from_slice(&self.timestamp);
        out.extend_from_slice(&self.pubkey_index.to_le_bytes());
        // Sizes are bounded by the store (a few hundred KiB): no truncation.
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.vendor.to_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&self.data);
    }
}

/// A byte string that is not a usable edk2 variable store, or a store that is full.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VarStoreError {
    /// A qcow2 image: only raw images are read.
    #[error("this is a qcow2 image, not a raw variable store: convert it first with `qemu-img convert -f qcow2 -O raw IN OUT`")]
    Qcow2,
    /// No firmware volume header at the start.
    #[error("not an edk2 variable store: no firmware volume header (\"_FVH\") at the start; use an OVMF *_VARS*.fd file such as /usr/share/OVMF/OVMF_VARS_4M.fd")]
    NotFirmwareVolume,
    /// A firmware volume, but not the variable one (e.g. an OVMF_CODE image).
    #[error("not a variable store: the firmware volume has file system GUID {0}, not {NV_DATA_FV} (EFI_SYSTEM_NV_DATA_FV_GUID); is this an OVMF_CODE image? use an OVMF *_VARS*.fd file")]
    NotNvData(Guid),
    /// A header field is inconsistent.
    #[error("corrupt variable store: {0}")]
    Corrupt(String),
    /// The store cannot hold authenticated variables, so no Secure Boot keys.
    #[error("the variable store is not of the authenticated kind (signature {0}): Secure Boot needs a store from a Secure Boot capable OVMF build (e.g. OVMF_VARS_4M.fd)")]
    NotAuthenticated(Guid),
    /// The variables do not fit.
    #[error("the variable store is full: the variables need {needed} bytes, the store has room for {capacity} ({over} bytes too many); use a larger template (the 4 MiB OVMF_VARS_4M.fd has 256 KiB) or enroll fewer certificates (e.g. genkey --microsoft 2023)", over = needed - capacity)]
    Full {
        /// Bytes the records need.
        needed: usize,
        /// Bytes the store has for records.
        capacity: usize,
    },
    /// A variable name is empty or holds a NUL.
    #[error("variable name {0:?} cannot be stored (empty or containing NUL)")]
    BadName(String),
}

/// A parsed edk2 variable store image.
#[derive(Clone, Debug)]
pub struct VarStore {
    image: Vec<u8>,
    /// Offset of the first record (`HEADER_ALIGN` of the end of the store header).
    records_start: usize,
    /// Offset just past the store (`store header offset + Size`).
    records_end: usize,
    variables: Vec<Variable>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn align_up(x: usize) -> usize {
    x.div_ceil(RECORD_ALIGNMENT) * RECORD_ALIGNMENT
}

impl VarStore {
    /// Parses a raw variable store image (e.g. `OVMF_VARS_4M.fd`, or a VM's copy of it).
    ///
    /// The firmware volume header is validated the way OVMF does before it
    /// trusts the flash (signature, GUID, revision, checksum); a store OVMF
    /// would reformat is refused rather than written.
    pub fn parse(image: Vec<u8>) -> Result<Self, VarStoreError> {
        let corrupt = |what: String| VarStoreError::Corrupt(what);
        if image.starts_with(b"QFI\xfb") {
            return Err(VarStoreError::Qcow2);
        }
        if image.len() < FV_HEADER_FIXED + 16 || &image[40..44] != FVH_SIGNATURE {
            return Err(VarStoreError::NotFirmwareVolume);
        }
        let fs_guid = Guid::read(&image[16..]).ok_or(VarStoreError::NotFirmwareVolume)?;
        if fs_guid != NV_DATA_FV {
            return Err(VarStoreError::NotNvData(fs_guid));
        }
        let fv_length = u64_at(&image, 32);
        let header_length = usize::from(u16_at(&image, 48));
        let revision = image[55];
        if fv_length > image.len() as u64 {
            return Err(corrupt(format!(
                "the firmware volume claims {fv_length} bytes, the image has {}",
                image.len()
            )));
        }
        if revision != 2 {
            return Err(corrupt(format!(
                "firmware volume revision {revision}, expected 2"
            )));
        }
        if header_length < FV_HEADER_FIXED + 8 || header_length % 2 != 0 {
            return Err(corrupt(format!(
                "firmware volume header length {header_length} is impossible"
            )));
        }
        if header_length + STORE_HEADER_SIZE > fv_length as usize {
            return Err(corrupt(format!(
                "firmware volume header length {header_length} leaves no room for a variable store"
            )));
        }
        // The header checksum makes all its 16-bit words sum to zero.
        let sum = image[..header_length].chunks_exact(2).fold(0u16, |acc, w| {
            acc.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        if sum != 0 {
            return Err(corrupt(format!(
                "firmware volume header checksum is wrong (words sum to {sum:#06x}, not 0)"
            )));
        }

        let store = header_length;
        let signature = Guid::read(&image[store..]).ok_or(VarStoreError::NotFirmwareVolume)?;
        if signature == PLAIN_VARIABLE_STORE || signature != AUTHENTICATED_VARIABLE_STORE {
            return Err(VarStoreError::NotAuthenticated(signature));
        }
        let size = u32_at(&image, store + 16) as usize;
        let format = image[store + 20];
        let state = image[store + 21];
        if format != STORE_FORMATTED || state != STORE_HEALTHY {
            return Err(corrupt(format!(
                "variable store format {format:#04x} / state {state:#04x}, expected 0x5a (formatted) / 0xfe (healthy)"
            )));
        }
        let records_start = align_up(store + STORE_HEADER_SIZE);
        let records_end = store + size;
        if size < STORE_HEADER_SIZE
            || records_start > records_end
            || records_end > fv_length as usize
        {
            return Err(corrupt(format!(
                "variable store size {size} does not fit the firmware volume ({fv_length} bytes from offset {store})"
            )));
        }

        let variables = parse_records(&image, records_start, records_end)?;
        Ok(VarStore {
            image,
            records_start,
            records_end,
            variables,
        })
    }

    /// The live variables, in store order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// A live variable by name and vendor.
    pub fn get(&self, name: &str, vendor: Guid) -> Option<&Variable> {
        self.variables
            .iter()
            .find(|v| v.name == name && v.vendor == vendor)
    }

    /// Sets a variable: replaces the one of the same name and vendor in place, or appends it.
    pub fn set(&mut self, var: Variable) -> Result<(), VarStoreError> {
        if var.name.is_empty() || var.name.contains('\0') {
            return Err(VarStoreError::BadName(var.name));
        }
        match self
            .variables
            .iter_mut()
            .find(|v| v.name == var.name && v.vendor == var.vendor)
        {
            Some(slot) => *slot = var,
            None => self.variables.push(var),
        }
        Ok(())
    }

    /// Removes a variable; returns it when it was there.
    pub fn remove(&mut self, name: &str, vendor: Guid) -> Option<Variable> {
        let at = self
            .variables
            .iter()
            .position(|v| v.name == name && v.vendor == vendor)?;
        Some(self.variables.remove(at))
    }

    /// Bytes available for records.
    pub fn capacity(&self) -> usize {
        self.records_end - self.records_start
    }

    /// Bytes the current variables take as records (up to the end of the last one).
    pub fn used(&self) -> usize {
        self.records().1
    }

    /// The records, padded between each other, and the length up to the end of the last one.
    fn records(&self) -> (Vec<u8>, usize) {
        let mut records = Vec::new();
        let mut needed = 0;
        for v in &self.variables {
            v.write_record(&mut records);
            needed = records.len();
            // Pad relative to the image offset, as edk2's HEADER_ALIGN does with addresses.
            while (self.records_start + records.len()) % RECORD_ALIGNMENT != 0 {
                records.push(ERASED);
            }
        }
        (records, needed)
    }

    /// The image with the current variables written compactly (deleted
    /// records dropped) and the rest of the store erased.
    pub fn to_bytes(&self) -> Result<Vec<u8>, VarStoreError> {
        if let Some(v) = self
            .variables
            .iter()
            .find(|v| v.name.is_empty() || v.name.contains('\0'))
        {
            return Err(VarStoreError::BadName(v.name.clone()));
        }
        let (mut records, needed) = self.records();
        let capacity = self.capacity();
        if needed > capacity {
            return Err(VarStoreError::Full { needed, capacity });
        }
        // The last record's alignment padding may reach past a store that ends unaligned.
        records.truncate(capacity);
        let mut out = self.image.clone();
        let region = &mut out[self.records_start..self.records_end];
        region.fill(ERASED);
        region[..records.len()].copy_from_slice(&records);
        Ok(out)
    }
}

/// Reads the records between `start` and `end`. Records whose state is
/// `VAR_ADDED` are live; one that is `VAR_ADDED` but marked in-deleted-transition
/// is live only when no complete copy exists (edk2's rule after an interrupted update).
///
/// Linear in the number of records: a later copy of a variable replaces the
/// earlier one through an index by (name, vendor), not by rescanning.
fn parse_records(image: &[u8], start: usize, end: usize) -> Result<Vec<Variable>, VarStoreError> {
    use std::collections::HashMap;
    // Slots in store order; a replaced copy leaves an empty slot behind.
    let mut live: Vec<Option<Variable>> = Vec::new();
    let mut index: HashMap<(String, Guid), usize> = HashMap::new();
    let mut in_transition: Vec<Variable> = Vec::new();
    let mut at = start;
    while at + RECORD_HEADER_SIZE <= end {
        let h = &image[at..at + RECORD_HEADER_SIZE];
        if u16_at(h, 0) != START_ID {
            break; // erased flash: the end of the records
        }
        let state = h[2];
        let name_size = u32_at(h, 36) as usize;
        let data_size = u32_at(h, 40) as usize;
        let name_at = at + RECORD_HEADER_SIZE;
        let record_end = name_at
            .checked_add(name_size)
            .and_then(|x| x.checked_add(data_size))
            .filter(|x| *x <= end)
            .ok_or_else(|| {
                VarStoreError::Corrupt(format!(
                    "the variable record at offset {at:#x} (NameSize {name_size}, DataSize {data_size}) runs past the end of the store at {end:#x}"
                ))
            })?;
        let complete = state == VAR_ADDED;
        let transitioning = state == (VAR_ADDED & VAR_IN_DELETED_TRANSITION);
        if complete || transitioning {
            if name_size < 2 || name_size % 2 != 0 {
                return Err(VarStoreError::Corrupt(format!(
                    "the variable record at offset {at:#x} has an impossible NameSize {name_size}"
                )));
            }
            let units: Vec<u16> = image[name_at..name_at + name_size]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            let name = String::from_utf16(&units).map_err(|_| {
                VarStoreError::Corrupt(format!(
                    "the variable record at offset {at:#x} has a name that is not UTF-16"
                ))
            })?;
            let mut timestamp = [0u8; EFI_TIME_SIZE];
            timestamp.copy_from_slice(&h[16..16 + EFI_TIME_SIZE]);
            let var = Variable {
                name,
                vendor: Guid::read(&h[44..]).unwrap_or_else(|| Guid::from_bytes([0; 16])),
                attributes: u32_at(h, 4),
                monotonic_count: u64_at(h, 8),
                timestamp,
                pubkey_index: u32_at(h, 32),
                data: image[name_at + name_size..record_end].to_vec(),
            };
            if complete {
                let key = (var.name.clone(), var.vendor);
                if let Some(old) = index.insert(key, live.len()) {
                    live[old] = None;
                }
                live.push(Some(var));
            } else {
                in_transition.push(var);
            }
        }
        at = align_up(record_end);
    }
    let mut live: Vec<Variable> = live.into_iter().flatten().collect();
    for var in in_transition {
        let key = (var.name.clone(), var.vendor);
        if let std::collections::hash_map::Entry::Vacant(e) = index.entry(key) {
            e.insert(live.len());
            live.push(var);
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efi::guid::EFI_GLOBAL_VARIABLE;

    /// A minimal store image: FV header with a one-entry block map, store header, erased records.
    fn empty_store(store_size: usize) -> Vec<u8> {
        let header_length = FV_HEADER_FIXED + 16;
        let fv_length = header_length + store_size + 0x100;
        let mut img = vec![ERASED; fv_length];
        img[..16].fill(0);
        img[16..32].copy_from_slice(&NV_DATA_FV.to_bytes());
        img[32..40].copy_from_slice(&(fv_length as u64).to_le_bytes());
        img[40..44].copy_from_slice(FVH_SIGNATURE);
        img[44..48].copy_from_slice(&0x0004_feffu32.to_le_bytes());
        img[48..50].copy_from_slice(&(header_length as u16).to_le_bytes());
        img[50..52].fill(0);
        img[52..55].fill(0);
        img[55] = 2;
        img[56..60].copy_from_slice(&1u32.to_le_bytes());
        img[60..64].copy_from_slice(&(fv_length as u32).to_le_bytes());
        img[64..72].fill(0);
        let sum = img[..header_length].chunks_exact(2).fold(0u16, |a, w| {
            a.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        img[50..52].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        let s = header_length;
        img[s..s + 16].copy_from_slice(&AUTHENTICATED_VARIABLE_STORE.to_bytes());
        img[s + 16..s + 20].copy_from_slice(&(store_size as u32).to_le_bytes());
        img[s + 20] = STORE_FORMATTED;
        img[s + 21] = STORE_HEALTHY;
        img[s + 22..s + 28].fill(0);
        img
    }

    /// Issue 14: a store of many records parsed in linear time (the old
    /// reader rescanned every live variable per record: minutes here).
    #[test]
    fn many_records_parse_in_linear_time() {
        let n = 100_000;
        let mut img = empty_store(16 << 20);
        let start = align_up(FV_HEADER_FIXED + 16 + STORE_HEADER_SIZE);
        let mut records = Vec::new();
        for i in 0..=n {
            // The last record is a new copy of the first: it replaces it.
            let name = format!("V{}", i % n);
            Variable::new(&name, EFI_GLOBAL_VARIABLE, 7, vec![i as u8; 4])
                .write_record(&mut records);
            while (start + records.len()) % RECORD_ALIGNMENT != 0 {
                records.push(ERASED);
            }
        }
        img[start..start + records.len()].copy_from_slice(&records);
        let started = std::time::Instant::now();
        let store = VarStore::parse(img).unwrap();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
        assert_eq!(store.variables().len(), n);
        let last = store.variables().last().unwrap();
        assert_eq!((last.name.as_str(), last.data[0]), ("V0", n as u8));
        assert_eq!(store.variables()[0].name, "V1");
    }

    #[test]
    fn round_trips_variables_with_alignment_and_erased_padding() {
        let mut store = VarStore::parse(empty_store(4096)).unwrap();
        assert!(store.variables().is_empty());
        let mut pk = Variable::new("PK", EFI_GLOBAL_VARIABLE, 0x27, vec![1, 2, 3]);
        pk.timestamp[0..2].copy_from_slice(&2010u16.to_le_bytes());
        pk.timestamp[2] = 1;
        pk.timestamp[3] = 1;
        store.set(pk.clone()).unwrap();
        store
            .set(Variable::new(
                "SecureBootEnable",
                SECURE_BOOT_ENABLE_DISABLE,
                3,
                vec![1],
            ))
            .unwrap();
        let bytes = store.to_bytes().unwrap();
        let start = store.records_start;
        // First record: header, "PK\0" in UTF-16 (6 bytes), 3 data bytes, 0xFF up to a 4-byte boundary.
        assert_eq!(&bytes[start..start + 4], &[0xaa, 0x55, 0x3f, 0x00]);
        assert_eq!(&bytes[start + 4..start + 8], &[0x27, 0, 0, 0]);
        assert_eq!(&bytes[start + 36..start + 44], &[6, 0, 0, 0, 3, 0, 0, 0]);
        let end = start + RECORD_HEADER_SIZE + 6 + 3;
        assert_eq!(start % 4, 0);
        assert_eq!(&bytes[end..end + 3], &[0xff; 3]);
        assert_eq!(&bytes[end + 3..end + 5], &[0xaa, 0x55]);
        let back = VarStore::parse(bytes).unwrap();
        assert_eq!(back.variables().len(), 2);
        assert_eq!(back.get("PK", EFI_GLOBAL_VARIABLE), Some(&pk));
        assert_eq!(
            back.get("PK", EFI_GLOBAL_VARIABLE)
                .unwrap()
                .time()
                .unwrap()
                .year,
            2010
        );
    }

    #[test]
    fn deleted_records_are_skipped_and_a_transitioning_one_counts_only_alone() {
        let mut store = VarStore::parse(empty_store(4096)).unwrap();
        store
            .set(Variable::new("A", EFI_GLOBAL_VARIABLE, 7, vec![1]))
            .unwrap();
        store
            .set(Variable::new("B", EFI_GLOBAL_VARIABLE, 7, vec![2]))
            .unwrap();
        let mut bytes = store.to_bytes().unwrap();
        let start = store.records_start;
        bytes[start + 2] = VAR_ADDED & VAR_IN_DELETED_TRANSITION & 0xfd; // deleted
        let back = VarStore::parse(bytes.clone()).unwrap();
        let names: Vec<_> = back.variables().iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["B"]);
        bytes[start + 2] = VAR_ADDED & VAR_IN_DELETED_TRANSITION;
        let back = VarStore::parse(bytes).unwrap();
        assert_eq!(back.variables().len(), 2);
    }

    #[test]
    fn refuses_what_is_not_a_store_and_reports_a_full_one() {
        assert_eq!(
            VarStore::parse(vec![0; 4096]).unwrap_err(),
            VarStoreError::NotFirmwareVolume
        );
        let mut qcow = b"QFI\xfb".to_vec();
        qcow.resize(4096, 0);
        assert_eq!(VarStore::parse(qcow).unwrap_err(), VarStoreError::Qcow2);
        let mut bad_sum = empty_store(4096);
        bad_sum[44] ^= 1;
        assert!(matches!(
            VarStore::parse(bad_sum).unwrap_err(),
            VarStoreError::Corrupt(m) if m.contains("checksum")
        ));
        let mut store = VarStore::parse(empty_store(256)).unwrap();
        store
            .set(Variable::new("db", EFI_GLOBAL_VARIABLE, 0x27, vec![0; 400]))
            .unwrap();
        let e = store.to_bytes().unwrap_err();
        assert!(matches!(e, VarStoreError::Full { needed, capacity } if needed > capacity));
        assert!(e.to_string().contains("full"));
    }

    #[test]
    fn a_record_running_past_the_end_is_corruption() {
        let mut store = VarStore::parse(empty_store(512)).unwrap();
        store
            .set(Variable::new("A", EFI_GLOBAL_VARIABLE, 7, vec![1]))
            .unwrap();
        let mut bytes = store.to_bytes().unwrap();
        let start = store.records_start;
        bytes[start + 40..start + 44].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(matches!(
            VarStore::parse(bytes).unwrap_err(),
            VarStoreError::Corrupt(m) if m.contains("runs past")
        ));
    }
}
