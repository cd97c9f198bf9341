//! The TCG firmware event log (Linux: `/sys/kernel/security/tpm0/binary_bios_measurements`),
//! read far enough to tell which driver images the firmware loaded.
//!
//! Two formats exist (TCG PC Client Platform Firmware Profile): the TPM 2.0
//! "crypto agile" log, which starts with a SHA-1 format `EV_NO_ACTION` event
//! holding the `Spec ID Event03` structure (the digest sizes of every bank)
//! followed by `TCG_PCR_EVENT2` records; and the TPM 1.2 log of SHA-1
//! `TCG_PCClientPCREvent` records only. Both are parsed.
//!
//! Driver images loaded from outside the firmware, PCI option ROMs above all,
//! are measured as `EV_EFI_BOOT_SERVICES_DRIVER` (or, rarely,
//! `EV_EFI_RUNTIME_SERVICES_DRIVER`) with a `UEFI_IMAGE_LOAD_EVENT` naming the
//! device path; their SHA-256 digest is the image's Authenticode hash, the
//! value a db hash entry would need. sbctl treats any boot-services driver
//! event as an option ROM; so do we.

use serde::Serialize;

/// `EV_NO_ACTION`: not extended into a PCR (the log header, among others).
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`: a boot loader or other application.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_BOOT_SERVICES_DRIVER`: a driver image loaded from outside the firmware (option ROM).
pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
/// `EV_EFI_RUNTIME_SERVICES_DRIVER`: a runtime driver image loaded from outside the firmware.
pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;

/// `TPM_ALG_SHA1`.
pub const TPM_ALG_SHA1: u16 = 0x0004;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000b;

/// Signature of the crypto-agile log header (`TCG_EfiSpecIDEvent`).
const SPEC_ID_EVENT03: &[u8; 16] = b"Spec ID Event03\0";
/// `TCG_PCClientPCREvent` header: PCRIndex, EventType, SHA-1 digest, EventDataSize.
const SHA1_EVENT_HEADER: usize = 4 + 4 + 20 + 4;

/// The two log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// TPM 2.0: `TCG_PCR_EVENT2` records with a digest per bank.
    CryptoAgile,
    /// TPM 1.2: SHA-1 `TCG_PCClientPCREvent` records.
    Sha1,
}

/// One digest of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// `TPM_ALG_ID`.
    pub algorithm: u16,
    /// The digest bytes.
    pub value: Vec<u8>,
}

/// One event of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The PCR it was extended into.
    pub pcr: u32,
    /// `EventType`.
    pub event_type: u32,
    /// Its digests, one per bank.
    pub digests: Vec<Digest>,
    /// The event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The digest of one bank.
    pub fn digest(&self, algorithm: u16) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.algorithm == algorithm)
            .map(|d| d.value.as_slice())
    }
}

/// A parsed event log.
#[derive(Clone, Debug)]
pub struct EventLog {
    /// The format.
    pub format: LogFormat,
    /// `uintnSize` of the firmware in bytes (4 or 8), from the Spec ID event; 8 when absent.
    pub uintn_size: usize,
    /// Every event after the header, in order.
    pub events: Vec<Event>,
}

/// A driver image the firmware loaded from outside itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriverImage {
    /// `EV_EFI_BOOT_SERVICES_DRIVER` or `EV_EFI_RUNTIME_SERVICES_DRIVER`.
    pub event_type: String,
    /// The PCR (2 for option ROM code).
    pub pcr: u32,
    /// SHA-256 Authenticode hash of the image, hex, when the log has a SHA-256 bank.
    pub sha256: Option<String>,
    /// The image's length in memory, when the event data says.
    pub length: Option<u64>,
    /// The device path it was loaded from, as text (e.g. `PciRoot(0x0)/Pci(0x2,0x0)/Offset(…)`).
    pub device_path: Option<String>,
}

/// Bytes that are not an event log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed TPM event log at byte offset {offset}: {problem}")]
pub struct EventLogError {
    /// Where.
    pub offset: usize,
    /// What.
    pub problem: String,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// One past the last non-zero byte, found once: "is the rest zero?"
    /// is asked before every event and must not rescan the log (quadratic).
    nonzero_end: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, problem: impl Into<String>) -> EventLogError {
        EventLogError {
            offset: self.at,
            problem: problem.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EventLogError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| {
                self.err(format!(
                    "{what} needs {n} bytes, only {} are left",
                    self.bytes.len().saturating_sub(self.at)
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self, what: &str) -> Result<u16, EventLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, EventLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn rest_is_zero(&self) -> bool {
        self.at >= self.nonzero_end
    }

    fn new(bytes: &'a [u8]) -> Self {
        let nonzero_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        Reader {
            bytes,
            at: 0,
            nonzero_end,
        }
    }
}

impl EventLog {
    /// Parses a log in either format.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        let mut r = Reader::new(bytes);
        if bytes.is_empty() {
            return Err(r.err("the log is empty"));
        }
        let first = read_sha1_event(&mut r)?;
        let spec = (first.event_type == EV_NO_ACTION && first.data.starts_with(SPEC_ID_EVENT03))
            .then(|| parse_spec_id(&first.data))
            .transpose()
            .map_err(|problem| EventLogError {
                offset: SHA1_EVENT_HEADER,
                problem,
            })?;
        let mut events = Vec::new();
        match spec {
            Some((uintn_size, sizes)) => {
                while !r.rest_is_zero() {
                    match read_event2(&mut r, &sizes)? {
                        Some(e) => events.push(e),
                        None => break,
                    }
                }
                Ok(EventLog {
                    format: LogFormat::CryptoAgile,
                    uintn_size,
                    events,
                })
            }
            None => {
                events.push(first);
                while !r.rest_is_zero() {
                    events.push(read_sha1_event(&mut r)?);
                }
                Ok(EventLog {
                    format: LogFormat::Sha1,
                    uintn_size: 8,
                    events,
                })
            }
        }
    }

    /// The driver images loaded from outside the firmware (option ROMs and the like).
    pub fn driver_images(&self) -> Vec<DriverImage> {
        self.events
            .iter()
            .filter(|e| {
                e.event_type == EV_EFI_BOOT_SERVICES_DRIVER
                    || e.event_type == EV_EFI_RUNTIME_SERVICES_DRIVER
            })
            .map(|e| {
                let load = parse_image_load_event(&e.data, self.uintn_size);
                DriverImage {
                    event_type: event_type_name(e.event_type).to_string(),
                    pcr: e.pcr,
                    sha256: e.digest(TPM_ALG_SHA256).map(hex::encode),
                    length: load.as_ref().map(|l| l.0),
                    device_path: load.map(|l| l.1),
                }
            })
            .collect()
    }
}

/// The name of an event type, for messages.
pub fn event_type_name(event_type: u32) -> &'static str {
    match event_type {
        EV_NO_ACTION => "EV_NO_ACTION",
        EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
        EV_EFI_BOOT_SERVICES_DRIVER => "EV_EFI_BOOT_SERVICES_DRIVER",
        EV_EFI_RUNTIME_SERVICES_DRIVER => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        _ => "other",
    }
}

fn read_sha1_event(r: &mut Reader<'_>) -> Result<Event, EventLogError> {
    let pcr = r.u32("PCRIndex")?;
    let event_type = r.u32("EventType")?;
    let digest = r.take(20, "SHA-1 digest")?.to_vec();
    let size = r.u32("EventDataSize")? as usize;
    let data = r.take(size, "event data")?.to_vec();
    Ok(Event {
        pcr,
        event_type,
        digests: vec![Digest {
            algorithm: TPM_ALG_SHA1,
            value: digest,
        }],
        data,
    })
}

/// `TCG_EfiSpecIDEvent`: returns uintnSize in bytes and the digest size of each algorithm.
fn parse_spec_id(data: &[u8]) -> Result<(usize, Vec<(u16, usize)>), String> {
    let mut r = Reader::new(data);
    r.at = 16;
    let short = |e: EventLogError| format!("Spec ID event: {}", e.problem);
    let _platform_class = r.u32("platformClass").map_err(short)?;
    let _version = r.take(3, "spec version").map_err(short)?;
    let uintn = r.take(1, "uintnSize").map_err(short)?[0];
    let count = r.u32("numberOfAlgorithms").map_err(short)? as usize;
    if count == 0 || count > 16 {
        return Err(format!(
            "Spec ID event lists {count} algorithms (expected 1 to 16)"
        ));
    }
    let mut sizes = Vec::with_capacity(count);
    for _ in 0..count {
        let alg = r.u16("algorithmId").map_err(short)?;
        let size = r.u16("digestSize").map_err(short)? as usize;
        sizes.push((alg, size));
    }
    // uintnSize: 1 means UINT32, 2 means UINT64.
    let uintn_size = if uintn == 1 { 4 } else { 8 };
    Ok((uintn_size, sizes))
}

/// One `TCG_PCR_EVENT2`; `None` at an end marker (type and size zero).
fn read_event2(r: &mut Reader<'_>, sizes: &[(u16, usize)]) -> Result<Option<Event>, EventLogError> {
    let start = r.at;
    let pcr = r.u32("PCRIndex")?;
    let event_type = r.u32("EventType")?;
    let count = r.u32("digest count")? as usize;
    if count > sizes.len() {
        r.at = start;
        return Err(r.err(format!(
            "event has {count} digests, the header declares {} banks",
            sizes.len()
        )));
    }
    let mut digests = Vec::with_capacity(count);
    for _ in 0..count {
        let algorithm = r.u16("hashAlg")?;
        let size = sizes
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                r.err(format!(
                    "digest algorithm {algorithm:#06x} is not declared in the header"
                ))
            })?;
        digests.push(Digest {
            algorithm,
            value: r.take(size, "digest")?.to_vec(),
        });
    }
    let size = r.u32("EventSize")? as usize;
    if event_type == 0 && count == 0 && size == 0 {
        return Ok(None);
    }
    let data = r.take(size, "event data")?.to_vec();
    Ok(Some(Event {
        pcr,
        event_type,
        digests,
        data,
    }))
}

/// `UEFI_IMAGE_LOAD_EVENT`: the image length and its device path as text.
fn parse_image_load_event(data: &[u8], uintn: usize) -> Option<(u64, String)> {
    let mut r = Reader::new(data);
    let _location = r.take(8, "ImageLocationInMemory").ok()?;
    let uint = |r: &mut Reader<'_>| -> Option<u64> {
        let b = r.take(uintn, "UINTN").ok()?;
        let mut x = [0u8; 8];
        x[..uintn].copy_from_slice(b);
        Some(u64::from_le_bytes(x))
    };
    let length = uint(&mut r)?;
    let _link_address = uint(&mut r)?;
    let path_len = usize::try_from(uint(&mut r)?).ok()?;
    let path = r.take(path_len, "DevicePath").ok()?;
    Some((length, device_path_text(path)))
}

/// A short textual form of a UEFI device path, in the style of the UEFI shell.
pub fn device_path_text(mut path: &[u8]) -> String {
    let mut nodes = Vec::new();
    while path.len() >= 4 {
        let (kind, sub) = (path[0], path[1]);
        let len = usize::from(u16::from_le_bytes([path[2], path[3]]));
        if len < 4 || len > path.len() {
            nodes.push("<malformed>".to_string());
            break;
        }
        let body = &path[4..len];
        let u32_at = |i: usize| {
            body.get(i..i + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let u64_at = |i: usize| {
            body.get(i..i + 8).map(|b| {
                let mut x = [0u8; 8];
                x.copy_from_slice(b);
                u64::from_le_bytes(x)
            })
        };
        let node = match (kind, sub) {
            (0x7f, _) => break,
            (1, 1) if body.len() >= 2 => format!("Pci({:#x},{:#x})", body[1], body[0]),
            (2, 1) => match (u32_at(0), u32_at(4)) {
                // EISA ID PNP0A03 / PNP0A08: a PCI root bridge.
                (Some(0x0a03_41d0 | 0x0a08_41d0), Some(uid)) => format!("PciRoot({uid:#x})"),
                (Some(hid), Some(uid)) => format!("Acpi({hid:#x},{uid:#x})"),
                _ => "Acpi(?)".to_string(),
            },
            (4, 4) => {
                let units: Vec<u16> = body
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|u| *u != 0)
                    .collect();
                String::from_utf16_lossy(&units)
            }
            (4, 6) => format!(
                "FvFile({})",
                super::Guid::read(body).map_or("?".to_string(), |g| g.to_string())
            ),
            (4, 7) => format!(
                "Fv({})",
                super::Guid::read(body).map_or("?".to_string(), |g| g.to_string())
            ),
            (4, 8) => match (u64_at(4), u64_at(12)) {
                (Some(start), Some(end)) => format!("Offset({start:#x},{end:#x})"),
                _ => "Offset(?)".to_string(),
            },
            (kind, sub) => format!("Path({kind},{sub})"),
        };
        nodes.push(node);
        path = &path[len..];
    }
    nodes.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_header(algs: &[(u16, u16)]) -> Vec<u8> {
        let mut spec = SPEC_ID_EVENT03.to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&(algs.len() as u32).to_le_bytes());
        for (a, s) in algs {
            spec.extend_from_slice(&a.to_le_bytes());
            spec.extend_from_slice(&s.to_le_bytes());
        }
        spec.push(0);
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);
        out
    }

    fn event2(out: &mut Vec<u8>, pcr: u32, t: u32, sha1: u8, sha256: u8, data: &[u8]) {
        out.extend_from_slice(&pcr.to_le_bytes());
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&TPM_ALG_SHA1.to_le_bytes());
        out.extend_from_slice(&[sha1; 20]);
        out.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        out.extend_from_slice(&[sha256; 32]);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }

    fn image_load(path: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&0x1000u64.to_le_bytes());
        d.extend_from_slice(&0x2345u64.to_le_bytes());
        d.extend_from_slice(&0u64.to_le_bytes());
        d.extend_from_slice(&(path.len() as u64).to_le_bytes());
        d.extend_from_slice(path);
        d
    }

    /// Issue 14: a log of many zero-filled events ending in a real one is
    /// parsed in linear time (the old reader rescanned the rest of the log
    /// before every event: minutes for 2 MiB).
    #[test]
    fn long_logs_parse_in_linear_time() {
        let event = |event_type: u32| {
            let mut e = Vec::new();
            e.extend_from_slice(&0u32.to_le_bytes());
            e.extend_from_slice(&event_type.to_le_bytes());
            e.extend_from_slice(&[0; 20]);
            e.extend_from_slice(&0u32.to_le_bytes());
            e
        };
        let n = 65_536;
        let mut log = event(1);
        for _ in 0..n {
            log.extend_from_slice(&event(0));
        }
        log.extend_from_slice(&event(5));
        let started = std::time::Instant::now();
        let parsed = EventLog::parse(&log).unwrap();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
        assert_eq!(parsed.format, LogFormat::Sha1);
        assert_eq!(parsed.events.len(), n + 2);
        assert_eq!(parsed.events.last().unwrap().event_type, 5);
    }

    #[test]
    fn finds_a_driver_from_an_option_rom_with_its_device_path() {
        let mut log = spec_header(&[(TPM_ALG_SHA1, 20), (TPM_ALG_SHA256, 32)]);
        event2(&mut log, 0, 0x8, 1, 1, b"sep");
        let path = [
            2, 1, 12, 0, 0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0, // PciRoot(0x0)
            1, 1, 6, 0, 0, 2, // Pci(0x2,0x0)
            4, 8, 24, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0xff, 0x1f, 0, 0, 0, 0, 0,
            0, // Offset
            0x7f, 0xff, 4, 0,
        ];
        event2(
            &mut log,
            2,
            EV_EFI_BOOT_SERVICES_DRIVER,
            2,
            0xab,
            &image_load(&path),
        );
        log.extend_from_slice(&[0; 16]); // zero tail
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(parsed.format, LogFormat::CryptoAgile);
        assert_eq!(parsed.events.len(), 2);
        let drivers = parsed.driver_images();
        assert_eq!(drivers.len(), 1);
        assert_eq!(drivers[0].sha256.as_deref(), Some(&"ab".repeat(32)[..]));
        assert_eq!(drivers[0].length, Some(0x2345));
        assert_eq!(
            drivers[0].device_path.as_deref(),
            Some("PciRoot(0x0)/Pci(0x2,0x0)/Offset(0x1000,0x1fff)")
        );
    }

    #[test]
    fn reads_a_sha1_log_and_reports_truncation() {
        let mut log = Vec::new();
        for t in [0x8u32, EV_EFI_BOOT_SERVICES_DRIVER] {
            log.extend_from_slice(&2u32.to_le_bytes());
            log.extend_from_slice(&t.to_le_bytes());
            log.extend_from_slice(&[7; 20]);
            log.extend_from_slice(&1u32.to_le_bytes());
            log.push(0);
        }
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(parsed.format, LogFormat::Sha1);
        assert_eq!(parsed.driver_images().len(), 1);
        assert_eq!(parsed.driver_images()[0].sha256, None);
        let e = EventLog::parse(&log[..log.len() - 3]).unwrap_err();
        assert!(e.problem.contains("are left"), "{e}");
    }

    #[test]
    fn refuses_undeclared_digest_algorithms() {
        let mut log = spec_header(&[(TPM_ALG_SHA1, 20)]);
        event2(&mut log, 0, 0x8, 1, 1, b"x");
        let e = EventLog::parse(&log).unwrap_err();
        assert!(e.problem.contains("digests"), "{e}");
    }
}
