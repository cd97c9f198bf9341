//! YubiKey PIV provisioning over PC/SC: the card's state (firmware, serial,
//! PIN and PUK retries, whether PIN, PUK and management key are still the
//! factory defaults), token preparation (new PIN, new PUK, a random
//! management key stored PIN-protected, as `ykman piv access
//! change-management-key --generate --protect` does), and loading a key and
//! certificate into slot 9c.
//!
//! Safety rules, enforced here: the retries left are shown before any PIN
//! or PUK is tried; a PIN or PUK is never retried by sbkit itself; the last
//! try is never spent (the card would lock); a card whose PIN, PUK or
//! management key is still the default is refused for key import.
//!
//! Protocol: NIST SP 800-73-4 (SELECT, VERIFY, CHANGE REFERENCE DATA, GET/PUT
//! DATA, GENERAL AUTHENTICATE) and Yubico's extensions (GET VERSION 0xFD,
//! GET SERIAL 0xF8, GET METADATA 0xF7, SET MANAGEMENT KEY 0xFF, IMPORT
//! ASYMMETRIC KEY 0xFE). Firmware 5.7+ ships an AES-192 default management
//! key, older firmware a 3DES one (same bytes).

pub mod apdu;
pub mod mgmt;

use serde::Serialize;
use zeroize::Zeroize;

use self::apdu::{find_tlv, tlv, Transport};
use self::mgmt::MgmtAlgorithm;
use super::check::CheckLine;
use crate::keys::{FileSigner, KeyAlgorithm, Signer};
use crate::secret::{LockedBytes, SecretSource};

pub use apdu::resolve_reader;

/// The PIV application identifier (the 5-byte RID+PIX prefix YubiKeys answer to).
pub const PIV_AID: &[u8] = &[0xA0, 0x00, 0x00, 0x03, 0x08];
/// Slot 9c, "Digital Signature": the mkosi recipe's slot; PIN on every use.
pub const SLOT_SIGNATURE: u8 = 0x9c;
/// Key reference of the PIN.
const PIN_REF: u8 = 0x80;
/// Key reference of the PUK.
const PUK_REF: u8 = 0x81;
/// Key reference of the management key.
const MGMT_REF: u8 = 0x9b;
/// Factory PIN.
pub const DEFAULT_PIN: &[u8] = b"123456";
/// Factory PUK.
pub const DEFAULT_PUK: &[u8] = b"12345678";
/// Factory management key (3DES before 5.7, AES-192 from 5.7 on; same bytes).
pub const DEFAULT_MGMT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
/// The PIN-protected data object Yubico tools keep the management key in.
const OBJ_PRINTED: u32 = 0x5fc109;
/// Yubico's admin data object (flags: management key stored PIN-protected).
const OBJ_ADMIN_DATA: u32 = 0x5fff00;
/// Certificate object of slot 9c.
const OBJ_CERT_9C: u32 = 0x5fc10a;
/// The Card Holder Unique Identifier object (SP 800-73-4).
const OBJ_CHUID: u32 = 0x5fc102;
/// The FASC-N of a CHUID written by a non-federal issuer: agency code 9999,
/// system code 9999, credential number 999999 (SP 800-73-4 with TIG SCEPACS
/// encoding), as card tools write for cards outside the U.S. federal PKI.
const NON_FEDERAL_FASCN: [u8; 25] = [
    0xd4, 0xe7, 0x39, 0xda, 0x73, 0x9c, 0xed, 0x39, 0xce, 0x73, 0x9d, 0x83, 0x68, 0x58, 0x21, 0x08,
    0x42, 0x10, 0x84, 0x21, 0xc8, 0x42, 0x10, 0xc3, 0xeb,
];

/// A CHUID with a random GUID: the FASC-N (0x30), the GUID (0x34), an
/// expiry date (0x35, YYYYMMDD), an empty issuer signature (0x3E) and an
/// empty error detection code (0xFE).
fn new_chuid() -> Result<Vec<u8>, PivError> {
    let mut guid = [0u8; 16];
    openssl::rand::rand_bytes(&mut guid)
        .map_err(|e| PivError::Protocol(format!("no random bytes for a CHUID: {e}")))?;
    let mut v = tlv(0x30, &NON_FEDERAL_FASCN);
    v.extend(tlv(0x34, &guid));
    v.extend(tlv(0x35, b"20301231"));
    v.extend(tlv(0x3e, &[]));
    v.extend(tlv(0xfe, &[]));
    Ok(v)
}
/// Environment variable that allows spending the last PIN/PUK try.
pub const ALLOW_FINAL_TRY_ENV: &str = "SBKIT_PKCS11_ALLOW_FINAL_PIN_TRY";

/// A PIV step failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PivError {
    /// PC/SC failed.
    #[error("PC/SC {call} failed: {cause} (is pcscd running? `systemctl start pcscd`, or in a container pass the host's /run/pcscd socket)")]
    Pcsc {
        /// The call.
        call: &'static str,
        /// The error.
        cause: pcsc::Error,
    },
    /// No reader matches.
    #[error("no PC/SC reader matches {wanted:?}; readers: {}", if .readers.is_empty() { "(none — is the YubiKey plugged in and pcscd running?)".to_string() } else { .readers.join(", ") })]
    NoReader {
        /// What was asked.
        wanted: String,
        /// What exists.
        readers: Vec<String>,
    },
    /// Several readers match.
    #[error("several readers match {wanted:?}: {}; give more of the name", .readers.join(", "))]
    SeveralReaders {
        /// What was asked.
        wanted: String,
        /// The matches.
        readers: Vec<String>,
    },
    /// No card in the reader.
    #[error("no card in reader {reader:?}")]
    NoCard {
        /// The reader.
        reader: String,
    },
    /// The card has no PIV application.
    #[error("the card in {reader:?} has no PIV application (SELECT answered {sw:04X}); is the PIV/CCID interface enabled (`ykman config usb -e PIV`)?")]
    NoPiv {
        /// The reader.
        reader: String,
        /// The status word.
        sw: u16,
    },
    /// A command was refused.
    #[error("{what} failed on the card in {reader:?}: status {sw:04X} ({meaning})")]
    Status {
        /// What was done.
        what: &'static str,
        /// The reader.
        reader: String,
        /// The status word.
        sw: u16,
        /// What it means.
        meaning: &'static str,
    },
    /// Wrong PIN or PUK.
    #[error("wrong {what} for the card in {reader:?}; {left} tries left. sbkit does not retry by itself: check the {what} and run again")]
    WrongSecret {
        /// PIN or PUK.
        what: &'static str,
        /// The reader.
        reader: String,
        /// Tries left.
        left: u8,
    },
    /// PIN or PUK blocked.
    #[error("the {what} of the card in {reader:?} is blocked (0 tries left){hint}")]
    Blocked {
        /// PIN or PUK.
        what: &'static str,
        /// The reader.
        reader: String,
        /// What to do.
        hint: &'static str,
    },
    /// One try left: refused.
    #[error("the {what} of the card in {reader:?} has ONE try left; a wrong one would lock it, so sbkit did not try. If you are sure of it, set {ALLOW_FINAL_TRY_ENV}=1")]
    FinalTry {
        /// PIN or PUK.
        what: &'static str,
        /// The reader.
        reader: String,
    },
    /// Defaults remain.
    #[error("the card in {reader:?} still has the factory {which}; refusing to load a key. Prepare it first: genkey token prepare --piv {reader:?} --new-pin SRC --new-puk SRC")]
    Defaults {
        /// The reader.
        reader: String,
        /// Which secrets are default.
        which: String,
    },
    /// The management key is unknown.
    #[error("cannot authenticate with the management key of the card in {reader:?}: {detail}")]
    Mgmt {
        /// The reader.
        reader: String,
        /// Why.
        detail: String,
    },
    /// A new secret is unacceptable.
    #[error("new {what}: {problem}")]
    BadNewSecret {
        /// PIN or PUK.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The card answered something we do not understand.
    #[error("unexpected answer from the card: {0}")]
    Protocol(String),
    /// The key cannot go to PIV.
    #[error("cannot load the key: {0}")]
    Key(String),
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A PIN from the token sources could not be read.
    #[error(transparent)]
    Pin(#[from] crate::token::pin::PinError),
}

impl PivError {
    fn pcsc(call: &'static str) -> impl FnOnce(pcsc::Error) -> PivError {
        move |source| PivError::Pcsc {
            call,
            cause: source,
        }
    }
}

fn sw_meaning(sw: u16) -> &'static str {
    match sw {
        0x6982 => "security status not satisfied: PIN or management key authentication missing",
        0x6983 => "authentication method blocked",
        0x6a80 => "incorrect data",
        0x6a82 => "not found",
        0x6a86 => "wrong P1/P2 (the card does not support this algorithm or slot)",
        0x6d00 => "instruction not supported (firmware too old?)",
        0x6700 => "wrong length",
        0x6985 => "conditions of use not satisfied",
        _ => "see ISO 7816-4",
    }
}

/// What the card says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct PivStatus {
    /// The reader.
    pub reader: String,
    /// Firmware version, e.g. `5.7.1`.
    pub version: String,
    /// Serial number, if the card tells.
    pub serial: Option<u32>,
    /// PIN tries left.
    pub pin_retries: Option<u8>,
    /// PUK tries left (firmware 5.3+).
    pub puk_retries: Option<u8>,
    /// Whether the PIN is the factory default (5.3+; `None` = unknown).
    pub pin_default: Option<bool>,
    /// Whether the PUK is the factory default (5.3+).
    pub puk_default: Option<bool>,
    /// Whether the management key is the factory default.
    pub mgmt_default: Option<bool>,
    /// The management key's algorithm.
    pub mgmt_algorithm: String,
    /// Whether the management key is stored PIN-protected on the card.
    pub mgmt_protected: bool,
    /// Whether slot 9c holds a certificate.
    pub slot_9c_certificate: bool,
}

impl PivStatus {
    /// The audit lines for the factory defaults.
    pub fn default_checks(&self) -> Vec<CheckLine> {
        let line = |what: &str, d: Option<bool>, retries: Option<u8>| {
            let left = retries
                .map(|r| format!(", {r} tries left"))
                .unwrap_or_default();
            match d {
                Some(d) => CheckLine::new(
                    format!("{} #{}: {what} changed from the default", self.reader, self.serial.unwrap_or(0)),
                    !d,
                    format!("{}{left}", if d { "still the factory default" } else { "not the default" }),
                ),
                None => CheckLine::new(
                    format!("{}: {what} changed from the default", self.reader),
                    false,
                    format!("unknown: firmware {} has no metadata (5.3+); sbkit cannot tell without spending a try{left}", self.version),
                ),
            }
        };
        vec![
            line("PIN", self.pin_default, self.pin_retries),
            line("PUK", self.puk_default, self.puk_retries),
            line("management key", self.mgmt_default, None),
            CheckLine::new(
                format!(
                    "{} #{}: management key stored PIN-protected",
                    self.reader,
                    self.serial.unwrap_or(0)
                ),
                self.mgmt_protected,
                format!("{} key", self.mgmt_algorithm),
            ),
        ]
    }
}

/// Metadata of one key reference (Yubico GET METADATA, firmware 5.3+).
struct Metadata {
    algorithm: Option<u8>,
    default: Option<bool>,
    retries_left: Option<u8>,
}

/// A PIV card with the application selected.
pub struct Card {
    t: Transport,
    version: (u8, u8, u8),
}

impl Card {
    /// Connects to the card in the reader matching `reader` and selects PIV.
    pub fn open(reader: &str) -> Result<Card, PivError> {
        let full = resolve_reader(reader)?;
        let t = Transport::connect(&full)?;
        let r = t.send(0xA4, 0x04, 0x00, PIV_AID)?;
        if !r.ok() {
            return Err(PivError::NoPiv {
                reader: full,
                sw: r.sw,
            });
        }
        let v = t.send(0xFD, 0x00, 0x00, &[])?;
        let version = if v.ok() && v.data.len() >= 3 {
            (v.data[0], v.data[1], v.data[2])
        } else {
            (0, 0, 0)
        };
        Ok(Card { t, version })
    }

    /// The reader's name.
    pub fn reader(&self) -> &str {
        &self.t.reader
    }

    fn at_least(&self, major: u8, minor: u8) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }

    fn fail(&self, what: &'static str, sw: u16) -> PivError {
        PivError::Status {
            what,
            reader: self.t.reader.clone(),
            sw,
            meaning: sw_meaning(sw),
        }
    }

    fn metadata(&self, reference: u8) -> Result<Option<Metadata>, PivError> {
        if !self.at_least(5, 3) {
            return Ok(None);
        }
        let r = self.t.send(0xF7, 0x00, reference, &[])?;
        if !r.ok() {
            return Ok(None);
        }
        Ok(Some(Metadata {
            algorithm: find_tlv(&r.data, 0x01).and_then(|v| v.first().copied()),
            default: find_tlv(&r.data, 0x05)
                .and_then(|v| v.first())
                .map(|b| *b != 0),
            retries_left: find_tlv(&r.data, 0x06).and_then(|v| v.get(1).copied()),
        }))
    }

    /// Tries left for the PIN (`reference` 80) or PUK (81), without spending one.
    fn retries(&self, reference: u8) -> Result<Option<u8>, PivError> {
        if let Some(m) = self.metadata(reference)? {
            if m.retries_left.is_some() {
                return Ok(m.retries_left);
            }
        }
        if reference == PIN_REF {
            // VERIFY without data reports the counter and spends nothing.
            let r = self.t.send(0x20, 0x00, PIN_REF, &[])?;
            return Ok(match r.sw {
                0x9000 => None,
                sw if sw & 0xfff0 == 0x63c0 => Some((sw & 0x0f) as u8),
                0x6983 => Some(0),
                _ => None,
            });
        }
        Ok(None)
    }

    fn get_data(&self, object: u32) -> Result<Option<LockedBytes>, PivError> {
        let id = object.to_be_bytes();
        let r = self.t.send(0xCB, 0x3F, 0xFF, &tlv(0x5C, &id[1..]))?;
        match r.sw {
            0x9000 => Ok(find_tlv(&r.data, 0x53).map(LockedBytes::from_slice)),
            0x6a82 => Ok(None),
            sw => Err(self.fail("GET DATA", sw)),
        }
    }

    fn put_data(&self, object: u32, value: &[u8]) -> Result<(), PivError> {
        let id = object.to_be_bytes();
        let mut data = tlv(0x5C, &id[1..]);
        data.extend(tlv(0x53, value));
        let r = self.t.send(0xDB, 0x3F, 0xFF, &data);
        data.zeroize();
        let r = r?;
        if !r.ok() {
            return Err(self.fail("PUT DATA", r.sw));
        }
        Ok(())
    }

    /// Whether `slot` has a certificate.
    pub fn slot_has_certificate(&mut self, slot: u8) -> Result<bool, PivError> {
        let obj = match slot {
            0x9a => 0x5fc105,
            0x9c => OBJ_CERT_9C,
            0x9d => 0x5fc10b,
            0x9e => 0x5fc101,
            _ => return Ok(false),
        };
        Ok(self.get_data(obj)?.map(|d| !d.is_empty()).unwrap_or(false))
    }

    fn mgmt_algorithm(&self) -> Result<MgmtAlgorithm, PivError> {
        let m = self.metadata(MGMT_REF)?;
        Ok(match m.and_then(|m| m.algorithm) {
            Some(a) => MgmtAlgorithm::from_id(a).ok_or_else(|| {
                PivError::Protocol(format!("unknown management key algorithm {a:#04x}"))
            })?,
            None => MgmtAlgorithm::TripleDes,
        })
    }

    /// Whether the management key is stored PIN-protected (ADMIN DATA flag 0x02).
    fn mgmt_protected(&self) -> Result<bool, PivError> {
        Ok(self
            .get_data(OBJ_ADMIN_DATA)?
            .and_then(|d| {
                find_tlv(&d, 0x80)
                    .and_then(|inner| find_tlv(inner, 0x81))
                    .and_then(|f| f.first().map(|b| b & 0x02 != 0))
            })
            .unwrap_or(false))
    }

    /// The card's state; costs no PIN try.
    pub fn status(&mut self) -> Result<PivStatus, PivError> {
        let serial = {
            let r = self.t.send(0xF8, 0x00, 0x00, &[])?;
            (r.ok() && r.data.len() == 4)
                .then(|| u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]))
        };
        let pin_meta = self.metadata(PIN_REF)?;
        let puk_meta = self.metadata(PUK_REF)?;
        let alg = self.mgmt_algorithm()?;
        let mgmt_default = match self.metadata(MGMT_REF)? {
            Some(m) => m.default,
            // Without metadata, authenticating with the default key answers
            // it; a wrong management key costs no try.
            None => Some(mgmt::authenticate(&self.t, alg, &DEFAULT_MGMT_KEY).is_ok()),
        };
        Ok(PivStatus {
            reader: self.t.reader.clone(),
            version: format!("{}.{}.{}", self.version.0, self.version.1, self.version.2),
            serial,
            pin_retries: self.retries(PIN_REF)?,
            puk_retries: puk_meta.as_ref().and_then(|m| m.retries_left),
            pin_default: pin_meta.and_then(|m| m.default),
            puk_default: puk_meta.and_then(|m| m.default),
            mgmt_default,
            mgmt_algorithm: alg.name().into(),
            mgmt_protected: self.mgmt_protected()?,
            slot_9c_certificate: self.slot_has_certificate(SLOT_SIGNATURE)?,
        })
    }

    /// Refuses a card that still has a default PIN, PUK or management key
    /// (or where that cannot be told and the management key is not stored
    /// PIN-protected, i.e. the card was never prepared).
    pub fn refuse_defaults(&mut self) -> Result<(), PivError> {
        let st = self.status()?;
        let mut which = Vec::new();
        if st.pin_default != Some(false) && !(st.pin_default.is_none() && st.mgmt_protected) {
            which.push("PIN");
        }
        if st.puk_default != Some(false) && !(st.puk_default.is_none() && st.mgmt_protected) {
            which.push("PUK");
        }
        if st.mgmt_default != Some(false) {
            which.push("management key");
        }
        if which.is_empty() {
            return Ok(());
        }
        Err(PivError::Defaults {
            reader: st.reader,
            which: which.join(", "),
        })
    }

    /// Refuses to spend the last try; never retries.
    fn check_tries(&self, what: &'static str, left: Option<u8>) -> Result<(), PivError> {
        match left {
            Some(0) => Err(PivError::Blocked {
                what,
                reader: self.t.reader.clone(),
                hint: if what == "PIN" {
                    ": unblock it with the PUK (ykman piv access unblock-pin)"
                } else {
                    ": the PUK cannot be unblocked; only a PIV reset (which deletes the keys) helps"
                },
            }),
            Some(1) if std::env::var(ALLOW_FINAL_TRY_ENV).as_deref() != Ok("1") => {
                Err(PivError::FinalTry {
                    what,
                    reader: self.t.reader.clone(),
                })
            }
            Some(n) => {
                eprintln!("{}: {what} has {n} tries left", self.t.reader);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn wrong(&self, what: &'static str, sw: u16) -> PivError {
        if sw & 0xfff0 == 0x63c0 {
            PivError::WrongSecret {
                what,
                reader: self.t.reader.clone(),
                left: (sw & 0x0f) as u8,
            }
        } else if sw == 0x6983 {
            PivError::Blocked {
                what,
                reader: self.t.reader.clone(),
                hint: "",
            }
        } else {
            self.fail("VERIFY", sw)
        }
    }

    /// VERIFY PIN, after checking the tries left.
    pub fn verify_pin(&self, pin: &[u8]) -> Result<(), PivError> {
        self.check_tries("PIN", self.retries(PIN_REF)?)?;
        let mut p = pad8("PIN", pin)?;
        let r = self.t.send(0x20, 0x00, PIN_REF, &p);
        p.zeroize();
        let r = r?;
        if !r.ok() {
            return Err(self.wrong("PIN", r.sw));
        }
        Ok(())
    }

    /// CHANGE REFERENCE DATA for the PIN or PUK.
    fn change(
        &self,
        what: &'static str,
        reference: u8,
        old: &[u8],
        new: &[u8],
    ) -> Result<(), PivError> {
        self.check_tries(what, self.retries(reference)?)?;
        let mut data = pad8(what, old)?;
        data.extend(pad8(what, new)?);
        let r = self.t.send(0x24, 0x00, reference, &data);
        data.zeroize();
        let r = r?;
        if !r.ok() {
            return Err(self.wrong(what, r.sw));
        }
        Ok(())
    }

    /// The management key stored PIN-protected (needs the PIN verified).
    fn protected_mgmt_key(&self) -> Result<Option<LockedBytes>, PivError> {
        let Some(d) = self.get_data(OBJ_PRINTED)? else {
            return Ok(None);
        };
        Ok(find_tlv(&d, 0x88)
            .and_then(|inner| find_tlv(inner, 0x89))
            .map(LockedBytes::from_slice))
    }

    /// Authenticates with the management key: the PIN-protected one when
    /// stored (PIN must be verified), else the default.
    fn authenticate_mgmt(&self) -> Result<(), PivError> {
        let alg = self.mgmt_algorithm()?;
        let key = match self.protected_mgmt_key()? {
            Some(k) => k,
            None => LockedBytes::from_slice(&DEFAULT_MGMT_KEY),
        };
        mgmt::authenticate(&self.t, alg, &key).map_err(|detail| PivError::Mgmt {
            reader: self.t.reader.clone(),
            detail: format!(
                "{detail}. sbkit uses the key stored PIN-protected on the card (as `ykman piv access change-management-key --protect` stores it) or the factory key; a card with a management key kept elsewhere must be changed to a protected one with ykman first"
            ),
        })
    }

    /// Loads `key` and its certificate into slot 9c. Needs the PIN; the
    /// card must not have default secrets (checked by the caller).
    pub fn import_signing_key(
        &mut self,
        pin: &[u8],
        key: &FileSigner,
        cert_der: &[u8],
    ) -> Result<(), PivError> {
        self.verify_pin(pin)?;
        self.authenticate_mgmt()?;
        let (alg_id, body) = key_payload(key, self.version)?;
        let mut data = LockedBytes::with_capacity(body.len() + 6);
        data.extend_from_slice(&body)
            .map_err(|e| PivError::Key(e.to_string()))?;
        // PIN policy "always" (a PIN for every signature, like 9c's default),
        // touch policy default.
        data.extend_from_slice(&[0xAA, 0x01, 0x03])
            .map_err(|e| PivError::Key(e.to_string()))?;
        drop(body);
        let r = self.t.send(0xFE, alg_id, SLOT_SIGNATURE, &data)?;
        drop(data);
        if !r.ok() {
            return Err(self.fail("IMPORT ASYMMETRIC KEY (slot 9c)", r.sw));
        }
        let mut obj = tlv(0x70, cert_der);
        obj.extend(tlv(0x71, &[0x00]));
        obj.extend(tlv(0xFE, &[]));
        self.put_data(OBJ_CERT_9C, &obj)
    }
}

/// A PIN or PUK padded to 8 bytes with 0xFF, in a plain Vec the caller wipes.
fn pad8(what: &'static str, secret: &[u8]) -> Result<Vec<u8>, PivError> {
    if secret.len() < 6 || secret.len() > 8 {
        return Err(PivError::BadNewSecret {
            what,
            problem: format!("{} bytes; PIV wants 6 to 8", secret.len()),
        });
    }
    let mut v = secret.to_vec();
    v.resize(8, 0xff);
    Ok(v)
}

/// Yubico's IMPORT payload: algorithm id and TLVs (RSA: p, q, dp, dq,
/// qinv; EC: the scalar).
fn key_payload(key: &FileSigner, version: (u8, u8, u8)) -> Result<(u8, LockedBytes), PivError> {
    let comps = super::p11::key_components(key).map_err(|e| PivError::Key(e.to_string()))?;
    let alg = key.algorithm();
    let id = match alg {
        KeyAlgorithm::Rsa2048 => 0x07,
        KeyAlgorithm::Rsa3072 if (version.0, version.1) >= (5, 7) => 0x05,
        KeyAlgorithm::Rsa4096 if (version.0, version.1) >= (5, 7) => 0x16,
        KeyAlgorithm::P256 => 0x11,
        KeyAlgorithm::P384 => 0x14,
        other => {
            return Err(PivError::Key(format!(
                "{other} needs YubiKey firmware 5.7 or later (this card has {}.{}.{})",
                version.0, version.1, version.2
            )))
        }
    };
    let mut out = LockedBytes::with_capacity(2048);
    let push = |out: &mut LockedBytes, tag: u8, v: &[u8]| {
        let mut t = tlv(tag, v);
        let r = out.extend_from_slice(&t);
        t.zeroize();
        r.map_err(|e| PivError::Key(e.to_string()))
    };
    if alg.is_ec() {
        push(&mut out, 0x06, &comps.parts[0])?;
    } else {
        // Each CRT part padded to half the modulus length.
        let half = comps.parts[0].len() / 2;
        for (tag, i) in [(0x01, 3), (0x02, 4), (0x03, 5), (0x04, 6), (0x05, 7)] {
            let part = &comps.parts[i];
            let mut padded = LockedBytes::with_capacity(half.max(part.len()));
            padded
                .extend_from_slice(&vec![0u8; half.saturating_sub(part.len())])
                .and_then(|_| padded.extend_from_slice(part))
                .map_err(|e| PivError::Key(e.to_string()))?;
            push(&mut out, tag, &padded)?;
        }
    }
    Ok((id, out))
}

/// The token PIN for a PIV card: `SBKIT_PKCS11_PIN`, `SBKIT_PKCS11_PIN_FILE`,
/// or a prompt that shows the tries left.
pub fn token_pin(card: &Card) -> Result<LockedBytes, PivError> {
    if let Some((p, _)) = crate::token::pin::configured_pin(None)? {
        return Ok(LockedBytes::from_slice(&p));
    }
    let left = card.retries(PIN_REF)?;
    let p = crate::token::pin::prompt_pin(
        &format!(
            "PIN of the card in {:?}{}: ",
            card.reader(),
            left.map(|n| format!(" ({n} tries left)"))
                .unwrap_or_default()
        ),
        card.reader(),
    )?;
    Ok(LockedBytes::from_slice(&p))
}

/// What [`prepare`] needs.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// The reader.
    pub reader: String,
    /// The current PIN; `None` = the factory PIN when the card says it is still default.
    pub pin: Option<SecretSource>,
    /// The new PIN (required while the PIN is the default).
    pub new_pin: Option<SecretSource>,
    /// The current PUK; `None` = the factory PUK when still default.
    pub puk: Option<SecretSource>,
    /// The new PUK (required while the PUK is the default).
    pub new_puk: Option<SecretSource>,
    /// Make a new random management key even when it is not the default.
    pub rotate_management_key: bool,
}

/// What [`prepare`] did.
#[derive(Clone, Debug, Serialize)]
pub struct PrepareReport {
    /// The card before.
    pub before: PivStatus,
    /// The card after.
    pub after: PivStatus,
    /// Steps done, in order.
    pub steps: Vec<String>,
}

fn new_secret(
    what: &'static str,
    source: &SecretSource,
    default: &[u8],
    old: &[u8],
) -> Result<LockedBytes, PivError> {
    let s = source.read(&format!("new {what}"), true)?;
    if s.len() < 6 || s.len() > 8 {
        return Err(PivError::BadNewSecret {
            what,
            problem: format!("{} characters; use 6 to 8", s.len()),
        });
    }
    if &s[..] == default {
        return Err(PivError::BadNewSecret {
            what,
            problem: "it is the factory default".into(),
        });
    }
    if &s[..] == old {
        return Err(PivError::BadNewSecret {
            what,
            problem: "it is the same as the current one".into(),
        });
    }
    if s.iter().all(|c| *c == s[0]) {
        return Err(PivError::BadNewSecret {
            what,
            problem: "all characters are the same".into(),
        });
    }
    Ok(s)
}

/// Prepares a card: new PIN and PUK (refusing defaults), and a random
/// management key (AES-192 on firmware 5.7+, 3DES before) stored
/// PIN-protected. New secrets are read (and checked) before the card is
/// changed; the management key is stored on the card before it is set, so
/// an interruption never leaves a key nobody knows.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport, PivError> {
    crate::secret::harden_process();
    let mut card = Card::open(&opts.reader)?;
    let before = card.status()?;
    let mut steps = Vec::new();
    let pin_default = before.pin_default == Some(true);
    let puk_default = before.puk_default == Some(true);

    let pin = match (&opts.pin, pin_default) {
        (Some(s), _) => s.read("current PIN", false)?,
        (None, true) => LockedBytes::from_slice(DEFAULT_PIN),
        (None, false) => token_pin(&card)?,
    };
    let new_pin = match &opts.new_pin {
        Some(s) => Some(new_secret("PIN", s, DEFAULT_PIN, &pin)?),
        None if pin_default => {
            return Err(PivError::BadNewSecret {
                what: "PIN",
                problem: "the PIN is the factory default: give --new-pin SOURCE".into(),
            })
        }
        None => None,
    };
    let puk = match (&opts.puk, puk_default) {
        (Some(s), _) => Some(s.read("current PUK", false)?),
        (None, true) => Some(LockedBytes::from_slice(DEFAULT_PUK)),
        (None, false) => None,
    };
    let new_puk = match &opts.new_puk {
        Some(s) => {
            let old = puk.as_ref().ok_or_else(|| PivError::BadNewSecret {
                what: "PUK",
                problem: "give the current PUK with --puk SOURCE".into(),
            })?;
            Some(new_secret("PUK", s, DEFAULT_PUK, old)?)
        }
        None if puk_default => {
            return Err(PivError::BadNewSecret {
                what: "PUK",
                problem: "the PUK is the factory default: give --new-puk SOURCE".into(),
            })
        }
        None => None,
    };

    card.verify_pin(&pin)?;
    steps.push("verified the PIN".to_string());
    if before.mgmt_default != Some(false) || !before.mgmt_protected || opts.rotate_management_key {
        card.authenticate_mgmt()?;
        let alg = if card.at_least(5, 7) {
            MgmtAlgorithm::Aes192
        } else {
            MgmtAlgorithm::TripleDes
        };
        let new_key = mgmt::random_key(alg).map_err(PivError::Protocol)?;
        // Store first (PIN-protected), then switch: if the switch fails the
        // old key still works and the stored one is simply replaced next time.
        let mut printed = tlv(0x88, &tlv(0x89, &new_key));
        card.put_data(OBJ_PRINTED, &printed)?;
        printed.zeroize();
        card.put_data(OBJ_ADMIN_DATA, &tlv(0x80, &tlv(0x81, &[0x02])))?;
        let mut data = vec![alg.id(), MGMT_REF, new_key.len() as u8];
        data.extend_from_slice(&new_key);
        let r = card.t.send(0xFF, 0xFF, 0xFF, &data);
        data.zeroize();
        let r = r?;
        if !r.ok() {
            return Err(card.fail("SET MANAGEMENT KEY", r.sw));
        }
        mgmt::authenticate(&card.t, alg, &new_key).map_err(|detail| PivError::Mgmt {
            reader: card.t.reader.clone(),
            detail: format!("the new key does not authenticate: {detail}"),
        })?;
        steps.push(format!(
            "set a random {} management key, stored PIN-protected",
            alg.name()
        ));
    }
    // OpenSC takes a PIV token's serial number from its CHUID: two cards
    // without one are both serial 00000000, and a PKCS#11 URI could not
    // tell them apart (the check after `token create` onto two cards found
    // "2 tokens match"). A factory card has none; give it one.
    if card.get_data(OBJ_CHUID)?.is_none() {
        card.authenticate_mgmt()?;
        card.put_data(OBJ_CHUID, &new_chuid()?)?;
        steps.push(
            "wrote a CHUID with a random GUID (OpenSC derives the card's serial number from it)"
                .into(),
        );
    }
    if let (Some(old), Some(new)) = (&puk, &new_puk) {
        card.change("PUK", PUK_REF, old, new)?;
        steps.push("changed the PUK".into());
    }
    if let Some(new) = &new_pin {
        card.change("PIN", PIN_REF, &pin, new)?;
        steps.push("changed the PIN".into());
    }
    let after = card.status()?;
    Ok(PrepareReport {
        before,
        after,
        steps,
    })
}
