//! The mkosi configuration for a token-held Secure Boot key, and the plain
//! RFC 7512 URIs other tools (build-uki, sbsign via the pkcs11 provider,
//! systemd-measure, openssl) take.

use serde::Serialize;

use super::check::plain_uri;

/// What to print for a token key.
#[derive(Clone, Debug, Serialize)]
pub struct MkosiConfig {
    /// The `[Validation]` block, `%` escaped as `%%` for mkosi.
    pub validation_block: String,
    /// The private key URI, plain.
    pub key_uri: String,
    /// The certificate URI, plain.
    pub cert_uri: String,
    /// build-uki's options for the same key.
    pub build_uki: String,
}

/// mkosi expands `%` specifiers in settings; a literal `%` is `%%`.
pub fn mkosi_escape(s: &str) -> String {
    s.replace('%', "%%")
}

/// The mkosi block and URIs for the key `id` on the token labelled `token_label`.
pub fn config(token_label: &str, id: &[u8], cert_file: Option<&str>) -> MkosiConfig {
    let key_uri = plain_uri(token_label, id, "private");
    let cert_uri = plain_uri(token_label, id, "cert");
    let cert_lines = match cert_file {
        // Older mkosi (before SecureBootCertificateSource=) reads the certificate from a file.
        Some(f) => format!(
            "SecureBootCertificate={f}\n# or, with mkosi 25+, from the token:\n# SecureBootCertificate={}\n# SecureBootCertificateSource=provider:pkcs11\n",
            mkosi_escape(&cert_uri)
        ),
        None => format!(
            "SecureBootCertificate={}\nSecureBootCertificateSource=provider:pkcs11\n",
            mkosi_escape(&cert_uri)
        ),
    };
    let validation_block = format!(
        "[Validation]\nSecureBoot=yes\nSecureBootKey={}\nSecureBootKeySource=provider:pkcs11\n{cert_lines}",
        mkosi_escape(&key_uri)
    );
    let build_uki = format!(
        "--sb-key '{key_uri}' --sb-cert {}",
        cert_file.unwrap_or("CERT.pem")
    );
    MkosiConfig {
        validation_block,
        key_uri,
        cert_uri,
        build_uki,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_percent_for_mkosi_only() {
        let c = config("mkosi", &[2], None);
        assert!(c
            .validation_block
            .contains("SecureBootKey=pkcs11:token=mkosi;id=%%02;type=private\n"));
        assert!(c
            .validation_block
            .contains("SecureBootKeySource=provider:pkcs11\n"));
        assert!(c
            .validation_block
            .contains("SecureBootCertificate=pkcs11:token=mkosi;id=%%02;type=cert\n"));
        assert_eq!(c.key_uri, "pkcs11:token=mkosi;id=%02;type=private");
        let f = config("mkosi", &[2], Some("mkosi.crt"));
        assert!(f
            .validation_block
            .contains("SecureBootCertificate=mkosi.crt\n"));
    }
}
