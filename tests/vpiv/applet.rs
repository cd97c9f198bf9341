//! A PIV applet with the YubiKey extensions, enough for ykman, OpenSC and
//! sbkit to provision and use it: SELECT (short and full AID), VERIFY,
//! CHANGE REFERENCE DATA, RESET RETRY COUNTER, GET/PUT DATA (the
//! PIN-protected object readable only after VERIFY), GENERAL AUTHENTICATE
//! (management key 3DES/AES mutual authentication; ECDSA and raw RSA
//! signatures), and Yubico's GET VERSION, GET SERIAL, GET METADATA, SET
//! MANAGEMENT KEY, IMPORT ASYMMETRIC KEY; command chaining, GET RESPONSE and
//! extended APDUs.
//!
//! It is a test stand-in: keys live in memory, nothing is persisted.

use std::collections::HashMap;

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::symm::{Cipher, Crypter, Mode};

/// A YubiKey 5's ATR ("YubiKey@" in its historical bytes).
pub const ATR: &[u8] = &[
    0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
];
const PIV_RID: &[u8] = &[0xA0, 0x00, 0x00, 0x03, 0x08];
const DEFAULT_MGMT: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
const OBJ_PRINTED: u32 = 0x5fc109;

const SW_OK: u16 = 0x9000;
const SW_SECURITY: u16 = 0x6982;
const SW_BLOCKED: u16 = 0x6983;
const SW_DATA: u16 = 0x6a80;
const SW_NOT_FOUND: u16 = 0x6a82;
const SW_P1P2: u16 = 0x6a86;
const SW_INS: u16 = 0x6d00;
const SW_CONDITIONS: u16 = 0x6985;

struct SlotKey {
    key: PKey<Private>,
    alg: u8,
    pin_policy: u8,
    touch_policy: u8,
    origin: u8,
}

/// One virtual card.
pub struct Piv {
    version: [u8; 3],
    serial: u32,
    pin: Vec<u8>,
    pin_retries: u8,
    pin_default: bool,
    puk: Vec<u8>,
    puk_retries: u8,
    puk_default: bool,
    mgmt_alg: u8,
    mgmt_key: Vec<u8>,
    mgmt_default: bool,
    objects: HashMap<u32, Vec<u8>>,
    keys: HashMap<u8, SlotKey>,
    // Session state, cleared on reset.
    selected: bool,
    pin_verified: bool,
    /// VERIFY happened since the last use of a PIN-always key.
    pin_fresh: bool,
    mgmt_authed: bool,
    witness: Option<Vec<u8>>,
    chain: Vec<u8>,
    pending: Vec<u8>,
    /// Every APDU's INS, for tests that check what was sent.
    pub log: Vec<u8>,
}

const MAX_TRIES: u8 = 3;

impl Piv {
    /// A factory-fresh card: PIN 123456, PUK 12345678, default management
    /// key (AES-192 from firmware 5.7, 3DES before).
    pub fn new(version: [u8; 3], serial: u32) -> Self {
        Piv {
            version,
            serial,
            pin: b"123456".to_vec(),
            pin_retries: MAX_TRIES,
            pin_default: true,
            puk: b"12345678".to_vec(),
            puk_retries: MAX_TRIES,
            puk_default: true,
            mgmt_alg: if (version[0], version[1]) >= (5, 7) {
                0x0A
            } else {
                0x03
            },
            mgmt_key: DEFAULT_MGMT.to_vec(),
            mgmt_default: true,
            objects: HashMap::new(),
            keys: HashMap::new(),
            selected: false,
            pin_verified: false,
            pin_fresh: false,
            mgmt_authed: false,
            witness: None,
            chain: Vec::new(),
            pending: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Power cycle or reset: the security state is lost.
    pub fn reset(&mut self) {
        self.selected = false;
        self.pin_verified = false;
        self.pin_fresh = false;
        self.mgmt_authed = false;
        self.witness = None;
        self.chain.clear();
        self.pending.clear();
    }

    /// Handles one command APDU; returns the response APDU (data + SW).
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        if apdu.len() < 4 {
            return sw(0x6700);
        }
        let (cla, ins, p1, p2) = (apdu[0], apdu[1], apdu[2], apdu[3]);
        self.log.push(ins);
        // Lc/data/Le, short or extended.
        let mut le = 256usize;
        let (data, extended) = match apdu.len() {
            4 => (&apdu[4..4], false),
            5 => {
                le = match apdu[4] {
                    0 => 256,
                    n => usize::from(n),
                };
                (&apdu[5..5], false)
            }
            _ if apdu[4] == 0 && apdu.len() >= 7 => {
                let lc = usize::from(u16::from_be_bytes([apdu[5], apdu[6]]));
                if apdu.len() == 7 {
                    (&apdu[7..7], true) // extended Le only
                } else {
                    (&apdu[7..(7 + lc).min(apdu.len())], true)
                }
            }
            _ => {
                let lc = usize::from(apdu[4]);
                if apdu.len() == 6 + lc {
                    le = match apdu[5 + lc] {
                        0 => 256,
                        n => usize::from(n),
                    };
                }
                (&apdu[5..(5 + lc).min(apdu.len())], false)
            }
        };
        if ins == 0xC0 {
            return self.respond_pending(extended, le);
        }
        self.pending.clear();
        if cla & 0x10 != 0 {
            self.chain.extend_from_slice(data);
            return sw(SW_OK);
        }
        let mut full = std::mem::take(&mut self.chain);
        full.extend_from_slice(data);
        let (body, status) = self.dispatch(ins, p1, p2, &full);
        if status != SW_OK {
            let mut r = body;
            r.extend_from_slice(&status.to_be_bytes());
            return r;
        }
        self.pending = body;
        self.respond_pending(extended, le)
    }

    /// At most Le bytes (256 for short APDUs without Le, everything for
    /// extended ones); the rest waits for GET RESPONSE, announced by 61xx.
    fn respond_pending(&mut self, extended: bool, le: usize) -> Vec<u8> {
        let max = if extended { 65536 } else { le };
        let n = self.pending.len().min(max);
        let mut r: Vec<u8> = self.pending.drain(..n).collect();
        let left = self.pending.len();
        if left == 0 {
            r.extend_from_slice(&SW_OK.to_be_bytes());
        } else {
            r.extend_from_slice(&[0x61, left.min(255) as u8]);
        }
        r
    }

    fn dispatch(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if ins == 0xA4 {
            return self.select(p1, data);
        }
        if !self.selected {
            return (vec![], SW_INS);
        }
        match ins {
            0xFD => (self.version.to_vec(), SW_OK),
            0xF8 => (self.serial.to_be_bytes().to_vec(), SW_OK),
            0xF7 => self.metadata(p2),
            0x20 => self.verify(p1, p2, data),
            0x24 => self.change_reference(p2, data),
            0x2C => self.reset_retry(data),
            0xCB => self.get_data(data),
            0xDB => self.put_data(data),
            0x87 => self.general_authenticate(p1, p2, data),
            0xFF => self.set_mgmt_key(data),
            0xFE => self.import(p1, p2, data),
            0xFB => self.piv_reset(),
            _ => (vec![], SW_INS),
        }
    }

    fn select(&mut self, p1: u8, aid: &[u8]) -> (Vec<u8>, u16) {
        if p1 == 0x04 && aid.len() >= 5 && &aid[..5] == PIV_RID {
            self.selected = true;
            // The Application Property Template a YubiKey returns.
            let apt = vec![
                0x61, 0x11, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4F, 0x05,
                0xA0, 0x00, 0x00, 0x03, 0x08,
            ];
            (apt, SW_OK)
        } else {
            // Another application: the PIV security state is gone.
            self.reset();
            (vec![], SW_NOT_FOUND)
        }
    }

    fn metadata(&self, reference: u8) -> (Vec<u8>, u16) {
        if (self.version[0], self.version[1]) < (5, 3) {
            return (vec![], SW_INS);
        }
        let mut out = Vec::new();
        match reference {
            0x80 | 0x81 => {
                let (def, left) = if reference == 0x80 {
                    (self.pin_default, self.pin_retries)
                } else {
                    (self.puk_default, self.puk_retries)
                };
                out.extend(tlv(0x01, &[0xFF]));
                out.extend(tlv(0x05, &[u8::from(def)]));
                out.extend(tlv(0x06, &[MAX_TRIES, left]));
            }
            0x9B => {
                out.extend(tlv(0x01, &[self.mgmt_alg]));
                out.extend(tlv(0x02, &[0x00, 0x01]));
                out.extend(tlv(0x05, &[u8::from(self.mgmt_default)]));
            }
            slot => {
                let Some(k) = self.keys.get(&slot) else {
                    return (vec![], SW_NOT_FOUND);
                };
                out.extend(tlv(0x01, &[k.alg]));
                out.extend(tlv(0x02, &[k.pin_policy, k.touch_policy]));
                out.extend(tlv(0x03, &[k.origin]));
                out.extend(tlv(0x04, &public_tlv(&k.key)));
            }
        }
        (out, SW_OK)
    }

    fn check(&mut self, reference: u8, given: &[u8]) -> u16 {
        let (secret, retries) = if reference == 0x80 {
            (&self.pin, &mut self.pin_retries)
        } else {
            (&self.puk, &mut self.puk_retries)
        };
        if *retries == 0 {
            return SW_BLOCKED;
        }
        let unpadded: Vec<u8> = given.iter().copied().take_while(|b| *b != 0xFF).collect();
        if unpadded == *secret {
            *retries = MAX_TRIES;
            SW_OK
        } else {
            *retries -= 1;
            if *retries == 0 {
                SW_BLOCKED
            } else {
                0x63C0 | u16::from(*retries)
            }
        }
    }

    fn verify(&mut self, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if p2 != 0x80 {
            return (vec![], SW_P1P2);
        }
        if p1 == 0xFF {
            self.pin_verified = false;
            self.pin_fresh = false;
            return (vec![], SW_OK);
        }
        if data.is_empty() {
            return if self.pin_verified {
                (vec![], SW_OK)
            } else if self.pin_retries == 0 {
                (vec![], SW_BLOCKED)
            } else {
                (vec![], 0x63C0 | u16::from(self.pin_retries))
            };
        }
        if data.len() != 8 {
            return (vec![], SW_DATA);
        }
        let s = self.check(0x80, data);
        self.pin_verified = s == SW_OK;
        self.pin_fresh = s == SW_OK;
        (vec![], s)
    }

    fn change_reference(&mut self, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if !(p2 == 0x80 || p2 == 0x81) || data.len() != 16 {
            return (vec![], SW_DATA);
        }
        let s = self.check(p2, &data[..8]);
        if s != SW_OK {
            return (vec![], s);
        }
        let new: Vec<u8> = data[8..]
            .iter()
            .copied()
            .take_while(|b| *b != 0xFF)
            .collect();
        if new.len() < 6 {
            return (vec![], SW_DATA);
        }
        if p2 == 0x80 {
            self.pin = new;
            self.pin_default = false;
            self.pin_verified = true;
        } else {
            self.puk = new;
            self.puk_default = false;
        }
        (vec![], SW_OK)
    }

    fn reset_retry(&mut self, data: &[u8]) -> (Vec<u8>, u16) {
        if data.len() != 16 {
            return (vec![], SW_DATA);
        }
        let s = self.check(0x81, &data[..8]);
        if s != SW_OK {
            return (vec![], s);
        }
        self.pin = data[8..]
            .iter()
            .copied()
            .take_while(|b| *b != 0xFF)
            .collect();
        self.pin_retries = MAX_TRIES;
        (vec![], SW_OK)
    }

    fn object_id(data: &[u8]) -> Option<u32> {
        let v = find_tlv(data, 0x5C)?;
        Some(v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
    }

    fn get_data(&mut self, data: &[u8]) -> (Vec<u8>, u16) {
        let Some(id) = Self::object_id(data) else {
            return (vec![], SW_DATA);
        };
        if id == 0x7E {
            // Discovery object: PIV AID and PIN usage policy (PIN only).
            let mut v = tlv(0x4F, &[0xA0, 0, 0, 3, 8, 0, 0, 0x10, 0, 1, 0]);
            v.extend(tlv2(0x5F2F, &[0x40, 0x00]));
            return (tlv(0x7E, &v), SW_OK);
        }
        if id == OBJ_PRINTED && !self.pin_verified {
            return (vec![], SW_SECURITY);
        }
        match self.objects.get(&id) {
            Some(v) => (tlv(0x53, v), SW_OK),
            None => (vec![], SW_NOT_FOUND),
        }
    }

    fn put_data(&mut self, data: &[u8]) -> (Vec<u8>, u16) {
        if !self.mgmt_authed {
            return (vec![], SW_SECURITY);
        }
        let (Some(id), Some(v)) = (Self::object_id(data), find_tlv(data, 0x53)) else {
            return (vec![], SW_DATA);
        };
        if v.is_empty() {
            self.objects.remove(&id);
        } else {
            self.objects.insert(id, v.to_vec());
        }
        (vec![], SW_OK)
    }

    fn mgmt_cipher(&self) -> Option<(Cipher, usize)> {
        Some(match self.mgmt_alg {
            0x03 => (Cipher::des_ede3(), 8),
            0x08 => (Cipher::aes_128_ecb(), 16),
            0x0A => (Cipher::aes_192_ecb(), 16),
            0x0C => (Cipher::aes_256_ecb(), 16),
            _ => return None,
        })
    }

    fn general_authenticate(&mut self, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        let Some(inner) = find_tlv(data, 0x7C) else {
            return (vec![], SW_DATA);
        };
        if p2 == 0x9B {
            if p1 != self.mgmt_alg {
                return (vec![], SW_P1P2);
            }
            let (cipher, block) = self.mgmt_cipher().expect("known algorithm");
            let witness = find_tlv(inner, 0x80);
            let challenge = find_tlv(inner, 0x81);
            match (witness, challenge) {
                (Some([]), None) => {
                    let mut w = vec![0u8; block];
                    openssl::rand::rand_bytes(&mut w).unwrap();
                    let enc = ecb(cipher, Mode::Encrypt, &self.mgmt_key, &w);
                    self.witness = Some(w);
                    self.mgmt_authed = false;
                    (tlv(0x7C, &tlv(0x80, &enc)), SW_OK)
                }
                (Some(w), Some(c)) => {
                    let expected = self.witness.take();
                    if expected.as_deref() != Some(w) {
                        self.mgmt_authed = false;
                        return (vec![], SW_SECURITY);
                    }
                    self.mgmt_authed = true;
                    let enc = ecb(cipher, Mode::Encrypt, &self.mgmt_key, c);
                    (tlv(0x7C, &tlv(0x82, &enc)), SW_OK)
                }
                _ => (vec![], SW_DATA),
            }
        } else {
            let Some(k) = self.keys.get(&p2) else {
                return (vec![], SW_NOT_FOUND);
            };
            if k.alg != p1 {
                return (vec![], SW_P1P2);
            }
            // PIN policy: 1 never, 2 once, 3 always (default for 9C), 0 default.
            let policy = match k.pin_policy {
                0 if p2 == 0x9C => 3,
                0 => 2,
                p => p,
            };
            let allowed = match policy {
                1 => true,
                2 => self.pin_verified,
                _ => self.pin_verified && self.pin_fresh,
            };
            if !allowed {
                return (vec![], SW_SECURITY);
            }
            let Some(msg) = find_tlv(inner, 0x81) else {
                return (vec![], SW_DATA);
            };
            let sig = if let Ok(ec) = k.key.ec_key() {
                match openssl::ecdsa::EcdsaSig::sign(msg, &ec).and_then(|s| s.to_der()) {
                    Ok(s) => s,
                    Err(_) => return (vec![], SW_DATA),
                }
            } else {
                let rsa = k.key.rsa().unwrap();
                if msg.len() != rsa.size() as usize {
                    return (vec![], SW_DATA);
                }
                let mut out = vec![0u8; rsa.size() as usize];
                match rsa.private_encrypt(msg, &mut out, openssl::rsa::Padding::NONE) {
                    Ok(n) => out[..n].to_vec(),
                    Err(_) => return (vec![], SW_DATA),
                }
            };
            if policy == 3 {
                self.pin_fresh = false;
            }
            (tlv(0x7C, &tlv(0x82, &sig)), SW_OK)
        }
    }

    fn set_mgmt_key(&mut self, data: &[u8]) -> (Vec<u8>, u16) {
        if !self.mgmt_authed {
            return (vec![], SW_SECURITY);
        }
        if data.len() < 3 || data[1] != 0x9B || data.len() != 3 + usize::from(data[2]) {
            return (vec![], SW_DATA);
        }
        let len_ok = match data[0] {
            0x03 | 0x0A => data[2] == 24,
            0x08 => data[2] == 16,
            0x0C => data[2] == 32,
            _ => false,
        };
        if !len_ok {
            return (vec![], SW_DATA);
        }
        self.mgmt_alg = data[0];
        self.mgmt_key = data[3..].to_vec();
        self.mgmt_default = self.mgmt_key == DEFAULT_MGMT;
        (vec![], SW_OK)
    }

    fn import(&mut self, alg: u8, slot: u8, data: &[u8]) -> (Vec<u8>, u16) {
        if !self.mgmt_authed {
            return (vec![], SW_SECURITY);
        }
        if !matches!(slot, 0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95) {
            return (vec![], SW_P1P2);
        }
        let key = match alg {
            0x11 | 0x14 => {
                let nid = if alg == 0x11 {
                    Nid::X9_62_PRIME256V1
                } else {
                    Nid::SECP384R1
                };
                let Some(scalar) = find_tlv(data, 0x06) else {
                    return (vec![], SW_DATA);
                };
                match ec_from_scalar(nid, scalar) {
                    Some(k) => k,
                    None => return (vec![], SW_DATA),
                }
            }
            0x07 | 0x05 | 0x16 => {
                let parts: Option<Vec<&[u8]>> = (1..=5).map(|t| find_tlv(data, t)).collect();
                match parts.and_then(|p| rsa_from_crt(&p)) {
                    Some(k) => k,
                    None => return (vec![], SW_DATA),
                }
            }
            _ => return (vec![], SW_P1P2),
        };
        let pin_policy = find_tlv(data, 0xAA)
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        let touch_policy = find_tlv(data, 0xAB)
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        self.keys.insert(
            slot,
            SlotKey {
                key,
                alg,
                pin_policy,
                touch_policy,
                origin: 2,
            },
        );
        (vec![], SW_OK)
    }

    fn piv_reset(&mut self) -> (Vec<u8>, u16) {
        if self.pin_retries != 0 || self.puk_retries != 0 {
            return (vec![], SW_CONDITIONS);
        }
        *self = Piv::new(self.version, self.serial);
        self.selected = true;
        (vec![], SW_OK)
    }

    /// Test helper: the PIN tries left.
    pub fn pin_retries(&self) -> u8 {
        self.pin_retries
    }
}

fn ecb(cipher: Cipher, mode: Mode, key: &[u8], input: &[u8]) -> Vec<u8> {
    let mut c = Crypter::new(cipher, mode, key, None).unwrap();
    c.pad(false);
    let mut out = vec![0u8; input.len() + 32];
    let mut n = c.update(input, &mut out).unwrap();
    n += c.finalize(&mut out[n..]).unwrap();
    out.truncate(n);
    out
}

fn ec_from_scalar(nid: Nid, scalar: &[u8]) -> Option<PKey<Private>> {
    let group = EcGroup::from_curve_name(nid).ok()?;
    let d = BigNum::from_slice(scalar).ok()?;
    let mut ctx = BigNumContext::new().ok()?;
    let mut q = EcPoint::new(&group).ok()?;
    q.mul_generator2(&group, &d, &mut ctx).ok()?;
    let k = EcKey::from_private_components(&group, &d, &q).ok()?;
    k.check_key().ok()?;
    PKey::from_ec_key(k).ok()
}

fn rsa_from_crt(p: &[&[u8]]) -> Option<PKey<Private>> {
    let bn = |b: &[u8]| BigNum::from_slice(b).ok();
    let (pp, q, dp, dq, qinv) = (bn(p[0])?, bn(p[1])?, bn(p[2])?, bn(p[3])?, bn(p[4])?);
    let mut ctx = BigNumContext::new().ok()?;
    let mut n = BigNum::new().ok()?;
    n.checked_mul(&pp, &q, &mut ctx).ok()?;
    let e = BigNum::from_u32(65537).ok()?;
    let one = BigNum::from_u32(1).ok()?;
    let (mut p1, mut q1, mut phi, mut d) = (
        BigNum::new().ok()?,
        BigNum::new().ok()?,
        BigNum::new().ok()?,
        BigNum::new().ok()?,
    );
    p1.checked_sub(&pp, &one).ok()?;
    q1.checked_sub(&q, &one).ok()?;
    phi.checked_mul(&p1, &q1, &mut ctx).ok()?;
    d.mod_inverse(&e, &phi, &mut ctx).ok()?;
    let rsa = Rsa::from_private_components(n, e, d, pp, q, dp, dq, qinv).ok()?;
    rsa.check_key().ok()?.then_some(())?;
    PKey::from_rsa(rsa).ok()
}

/// The public key TLV of GET METADATA / GENERATE: RSA 81 n 82 e, EC 86 point.
fn public_tlv(key: &PKey<Private>) -> Vec<u8> {
    if let Ok(ec) = key.ec_key() {
        let mut ctx = BigNumContext::new().unwrap();
        let point = ec
            .public_key()
            .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        tlv(0x86, &point)
    } else {
        let rsa = key.rsa().unwrap();
        let mut v = tlv(0x81, &rsa.n().to_vec());
        v.extend(tlv(0x82, &rsa.e().to_vec()));
        v
    }
}

fn sw(s: u16) -> Vec<u8> {
    s.to_be_bytes().to_vec()
}

fn ber_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// One-byte-tag TLV.
pub fn tlv(tag: u8, v: &[u8]) -> Vec<u8> {
    let mut o = vec![tag];
    o.extend(ber_len(v.len()));
    o.extend_from_slice(v);
    o
}

fn tlv2(tag: u16, v: &[u8]) -> Vec<u8> {
    let mut o = tag.to_be_bytes().to_vec();
    o.extend(ber_len(v.len()));
    o.extend_from_slice(v);
    o
}

/// The value of the first `tag` (one-byte tags, or two-byte `xF`-class tags).
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
