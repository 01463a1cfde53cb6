//! What a call to the server can end in, by meaning rather than by HTTP status: a caller
//! (the worker loop, the CLI) decides what to do from the variant alone.

use std::time::Duration;

use agentpool_core::ValidationError;
use agentpool_core::protocol::ErrorDetail;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lease is no longer the caller's (409 `stale_lease`): stop working on the task and
    /// report nothing more about it.
    #[error("lease is stale: {0}")]
    StaleLease(String),
    /// 404: the task, worker, project or credential does not exist (the server's message).
    #[error("{0}")]
    NotFound(String),
    /// The server could not be reached (`status` is `None`) or cannot answer now (408, 429,
    /// 5xx): the same call may succeed later.
    #[error("{message}")]
    Unavailable { status: Option<u16>, message: String },
    /// The server refused the request for good (auth, validation, conflict): its status, its
    /// error code, its message and, for a validation failure, each refused field's path.
    #[error("{message}{}", fields_suffix(.fields, .message))]
    Rejected {
        status: u16,
        code: String,
        message: String,
        fields: Vec<ValidationError>,
    },
    /// The server answered something that is not what the API promises.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The client cannot be built as configured (URL, CA certificate).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// The lease was stale: stop working on the task.
    pub fn is_stale_lease(&self) -> bool {
        matches!(self, Self::StaleLease(_))
    }

    /// The HTTP status the server answered with, when it answered.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        let code = match self {
            Self::StaleLease(_) => Some(409),
            Self::NotFound(_) => Some(404),
            Self::Unavailable { status, .. } => *status,
            Self::Rejected { status, .. } => Some(*status),
            Self::Decode(_) | Self::Config(_) => None,
        };
        code.and_then(|c| reqwest::StatusCode::from_u16(c).ok())
    }

    /// The error a non-2xx answer stands for. `detail` is the server's error body (or, for a
    /// body that is not one, a stand-in with the text).
    pub(crate) fn from_answer(status: u16, detail: ErrorDetail) -> Self {
        let fields = detail.fields();
        let message = detail.message;
        match status {
            409 if detail.code == "stale_lease" => Self::StaleLease(message),
            404 => Self::NotFound(message),
            408 | 429 | 500..=599 => Self::Unavailable {
                status: Some(status),
                message,
            },
            _ => Self::Rejected {
                status,
                code: detail.code,
                message,
                fields,
            },
        }
    }

    /// A transport failure talking to the server at `base`, of a call sent within `limit`.
    /// reqwest says "error sending request for url (…)"; the innermost cause ("Connection
    /// refused") is what a person needs. A call that ran out of time says which limit it
    /// reached: a server that accepted the connection and did not answer is not one that
    /// cannot be reached. The bearer token is a header, so it is never part of the text.
    pub(crate) fn transport(base: &str, e: reqwest::Error, limit: Limit) -> Self {
        if e.is_decode() {
            return Self::Decode(e.to_string());
        }
        if e.is_timeout() {
            let message = match limit.answer {
                _ if e.is_connect() => format!(
                    "cannot reach the agentpool server at {base}: no connection within {}",
                    secs(limit.connect)
                ),
                Some(answer) => format!(
                    "the agentpool server at {base} did not answer within {} (it is \
                     overloaded or stopped, or the network to it drops packets)",
                    secs(answer)
                ),
                None => format!("the agentpool server at {base} did not answer in time"),
            };
            return Self::Unavailable {
                status: None,
                message,
            };
        }
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        let hint = hint(&reason);
        Self::Unavailable {
            status: None,
            message: format!("cannot reach the agentpool server at {base}: {reason}{hint}"),
        }
    }
}

/// The time limits a call was sent with, for the error that says one was reached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    /// For the connection to be made.
    pub connect: Duration,
    /// For the whole answer; `None` for a stream.
    pub answer: Option<Duration>,
}

/// A limit as a person reads it: "30 s", "1.5 s".
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// What to do about a transport failure, where its cause says: rustls and hyper name the
/// fault in their own terms (`CaUsedAsEndEntity`, "invalid HTTP version parsed").
fn hint(reason: &str) -> &'static str {
    if reason.contains("CaUsedAsEndEntity") {
        // `openssl req -x509` makes a CA certificate unless told otherwise; curl accepts one
        // as a server's own, rustls (and so every agentpool client) does not.
        " (the server's certificate is a CA certificate, which is refused as a server's own: \
         serve a certificate that CA signed, or make the self-signed one with \
         basicConstraints CA:FALSE)"
    } else if reason.contains("not valid for name") {
        " (reach the server by a name its certificate lists, or reissue the certificate with \
         this host in its subjectAltName)"
    } else if reason.contains("certificate") {
        " (to trust the server's own CA, give its certificate: --ca-cert FILE or AGENTPOOL_CA_CERT)"
    } else if reason.contains("invalid HTTP version") {
        " (the server speaks https, it seems: use an https:// URL)"
    } else if reason.contains("InvalidContentType") {
        " (the server speaks plain http, it seems: use an http:// URL)"
    } else {
        ""
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The refused fields not already named in `message`, as ` (field: message; …)`. The server
/// names a lone field in its message in the same `field: message` form, so it is not repeated.
fn fields_suffix(fields: &[ValidationError], message: &str) -> String {
    let extra: Vec<String> = fields
        .iter()
        .map(ValidationError::to_string)
        .filter(|f| !message.contains(f.as_str()))
        .collect();
    if extra.is_empty() {
        String::new()
    } else {
        format!(" ({})", extra.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(message: &str, fields: &[(&str, &str)]) -> String {
        Error::Rejected {
            status: 422,
            code: "validation_failed".into(),
            message: message.into(),
            fields: fields.iter().map(|(f, m)| ValidationError::new(*f, *m)).collect(),
        }
        .to_string()
    }

    #[test]
    fn a_refused_field_is_named_once() {
        assert_eq!(
            refused("invalid field repo: not enabled", &[("repo", "not enabled")]),
            "invalid field repo: not enabled"
        );
        assert_eq!(
            refused(
                "2 invalid fields",
                &[("repo", "is empty"), ("prompt", "is empty")]
            ),
            "2 invalid fields (repo: is empty; prompt: is empty)"
        );
    }
}
