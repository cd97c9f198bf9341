//! The one PKCS#11 session layer: load the module a URI names, find the one
//! token it matches, open a session, and log the user in under sbkit's PIN
//! policy (never on a locked PIN, on the final try only when allowed, the
//! PIN from the environment, a file, the URI's `pin-source`, the PIN pad or
//! a prompt, never retried by itself).
//!
//! Signing ([`super::Pkcs11Signer`]) and provisioning (`provision::p11`)
//! both open their tokens here; each turns a [`SessionError`] into its own
//! error type, whose messages speak to its users.

use std::path::PathBuf;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::RawAuthPin;

use super::module::{self, ModuleError};
use super::pin::{self, Pin, PinError, PinOrigin, RefuseReason, RetryDecision, RetryState};
use super::slots;
use super::uri::Pkcs11Uri;

/// Opening a session or logging in failed.
#[derive(Debug)]
pub enum SessionError {
    /// No module, or it did not load.
    Module(ModuleError),
    /// A `library-*` attribute of the URI does not match the module.
    Library {
        /// The module.
        module: PathBuf,
        /// The attribute name.
        attribute: &'static str,
        /// What the module reports.
        actual: String,
        /// What the URI asks for.
        wanted: String,
    },
    /// No initialised token matches; the tokens seen, as URI attributes.
    NoToken {
        /// The module.
        module: PathBuf,
        /// Each token seen.
        seen: Vec<String>,
    },
    /// Several tokens match.
    SeveralTokens {
        /// The matching tokens, described.
        seen: Vec<String>,
    },
    /// The user PIN is locked: no PIN was tried.
    PinLocked,
    /// One try remains and the policy does not allow it: no PIN was tried.
    FinalTry,
    /// The PIN was wrong (once; never retried).
    PinIncorrect {
        /// Where the PIN came from; `None` for the PIN pad.
        origin: Option<PinOrigin>,
        /// The retry state the token reports afterwards.
        state: &'static str,
    },
    /// The PIN could not be read.
    Pin(PinError),
    /// A PKCS#11 call failed.
    Call {
        /// The call, e.g. `C_OpenSession`.
        action: &'static str,
        /// cryptoki's error.
        cause: CkError,
    },
}

/// The state of a user PIN, from a token's flags.
pub fn retry_state(info: &TokenInfo) -> RetryState {
    RetryState {
        count_low: info.user_pin_count_low(),
        final_try: info.user_pin_final_try(),
        locked: info.user_pin_locked(),
    }
}

/// An open session on the one token a URI names.
pub struct TokenSession {
    /// The module's context.
    pub ctx: Pkcs11,
    /// The module file, canonical.
    pub module_path: PathBuf,
    /// The token's slot.
    pub slot: Slot,
    /// The token's description at opening.
    pub info: TokenInfo,
    /// The session.
    pub session: Session,
}

impl TokenSession {
    /// The token's label, without padding.
    pub fn label(&self) -> String {
        self.info.label().trim_end().to_string()
    }

    /// The token's serial number, without padding.
    pub fn serial(&self) -> String {
        self.info.serial_number().trim_end().to_string()
    }

    /// The objects matching `template` (an empty list when the search fails).
    pub fn find(&self, template: &[Attribute]) -> Result<Vec<ObjectHandle>, SessionError> {
        self.session
            .find_objects(template)
            .map_err(|cause| SessionError::Call {
                action: "C_FindObjects",
                cause,
            })
    }

    /// Logs the user in under the PIN policy; returns the PIN used (for
    /// later context-specific logins) and where it came from. A token that
    /// needs no login, or a user already logged in by another session of
    /// this process, is fine.
    pub fn login(&self, request: &LoginRequest<'_>) -> Result<LoginOutcome, SessionError> {
        if !self.info.login_required() {
            return Ok(LoginOutcome::default());
        }
        // The flags now, not at opening: another session may have used a try.
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(|cause| SessionError::Call {
                action: "C_GetTokenInfo",
                cause,
            })?;
        let label = self.label();
        match pin::retry_decision(retry_state(&info), request.allow_final_try, &label) {
            RetryDecision::Refuse(RefuseReason::Locked) => return Err(SessionError::PinLocked),
            RetryDecision::Refuse(RefuseReason::FinalTry) => return Err(SessionError::FinalTry),
            RetryDecision::Warn(w) => eprintln!("warning: {w}"),
            RetryDecision::Proceed => {}
        }
        let configured =
            pin::configured_pin(request.uri.pin_source.as_deref()).map_err(SessionError::Pin)?;
        let (pin, origin) = match configured {
            Some((p, o)) => (Some(p), Some(o)),
            None if request.pin_pad_allowed && info.protected_authentication_path() => {
                eprintln!("Enter the PIN for {label:?} on the reader's PIN pad.");
                (None, None)
            }
            None => (
                Some(pin::prompt_pin(&request.prompt, &label).map_err(SessionError::Pin)?),
                Some(PinOrigin::Terminal),
            ),
        };
        let result = match &pin {
            Some(p) => self
                .session
                .login_with_raw(UserType::User, &RawAuthPin::new(Box::new(p.to_vec()))),
            None => self.session.login(UserType::User, None),
        };
        match result {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                Ok(LoginOutcome { pin, origin })
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                let state = self
                    .ctx
                    .get_token_info(self.slot)
                    .map(|i| retry_state(&i).describe())
                    .unwrap_or("unknown (cannot read the token's flags)");
                Err(SessionError::PinIncorrect { origin, state })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(SessionError::PinLocked),
            Err(cause) => Err(SessionError::Call {
                action: "C_Login",
                cause,
            }),
        }
    }
}

/// How to log in.
pub struct LoginRequest<'a> {
    /// The URI (its `pin-source`).
    pub uri: &'a Pkcs11Uri,
    /// The terminal prompt, when a PIN must be typed.
    pub prompt: String,
    /// Try a PIN when the token reports its final try.
    pub allow_final_try: bool,
    /// Use the reader's PIN pad when the token has one and no PIN is configured.
    pub pin_pad_allowed: bool,
}

/// What a login used.
#[derive(Default)]
pub struct LoginOutcome {
    /// The PIN, when one was given (zeroized on drop).
    pub pin: Option<Pin>,
    /// Where it came from.
    pub origin: Option<PinOrigin>,
}

/// Finds the one initialised token `uri` matches in the loaded module.
pub fn find_token(
    ctx: &Pkcs11,
    uri: &Pkcs11Uri,
    module: &std::path::Path,
) -> Result<(Slot, TokenInfo), SessionError> {
    let mut found = slots::scan(ctx, uri).map_err(|cause| SessionError::Call {
        action: "C_GetSlotList",
        cause,
    })?;
    match found.matching.len() {
        1 => Ok(found.matching.remove(0)),
        0 => Err(SessionError::NoToken {
            module: module.to_path_buf(),
            seen: found.seen,
        }),
        _ => Err(SessionError::SeveralTokens {
            seen: found
                .matching
                .iter()
                .map(|(s, i)| slots::describe(i, *s))
                .collect(),
        }),
    }
}

/// Checks the URI's `library-manufacturer`, `library-description` and
/// `library-version` against the loaded module.
fn check_library(
    ctx: &Pkcs11,
    uri: &Pkcs11Uri,
    module: &std::path::Path,
) -> Result<(), SessionError> {
    if uri.library_manufacturer.is_none()
        && uri.library_description.is_none()
        && uri.library_version.is_none()
    {
        return Ok(());
    }
    let info = ctx.get_library_info().map_err(|cause| SessionError::Call {
        action: "C_GetInfo",
        cause,
    })?;
    let v = info.library_version();
    let version = format!("{}.{}", v.major(), v.minor());
    let checks = [
        (
            "library-manufacturer",
            &uri.library_manufacturer,
            info.manufacturer_id().to_string(),
        ),
        (
            "library-description",
            &uri.library_description,
            info.library_description().to_string(),
        ),
        ("library-version", &uri.library_version, version),
    ];
    for (attribute, wanted, actual) in checks {
        let Some(wanted) = wanted else { continue };
        // RFC 7512: "library-version=1" means 1.0.
        let matches = if attribute == "library-version" && !wanted.contains('.') {
            format!("{wanted}.0") == actual
        } else {
            *wanted == actual
        };
        if !matches {
            return Err(SessionError::Library {
                module: module.to_path_buf(),
                attribute,
                actual,
                wanted: wanted.clone(),
            });
        }
    }
    Ok(())
}

/// Loads the module `uri` names (or the default one), checks its
/// `library-*` attributes, finds its one matching token and opens a
/// session on it (read-write when `rw`).
pub fn open(uri: &Pkcs11Uri, rw: bool) -> Result<TokenSession, SessionError> {
    let (path, _) = module::select_module(uri).map_err(SessionError::Module)?;
    let m = module::load(&path).map_err(SessionError::Module)?;
    check_library(&m.ctx, uri, &m.path)?;
    let (slot, info) = find_token(&m.ctx, uri, &m.path)?;
    let session = if rw {
        m.ctx.open_rw_session(slot)
    } else {
        m.ctx.open_ro_session(slot)
    }
    .map_err(|cause| SessionError::Call {
        action: "C_OpenSession",
        cause,
    })?;
    Ok(TokenSession {
        ctx: m.ctx,
        module_path: m.path,
        slot,
        info,
        session,
    })
}
