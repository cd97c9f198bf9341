//! RFC 7512 `pkcs11:` URIs: which module, token and key to sign with.
//!
//! The parser is strict about what it does not know (an unknown attribute is
//! usually a typo, and a typo here silently widens the match) and refuses
//! `pin-value`: a PIN written into a URI ends up in shell history, `ps` output
//! and config files, and sbkit's rule is that secrets never come from the
//! command line. `pin-source` (a path to a file) is honoured.

use std::fmt;
use std::path::PathBuf;

/// The `type=` attribute of a URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    /// `type=private`: a private key, the only kind sbkit signs with.
    Private,
    /// `type=public`.
    Public,
    /// `type=cert`.
    Cert,
    /// `type=secret-key`.
    SecretKey,
    /// `type=data`.
    Data,
}

impl ObjectType {
    /// The name as written in a URI.
    pub fn name(self) -> &'static str {
        match self {
            ObjectType::Private => "private",
            ObjectType::Public => "public",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }
}

/// A `pkcs11:` URI that cannot be used; the message names the offending part.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    /// The text does not start with `pkcs11:`.
    #[error("not a PKCS#11 URI: it must start with \"pkcs11:\" (the text is not repeated here: a mistyped argument may be a PIN or passphrase)")]
    NotPkcs11,
    /// A part without `=`.
    #[error("PKCS#11 URI part {part:?} is not of the form name=value (parts are separated by ';' before '?' and by '&' after it)")]
    NoEquals {
        /// The part as written.
        part: String,
    },
    /// An attribute RFC 7512 does not define (and not an `x-` vendor one).
    #[error("unknown PKCS#11 URI {section} attribute {name:?}; known are {known}")]
    Unknown {
        /// The attribute name.
        name: String,
        /// "path" or "query".
        section: &'static str,
        /// The attributes allowed there.
        known: &'static str,
    },
    /// The same attribute twice.
    #[error("PKCS#11 URI attribute {name:?} appears more than once")]
    Duplicate {
        /// The attribute name.
        name: String,
    },
    /// A `%` not followed by two hex digits.
    #[error("PKCS#11 URI attribute {name:?}: bad percent-encoding at {at:?}: '%' must be followed by two hex digits (write id=%02, not id=02 or id=%2){hint}")]
    Percent {
        /// The attribute name.
        name: String,
        /// The text from the bad '%' on.
        at: String,
        /// An extra hint, e.g. about mkosi's `%%`.
        hint: &'static str,
    },
    /// A text attribute whose decoded bytes are not UTF-8.
    #[error("PKCS#11 URI attribute {name:?} is not UTF-8 after percent-decoding (only id= may hold arbitrary bytes)")]
    NotUtf8 {
        /// The attribute name.
        name: String,
    },
    /// `slot-id=` that is not a decimal number.
    #[error("PKCS#11 URI attribute slot-id={value:?} is not a decimal number")]
    SlotId {
        /// The value as written.
        value: String,
    },
    /// `type=` with a value RFC 7512 does not define.
    #[error("PKCS#11 URI attribute type={value:?} is not one of private, public, cert, secret-key, data")]
    Type {
        /// The value as written.
        value: String,
    },
    /// `pin-value=` in the URI: refused, PINs never come from the command line.
    #[error("PKCS#11 URI contains pin-value: refused, because a PIN in a URI leaks into `ps`, shell history and config files. Remove it and give the PIN through SBKIT_PKCS11_PIN, SBKIT_PKCS11_PIN_FILE, the URI's pin-source=<file>, or the terminal prompt")]
    PinValue,
}

/// A parsed `pkcs11:` URI. It never holds a PIN (see [`UriError::PinValue`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `manufacturer=`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `model=`: the token model.
    pub model: Option<String>,
    /// `serial=`: the token serial number.
    pub serial: Option<String>,
    /// `slot-id=`: the slot number.
    pub slot_id: Option<u64>,
    /// `slot-description=`.
    pub slot_description: Option<String>,
    /// `slot-manufacturer=`.
    pub slot_manufacturer: Option<String>,
    /// `library-manufacturer=`: of the module.
    pub library_manufacturer: Option<String>,
    /// `library-description=`: of the module.
    pub library_description: Option<String>,
    /// `library-version=`: of the module, `major[.minor]`.
    pub library_version: Option<String>,
    /// `object=`: the object label (CKA_LABEL).
    pub object: Option<String>,
    /// `id=`: the object ID (CKA_ID), raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type=`.
    pub object_type: Option<ObjectType>,
    /// `?module-name=`: a module looked up by name in the usual directories.
    pub module_name: Option<String>,
    /// `?module-path=`: the module file.
    pub module_path: Option<PathBuf>,
    /// `?pin-source=`: a file holding the PIN (`file:` URI or path).
    pub pin_source: Option<String>,
}

const PATH_ATTRIBUTES: &str = "token, manufacturer, model, serial, slot-id, slot-description, \
    slot-manufacturer, library-manufacturer, library-description, library-version, object, id, type";
const QUERY_ATTRIBUTES: &str = "module-path, module-name, pin-source (pin-value is refused)";

/// Whether `text` is meant as a PKCS#11 URI (case-insensitive scheme).
pub fn is_pkcs11_uri(text: &str) -> bool {
    // `get`, not `[..7]`: a path such as `/tmp/ké.pem` has no char boundary at 7.
    text.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("pkcs11:"))
}

fn percent_decode(name: &str, value: &str) -> Result<Vec<u8>, UriError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            let h = std::str::from_utf8(h).ok()?;
            u8::from_str_radix(h, 16)
                .ok()
                .filter(|_| h.bytes().all(|c| c.is_ascii_hexdigit()))
        });
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                let hint = if bytes.get(i + 1) == Some(&b'%') {
                    " ('%%' is how mkosi config files escape '%'; outside them write a single '%')"
                } else {
                    ""
                };
                return Err(UriError::Percent {
                    name: name.to_string(),
                    at: value[i..].chars().take(8).collect(),
                    hint,
                });
            }
        }
    }
    Ok(out)
}

fn text(name: &str, value: &str) -> Result<String, UriError> {
    String::from_utf8(percent_decode(name, value)?).map_err(|_| UriError::NotUtf8 {
        name: name.to_string(),
    })
}

fn set<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(UriError::Duplicate {
            name: name.to_string(),
        });
    }
    *slot = Some(value);
    Ok(())
}

impl Pkcs11Uri {
    /// Parses a `pkcs11:` URI.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        if !is_pkcs11_uri(uri) {
            return Err(UriError::NotPkcs11);
        }
        let rest = uri.get(7..).unwrap_or_default();
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut u = Pkcs11Uri::default();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| UriError::NoEquals {
                part: part.to_string(),
            })?;
            match name {
                "token" => set(&mut u.token, name, text(name, value)?)?,
                "manufacturer" => set(&mut u.manufacturer, name, text(name, value)?)?,
                "model" => set(&mut u.model, name, text(name, value)?)?,
                "serial" => set(&mut u.serial, name, text(name, value)?)?,
                "slot-description" => set(&mut u.slot_description, name, text(name, value)?)?,
                "slot-manufacturer" => set(&mut u.slot_manufacturer, name, text(name, value)?)?,
                "library-manufacturer" => {
                    set(&mut u.library_manufacturer, name, text(name, value)?)?
                }
                "library-description" => set(&mut u.library_description, name, text(name, value)?)?,
                "library-version" => set(&mut u.library_version, name, text(name, value)?)?,
                "object" => set(&mut u.object, name, text(name, value)?)?,
                "id" => set(&mut u.id, name, percent_decode(name, value)?)?,
                "slot-id" => {
                    let v = text(name, value)?;
                    let n = v
                        .parse::<u64>()
                        .map_err(|_| UriError::SlotId { value: v })?;
                    set(&mut u.slot_id, name, n)?
                }
                "type" => {
                    let v = text(name, value)?;
                    let t = match v.as_str() {
                        "private" => ObjectType::Private,
                        "public" => ObjectType::Public,
                        "cert" => ObjectType::Cert,
                        "secret-key" => ObjectType::SecretKey,
                        "data" => ObjectType::Data,
                        _ => return Err(UriError::Type { value: v }),
                    };
                    set(&mut u.object_type, name, t)?
                }
                // RFC 7512 leaves vendor attributes to their vendor; none is ours.
                n if n.starts_with("x-") => {}
                _ => {
                    return Err(UriError::Unknown {
                        name: name.to_string(),
                        section: "path",
                        known: PATH_ATTRIBUTES,
                    })
                }
            }
        }
        for part in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let name = part.split_once('=').map_or(part, |(n, _)| n);
            if name == "pin-value" {
                // Checked before anything else so no error message ever echoes it.
                return Err(UriError::PinValue);
            }
            let (name, value) = part.split_once('=').ok_or_else(|| UriError::NoEquals {
                part: part.to_string(),
            })?;
            match name {
                "module-path" => set(&mut u.module_path, name, text(name, value)?.into())?,
                "module-name" => set(&mut u.module_name, name, text(name, value)?)?,
                "pin-source" => set(&mut u.pin_source, name, text(name, value)?)?,
                n if n.starts_with("x-") => {}
                _ => {
                    return Err(UriError::Unknown {
                        name: name.to_string(),
                        section: "query",
                        known: QUERY_ATTRIBUTES,
                    })
                }
            }
        }
        Ok(u)
    }

    /// The attributes that select a token, as `name=value` pairs (decoded).
    pub fn token_attributes(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        let mut push = |n: &'static str, x: &Option<String>| {
            if let Some(x) = x {
                v.push((n, x.clone()));
            }
        };
        push("token", &self.token);
        push("manufacturer", &self.manufacturer);
        push("model", &self.model);
        push("serial", &self.serial);
        push("slot-description", &self.slot_description);
        push("slot-manufacturer", &self.slot_manufacturer);
        if let Some(id) = self.slot_id {
            v.push(("slot-id", id.to_string()));
        }
        v
    }
}

/// Percent-encodes a value: RFC 3986 unreserved characters and the
/// RFC 7512 "res-avail" ones stay, everything else becomes `%XX`.
fn encode(bytes: &[u8], extra_safe: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~:[]@!$'()*+,".contains(&b) || extra_safe.contains(&b)
        {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Formats an object ID the way it is written in a URI: `%02%AB`.
pub fn encode_id(id: &[u8]) -> String {
    id.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Formats a label for a URI.
pub fn encode_text(s: &str) -> String {
    encode(s.as_bytes(), b"")
}

impl fmt::Display for Pkcs11Uri {
    /// The canonical form, for messages and [`crate::keys::Signer::describe`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        let mut text_attr = |n: &str, v: &Option<String>| {
            if let Some(v) = v {
                path.push(format!("{n}={}", encode_text(v)));
            }
        };
        text_attr("token", &self.token);
        text_attr("manufacturer", &self.manufacturer);
        text_attr("model", &self.model);
        text_attr("serial", &self.serial);
        text_attr("slot-description", &self.slot_description);
        text_attr("slot-manufacturer", &self.slot_manufacturer);
        text_attr("library-manufacturer", &self.library_manufacturer);
        text_attr("library-description", &self.library_description);
        text_attr("library-version", &self.library_version);
        text_attr("object", &self.object);
        if let Some(n) = self.slot_id {
            path.push(format!("slot-id={n}"));
        }
        if let Some(id) = &self.id {
            path.push(format!("id={}", encode_id(id)));
        }
        if let Some(t) = self.object_type {
            path.push(format!("type={}", t.name()));
        }
        let mut query = Vec::new();
        if let Some(n) = &self.module_name {
            query.push(format!("module-name={}", encode(n.as_bytes(), b"/")));
        }
        if let Some(p) = &self.module_path {
            query.push(format!(
                "module-path={}",
                encode(p.as_os_str().as_encoded_bytes(), b"/")
            ));
        }
        if let Some(p) = &self.pin_source {
            query.push(format!("pin-source={}", encode(p.as_bytes(), b"/")));
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_mkosi_example() {
        let u = Pkcs11Uri::parse("pkcs11:token=mkosi;id=%02;type=private").unwrap();
        assert_eq!(u.token.as_deref(), Some("mkosi"));
        assert_eq!(u.id.as_deref(), Some(&[2u8][..]));
        assert_eq!(u.object_type, Some(ObjectType::Private));
        assert_eq!(u.to_string(), "pkcs11:token=mkosi;id=%02;type=private");
    }

    #[test]
    fn parses_every_attribute_and_percent_decodes() {
        let u = Pkcs11Uri::parse(
            "PKCS11:token=My%20Token;object=db%3Bkey;serial=0123;manufacturer=piv_II;\
             model=PKCS%2315%20emulated;slot-id=7;id=%01%Ab%ff;x-vendor=1\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin&x-other=2",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("My Token"));
        assert_eq!(u.object.as_deref(), Some("db;key"));
        assert_eq!(u.serial.as_deref(), Some("0123"));
        assert_eq!(u.manufacturer.as_deref(), Some("piv_II"));
        assert_eq!(u.model.as_deref(), Some("PKCS#15 emulated"));
        assert_eq!(u.slot_id, Some(7));
        assert_eq!(u.id, Some(vec![1, 0xab, 0xff]));
        assert_eq!(
            u.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.pin_source.as_deref(), Some("file:/run/pin"));
        // The canonical form parses back to the same thing.
        assert_eq!(Pkcs11Uri::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn empty_uri_matches_anything() {
        assert_eq!(Pkcs11Uri::parse("pkcs11:").unwrap(), Pkcs11Uri::default());
    }

    #[test]
    fn errors_name_the_bad_part() {
        let e = |s: &str| Pkcs11Uri::parse(s).unwrap_err().to_string();
        assert!(
            e("pkcs11:lable=db").contains("\"lable\""),
            "{}",
            e("pkcs11:lable=db")
        );
        assert!(e("pkcs11:token").contains("\"token\""));
        assert!(e("pkcs11:id=%2").contains("\"id\""));
        assert!(e("pkcs11:id=%%02").contains("mkosi"));
        assert!(e("pkcs11:id=%zz").contains("%zz"));
        assert!(e("pkcs11:slot-id=x").contains("slot-id"));
        assert!(e("pkcs11:type=key").contains("type"));
        assert!(e("pkcs11:token=a;token=b").contains("more than once"));
        assert!(e("pkcs11:?module=x").contains("\"module\""));
        assert!(e("pkcs11:object=%ff%fe").contains("UTF-8"));
        assert!(e("file.pem").contains("pkcs11:"));
    }

    #[test]
    fn pin_value_is_refused_without_echoing_it() {
        let e = Pkcs11Uri::parse("pkcs11:token=a?pin-value=123456").unwrap_err();
        assert_eq!(e, UriError::PinValue);
        assert!(!e.to_string().contains("123456"));
        assert!(e.to_string().contains("SBKIT_PKCS11_PIN"));
    }

    #[test]
    fn recognises_the_scheme() {
        assert!(is_pkcs11_uri("pkcs11:"));
        assert!(is_pkcs11_uri("PKCS11:token=x"));
        assert!(!is_pkcs11_uri("/keys/db.key"));
        assert!(!is_pkcs11_uri("pkcs11"));
        // A non-ASCII path whose 7th byte falls inside a character (issue 14).
        assert!(!is_pkcs11_uri("/tmp/ké.pem"));
        assert!(!is_pkcs11_uri("ключ.pem"));
        assert!(Pkcs11Uri::parse("/tmp/ké.pem").is_err());
    }
}
