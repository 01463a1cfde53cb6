//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body under the webhook secret, compared in
//! constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `msg` under `key` (what GitHub signs with, and what the server derives its
/// keyed secrets with).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    #[allow(
        clippy::expect_used,
        reason = "HMAC takes keys of any length: this cannot fail"
    )]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The header value GitHub sends for `body` under `secret`: `sha256=<hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let bytes = hmac_sha256(secret, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `header` is the signature of `body` under `secret`. The comparison of the MAC is
/// constant-time (`Mac::verify_slice`), so timing reveals nothing about the expected value.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    // Hex digits only: `from_str_radix` alone would also take a sign (`+f` for `0f`).
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_pair_is_not_a_hex_digit() {
        let good = sign(b"secret", b"body");
        let hex = &good["sha256=".len()..];
        // The first pair as `+X` where it is `0X`: the same byte to `from_str_radix`.
        if let Some(rest) = hex.strip_prefix('0') {
            assert!(!verify(b"secret", b"body", &format!("sha256=+{rest}")));
        }
        assert_eq!(decode_hex(&format!("+f{}", &hex[2..])), None);
    }

    #[test]
    fn verifies_github_documented_example() {
        // The example from GitHub's "Validating webhook deliveries" documentation.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(b"It's a Secret to Everybody", b"Hello, World!"), header);
        assert!(verify(b"It's a Secret to Everybody", b"Hello, World!", header));
    }

    #[test]
    fn refuses_wrong_secret_body_or_shape() {
        let good = sign(b"s", b"body");
        assert!(!verify(b"t", b"body", &good));
        assert!(!verify(b"s", b"bodx", &good));
        assert!(!verify(b"s", b"body", &good.replace("sha256=", "sha1=")));
        assert!(!verify(b"s", b"body", "sha256=zz"));
        assert!(!verify(b"s", b"body", ""));
    }
}
