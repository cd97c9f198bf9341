//! DER wrapping written from the spec (not sbkit's code), for feeding our
//! bare SignedData to `openssl cms`.

/// DER length bytes.
pub fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let b = n.to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        let mut v = vec![0x80 | (b.len() - skip) as u8];
        v.extend_from_slice(&b[skip..]);
        v
    }
}

/// ContentInfo { id-signedData, [0] SignedData }, so `openssl cms` reads it.
pub fn content_info(signed_data: &[u8]) -> Vec<u8> {
    let oid = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    let mut explicit = vec![0xa0];
    explicit.extend(der_len(signed_data.len()));
    explicit.extend_from_slice(signed_data);
    let mut body = oid.to_vec();
    body.extend(explicit);
    let mut out = vec![0x30];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}
