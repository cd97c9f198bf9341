//! [`Pkcs11Signer`]: a [`Signer`] whose private key stays on a PKCS#11 token.
//!
//! One session and one user login per signer: the PIN is asked for once per
//! run. Keys with CKA_ALWAYS_AUTHENTICATE (YubiKey PIV slot 9c) additionally
//! get `C_Login(CKU_CONTEXT_SPECIFIC)` between `C_SignInit` and `C_Sign` on
//! every signature, with the PIN given at the start unless
//! [`Pkcs11Options::prompt_pin_every_signature`] asks for it each time.

use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use der::{Decode, Encode};
use openssl::pkey::{PKey, Public};

use super::keydata;
use super::module::ModuleError;
use super::pin::{self, Pin, PinError, PinOrigin, RefuseReason, RetryDecision};
use super::raw::RawSign;
use super::uri::{encode_id, encode_text, ObjectType, Pkcs11Uri, UriError};
use crate::keys::{DigestAlgorithm, KeyAlgorithm, SignError, Signer};

/// Environment variable that, set to `1`, allows trying a PIN on the final try.
pub const ALLOW_FINAL_TRY_ENV: &str = "SBKIT_PKCS11_ALLOW_FINAL_PIN_TRY";
/// Environment variable that, set to `1`, makes always-authenticate keys prompt per signature.
pub const PIN_EVERY_SIGNATURE_ENV: &str = "SBKIT_PKCS11_PIN_EVERY_SIGNATURE";

/// Choices about PIN handling that are not secrets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Options {
    /// Try the PIN even when the token reports CKF_USER_PIN_FINAL_TRY, where
    /// a wrong PIN locks it. Off by default: sbkit then refuses to log in.
    pub allow_final_pin_try: bool,
    /// For CKA_ALWAYS_AUTHENTICATE keys with a PIN typed at the terminal:
    /// prompt again for every signature instead of reusing the PIN typed at
    /// the start (which is kept, zeroized on drop, for the signer's life).
    /// PINs from the environment or a file are always reused.
    pub prompt_pin_every_signature: bool,
}

impl Pkcs11Options {
    /// Options from `SBKIT_PKCS11_ALLOW_FINAL_PIN_TRY` and
    /// `SBKIT_PKCS11_PIN_EVERY_SIGNATURE` (`1`, `yes` or `true` turn them on).
    pub fn from_env() -> Self {
        let on = |name: &str| {
            std::env::var(name)
                .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "yes" | "true"))
                .unwrap_or(false)
        };
        Pkcs11Options {
            allow_final_pin_try: on(ALLOW_FINAL_TRY_ENV),
            prompt_pin_every_signature: on(PIN_EVERY_SIGNATURE_ENV),
        }
    }
}

fn bullet_list(items: &[String]) -> String {
    if items.is_empty() {
        return "  (none)".into();
    }
    items
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A token key that cannot be opened; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The URI does not parse.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// `type=` names something other than a private key.
    #[error("{uri}: type={ty} is not a private key; sbkit signs with a private key, so use type=private or leave type= out")]
    NotPrivate {
        /// The URI.
        uri: String,
        /// The type given.
        ty: String,
    },
    /// No module, or it did not load.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// A `library-*` attribute does not match the module.
    #[error("PKCS#11 module {module} has {attribute}={actual:?}, but the URI asks for {wanted:?}: fix the URI or load the intended module")]
    Library {
        /// The module.
        module: String,
        /// The attribute name.
        attribute: &'static str,
        /// What the module reports.
        actual: String,
        /// What the URI asks for.
        wanted: String,
    },
    /// No token matches.
    #[error("no token matches {uri} in module {module}; tokens present:\n{}\nPut one of these token=/serial= values in the URI (if none is listed: is the token plugged in, and pcscd running?)", bullet_list(.seen))]
    NoToken {
        /// The URI.
        uri: String,
        /// The module.
        module: String,
        /// Each token seen, as URI attributes.
        seen: Vec<String>,
    },
    /// Several tokens match.
    #[error("{} tokens match {uri}:\n{}\nAdd token= or serial= to pick one", .seen.len(), bullet_list(.seen))]
    SeveralTokens {
        /// The URI.
        uri: String,
        /// The matching tokens, as URI attributes.
        seen: Vec<String>,
    },
    /// No private key matches.
    #[error("no private key matches {uri} on token {token:?}; objects on the token:\n{}{hint}", bullet_list(.seen))]
    NoKey {
        /// The URI.
        uri: String,
        /// The token label.
        token: String,
        /// Every key and certificate seen, as URI attributes.
        seen: Vec<String>,
        /// An extra hint (e.g. about `id=02` vs `id=%02`).
        hint: String,
    },
    /// Several private keys match.
    #[error("{} private keys match {uri} on token {token:?}:\n{}\n{hint}", .keys.len(), bullet_list(.keys))]
    SeveralKeys {
        /// The URI.
        uri: String,
        /// The token label.
        token: String,
        /// The matching keys, as URI attributes.
        keys: Vec<String>,
        /// Which attribute to add.
        hint: String,
    },
    /// The key's public half cannot be found.
    #[error("{uri}: cannot find the public key: {detail}. Store the public key or certificate on the token with the same ID as the private key (pkcs11-tool --write-object cert.der --type cert --id …)")]
    NoPublicKey {
        /// The URI.
        uri: String,
        /// What was tried.
        detail: String,
    },
    /// The key is of a kind sbkit does not sign with.
    #[error("{uri}: {message}")]
    UnsupportedKey {
        /// The URI.
        uri: String,
        /// What is wrong.
        message: String,
    },
    /// The user PIN is locked.
    #[error("the user PIN of token {token:?} is locked (CKF_USER_PIN_LOCKED / CKR_PIN_LOCKED); sbkit never tries a locked PIN. Unblock it with the PUK or SO PIN (YubiKey: yubico-piv-tool -a unblock-pin; others: pkcs11-tool --login --login-type so --init-pin)")]
    PinLocked {
        /// The token label.
        token: String,
    },
    /// The token says the next wrong PIN locks it.
    #[error("token {token:?} reports CKF_USER_PIN_FINAL_TRY: one PIN try remains and a wrong PIN locks the token, so sbkit did not try the PIN. If you are sure of it, set {ALLOW_FINAL_TRY_ENV}=1 (Pkcs11Options::allow_final_pin_try)")]
    FinalTry {
        /// The token label.
        token: String,
    },
    /// The PIN was wrong.
    #[error("wrong PIN for token {token:?} (CKR_PIN_INCORRECT; PIN from {origin}); not retried. The token now reports: {state}")]
    PinIncorrect {
        /// The token label.
        token: String,
        /// Where the PIN came from.
        origin: String,
        /// The retry state read after the failure.
        state: String,
    },
    /// The PIN could not be obtained.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {action} failed for {uri}: {}", ck_short(.cause))]
    Pkcs11 {
        /// What we were doing.
        action: &'static str,
        /// The URI.
        uri: String,
        /// cryptoki's error. Not a `source`: the message already says it in
        /// PKCS#11's own names, and a source would print it a second time.
        cause: CkError,
    },
}

/// The session and what signing with it needs; behind the signer's mutex
/// because a cryptoki `Session` must not be used from two threads at once.
struct State {
    session: Session,
    key: ObjectHandle,
    raw: RawSign,
    /// Kept only for always-authenticate keys, for the context-specific login.
    pin: Option<Pin>,
    pin_origin: Option<PinOrigin>,
}

/// A private key on a PKCS#11 token, found by a `pkcs11:` URI.
pub struct Pkcs11Signer {
    uri: String,
    token: String,
    label: String,
    ctx: Pkcs11,
    slot: Slot,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    public: PKey<Public>,
    always_authenticate: bool,
    pin_pad: bool,
    options: Pkcs11Options,
    state: Mutex<State>,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the PIN.
        f.debug_struct("Pkcs11Signer")
            .field("uri", &self.uri)
            .field("algorithm", &self.algorithm)
            .field("always_authenticate", &self.always_authenticate)
            .finish()
    }
}

fn raw_pin(pin: &Pin) -> RawAuthPin {
    // secrecy wipes this copy when the RawAuthPin drops.
    RawAuthPin::new(Box::new(pin.to_vec()))
}

/// `object=…;id=…` of an object, for listings the user can paste into a URI.
fn object_attributes(label: &[u8], id: &[u8]) -> String {
    format!(
        "object={};id={}",
        encode_text(&String::from_utf8_lossy(label)),
        encode_id(id)
    )
}

fn label_and_id(session: &Session, h: ObjectHandle) -> (Vec<u8>, Vec<u8>) {
    let mut label = Vec::new();
    let mut id = Vec::new();
    for a in session
        .get_attributes(h, &[AttributeType::Label, AttributeType::Id])
        .unwrap_or_default()
    {
        match a {
            Attribute::Label(l) => label = l,
            Attribute::Id(i) => id = i,
            _ => {}
        }
    }
    (label, id)
}

impl Pkcs11Signer {
    /// Opens the key `uri` names: loads the module, finds the one matching
    /// token and private key, logs in (PIN from the environment, a file, or
    /// the terminal) and reads the public key.
    pub fn open(uri: &str, options: &Pkcs11Options) -> Result<Self, TokenError> {
        let parsed = Pkcs11Uri::parse(uri)?;
        let uri_text = parsed.to_string();
        if let Some(t) = parsed.object_type.filter(|t| *t != ObjectType::Private) {
            return Err(TokenError::NotPrivate {
                uri: uri_text,
                ty: t.name().to_string(),
            });
        }
        let ck = |action: &'static str| {
            let uri = uri_text.clone();
            move |cause: CkError| TokenError::Pkcs11 { action, uri, cause }
        };
        let opened =
            super::session::open(&parsed, false).map_err(|e| from_session(e, &uri_text, ""))?;
        let token = opened.info.label().to_string();
        let raw = RawSign::for_loaded_module(&opened.module_path).map_err(|message| {
            TokenError::Module(ModuleError::Load {
                path: opened.module_path.clone(),
                message,
            })
        })?;

        // Objects are searched before logging in so that an ambiguous URI
        // costs no PIN; tokens that hide private keys until login (SoftHSM2)
        // are searched again after it.
        let mut keys = find_keys(&opened.session, &parsed).map_err(ck("searching keys"))?;
        if keys.len() > 1 {
            return Err(several_keys(&opened.session, &keys, &uri_text, &token));
        }
        let pin_pad = opened.info.protected_authentication_path();
        let mut pin = None;
        let mut pin_origin = None;
        if opened.info.login_required() {
            let outcome = opened
                .login(&super::session::LoginRequest {
                    uri: &parsed,
                    prompt: format!("PIN for token {token:?} ({uri_text}): "),
                    allow_final_try: options.allow_final_pin_try,
                    pin_pad_allowed: true,
                })
                .map_err(|e| from_session(e, &uri_text, &token))?;
            pin = outcome.pin;
            pin_origin = outcome.origin;
            // Logged in, the token may show private keys it hid before.
            keys = find_keys(&opened.session, &parsed).map_err(ck("searching keys"))?;
        }
        let super::session::TokenSession {
            ctx, slot, session, ..
        } = opened;
        let key = match keys.as_slice() {
            [k] => *k,
            [] => return Err(no_key(&session, &parsed, &uri_text, &token)),
            _ => return Err(several_keys(&session, &keys, &uri_text, &token)),
        };

        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::AlwaysAuthenticate,
                ],
            )
            .map_err(ck("reading the key's attributes"))?;
        let mut key_type = None;
        let mut id = Vec::new();
        let mut label = Vec::new();
        let mut always_authenticate = false;
        for a in attrs {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Id(i) => id = i,
                Attribute::Label(l) => label = l,
                Attribute::AlwaysAuthenticate(b) => always_authenticate = b,
                _ => {}
            }
        }
        let key_type = key_type.ok_or_else(|| TokenError::UnsupportedKey {
            uri: uri_text.clone(),
            message: "the private key reports no CKA_KEY_TYPE".into(),
        })?;
        if key_type != KeyType::RSA && key_type != KeyType::EC {
            return Err(TokenError::UnsupportedKey {
                uri: uri_text,
                message: format!("a {key_type} key cannot sign here; RSA and EC keys can"),
            });
        }
        let spki = public_key_der(&session, key, key_type, &id, &label).map_err(|detail| {
            TokenError::NoPublicKey {
                uri: uri_text.clone(),
                detail,
            }
        })?;
        let (public, algorithm) =
            keydata::algorithm_of_spki(&spki).map_err(|message| TokenError::UnsupportedKey {
                uri: uri_text.clone(),
                message,
            })?;

        // The PIN is only needed again for context-specific logins; wipe it
        // now otherwise, or when the user asked to be prompted each time.
        let keep_pin = always_authenticate
            && !(options.prompt_pin_every_signature && pin_origin == Some(PinOrigin::Terminal));
        if !keep_pin {
            pin = None;
        }
        Ok(Pkcs11Signer {
            uri: uri_text,
            token,
            label: String::from_utf8_lossy(&label).into_owned(),
            ctx,
            slot,
            algorithm,
            spki,
            public,
            always_authenticate,
            pin_pad,
            options: *options,
            state: Mutex::new(State {
                session,
                key,
                raw,
                pin,
                pin_origin,
            }),
        })
    }

    /// Whether the key demands a PIN for every signature (CKA_ALWAYS_AUTHENTICATE).
    pub fn always_authenticate(&self) -> bool {
        self.always_authenticate
    }

    /// The label of the token holding the key.
    pub fn token_label(&self) -> &str {
        &self.token
    }

    fn backend(&self, message: impl Into<String>) -> SignError {
        SignError::Backend {
            key: self.describe(),
            message: message.into(),
        }
    }

    /// Signs `data` with the context-specific login an always-authenticate key needs.
    fn sign_reauthenticated(
        &self,
        st: &mut State,
        mechanism: &Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, SignError> {
        // Everything that talks to the token (retry flags, prompting) happens
        // before C_SignInit: PIV drivers want nothing between the
        // context-specific VERIFY and the signature.
        let info = self.ctx.get_token_info(self.slot).map_err(|e| {
            self.backend(format!("reading the token's PIN state: {}", ck_short(&e)))
        })?;
        match pin::retry_decision(
            super::session::retry_state(&info),
            self.options.allow_final_pin_try,
            &self.token,
        ) {
            RetryDecision::Refuse(RefuseReason::Locked) => {
                return Err(self.backend(
                    TokenError::PinLocked {
                        token: self.token.clone(),
                    }
                    .to_string(),
                ))
            }
            RetryDecision::Refuse(RefuseReason::FinalTry) => {
                return Err(self.backend(
                    TokenError::FinalTry {
                        token: self.token.clone(),
                    }
                    .to_string(),
                ))
            }
            RetryDecision::Warn(w) => eprintln!("warning: {w}"),
            RetryDecision::Proceed => {}
        }
        let fresh;
        let pin: Option<&Pin> = if self.pin_pad && st.pin.is_none() {
            eprintln!(
                "Enter the PIN for {:?} on the reader's PIN pad (this key needs it for every signature).",
                self.token
            );
            None
        } else if let Some(p) = &st.pin {
            Some(p)
        } else {
            fresh = pin::prompt_pin(
                &format!(
                    "PIN for {:?} (key {:?} needs it for every signature): ",
                    self.token, self.label
                ),
                &self.token,
            )
            .map_err(|e| self.backend(e.to_string()))?;
            Some(&fresh)
        };

        st.session
            .sign_init(mechanism, st.key)
            .map_err(|e| self.backend(ck_short(&e)))?;
        let login = match pin {
            Some(p) => st
                .session
                .login_with_raw(UserType::ContextSpecific, &raw_pin(p)),
            None => st.session.login(UserType::ContextSpecific, None),
        };
        if let Err(e) = login {
            // End the operation C_SignInit started: a failing C_Sign does
            // that (CKR_USER_NOT_LOGGED_IN), so the session stays usable.
            let _ = st.raw.sign(st.session.handle(), data);
            let origin = st
                .pin_origin
                .as_ref()
                .map_or("the PIN pad".to_string(), |o| o.to_string());
            return Err(match e {
                CkError::Pkcs11(RvError::PinIncorrect, _) => {
                    // Never try the same wrong PIN again.
                    st.pin = None;
                    let state = self
                        .ctx
                        .get_token_info(self.slot)
                        .map(|i| super::session::retry_state(&i).describe())
                        .unwrap_or("unknown (cannot read the token's flags)");
                    self.backend(
                        TokenError::PinIncorrect {
                            token: self.token.clone(),
                            origin,
                            state: state.to_string(),
                        }
                        .to_string(),
                    )
                }
                CkError::Pkcs11(RvError::PinLocked, _) => self.backend(
                    TokenError::PinLocked {
                        token: self.token.clone(),
                    }
                    .to_string(),
                ),
                e => self.backend(format!("context-specific login: {}", ck_short(&e))),
            });
        }
        st.raw
            .sign(st.session.handle(), data)
            .map_err(|rv| self.backend(format!("C_Sign: {}", rv_text(rv))))
    }
}

/// The PKCS#11 name of a return value: `UserNotLoggedIn` → `CKR_USER_NOT_LOGGED_IN`.
fn ckr_name(e: &RvError) -> String {
    let mut name = String::from("CKR");
    for c in format!("{e:?}").chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// A cryptoki error in a line: the function and the CKR_ name.
fn ck_short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?} returned {}", ckr_name(rv)),
        other => other.to_string(),
    }
}

fn rv_text(rv: std::ffi::c_ulong) -> String {
    match cryptoki::error::Rv::from(rv) {
        cryptoki::error::Rv::Ok => "CKR_OK".into(),
        cryptoki::error::Rv::Error(e) => format!("{} (0x{rv:x})", ckr_name(&e)),
    }
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn sign_digest(&self, digest: DigestAlgorithm, hash: &[u8]) -> Result<Vec<u8>, SignError> {
        if hash.len() != digest.output_len() {
            return Err(SignError::DigestLength {
                digest,
                got: hash.len(),
            });
        }
        // CKM_RSA_PKCS pads what it is given, so the DigestInfo goes in here;
        // CKM_ECDSA signs the hash as is.
        let (mechanism, data) = if self.algorithm.is_ec() {
            (Mechanism::Ecdsa, hash.to_vec())
        } else {
            let mut d = digest.digest_info_prefix().to_vec();
            d.extend_from_slice(hash);
            (Mechanism::RsaPkcs, d)
        };
        let mut st = self
            .state
            .lock()
            .map_err(|_| self.backend("the token session was poisoned by an earlier panic"))?;
        let raw = if self.always_authenticate {
            self.sign_reauthenticated(&mut st, &mechanism, &data)?
        } else {
            st.session
                .sign(&mechanism, st.key, &data)
                .map_err(|e| self.backend(ck_short(&e)))?
        };
        drop(st);
        let signature = if self.algorithm.is_ec() {
            keydata::ecdsa_raw_to_der(&raw).map_err(|e| self.backend(e))?
        } else {
            raw
        };
        if !keydata::verify_digest(&self.public, digest, hash, &signature) {
            return Err(self.backend(
                "the token's signature does not verify with the public key found for this key: \
                 the public key object or certificate with the same CKA_ID belongs to another key",
            ));
        }
        Ok(signature)
    }

    fn describe(&self) -> String {
        self.uri.clone()
    }
}

/// The signer's message for a session-layer failure; `token` is the label
/// once a token was found.
fn from_session(e: super::session::SessionError, uri: &str, token: &str) -> TokenError {
    use super::session::SessionError as S;
    match e {
        S::Module(m) => TokenError::Module(m),
        S::Library {
            module,
            attribute,
            actual,
            wanted,
        } => TokenError::Library {
            module: module.display().to_string(),
            attribute,
            actual,
            wanted,
        },
        S::NoToken { module, seen } => TokenError::NoToken {
            uri: uri.to_string(),
            module: module.display().to_string(),
            seen,
        },
        S::SeveralTokens { seen } => TokenError::SeveralTokens {
            uri: uri.to_string(),
            seen,
        },
        S::PinLocked => TokenError::PinLocked {
            token: token.to_string(),
        },
        S::FinalTry => TokenError::FinalTry {
            token: token.to_string(),
        },
        S::PinIncorrect { origin, state } => TokenError::PinIncorrect {
            token: token.to_string(),
            origin: origin.map_or("the PIN pad".to_string(), |o| o.to_string()),
            state: state.to_string(),
        },
        S::Pin(p) => TokenError::Pin(p),
        S::Call { action, cause } => TokenError::Pkcs11 {
            action,
            uri: uri.to_string(),
            cause,
        },
    }
}

fn find_keys(session: &Session, uri: &Pkcs11Uri) -> Result<Vec<ObjectHandle>, CkError> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    session.find_objects(&template)
}

fn list_objects(session: &Session) -> Vec<String> {
    let mut seen = Vec::new();
    for (class, name) in [
        (ObjectClass::PRIVATE_KEY, "private key"),
        (ObjectClass::PUBLIC_KEY, "public key"),
        (ObjectClass::CERTIFICATE, "certificate"),
    ] {
        for h in session
            .find_objects(&[Attribute::Class(class)])
            .unwrap_or_default()
        {
            let (label, id) = label_and_id(session, h);
            seen.push(format!("{name}: {}", object_attributes(&label, &id)));
        }
    }
    seen
}

fn no_key(session: &Session, uri: &Pkcs11Uri, uri_text: &str, token: &str) -> TokenError {
    let mut hint = String::new();
    if let Some(id) = &uri.id {
        if id.len() >= 2 && id.iter().all(u8::is_ascii_hexdigit) {
            hint = format!(
                "\nid= is percent-encoded bytes: id={0} means the characters {0:?}; for the bytes 0x{0} write id={1}",
                String::from_utf8_lossy(id),
                hex::decode(id).map(|b| encode_id(&b)).unwrap_or_default()
            );
        }
    }
    TokenError::NoKey {
        uri: uri_text.to_string(),
        token: token.to_string(),
        seen: list_objects(session),
        hint,
    }
}

fn several_keys(
    session: &Session,
    keys: &[ObjectHandle],
    uri_text: &str,
    token: &str,
) -> TokenError {
    let found: Vec<(Vec<u8>, Vec<u8>)> = keys.iter().map(|h| label_and_id(session, *h)).collect();
    let same_label = found.windows(2).all(|w| w[0].0 == w[1].0);
    let same_id = found.windows(2).all(|w| w[0].1 == w[1].1);
    let hint = match (same_label, same_id) {
        (true, false) => "They share the label: add id=… (as listed) to the URI to pick one.",
        (false, true) => "They share the ID: add object=… (the label, as listed) to pick one.",
        (false, false) => "Add object=… and/or id=… (as listed) to the URI to pick one.",
        (true, true) => {
            "They have the same label and ID, so no URI can tell them apart: delete or relabel one \
             (pkcs11-tool --delete-object, or --set-id/--label with --id)."
        }
    };
    TokenError::SeveralKeys {
        uri: uri_text.to_string(),
        token: token.to_string(),
        keys: found.iter().map(|(l, i)| object_attributes(l, i)).collect(),
        hint: hint.to_string(),
    }
}

fn spki_of_public_object(
    session: &Session,
    h: ObjectHandle,
    key_type: KeyType,
) -> Result<Vec<u8>, String> {
    let wanted = if key_type == KeyType::RSA {
        [AttributeType::Modulus, AttributeType::PublicExponent]
    } else {
        [AttributeType::EcParams, AttributeType::EcPoint]
    };
    let mut a = Vec::new();
    let mut b = Vec::new();
    for attr in session
        .get_attributes(h, &wanted)
        .map_err(|e| e.to_string())?
    {
        match attr {
            Attribute::Modulus(v) | Attribute::EcParams(v) => a = v,
            Attribute::PublicExponent(v) | Attribute::EcPoint(v) => b = v,
            _ => {}
        }
    }
    if a.is_empty() || b.is_empty() {
        return Err("the object does not expose its public components".into());
    }
    if key_type == KeyType::RSA {
        keydata::rsa_spki(&a, &b)
    } else {
        keydata::ec_spki(&a, &b)
    }
}

/// The key's SPKI: the private key's CKA_PUBLIC_KEY_INFO, a public key object
/// with the same CKA_ID, a certificate with that ID, or (RSA) the private
/// key's own modulus and exponent.
fn public_key_der(
    session: &Session,
    key: ObjectHandle,
    key_type: KeyType,
    id: &[u8],
    label: &[u8],
) -> Result<Vec<u8>, String> {
    let mut tried = Vec::new();
    if let Ok(attrs) = session.get_attributes(key, &[AttributeType::PublicKeyInfo]) {
        for a in attrs {
            if let Attribute::PublicKeyInfo(spki) = a {
                if !spki.is_empty() {
                    return Ok(spki);
                }
            }
        }
    }
    tried.push("the private key has no CKA_PUBLIC_KEY_INFO".to_string());

    let mut publics = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Id(id.to_vec()),
        ])
        .unwrap_or_default();
    if publics.len() > 1 {
        publics.retain(|h| label_and_id(session, *h).0 == label);
    }
    let mut spkis: Vec<Vec<u8>> = Vec::new();
    for h in publics {
        match spki_of_public_object(session, h, key_type) {
            Ok(s) if !spkis.contains(&s) => spkis.push(s),
            Ok(_) => {}
            Err(e) => tried.push(format!("public key object with id={}: {e}", encode_id(id))),
        }
    }
    match spkis.len() {
        1 => return Ok(spkis.remove(0)),
        0 => tried.push(format!("no public key object with id={}", encode_id(id))),
        n => {
            return Err(format!(
                "{n} different public keys have id={} and label {:?}",
                encode_id(id),
                String::from_utf8_lossy(label)
            ))
        }
    }

    let certs = session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.to_vec()),
        ])
        .unwrap_or_default();
    for h in &certs {
        let value = session
            .get_attributes(*h, &[AttributeType::Value])
            .unwrap_or_default();
        for a in value {
            if let Attribute::Value(der_bytes) = a {
                if let Ok(cert) = x509_cert::Certificate::from_der(&der_bytes) {
                    if let Ok(spki) = cert.tbs_certificate.subject_public_key_info.to_der() {
                        return Ok(spki);
                    }
                }
            }
        }
    }
    tried.push(format!("no X.509 certificate with id={}", encode_id(id)));

    if key_type == KeyType::RSA {
        match spki_of_public_object(session, key, key_type) {
            Ok(spki) => return Ok(spki),
            Err(e) => tried.push(format!("private key: {e}")),
        }
    }
    Err(tried.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_get_their_pkcs11_names() {
        assert_eq!(ckr_name(&RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(&RvError::UserNotLoggedIn),
            "CKR_USER_NOT_LOGGED_IN"
        );
        assert_eq!(rv_text(0xa0), "CKR_PIN_INCORRECT (0xa0)");
        let e = CkError::Pkcs11(RvError::UserNotLoggedIn, cryptoki::context::Function::Sign);
        assert_eq!(ck_short(&e), "C_Sign returned CKR_USER_NOT_LOGGED_IN");
    }
}
