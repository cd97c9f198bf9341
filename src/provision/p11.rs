//! PKCS#11 side of provisioning: find a token, log in, import a key pair and
//! its certificate with `C_CreateObject`, and list what a token holds.
//!
//! The import works with any PKCS#11 token that accepts created key objects
//! (SoftHSM2, most HSMs). The private key is created with CKA_SENSITIVE and
//! without CKA_EXTRACTABLE, so it cannot be read back out. YubiKey PIV cards
//! do not take keys this way through OpenSC; they are loaded over PC/SC by
//! [`super::piv`].

use std::path::PathBuf;

use cryptoki::context::Pkcs11;
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use cryptoki::slot::{Slot, TokenInfo};
use der::Encode;
use serde::Serialize;
use zeroize::Zeroize;

use crate::keys::{FileSigner, KeyAlgorithm, Signer};
use crate::secret::LockedBytes;
use crate::token::module::ModuleError;
use crate::token::pin::PinError;
use crate::token::session::{self, LoginRequest, SessionError};
use crate::token::uri::{encode_id, encode_text, Pkcs11Uri, UriError};

/// A PKCS#11 step of provisioning failed; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum P11Error {
    /// The URI does not parse.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// No module.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// No token matches.
    #[error("no initialised token matches {uri}; tokens present:\n{}\n(is the token plugged in and, for smart cards, pcscd running?)", list(.seen))]
    NoToken {
        /// The URI.
        uri: String,
        /// Tokens seen.
        seen: Vec<String>,
    },
    /// Several tokens match.
    #[error("{} tokens match {uri}:\n{}\nAdd serial=… to the URI to pick one", .seen.len(), list(.seen))]
    SeveralTokens {
        /// The URI.
        uri: String,
        /// The matching tokens.
        seen: Vec<String>,
    },
    /// The token already holds objects with the ID.
    #[error("token {token} already holds objects with id={id}:\n{}\nNothing was imported. Use another --id, or --replace to delete these objects first. (If an interrupted genkey token create or restore left them, genkey token restore from that run's backup completes the set without --replace.)", list(.objects))]
    IdTaken {
        /// The token.
        token: String,
        /// The ID, URI-encoded.
        id: String,
        /// The objects found.
        objects: Vec<String>,
    },
    /// The PIN is locked or on its final try.
    #[error("token {token}: {reason}; sbkit does not try a PIN now (unblock it with the SO PIN/PUK first{extra})")]
    PinRefused {
        /// The token.
        token: String,
        /// Why.
        reason: &'static str,
        /// More advice.
        extra: &'static str,
    },
    /// Wrong PIN.
    #[error("wrong PIN for token {token} (CKR_PIN_INCORRECT); not retried. The token now reports: {state}")]
    PinIncorrect {
        /// The token.
        token: String,
        /// The retry state after the failure.
        state: String,
    },
    /// The PIN could not be read.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {action} on token {token} failed: {cause}{hint}")]
    Call {
        /// What we were doing.
        action: &'static str,
        /// The token.
        token: String,
        /// cryptoki's error.
        cause: cryptoki::error::Error,
        /// Advice.
        hint: &'static str,
    },
    /// The key cannot be imported.
    #[error("cannot import the key: {0}")]
    Key(String),
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "  (none)".into();
    }
    items
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An open, logged-in read-write session on one token.
pub struct TokenSession {
    /// The module.
    pub ctx: Pkcs11,
    /// The module file.
    pub module_path: PathBuf,
    /// The slot.
    pub slot: Slot,
    /// The token's label.
    pub label: String,
    /// The token's serial number.
    pub serial: String,
    /// The session.
    pub session: Session,
}

impl TokenSession {
    /// `token=…;serial=…` of this token, as URI path attributes.
    pub fn token_attributes(&self) -> String {
        format!(
            "token={};serial={}",
            encode_text(&self.label),
            encode_text(&self.serial)
        )
    }

    /// A short name for messages.
    pub fn describe(&self) -> String {
        format!("{:?} (serial {})", self.label, self.serial)
    }
}

/// Finds the one initialised token `uri` names.
pub fn find_token(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<(Slot, TokenInfo), P11Error> {
    session::find_token(ctx, uri, std::path::Path::new(""))
        .map_err(|e| from_session(e, &uri.to_string(), ""))
}

/// Provisioning's message for a session-layer failure.
fn from_session(e: SessionError, uri: &str, token: &str) -> P11Error {
    let token = token.to_string();
    match e {
        SessionError::Module(m) => P11Error::Module(m),
        SessionError::Library {
            attribute,
            actual,
            wanted,
            ..
        } => P11Error::Key(format!(
            "the PKCS#11 module has {attribute}={actual:?}, but {uri} asks for {wanted:?}"
        )),
        SessionError::NoToken { seen, .. } => P11Error::NoToken {
            uri: uri.to_string(),
            seen,
        },
        SessionError::SeveralTokens { seen } => P11Error::SeveralTokens {
            uri: uri.to_string(),
            seen,
        },
        SessionError::PinLocked => P11Error::PinRefused {
            token,
            reason: "the user PIN is locked",
            extra: "",
        },
        SessionError::FinalTry => P11Error::PinRefused {
            token,
            reason: "one PIN try remains and a wrong PIN would lock the token",
            extra: "; or set SBKIT_PKCS11_ALLOW_FINAL_PIN_TRY=1 for build-uki if you are sure",
        },
        SessionError::PinIncorrect { state, .. } => P11Error::PinIncorrect {
            token,
            state: state.to_string(),
        },
        SessionError::Pin(p) => P11Error::Pin(p),
        SessionError::Call { action, cause } => P11Error::Call {
            action,
            token: if token.is_empty() {
                uri.to_string()
            } else {
                token
            },
            cause,
            hint: if action == "C_OpenSession" {
                " (a read-write session needs a writable token)"
            } else {
                ""
            },
        },
    }
}

/// Loads the module `uri` names (or the default one) and opens a session
/// on its token through the one session layer ([`crate::token::session`]),
/// logged in as the user when `login` is set. The PIN comes from
/// `SBKIT_PKCS11_PIN`, `SBKIT_PKCS11_PIN_FILE`, the URI's `pin-source`, or a
/// prompt; a locked PIN or one on its final try is never tried.
pub fn open_token(uri_text: &str, login: bool, rw: bool) -> Result<TokenSession, P11Error> {
    let uri = Pkcs11Uri::parse(uri_text)?;
    let opened = session::open(&uri, rw).map_err(|e| from_session(e, uri_text, ""))?;
    let label = opened.label();
    let serial = opened.serial();
    if login {
        opened
            .login(&LoginRequest {
                uri: &uri,
                prompt: format!("User PIN of token {label:?} (serial {serial}): "),
                allow_final_try: false,
                pin_pad_allowed: false,
            })
            .map_err(|e| from_session(e, uri_text, &label))?;
    }
    Ok(TokenSession {
        ctx: opened.ctx,
        module_path: opened.module_path,
        slot: opened.slot,
        label,
        serial,
        session: opened.session,
    })
}

/// One object on a token, as listed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ObjectEntry {
    /// `private`, `public` or `cert` (the URI `type=` values).
    pub kind: String,
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID, hex.
    pub id: String,
    /// The object's URI: `pkcs11:token=…;serial=…;object=…;id=…;type=…`.
    pub uri: String,
    /// For certificates: SHA-256 of the DER, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// For private keys: CKA_ALWAYS_AUTHENTICATE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always_authenticate: Option<bool>,
    /// For private keys: CKA_EXTRACTABLE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extractable: Option<bool>,
}

fn attr_bytes(session: &Session, h: ObjectHandle, t: AttributeType) -> Option<Vec<u8>> {
    session
        .get_attributes(h, &[t])
        .ok()?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Label(v)
            | Attribute::Id(v)
            | Attribute::Value(v)
            | Attribute::Modulus(v)
            | Attribute::EcPoint(v)
            | Attribute::EcParams(v) => Some(v),
            _ => None,
        })
}

fn attr_bool(session: &Session, h: ObjectHandle, t: AttributeType) -> Option<bool> {
    session
        .get_attributes(h, &[t])
        .ok()?
        .into_iter()
        .find_map(|a| match a {
            Attribute::AlwaysAuthenticate(b) | Attribute::Extractable(b) => Some(b),
            _ => None,
        })
}

/// Every key and certificate on the token (private keys only when logged in).
pub fn list_objects(ts: &TokenSession) -> Vec<ObjectEntry> {
    use sha2::Digest;
    let mut out = Vec::new();
    for (class, kind) in [
        (ObjectClass::PRIVATE_KEY, "private"),
        (ObjectClass::PUBLIC_KEY, "public"),
        (ObjectClass::CERTIFICATE, "cert"),
    ] {
        for h in ts
            .session
            .find_objects(&[Attribute::Class(class)])
            .unwrap_or_default()
        {
            let label = attr_bytes(&ts.session, h, AttributeType::Label).unwrap_or_default();
            let id = attr_bytes(&ts.session, h, AttributeType::Id).unwrap_or_default();
            let label = String::from_utf8_lossy(&label).into_owned();
            let mut uri = format!("pkcs11:{}", ts.token_attributes());
            if !label.is_empty() {
                uri.push_str(&format!(";object={}", encode_text(&label)));
            }
            uri.push_str(&format!(";id={};type={kind}", encode_id(&id)));
            let cert_sha256 = (kind == "cert")
                .then(|| attr_bytes(&ts.session, h, AttributeType::Value))
                .flatten()
                .map(|v| hex::encode(sha2::Sha256::digest(v)));
            let (always_authenticate, extractable) = if kind == "private" {
                (
                    attr_bool(&ts.session, h, AttributeType::AlwaysAuthenticate),
                    attr_bool(&ts.session, h, AttributeType::Extractable),
                )
            } else {
                (None, None)
            };
            out.push(ObjectEntry {
                kind: kind.into(),
                label,
                id: hex::encode(&id),
                uri,
                cert_sha256,
                always_authenticate,
                extractable,
            });
        }
    }
    out
}

/// The DER certificate with CKA_ID `id`, if the token has exactly one.
pub fn certificate(ts: &TokenSession, id: &[u8]) -> Option<Vec<u8>> {
    let found = ts
        .session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.to_vec()),
        ])
        .ok()?;
    match found.as_slice() {
        [h] => attr_bytes(&ts.session, *h, AttributeType::Value),
        _ => None,
    }
}

/// What to put on the token.
pub struct ImportRequest<'a> {
    /// The key, in memory.
    pub key: &'a FileSigner,
    /// Its certificate, DER.
    pub cert_der: &'a [u8],
    /// CKA_LABEL of the three objects.
    pub label: &'a str,
    /// CKA_ID of the three objects (YubiKey slot 9c is 02).
    pub id: &'a [u8],
    /// Require the PIN for every signature (CKA_ALWAYS_AUTHENTICATE), as slot 9c does.
    pub always_authenticate: bool,
    /// Delete objects that already have `id` first.
    pub replace: bool,
}

/// The DER OID of the key's curve, as CKA_EC_PARAMS.
fn ec_params(alg: KeyAlgorithm) -> Vec<u8> {
    match alg {
        KeyAlgorithm::P256 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        _ => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
    }
}

/// The private key's components as locked buffers: RSA n, e, d, p, q, dp,
/// dq, qinv; EC the scalar (padded to the field size) and the public point.
pub struct KeyComponents {
    /// RSA: n, e, d, p, q, dp, dq, qinv. EC: scalar, uncompressed point.
    pub parts: Vec<LockedBytes>,
}

/// Takes the key apart for a token import, each part in locked memory.
pub fn key_components(key: &FileSigner) -> Result<KeyComponents, P11Error> {
    let e = |e: openssl::error::ErrorStack| P11Error::Key(e.to_string());
    let pkey = key.pkey();
    let mut parts = Vec::new();
    if let Ok(rsa) = pkey.rsa() {
        let need = |b: Option<&openssl::bn::BigNumRef>| {
            b.map(|b| LockedBytes::take(b.to_vec()))
                .ok_or_else(|| P11Error::Key("the RSA key lacks its CRT components".into()))
        };
        parts.push(LockedBytes::take(rsa.n().to_vec()));
        parts.push(LockedBytes::take(rsa.e().to_vec()));
        parts.push(LockedBytes::take(rsa.d().to_vec()));
        parts.push(need(rsa.p())?);
        parts.push(need(rsa.q())?);
        parts.push(need(rsa.dmp1())?);
        parts.push(need(rsa.dmq1())?);
        parts.push(need(rsa.iqmp())?);
    } else {
        let ec = pkey.ec_key().map_err(e)?;
        let field = (ec.group().degree() as usize).div_ceil(8);
        parts.push(LockedBytes::take(
            ec.private_key().to_vec_padded(field as i32).map_err(e)?,
        ));
        let mut ctx = openssl::bn::BigNumContext::new().map_err(e)?;
        parts.push(LockedBytes::take(
            ec.public_key()
                .to_bytes(
                    ec.group(),
                    openssl::ec::PointConversionForm::UNCOMPRESSED,
                    &mut ctx,
                )
                .map_err(e)?,
        ));
    }
    Ok(KeyComponents { parts })
}

/// Wipes the byte values of a template (cryptoki needs them in plain `Vec`s).
fn wipe(template: &mut [Attribute]) {
    for a in template.iter_mut() {
        match a {
            Attribute::Value(v)
            | Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v) => v.zeroize(),
            _ => {}
        }
    }
}

/// Objects with CKA_ID `id`, listed as `type: label`.
fn objects_with_id(session: &Session, id: &[u8]) -> Vec<(ObjectHandle, String)> {
    objects_by_class(session, id)
        .into_iter()
        .map(|(h, _, d)| (h, d))
        .collect()
}

/// Objects with CKA_ID `id`, with their class and a `type: label` description.
fn objects_by_class(session: &Session, id: &[u8]) -> Vec<(ObjectHandle, ObjectClass, String)> {
    let mut out = Vec::new();
    for (class, kind) in [
        (ObjectClass::PRIVATE_KEY, "private key"),
        (ObjectClass::PUBLIC_KEY, "public key"),
        (ObjectClass::CERTIFICATE, "certificate"),
        (ObjectClass::DATA, "data"),
    ] {
        for h in session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
            .unwrap_or_default()
        {
            let label = attr_bytes(session, h, AttributeType::Label).unwrap_or_default();
            out.push((
                h,
                class,
                format!("{kind} {:?}", String::from_utf8_lossy(&label)),
            ));
        }
    }
    out
}

/// Refuses (before anything is generated) when `id` is taken and `replace` is off.
pub fn check_id_free(ts: &TokenSession, id: &[u8], replace: bool) -> Result<(), P11Error> {
    let existing = objects_with_id(&ts.session, id);
    if !existing.is_empty() && !replace {
        return Err(P11Error::IdTaken {
            token: ts.describe(),
            id: encode_id(id),
            objects: existing.into_iter().map(|(_, d)| d).collect(),
        });
    }
    Ok(())
}

/// Whether `existing` (the objects under the import's ID) is part of this
/// very import — an earlier run of it stopped between objects — so that
/// adding the missing objects completes it. Every object must be one of
/// ours: the certificate byte for byte, the public key by its modulus or
/// EC point, the private key by its modulus (RSA) or curve (EC: the token
/// does not reveal more of a private EC key; it sits beside our public key
/// under our label and ID, which only our import writes).
fn is_partial_import(
    session: &Session,
    existing: &[(ObjectHandle, ObjectClass, String)],
    req: &ImportRequest<'_>,
    comps: &KeyComponents,
    ec_point: Option<&[u8]>,
) -> bool {
    let alg = req.key.algorithm();
    let p = &comps.parts;
    let label_ok =
        |h| attr_bytes(session, h, AttributeType::Label).as_deref() == Some(req.label.as_bytes());
    let mut classes = Vec::new();
    for (h, class, _) in existing {
        let h = *h;
        let same = label_ok(h)
            && match *class {
                ObjectClass::CERTIFICATE => {
                    attr_bytes(session, h, AttributeType::Value).as_deref() == Some(req.cert_der)
                }
                ObjectClass::PUBLIC_KEY if alg.is_ec() => {
                    ec_point.is_some()
                        && attr_bytes(session, h, AttributeType::EcPoint).as_deref() == ec_point
                }
                ObjectClass::PRIVATE_KEY if alg.is_ec() => {
                    attr_bytes(session, h, AttributeType::EcParams) == Some(ec_params(alg))
                }
                ObjectClass::PUBLIC_KEY | ObjectClass::PRIVATE_KEY => {
                    attr_bytes(session, h, AttributeType::Modulus).as_deref() == Some(&p[0][..])
                }
                _ => false,
            };
        if !same || classes.contains(class) {
            return false;
        }
        classes.push(*class);
    }
    // An EC private key alone cannot be told from another one on the same curve.
    !(alg.is_ec() && classes == [ObjectClass::PRIVATE_KEY])
}

/// Creates the private key, public key and certificate objects on the
/// token. When objects under the ID are already a part of this same import
/// (see [`is_partial_import`]), only the missing ones are created, so a
/// rerun of an interrupted restore completes it without `--replace`.
pub fn import(ts: &TokenSession, req: &ImportRequest<'_>) -> Result<(), P11Error> {
    let call = |action: &'static str, hint: &'static str| {
        let token = ts.describe();
        move |source| P11Error::Call {
            action,
            token,
            cause: source,
            hint,
        }
    };
    let alg = req.key.algorithm();
    let comps = key_components(req.key)?;
    let ec_point = if alg.is_ec() {
        Some(
            der::asn1::OctetString::new(comps.parts[1].to_vec())
                .and_then(|o| o.to_der())
                .map_err(|e| P11Error::Key(e.to_string()))?,
        )
    } else {
        None
    };
    let existing = objects_by_class(&ts.session, req.id);
    let resume = !req.replace
        && !existing.is_empty()
        && is_partial_import(&ts.session, &existing, req, &comps, ec_point.as_deref());
    let present: Vec<ObjectClass> = if resume {
        existing.iter().map(|(_, c, _)| *c).collect()
    } else {
        check_id_free(ts, req.id, req.replace)?;
        for (h, _, _) in existing {
            crate::store::write::crash_point();
            ts.session.destroy_object(h).map_err(call(
                "C_DestroyObject",
                " (removing the old objects for --replace)",
            ))?;
        }
        Vec::new()
    };
    let label = req.label.as_bytes().to_vec();
    let id = req.id.to_vec();
    let common = |class: ObjectClass, private: bool| {
        vec![
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Private(private),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ]
    };
    let (mut private, mut public) = (
        common(ObjectClass::PRIVATE_KEY, true),
        common(ObjectClass::PUBLIC_KEY, false),
    );
    private.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
    ]);
    if req.always_authenticate {
        private.push(Attribute::AlwaysAuthenticate(true));
    }
    public.push(Attribute::Verify(true));
    let p = &comps.parts;
    if alg.is_ec() {
        private.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(ec_params(alg)),
            Attribute::Value(p[0].to_vec()),
        ]);
        public.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(ec_params(alg)),
            Attribute::EcPoint(ec_point.clone().unwrap_or_default()),
        ]);
    } else {
        private.extend([
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(p[0].to_vec()),
            Attribute::PublicExponent(p[1].to_vec()),
            Attribute::PrivateExponent(p[2].to_vec()),
            Attribute::Prime1(p[3].to_vec()),
            Attribute::Prime2(p[4].to_vec()),
            Attribute::Exponent1(p[5].to_vec()),
            Attribute::Exponent2(p[6].to_vec()),
            Attribute::Coefficient(p[7].to_vec()),
        ]);
        public.extend([
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(p[0].to_vec()),
            Attribute::PublicExponent(p[1].to_vec()),
        ]);
    }
    // Each object is one token write; interruption tests stop between them.
    // The public key first: an import stopped after one object leaves a
    // key that can be recognised as ours (an EC private key cannot be).
    if !present.contains(&ObjectClass::PUBLIC_KEY) {
        crate::store::write::crash_point();
        ts.session
            .create_object(&public)
            .map_err(call("C_CreateObject (public key)", ""))?;
    }
    if !present.contains(&ObjectClass::PRIVATE_KEY) {
        crate::store::write::crash_point();
        let created = ts.session.create_object(&private);
        // cryptoki takes plain Vecs; wipe them the moment the call returns.
        wipe(&mut private);
        created.map_err(call(
            "C_CreateObject (private key)",
            " (the token must accept imported keys; YubiKeys are loaded with --piv instead)",
        ))?;
    } else {
        wipe(&mut private);
    }

    let cert = <x509_cert::Certificate as der::Decode>::from_der(req.cert_der)
        .map_err(|e| P11Error::Key(format!("the certificate does not parse: {e}")))?;
    let tbs = &cert.tbs_certificate;
    let mut c = common(ObjectClass::CERTIFICATE, false);
    c.extend([
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Subject(tbs.subject.to_der().unwrap_or_default()),
        Attribute::Issuer(tbs.issuer.to_der().unwrap_or_default()),
        Attribute::SerialNumber(tbs.serial_number.to_der().unwrap_or_default()),
        Attribute::Value(req.cert_der.to_vec()),
    ]);
    if !present.contains(&ObjectClass::CERTIFICATE) {
        crate::store::write::crash_point();
        ts.session
            .create_object(&c)
            .map_err(call("C_CreateObject (certificate)", ""))?;
    }
    crate::store::write::crash_point();
    Ok(())
}
