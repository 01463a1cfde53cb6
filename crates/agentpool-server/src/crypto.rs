//! Credential encryption at rest: AES-256-GCM under the server key, a random nonce per value,
//! and the credential's name as associated data so a ciphertext cannot be moved to another name.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
pub use agentpool_core::protocol::Secrets;
use base64::Engine;

const NONCE_LEN: usize = 12;

/// The 32-byte key credentials are encrypted with. Its Debug output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("server key must be 32 bytes encoded as base64 (44 characters) or hex (64 characters)")]
    Malformed,
}

impl ServerKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key (for `agentpool up`, or to print for an operator).
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(OsRng);
        let mut out = [0u8; 32];
        out.copy_from_slice(&key);
        Self(out)
    }

    /// Parse a key given as standard base64 (with or without padding) or as 64 hex digits.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| KeyError::Malformed)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
                .map_err(|_| KeyError::Malformed)?
        };
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(Self(arr))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A secret for `purpose`, derived from the key (HMAC-SHA256 keyed with it): stable for as
    /// long as the key is, and telling nothing of the key or of secrets for other purposes.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        keyed_hash(&self.0, purpose.as_bytes())
    }
}

/// HMAC-SHA256 of `msg` under `key`: the one the webhook signature uses.
pub use agentpool_github::signature::hmac_sha256 as keyed_hash;

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("credential ciphertext is malformed or was encrypted under another key")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
}

/// Encrypts and decrypts credential values.
pub struct Cipher {
    aead: Aes256Gcm,
}

impl Cipher {
    pub fn new(key: &ServerKey) -> Self {
        Self {
            aead: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0)),
        }
    }

    /// `nonce || ciphertext+tag`.
    pub fn encrypt(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn decrypt(&self, name: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if data.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = data.split_at(NONCE_LEN);
        self.aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_credential_round_trips_only_under_its_name_and_key() {
        let key = ServerKey::generate();
        let c = Cipher::new(&key);
        let ct = c.encrypt("gh", b"s3cret").unwrap();
        assert!(!ct.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(c.decrypt("gh", &ct).unwrap(), b"s3cret");
        assert_eq!(c.decrypt("other", &ct), Err(CryptoError::Decrypt));
        let other = Cipher::new(&ServerKey::generate());
        assert_eq!(other.decrypt("gh", &ct), Err(CryptoError::Decrypt));
        // Two encryptions of one value differ (random nonce).
        assert_ne!(ct, c.encrypt("gh", b"s3cret").unwrap());
    }

    #[test]
    fn derived_secrets_are_stable_per_key_and_purpose() {
        // RFC 4231, test case 2.
        let mac = keyed_hash(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let k = ServerKey::generate();
        assert_eq!(
            k.derive("a"),
            ServerKey::parse(&k.to_base64()).unwrap().derive("a")
        );
        assert_ne!(k.derive("a"), k.derive("b"));
        assert_ne!(k.derive("a"), ServerKey::generate().derive("a"));
    }

    #[test]
    fn key_parses_from_base64_and_hex_and_debug_hides_it() {
        let k = ServerKey::generate();
        assert_eq!(ServerKey::parse(&k.to_base64()), Ok(k.clone()));
        assert_eq!(
            ServerKey::parse(&"ab".repeat(32)),
            Ok(ServerKey::from_bytes([0xab; 32]))
        );
        assert!(ServerKey::parse("short").is_err());
        assert!(!format!("{k:?}").contains(&k.to_base64()));
        let s = Secrets([("gh".to_string(), "tok".to_string())].into());
        assert_eq!(format!("{s:?}"), r#"{"gh": "<redacted>"}"#);
    }
}
