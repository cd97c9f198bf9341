//! APDUs over PC/SC: short APDUs with command chaining for long data and
//! GET RESPONSE for long answers (what YubiKeys and OpenSC use), and the
//! BER-TLV helpers PIV objects need.

use std::ffi::CString;

use zeroize::Zeroize;

use super::PivError;
use crate::secret::LockedBytes;

/// A card connection with the PIV application selected.
pub struct Transport {
    card: pcsc::Card,
    /// The reader's full name.
    pub reader: String,
}

/// A response: data and status word.
pub struct Response {
    /// The data (wiped on drop: it may be a PIN-protected key).
    pub data: LockedBytes,
    /// SW1 SW2.
    pub sw: u16,
}

impl Response {
    /// Whether the status is 90 00.
    pub fn ok(&self) -> bool {
        self.sw == 0x9000
    }
}

/// Every PC/SC reader name.
pub fn list_readers() -> Result<Vec<String>, PivError> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User)
        .map_err(PivError::pcsc("SCardEstablishContext"))?;
    let names = match ctx.list_readers_owned() {
        Ok(n) => n,
        Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
        Err(e) => return Err(PivError::pcsc("SCardListReaders")(e)),
    };
    Ok(names
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect())
}

/// The one reader whose name contains `wanted` (or equals it).
pub fn resolve_reader(wanted: &str) -> Result<String, PivError> {
    let readers = list_readers()?;
    if let Some(r) = readers.iter().find(|r| r.as_str() == wanted) {
        return Ok(r.clone());
    }
    let lower = wanted.to_lowercase();
    let matching: Vec<_> = readers
        .iter()
        .filter(|r| r.to_lowercase().contains(&lower))
        .cloned()
        .collect();
    match matching.len() {
        1 => Ok(matching[0].clone()),
        0 => Err(PivError::NoReader {
            wanted: wanted.to_string(),
            readers,
        }),
        _ => Err(PivError::SeveralReaders {
            wanted: wanted.to_string(),
            readers: matching,
        }),
    }
}

impl Transport {
    /// Connects exclusively to the card in `reader`: nothing else may
    /// select another application (which drops the PIN state) mid-way.
    pub fn connect(reader: &str) -> Result<Self, PivError> {
        let ctx = pcsc::Context::establish(pcsc::Scope::User)
            .map_err(PivError::pcsc("SCardEstablishContext"))?;
        let name = CString::new(reader).map_err(|_| PivError::NoReader {
            wanted: reader.to_string(),
            readers: Vec::new(),
        })?;
        let card = ctx
            .connect(&name, pcsc::ShareMode::Exclusive, pcsc::Protocols::ANY)
            .or_else(|e| match e {
                // pcscd or another process holds it: shared is still safe
                // for a single command sequence inside a transaction.
                pcsc::Error::SharingViolation => {
                    ctx.connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
                }
                e => Err(e),
            })
            .map_err(|e| match e {
                pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard => PivError::NoCard {
                    reader: reader.to_string(),
                },
                e => PivError::pcsc("SCardConnect")(e),
            })?;
        Ok(Transport {
            card,
            reader: reader.to_string(),
        })
    }

    fn raw(&self, apdu: &[u8]) -> Result<(Vec<u8>, u16), PivError> {
        let mut buf = vec![0u8; 258];
        let r = self
            .card
            .transmit(apdu, &mut buf)
            .map_err(PivError::pcsc("SCardTransmit"))?;
        if r.len() < 2 {
            return Err(PivError::Protocol(
                "response shorter than a status word".into(),
            ));
        }
        let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
        let data = r[..r.len() - 2].to_vec();
        buf.zeroize();
        Ok((data, sw))
    }

    /// Sends `INS P1 P2 data` (CLA 00, chained with CLA 10 in 255-byte
    /// pieces) and collects a long answer with GET RESPONSE.
    pub fn send(&self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Result<Response, PivError> {
        let mut chunks: Vec<&[u8]> = data.chunks(255).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        let mut result = (Vec::new(), 0u16);
        for (i, c) in chunks.iter().enumerate() {
            let cla = if i < last { 0x10 } else { 0x00 };
            let mut apdu = Vec::with_capacity(c.len() + 6);
            apdu.extend_from_slice(&[cla, ins, p1, p2]);
            if !c.is_empty() {
                apdu.push(c.len() as u8);
                apdu.extend_from_slice(c);
            }
            if i == last {
                apdu.push(0x00);
            }
            // The APDU may carry a PIN or key material: wipe it either way.
            let r = self.raw(&apdu);
            apdu.zeroize();
            let (d, sw) = r?;
            if i < last && sw != 0x9000 {
                return Ok(Response {
                    data: LockedBytes::take(d),
                    sw,
                });
            }
            result = (d, sw);
        }
        let (mut data, mut sw) = result;
        while sw >> 8 == 0x61 {
            let (more, s) = self.raw(&[0x00, 0xC0, 0x00, 0x00, (sw & 0xff) as u8])?;
            data.extend_from_slice(&more);
            sw = s;
        }
        Ok(Response {
            data: LockedBytes::take(data),
            sw,
        })
    }
}

/// A BER-TLV length.
pub fn ber_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// `tag | length | value`, for one-byte tags.
pub fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(ber_len(value.len()));
    v.extend_from_slice(value);
    v
}

/// The value of the first `tag` in a flat TLV sequence (one- or two-byte tags).
pub fn find_tlv(data: &[u8], tag: u16) -> Option<&[u8]> {
    let mut i = 0;
    while i < data.len() {
        let mut t = u16::from(data[i]);
        i += 1;
        if t & 0x1f == 0x1f {
            t = (t << 8) | u16::from(*data.get(i)?);
            i += 1;
        }
        let first = *data.get(i)?;
        i += 1;
        let len = match first {
            0..=0x7f => usize::from(first),
            0x81 => {
                i += 1;
                usize::from(*data.get(i - 1)?)
            }
            0x82 => {
                i += 2;
                (usize::from(*data.get(i - 2)?) << 8) | usize::from(*data.get(i - 1)?)
            }
            _ => return None,
        };
        let v = data.get(i..i + len)?;
        if t == tag {
            return Some(v);
        }
        i += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trip() {
        let long = vec![7u8; 300];
        let mut d = tlv(0x53, &tlv(0x88, &tlv(0x89, &[1, 2, 3])));
        d.extend(tlv(0x70, &long));
        let inner = find_tlv(&d, 0x53).unwrap();
        let key = find_tlv(find_tlv(inner, 0x88).unwrap(), 0x89).unwrap();
        assert_eq!(key, &[1, 2, 3]);
        assert_eq!(find_tlv(&d, 0x70).unwrap(), &long[..]);
        assert_eq!(
            find_tlv(&[0x5f, 0xc1, 0x01, 0x09], 0x5fc1),
            Some(&[9u8][..])
        );
        assert!(find_tlv(&[0x53, 0x05, 1], 0x53).is_none());
    }
}
