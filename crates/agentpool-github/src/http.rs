//! What the forge clients share: the error a forge call ends in, named for the forge it came
//! from, and sending a request and decoding its JSON answer. Tokens travel only in headers
//! the callers set, so nothing here can put one in an error.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

/// Which forge a call went to (the name errors carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    Github,
    Forgejo,
}

impl std::fmt::Display for Forge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forge::Github => "GitHub",
            Forge::Forgejo => "Forgejo",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The forge answered with an error status; `message` is its own `message` field.
    #[error("{forge} answered {status} to {what}: {message}")]
    Status {
        forge: Forge,
        status: u16,
        what: &'static str,
        message: String,
        /// The answer said the caller is rate limited (GitHub answers some of those 403).
        rate_limited: bool,
    },
    #[error("{forge} could not be reached for {what}: {message}")]
    Transport {
        forge: Forge,
        what: &'static str,
        message: String,
    },
    #[error("{forge}'s answer to {what} was not understood: {message}")]
    Decode {
        forge: Forge,
        what: &'static str,
        message: String,
    },
    #[error("invalid setting: {0}")]
    Config(String),
}

impl ForgeError {
    /// Worth trying again later (the forge down, rate limited, or a network error). A 403
    /// that is not a rate limit ("Resource not accessible by integration", a token without
    /// the scope) stays a 403 however often it is asked again.
    pub fn is_transient(&self) -> bool {
        match self {
            ForgeError::Status {
                status, rate_limited, ..
            } => *status == 429 || *status >= 500 || *rate_limited,
            ForgeError::Transport { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, ForgeError>;

#[derive(Deserialize)]
struct ErrorMessage {
    #[serde(default)]
    message: String,
}

/// The HTTP client every forge client shares: agentpool's user agent and a 30 s limit per
/// call. Built once, because building one reads the system's root certificates from disk and
/// the server makes a forge client per link per pass; a clone shares its connection pool.
pub(crate) fn client() -> Result<reqwest::Client> {
    static SHARED: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = SHARED.get() {
        return Ok(c.clone());
    }
    let c = reqwest::Client::builder()
        .user_agent(concat!("agentpool/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ForgeError::Config(e.to_string()))?;
    Ok(SHARED.get_or_init(|| c).clone())
}

/// A token a client sends; `Debug` shows no part of it.
#[derive(Clone)]
pub(crate) struct Token(pub(crate) String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn transport(forge: Forge, what: &'static str, e: reqwest::Error) -> ForgeError {
    ForgeError::Transport {
        forge,
        what,
        // Without the URL: it holds nothing secret, but keep errors short and uniform.
        message: e.without_url().to_string(),
    }
}

/// Send `req`; its body when the status is a success, else the forge's `message`.
pub(crate) async fn send_raw(
    forge: Forge,
    what: &'static str,
    req: reqwest::RequestBuilder,
) -> Result<Vec<u8>> {
    let resp = req.send().await.map_err(|e| transport(forge, what, e))?;
    let status = resp.status();
    let rate_limited = rate_limited(resp.headers());
    let bytes = resp.bytes().await.map_err(|e| transport(forge, what, e))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorMessage>(&bytes)
            .map(|m| m.message)
            .unwrap_or_default();
        return Err(ForgeError::Status {
            forge,
            status: status.as_u16(),
            what,
            // GitHub's secondary limits come with a `Retry-After` or only with these words.
            rate_limited: rate_limited || message.to_ascii_lowercase().contains("rate limit"),
            message: truncate(&message, 300),
        });
    }
    Ok(bytes.to_vec())
}

/// Whether the headers of an answer say the caller is rate limited: GitHub's primary limit
/// (`X-RateLimit-Remaining: 0`) or a secondary one (`Retry-After`).
fn rate_limited(headers: &reqwest::header::HeaderMap) -> bool {
    let exhausted = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    exhausted || headers.contains_key(reqwest::header::RETRY_AFTER)
}

/// Send `req` and decode its JSON answer.
pub(crate) async fn send<T: for<'de> Deserialize<'de>>(
    forge: Forge,
    what: &'static str,
    req: reqwest::RequestBuilder,
) -> Result<T> {
    let bytes = send_raw(forge, what, req).await?;
    serde_json::from_slice(&bytes).map_err(|e| ForgeError::Decode {
        forge,
        what,
        message: e.to_string(),
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use crate::{ForgejoClient, GithubClient};

    #[test]
    fn clients_show_no_token() {
        let gh = GithubClient::new("https://api.github.com", "ghp_secret-value").unwrap();
        let fj = ForgejoClient::new("https://codeberg.org", "forgejo-secret-value").unwrap();
        for shown in [format!("{gh:?}"), format!("{fj:?}")] {
            assert!(!shown.contains("secret-value"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }
}
