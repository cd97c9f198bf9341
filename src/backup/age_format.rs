//! age (age-encryption.org/v1) in passphrase mode: scrypt-wrapped file key,
//! ChaCha20-Poly1305 payload. Authenticated, so a wrong passphrase or a
//! changed byte is always detected. `age -d FILE` opens it (asks for the
//! passphrase), and we open what `age -p` writes, binary or armored.

use std::io::{Read, Write};

use age::secrecy::SecretString;

use crate::secret::LockedBytes;

/// Start of a binary age file.
pub const MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// Start of an ASCII-armored age file.
pub const ARMOR_MAGIC: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
/// scrypt work factor of new backups: N = 2^18, age's usual (about a second).
pub const WORK_FACTOR: u8 = 18;
/// Largest work factor we accept when opening (2^20: 1 GiB of memory); the
/// bound keeps a hostile file from taking hours and all memory.
pub const MAX_WORK_FACTOR: u8 = 20;

/// Opening or writing failed.
#[derive(Debug, thiserror::Error)]
pub enum AgeError {
    /// Wrong passphrase.
    #[error("wrong passphrase: the age file's key does not decrypt with it")]
    WrongPassphrase,
    /// Encrypted to age recipients (public keys), not with a passphrase.
    #[error("this age file is encrypted to public keys, not with a passphrase; open it with `age -d -i IDENTITY` and restore from the decrypted key")]
    NotPassphrase,
    /// Work factor above [`MAX_WORK_FACTOR`].
    #[error(
        "the age file demands scrypt work factor 2^{0}, above the accepted 2^{MAX_WORK_FACTOR}"
    )]
    ExcessiveWork(u8),
    /// The payload fails authentication: changed or truncated.
    #[error("the age file is damaged or was changed (authentication failed): {0}")]
    Damaged(String),
    /// The passphrase is not UTF-8 (age passphrases are text).
    #[error("the passphrase is not valid UTF-8; age passphrases are text")]
    NotUtf8,
    /// Other age errors.
    #[error("age: {0}")]
    Other(String),
}

fn secret_string(passphrase: &[u8]) -> Result<SecretString, AgeError> {
    let s = std::str::from_utf8(passphrase).map_err(|_| AgeError::NotUtf8)?;
    // The copy lives in a SecretString, which is wiped when dropped.
    Ok(SecretString::from(s.to_string()))
}

/// Encrypts with a passphrase at the given scrypt work factor.
pub fn encrypt(plaintext: &[u8], passphrase: &[u8], work_factor: u8) -> Result<Vec<u8>, AgeError> {
    let mut recipient = age::scrypt::Recipient::new(secret_string(passphrase)?);
    recipient.set_work_factor(work_factor);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| AgeError::Other(e.to_string()))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|e| AgeError::Other(e.to_string()))?;
    w.write_all(plaintext)
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| AgeError::Other(e.to_string()))?;
    Ok(out)
}

/// Decrypts a binary or armored passphrase-mode age file into locked memory.
pub fn decrypt(data: &[u8], passphrase: &[u8]) -> Result<LockedBytes, AgeError> {
    let reader = age::armor::ArmoredReader::new(data);
    let decryptor = age::Decryptor::new(reader).map_err(map_decrypt)?;
    if !decryptor.is_scrypt() {
        return Err(AgeError::NotPassphrase);
    }
    let mut identity = age::scrypt::Identity::new(secret_string(passphrase)?);
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let mut r = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(map_decrypt)?;
    // The payload can be no longer than the file.
    let mut out = LockedBytes::with_capacity(data.len());
    let mut chunk = LockedBytes::with_capacity(4096);
    chunk.extend_from_slice(&[0u8; 4096]).expect("sized for it");
    loop {
        let n = r
            .read(&mut chunk)
            .map_err(|e| AgeError::Damaged(e.to_string()))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n])
            .map_err(|e| AgeError::Damaged(e.to_string()))?;
    }
    Ok(out)
}

fn map_decrypt(e: age::DecryptError) -> AgeError {
    use age::DecryptError as D;
    match e {
        D::DecryptionFailed | D::KeyDecryptionFailed | D::NoMatchingKeys => {
            AgeError::WrongPassphrase
        }
        D::ExcessiveWork { required, .. } => AgeError::ExcessiveWork(required),
        D::InvalidMac => AgeError::Damaged("the header MAC does not match".into()),
        other => AgeError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_wrong_passphrase_and_tampering() {
        let c = encrypt(b"key material", b"pass phrase", 10).unwrap();
        assert!(c.starts_with(MAGIC));
        assert_eq!(&decrypt(&c, b"pass phrase").unwrap()[..], b"key material");
        assert!(matches!(
            decrypt(&c, b"wrong"),
            Err(AgeError::WrongPassphrase)
        ));
        let mut t = c.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(matches!(
            decrypt(&t, b"pass phrase"),
            Err(AgeError::Damaged(_))
        ));
    }
}
