//! The one place where offsets and lengths taken from an untrusted PE image
//! become slices: every `offset + length` is checked arithmetic in `u64`, and
//! every failure names the field and the offset, so no header value can make
//! the parsers panic, wrap or allocate what the file does not hold.

use super::image::PeError;

/// A bounds-checked view of an image's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Wraps `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// `length` bytes at `offset`, or an error naming `what` and the offset.
    pub fn range(&self, offset: u64, length: u64, what: &str) -> Result<&'a [u8], PeError> {
        let end = offset.checked_add(length).ok_or_else(|| {
            PeError(format!(
                "{what} at offset {offset:#x} with length {length:#x} overflows"
            ))
        })?;
        if end > self.len() {
            return Err(PeError(format!(
                "{what} at offset {offset:#x} ({length} bytes) runs past the end of the file ({} bytes)",
                self.len()
            )));
        }
        // Both bounds are <= data.len(), which fits usize.
        Ok(&self.data[offset as usize..end as usize])
    }

    /// The bytes from `offset` to the end of the file.
    pub fn tail(&self, offset: u64, what: &str) -> Result<&'a [u8], PeError> {
        let length = self.len().checked_sub(offset).ok_or_else(|| {
            PeError(format!(
                "{what} at offset {offset:#x} lies past the end of the file ({} bytes)",
                self.len()
            ))
        })?;
        self.range(offset, length, what)
    }

    /// A little-endian `u16` at `offset`.
    pub fn u16(&self, offset: u64, what: &str) -> Result<u16, PeError> {
        let b = self.range(offset, 2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// A little-endian `u32` at `offset`.
    pub fn u32(&self, offset: u64, what: &str) -> Result<u32, PeError> {
        let b = self.range(offset, 4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// `a + b` for offsets, as an error naming `what` when it overflows.
pub fn add(a: u64, b: u64, what: &str) -> Result<u64, PeError> {
    a.checked_add(b)
        .ok_or_else(|| PeError(format!("{what}: {a:#x} + {b:#x} overflows")))
}

/// `v` as `usize` (always true for offsets already checked against a slice).
pub fn to_usize(v: u64, what: &str) -> Result<usize, PeError> {
    usize::try_from(v).map_err(|_| PeError(format!("{what} {v:#x} does not fit in memory")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_without_wrapping() {
        let b = Bytes::new(&[1, 2, 3, 4, 5]);
        assert_eq!(b.range(1, 3, "x").unwrap(), &[2, 3, 4]);
        assert!(b.range(3, 3, "x").is_err());
        let e = b.range(u64::MAX, 2, "field").unwrap_err();
        assert!(e.0.contains("field") && e.0.contains("overflows"), "{e}");
        assert_eq!(b.u32(1, "u").unwrap(), 0x0504_0302);
        assert!(b.u32(2, "u").is_err());
        assert!(b.tail(6, "t").is_err());
        assert!(b.tail(5, "t").unwrap().is_empty());
    }
}
