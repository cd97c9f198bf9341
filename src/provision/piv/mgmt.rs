//! PIV management key: mutual challenge-response authentication (GENERAL
//! AUTHENTICATE on key reference 9B) with 3DES or AES, and new random keys.

use openssl::symm::{Cipher, Crypter, Mode};

use super::apdu::{find_tlv, tlv, Transport};
use crate::secret::LockedBytes;

/// The algorithm of a management key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MgmtAlgorithm {
    /// Three-key 3DES (firmware before 5.7 by default).
    TripleDes,
    /// AES-128.
    Aes128,
    /// AES-192 (the default of firmware 5.7+).
    Aes192,
    /// AES-256.
    Aes256,
}

impl MgmtAlgorithm {
    /// From the PIV algorithm identifier.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x03 => Some(MgmtAlgorithm::TripleDes),
            0x08 => Some(MgmtAlgorithm::Aes128),
            0x0A => Some(MgmtAlgorithm::Aes192),
            0x0C => Some(MgmtAlgorithm::Aes256),
            _ => None,
        }
    }

    /// The PIV algorithm identifier.
    pub fn id(self) -> u8 {
        match self {
            MgmtAlgorithm::TripleDes => 0x03,
            MgmtAlgorithm::Aes128 => 0x08,
            MgmtAlgorithm::Aes192 => 0x0A,
            MgmtAlgorithm::Aes256 => 0x0C,
        }
    }

    /// The name for messages.
    pub fn name(self) -> &'static str {
        match self {
            MgmtAlgorithm::TripleDes => "3DES",
            MgmtAlgorithm::Aes128 => "AES-128",
            MgmtAlgorithm::Aes192 => "AES-192",
            MgmtAlgorithm::Aes256 => "AES-256",
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            MgmtAlgorithm::TripleDes | MgmtAlgorithm::Aes192 => 24,
            MgmtAlgorithm::Aes128 => 16,
            MgmtAlgorithm::Aes256 => 32,
        }
    }

    /// Challenge (block) length in bytes.
    pub fn block_len(self) -> usize {
        match self {
            MgmtAlgorithm::TripleDes => 8,
            _ => 16,
        }
    }

    fn cipher(self) -> Cipher {
        match self {
            MgmtAlgorithm::TripleDes => Cipher::des_ede3(),
            MgmtAlgorithm::Aes128 => Cipher::aes_128_ecb(),
            MgmtAlgorithm::Aes192 => Cipher::aes_192_ecb(),
            MgmtAlgorithm::Aes256 => Cipher::aes_256_ecb(),
        }
    }
}

/// One block in ECB mode, no padding.
pub fn block(alg: MgmtAlgorithm, mode: Mode, key: &[u8], input: &[u8]) -> Result<Vec<u8>, String> {
    let mut c = Crypter::new(alg.cipher(), mode, key, None).map_err(|e| e.to_string())?;
    c.pad(false);
    let mut out = vec![0u8; input.len() + alg.block_len()];
    let mut n = c.update(input, &mut out).map_err(|e| e.to_string())?;
    n += c.finalize(&mut out[n..]).map_err(|e| e.to_string())?;
    out.truncate(n);
    Ok(out)
}

/// A new random management key, in locked memory. 3DES keys are checked
/// not to be weak (the three parts must differ).
pub fn random_key(alg: MgmtAlgorithm) -> Result<LockedBytes, String> {
    loop {
        let mut k = LockedBytes::with_capacity(alg.key_len());
        k.extend_from_slice(&vec![0u8; alg.key_len()])
            .map_err(|e| e.to_string())?;
        openssl::rand::rand_bytes(&mut k).map_err(|e| e.to_string())?;
        if alg != MgmtAlgorithm::TripleDes || (k[..8] != k[8..16] && k[8..16] != k[16..24]) {
            return Ok(k);
        }
    }
}

/// Mutual authentication: the card sends a witness encrypted under the key,
/// we return it decrypted with a challenge of ours, and check the card's
/// encryption of our challenge. A wrong key costs no try.
pub fn authenticate(t: &Transport, alg: MgmtAlgorithm, key: &[u8]) -> Result<(), String> {
    if key.len() != alg.key_len() {
        return Err(format!(
            "a {} key has {} bytes, this one {}",
            alg.name(),
            alg.key_len(),
            key.len()
        ));
    }
    let r = t
        .send(0x87, alg.id(), 0x9B, &tlv(0x7C, &tlv(0x80, &[])))
        .map_err(|e| e.to_string())?;
    if !r.ok() {
        return Err(format!("the card refused to start (status {:04X})", r.sw));
    }
    let witness = find_tlv(&r.data, 0x7C)
        .and_then(|d| find_tlv(d, 0x80))
        .ok_or("no witness in the card's answer")?
        .to_vec();
    let decrypted = block(alg, Mode::Decrypt, key, &witness)?;
    let mut challenge = vec![0u8; alg.block_len()];
    openssl::rand::rand_bytes(&mut challenge).map_err(|e| e.to_string())?;
    let mut inner = tlv(0x80, &decrypted);
    inner.extend(tlv(0x81, &challenge));
    let r = t
        .send(0x87, alg.id(), 0x9B, &tlv(0x7C, &inner))
        .map_err(|e| e.to_string())?;
    if !r.ok() {
        return Err(format!(
            "the card rejected the key (status {:04X}): it is not the card's management key",
            r.sw
        ));
    }
    let response = find_tlv(&r.data, 0x7C)
        .and_then(|d| find_tlv(d, 0x82))
        .ok_or("no response in the card's answer")?;
    if block(alg, Mode::Encrypt, key, &challenge)? != response {
        return Err(
            "the card's answer to our challenge is wrong: not a genuine card for this key".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_keys_have_the_right_length() {
        for alg in [
            MgmtAlgorithm::TripleDes,
            MgmtAlgorithm::Aes128,
            MgmtAlgorithm::Aes192,
            MgmtAlgorithm::Aes256,
        ] {
            let k = random_key(alg).unwrap();
            assert_eq!(k.len(), alg.key_len());
            let m = vec![7u8; alg.block_len()];
            let c = block(alg, Mode::Encrypt, &k, &m).unwrap();
            assert_eq!(c.len(), alg.block_len());
            assert_eq!(block(alg, Mode::Decrypt, &k, &c).unwrap(), m);
            assert_eq!(MgmtAlgorithm::from_id(alg.id()), Some(alg));
        }
    }
}
