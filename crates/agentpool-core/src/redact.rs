//! Secret redaction: the one [`Redactor`] every path that lets text leave a worker (events,
//! error messages, git output, logs) passes it through, so a key a model API echoes back or a
//! token in a git error never reaches the server.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::Value;

use crate::{EventPayload, NewEvent};

/// Replaces every occurrence of known secret values with [`Redactor::MASK`].
///
/// Matching is on exact values. Where secrets overlap in a text (one contains another, or the
/// end of one is the start of the next), the union of their spans is masked, so no part of
/// either survives.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    // What it holds are the secrets: a struct that holds a redactor and is logged with `{:?}`
    // must not print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("masked_texts", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// What a secret is replaced with.
    pub const MASK: &'static str = "[REDACTED]";
    /// Values shorter than this are not redacted: masking every "abc" in ordinary text would
    /// garble output, and real keys and tokens are far longer.
    pub const MIN_LEN: usize = 6;
    /// Variable names that mark a value as a secret in [`Redactor::from_env`].
    const SECRET_NAMES: [&'static str; 5] = ["KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"];

    /// A redactor for these values (shorter than [`Redactor::MIN_LEN`] are ignored).
    pub fn new<S: Into<String>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut r = Self::default();
        r.extend(secrets);
        r
    }

    /// The values of variables whose names look like credentials (`…KEY`, `…TOKEN`, …).
    pub fn from_env(env: &BTreeMap<String, String>) -> Self {
        Self::new(
            env.iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_uppercase();
                    Self::SECRET_NAMES.iter().any(|n| k.contains(n))
                })
                .map(|(_, v)| v.clone()),
        )
    }

    /// Add more secrets, each with the encodings a program commonly prints a secret in:
    /// base64 (standard and URL-safe, at any alignment inside a longer encoded text such as
    /// an HTTP Basic header), hex (lower and upper case), percent-encoding (either case, `/`
    /// escaped or not) and JSON string escapes. A secret split up, or transformed otherwise,
    /// is not recognised.
    pub fn extend<S: Into<String>>(&mut self, secrets: impl IntoIterator<Item = S>) {
        let plain: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| s.len() >= Self::MIN_LEN)
            .collect();
        for secret in plain {
            self.secrets.extend(
                encodings(secret.as_bytes())
                    .into_iter()
                    .filter(|e| e.len() >= Self::MIN_LEN && *e != secret),
            );
            self.secrets.push(secret);
        }
        self.secrets.sort_unstable();
        self.secrets.dedup();
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The length in bytes of the longest text it masks (a secret or one of its encodings):
    /// output cut into pieces must carry this much less one across a cut to mask a secret
    /// the cut falls inside.
    pub fn longest(&self) -> usize {
        self.secrets.iter().map(String::len).max().unwrap_or(0)
    }

    /// `text` with every secret masked.
    pub fn redact(&self, text: &str) -> String {
        let spans = self.spans(text);
        if spans.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for span in spans {
            out.push_str(&text[at..span.start]);
            out.push_str(Self::MASK);
            at = span.end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Mask secrets in every string of a JSON value, object keys included (an agent's tool
    /// input can be a map keyed by anything).
    pub fn value(&self, v: &mut Value) {
        if self.secrets.is_empty() {
            return;
        }
        match v {
            Value::String(s) if !self.spans(s).is_empty() => *s = self.redact(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(x)),
            Value::Object(o) => {
                if o.keys().any(|k| !self.spans(k).is_empty()) {
                    *o = std::mem::take(o)
                        .into_iter()
                        .map(|(k, v)| (self.redact(&k), v))
                        .collect();
                }
                o.values_mut().for_each(|x| self.value(x));
            }
            _ => {}
        }
    }

    /// The event with secrets masked in every text it carries (and in a tool call's input keys).
    pub fn event(&self, mut event: NewEvent) -> NewEvent {
        if self.secrets.is_empty() {
            return event;
        }
        if let EventPayload::ToolCall { input, .. } = &mut event.payload {
            self.value(input);
        }
        event.payload.map_text(&mut |s| {
            if !self.spans(s).is_empty() {
                *s = self.redact(s);
            }
        });
        event
    }

    /// The byte ranges of `text` covered by any secret, merged, in order.
    fn spans(&self, text: &str) -> Vec<Range<usize>> {
        let mut spans: Vec<Range<usize>> = Vec::new();
        for secret in &self.secrets {
            let mut from = 0;
            while let Some(i) = text[from..].find(secret.as_str()) {
                let start = from + i;
                spans.push(start..start + secret.len());
                // Step one character, not the whole match: "aaa" in "aaaa" matches twice.
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        spans.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
        for s in spans {
            match merged.last_mut() {
                Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
                _ => merged.push(s),
            }
        }
        merged
    }
}

/// The common encodings of `secret` (see [`Redactor::extend`]).
fn encodings(secret: &[u8]) -> Vec<String> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    out.push(hex.to_ascii_uppercase());
    out.push(hex);
    // Percent-encoding as programs print it: hex digits in either case, and `/` left alone or
    // not (Python's `quote` keeps it by default; most URL encoders escape it).
    for keep_slash in [false, true] {
        let percent: String = secret
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'.' | b'_' | b'~')
                    || keep_slash && b == b'/'
                {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        out.push(lowercase_escapes(&percent));
        out.push(percent);
    }
    // Inside a JSON string: escaped as serde_json writes it, and with `/` written `\/` as
    // some encoders (PHP's, older JavaScript) do.
    if let Ok(text) = std::str::from_utf8(secret)
        && let Ok(json) = serde_json::to_string(text)
    {
        let inner = &json[1..json.len() - 1];
        out.push(inner.replace('/', "\\/"));
        out.push(inner.to_string());
    }
    // Inside a longer base64 text the secret starts at byte offset 0, 1 or 2 of a 3-byte
    // group; for each, keep only the characters that depend on the secret's bytes alone.
    for shift in 0..3usize {
        let mut bytes = vec![0u8; shift];
        bytes.extend_from_slice(secret);
        for alphabet in [STD, URL] {
            let encoded = base64(&bytes, alphabet);
            let start = (shift * 8).div_ceil(6);
            let end = bytes.len() * 8 / 6;
            if let Some(inner) = encoded.get(start..end) {
                out.push(inner.to_string());
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `text` with the hex digits of its `%XX` escapes in lower case, the rest as it is.
fn lowercase_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut escape = 0;
    for c in text.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Base64 without padding.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const M: &str = Redactor::MASK;

    #[test]
    fn masks_every_occurrence() {
        let r = Redactor::new(["tok-123456"]);
        assert_eq!(r.redact("token=tok-123456 tok-123456"), format!("token={M} {M}"));
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn short_values_are_not_secrets() {
        let r = Redactor::new(["ab", "12345", ""]);
        assert!(r.is_empty());
        assert_eq!(r.redact("about 12345"), "about 12345");
        let r = Redactor::new(["123456"]);
        assert_eq!(r.redact("x123456y"), format!("x{M}y"));
    }

    #[test]
    fn overlapping_secrets_leave_nothing_of_either() {
        // One inside another: the longer one is masked whole.
        let r = Redactor::new(["secret-1", "secret-123456"]);
        assert_eq!(r.redact("k=secret-123456;"), format!("k={M};"));
        // The end of one is the start of the other.
        let r = Redactor::new(["abcdef", "defghi"]);
        assert_eq!(r.redact("xabcdefghix"), format!("x{M}x"));
        // A secret overlapping itself.
        let r = Redactor::new(["aaaaaa"]);
        assert_eq!(r.redact("aaaaaaaa b"), format!("{M} b"));
        // Duplicates are one secret.
        let r = Redactor::new(["dup-secret", "dup-secret"]);
        assert_eq!(r.redact("dup-secret"), M);
    }

    #[test]
    fn percent_and_json_escaped_forms_are_masked() {
        let r = Redactor::new(["p@ss/w:rd?x=1&y#z"]);
        for shown in [
            "p%40ss%2Fw%3Ard%3Fx%3D1%26y%23z", // escaped `/`, upper-case digits
            "p%40ss%2fw%3ard%3fx%3d1%26y%23z", // lower-case digits
            "p%40ss/w%3Ard%3Fx%3D1%26y%23z",   // `/` kept (Python's quote)
            "p%40ss/w%3ard%3fx%3d1%26y%23z",
        ] {
            assert_eq!(r.redact(&format!("url={shown}")), format!("url={M}"), "{shown}");
        }
        let r = Redactor::new(["a\"b/c\\d"]);
        assert_eq!(r.redact(r#"{"v":"a\"b/c\\d"}"#), format!(r#"{{"v":"{M}"}}"#));
        assert_eq!(r.redact(r#"{"v":"a\"b\/c\\d"}"#), format!(r#"{{"v":"{M}"}}"#));
    }

    #[test]
    fn multibyte_text_around_secrets_survives() {
        let r = Redactor::new(["clé-secrète"]);
        assert_eq!(r.redact("é clé-secrète ü"), format!("é {M} ü"));
    }

    #[test]
    fn masks_strings_anywhere_in_json() {
        let r = Redactor::new(["sk-live-abcdef"]);
        let mut v = json!({
            "message": "invalid key sk-live-abcdef",
            "nested": {"list": ["ok", "Bearer sk-live-abcdef"], "n": 3},
            "sk-live-abcdef": true,
        });
        r.value(&mut v);
        assert_eq!(v["message"], format!("invalid key {M}"));
        assert_eq!(v["nested"]["list"][1], format!("Bearer {M}"));
        assert_eq!(v["nested"]["list"][0], "ok");
        assert_eq!(v["nested"]["n"], 3);
        assert_eq!(v[M], true, "keys are masked too: {v}");
        let e = r.event(NewEvent::log("stderr", "401 for sk-live-abcdef"));
        assert!(!e.data().to_string().contains("sk-live-abcdef"), "{}", e.data());
    }

    #[test]
    fn from_env_takes_values_of_credential_like_names() {
        let env: BTreeMap<String, String> = [
            ("OPENAI_API_KEY", "sk-secret-123"),
            ("GIT_TOKEN", "ghp-000000"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = Redactor::from_env(&env);
        let out = r.redact("sk-secret-123 ghp-000000 http://127.0.0.1:1");
        assert_eq!(out, format!("{M} {M} http://127.0.0.1:1"));
    }

    #[test]
    fn common_encodings_of_a_secret_are_masked() {
        let secret = "sk-test-5f3a9c1e77";
        let r = Redactor::new([secret]);
        let b64 = |s: &str| {
            super::base64(
                s.as_bytes(),
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            )
        };
        for text in [
            format!("Authorization: Basic {}", b64(&format!("user:{secret}"))),
            format!("Authorization: Basic {}", b64(&format!("us:{secret}"))),
            format!("Authorization: Basic {}", b64(&format!("u:{secret}"))),
            format!(
                "hex {}",
                secret.bytes().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        ] {
            let out = r.redact(&text);
            assert!(out.contains(Redactor::MASK), "{text} -> {out}");
        }
        // RFC 4648's example (without padding).
        assert_eq!(b64("hello"), "aGVsbG8");
        let r = Redactor::new(["p@ss/word:42"]);
        assert_eq!(r.redact("u=p%40ss%2Fword%3A42"), format!("u={}", Redactor::MASK));
        // Ordinary text stays.
        assert_eq!(r.redact("nothing here"), "nothing here");
    }
}
