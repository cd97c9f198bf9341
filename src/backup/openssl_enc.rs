//! The `openssl enc -aes-256-cbc -pbkdf2` file format, byte for byte.
//!
//! `Salted__ | salt (8 bytes) | AES-256-CBC(PKCS#7 padding)`, with key and
//! IV = PBKDF2-HMAC-SHA256(passphrase, salt, 10000 iterations, 32 + 16
//! bytes) — OpenSSL 1.1.1+'s `-pbkdf2` defaults (`-iter 10000`, `-md sha256`).
//! So `openssl enc -d -aes-256-cbc -pbkdf2 -in FILE` opens what we write and
//! we open what it writes.
//!
//! The format has no integrity check: a wrong passphrase usually shows as bad
//! padding, but about one time in 256 it "decrypts" to garbage. Callers must
//! check what comes out (a private key must parse) — and new backups should
//! use age.

use openssl::hash::MessageDigest;
use openssl::symm::{Cipher, Crypter, Mode};
use zeroize::Zeroizing;

use crate::secret::LockedBytes;

/// The file's magic.
pub const MAGIC: &[u8; 8] = b"Salted__";
/// PBKDF2 iterations of `openssl enc -pbkdf2` without `-iter`.
pub const ITERATIONS: usize = 10_000;
const SALT_LEN: usize = 8;
const KEY_LEN: usize = 32;
const IV_LEN: usize = 16;

/// Opening or writing the format failed.
#[derive(Debug, thiserror::Error)]
pub enum EncError {
    /// Too short or without `Salted__`.
    #[error(
        "not an `openssl enc` file with salt (it must start with \"Salted__\" and an 8-byte salt)"
    )]
    NotSalted,
    /// The ciphertext is not whole AES blocks.
    #[error("the ciphertext is {0} bytes, not a multiple of 16: the file is truncated or not AES-256-CBC")]
    Length(usize),
    /// Padding check failed: wrong passphrase (almost always) or a damaged file.
    #[error("wrong passphrase (or a damaged file): the decrypted padding is invalid")]
    BadDecrypt,
    /// OpenSSL failed otherwise.
    #[error("OpenSSL: {0}")]
    OpenSsl(openssl::error::ErrorStack),
}

// By hand rather than `#[from]`: the message already shows the inner error,
// and a source as well would print it twice in an error chain.
impl From<openssl::error::ErrorStack> for EncError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        EncError::OpenSsl(e)
    }
}

/// Key and IV from the passphrase and salt, in locked memory.
fn derive(passphrase: &[u8], salt: &[u8]) -> Result<LockedBytes, EncError> {
    let mut out = Zeroizing::new([0u8; KEY_LEN + IV_LEN]);
    openssl::pkcs5::pbkdf2_hmac(
        passphrase,
        salt,
        ITERATIONS,
        MessageDigest::sha256(),
        &mut out[..],
    )?;
    Ok(LockedBytes::from_slice(&out[..]))
}

fn run(mode: Mode, key_iv: &[u8], input: &[u8], out: &mut [u8]) -> Result<usize, EncError> {
    let cipher = Cipher::aes_256_cbc();
    let mut c = Crypter::new(cipher, mode, &key_iv[..KEY_LEN], Some(&key_iv[KEY_LEN..]))?;
    let mut n = c.update(input, out)?;
    n += c.finalize(&mut out[n..]).map_err(|e| match mode {
        Mode::Decrypt => EncError::BadDecrypt,
        Mode::Encrypt => EncError::OpenSsl(e),
    })?;
    Ok(n)
}

/// Encrypts `plaintext` with a fresh random salt.
pub fn encrypt(plaintext: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, EncError> {
    let mut salt = [0u8; SALT_LEN];
    openssl::rand::rand_bytes(&mut salt)?;
    encrypt_with_salt(plaintext, passphrase, &salt)
}

/// Encrypts with a given salt (for tests against `openssl enc -S`).
pub fn encrypt_with_salt(
    plaintext: &[u8],
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
) -> Result<Vec<u8>, EncError> {
    let key_iv = derive(passphrase, salt)?;
    let mut out = vec![0u8; MAGIC.len() + SALT_LEN + plaintext.len() + 32];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(salt);
    let n = run(Mode::Encrypt, &key_iv, plaintext, &mut out[16..])?;
    out.truncate(16 + n);
    Ok(out)
}

/// Decrypts into locked memory.
pub fn decrypt(data: &[u8], passphrase: &[u8]) -> Result<LockedBytes, EncError> {
    if data.len() < 16 || &data[..8] != MAGIC {
        return Err(EncError::NotSalted);
    }
    let body = &data[16..];
    if body.is_empty() || body.len() % 16 != 0 {
        return Err(EncError::Length(body.len()));
    }
    let key_iv = derive(passphrase, &data[8..16])?;
    // Crypter writes into our buffer only, which is locked from the start.
    let mut out = LockedBytes::with_capacity(body.len() + 16);
    out.extend_from_slice(&vec![0u8; body.len() + 16])
        .expect("sized for it");
    let n = run(Mode::Decrypt, &key_iv, body, &mut out)?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let c = encrypt(b"secret key", b"pass").unwrap();
        assert_eq!(&c[..8], MAGIC);
        assert_eq!(c.len(), 16 + 16);
        assert_eq!(&decrypt(&c, b"pass").unwrap()[..], b"secret key");
        // With 200 wrong passphrases at least most fail the padding check;
        // the rest give garbage, never the plaintext.
        let mut bad = 0;
        for i in 0..200 {
            match decrypt(&c, format!("wrong{i}").as_bytes()) {
                Err(EncError::BadDecrypt) => bad += 1,
                Ok(p) => assert_ne!(&p[..], b"secret key"),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(bad > 180, "{bad}");
        assert!(matches!(
            decrypt(b"Salted_", b"p"),
            Err(EncError::NotSalted)
        ));
        assert!(matches!(
            decrypt(&c[..c.len() - 1], b"pass"),
            Err(EncError::Length(15))
        ));
    }

    #[test]
    fn known_answer_from_openssl_enc() {
        // printf 'hello\n' | openssl enc -aes-256-cbc -pbkdf2 -pass pass:test -S 0001020304050607
        // (OpenSSL 3 omits the Salted__ header when the salt is given with -S.)
        let salt = [0, 1, 2, 3, 4, 5, 6, 7];
        let ours = encrypt_with_salt(b"hello\n", b"test", &salt).unwrap();
        assert_eq!(&ours[..16], b"Salted__\x00\x01\x02\x03\x04\x05\x06\x07");
        assert_eq!(hex::encode(&ours[16..]), "fd5f58344de826866ed5dc16a4913325");
        assert_eq!(&decrypt(&ours, b"test").unwrap()[..], b"hello\n");
    }
}
