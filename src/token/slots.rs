//! Finding the token an RFC 7512 URI names among a module's slots: shared by
//! signing (`pkcs11`) and provisioning (`provision::p11`), which wrap the
//! result in their own errors.

use cryptoki::context::Pkcs11;
use cryptoki::error::Error as CkError;
use cryptoki::slot::{Slot, TokenInfo};

use super::uri::{encode_text, Pkcs11Uri};

/// The initialised tokens of a module, and which of them the URI matches.
pub struct TokenScan {
    /// Tokens whose attributes all equal the URI's.
    pub matching: Vec<(Slot, TokenInfo)>,
    /// Every initialised token, described as a URI path, for error messages.
    pub seen: Vec<String>,
}

/// A token as the URI path that names it.
pub fn describe(info: &TokenInfo, slot: Slot) -> String {
    format!(
        "token={};manufacturer={};model={};serial={};slot-id={}",
        encode_text(info.label()),
        encode_text(info.manufacturer_id()),
        encode_text(info.model()),
        encode_text(info.serial_number()),
        slot.id()
    )
}

/// Lists the initialised tokens and matches them against `uri`'s token attributes.
pub fn scan(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<TokenScan, CkError> {
    let wanted = uri.token_attributes();
    let mut out = TokenScan {
        matching: Vec::new(),
        seen: Vec::new(),
    };
    for slot in ctx.get_slots_with_token()? {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        // An uninitialised token (SoftHSM2's free slot) holds no keys.
        if !info.token_initialized() {
            continue;
        }
        let slot_info = ctx.get_slot_info(slot).ok();
        let have = |name: &str| -> String {
            match name {
                "token" => info.label().to_string(),
                "manufacturer" => info.manufacturer_id().to_string(),
                "model" => info.model().to_string(),
                "serial" => info.serial_number().to_string(),
                // Slot fields are blank-padded in the C structure.
                "slot-description" => slot_info
                    .as_ref()
                    .map(|s| s.slot_description().trim_end().to_string())
                    .unwrap_or_default(),
                "slot-manufacturer" => slot_info
                    .as_ref()
                    .map(|s| s.manufacturer_id().trim_end().to_string())
                    .unwrap_or_default(),
                "slot-id" => slot.id().to_string(),
                _ => String::new(),
            }
        };
        out.seen.push(describe(&info, slot));
        if wanted.iter().all(|(n, v)| have(n) == *v) {
            out.matching.push((slot, info));
        }
    }
    Ok(out)
}
