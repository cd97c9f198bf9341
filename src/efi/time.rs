//! `EFI_TIME`, the timestamp of time-based authenticated variables.

use time::OffsetDateTime;

/// An `EFI_TIME` in UTC with nanosecond, time zone and daylight fields zero,
/// as authenticated variables require.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EfiTime {
    /// Full year, e.g. 2026.
    pub year: u16,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59.
    pub second: u8,
}

/// Size of a serialised `EFI_TIME`.
pub const EFI_TIME_SIZE: usize = 16;

impl EfiTime {
    /// The time of a UTC instant, truncated to the second.
    pub fn from_datetime(t: OffsetDateTime) -> Self {
        let t = t.to_offset(time::UtcOffset::UTC);
        EfiTime {
            // Years before 0 or after 65535 cannot occur for a timestamp we sign.
            year: t.year().clamp(0, i32::from(u16::MAX)) as u16,
            month: u8::from(t.month()),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            second: t.second(),
        }
    }

    /// The 16 bytes of the structure.
    pub fn to_bytes(&self) -> [u8; EFI_TIME_SIZE] {
        let mut out = [0u8; EFI_TIME_SIZE];
        out[0..2].copy_from_slice(&self.year.to_le_bytes());
        out[2] = self.month;
        out[3] = self.day;
        out[4] = self.hour;
        out[5] = self.minute;
        out[6] = self.second;
        // Pad1, Nanosecond, TimeZone, Daylight and Pad2 stay zero.
        out
    }

    /// Reads the structure back; `None` when the slice is short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..EFI_TIME_SIZE)?;
        Some(EfiTime {
            year: u16::from_le_bytes([b[0], b[1]]),
            month: b[2],
            day: b[3],
            hour: b[4],
            minute: b[5],
            second: b[6],
        })
    }
}

impl std::fmt::Display for EfiTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_spec() {
        let t = EfiTime::from_datetime(time::macros::datetime!(2026-11-22 03:04:05 UTC));
        assert_eq!(
            hex::encode(t.to_bytes()),
            "ea070b16030405000000000000000000"
        );
        assert_eq!(EfiTime::from_bytes(&t.to_bytes()), Some(t));
    }
}
