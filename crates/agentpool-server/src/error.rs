//! The one API error type: every refusal the server makes becomes
//! `{ "error": { "code", "message", "details" } }` with the matching HTTP status.

use agentpool_core::ValidationError;
pub use agentpool_core::protocol::{ErrorBody, ErrorDetail};
use agentpool_store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error a handler returns. It carries what the client sees; the cause of an internal
/// error is logged by the `into_response` caller's middleware via the `internal` field, never
/// shown to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
    /// Seconds to advertise in `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Null,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {id} not found"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(1);
        e
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; the cause is in the server log",
        )
    }

    /// 422 listing every field that failed validation.
    /// `Ok` when `errors` is empty, else the refusal naming every one of them.
    pub fn unless_any(errors: Vec<ValidationError>) -> Result<(), Self> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Self::validation(errors))
        }
    }

    pub fn validation(errors: Vec<ValidationError>) -> Self {
        let message = match errors.as_slice() {
            [one] => format!("invalid field {}", one),
            many => format!("{} invalid fields", many.len()),
        };
        let details = serde_json::json!({ "fields": errors });
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message).with_details(details)
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![ValidationError::new(field, message)])
    }

    /// A query parameter that fails validation: 400 in the shape of a field's 422, as a
    /// malformed query is a bad request where a body's fields are unprocessable.
    pub fn invalid_param(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid_field(field, message).with_status(StatusCode::BAD_REQUEST)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::StaleLease(id) => Self::conflict(
                "stale_lease",
                format!("lease is stale: task {id} is no longer held with this token"),
            )
            .with_details(serde_json::json!({ "task_id": id })),
            StoreError::NotFound { what, id } => Self::not_found(what, id),
            StoreError::Conflict(m) => Self::conflict("conflict", m),
            StoreError::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            StoreError::Transition(t) => Self::conflict("invalid_transition", t.to_string()),
            // The cause may name tables or connection details: log it, show a generic text.
            other if other.is_unavailable() => {
                // Expected while the database restarts: the caller is told to retry (503).
                note_unavailable(&other);
                Self::unavailable("database_unavailable", "the database cannot be reached")
            }
            other => {
                tracing::error!(error = %other, "store error");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Log a 503 for a database that cannot be reached: the first in a minute as a warning with
/// its cause (a lone one would otherwise leave no trace), the rest at debug level — an outage
/// is said once by the maintenance loop, and a line per request would bury everything else.
fn note_unavailable(e: &StoreError) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let first = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let first = last.is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(60));
        if first {
            *last = Some(now);
        }
        first
    };
    if first {
        tracing::warn!(
            error = %e,
            "database unavailable; answered 503 (more within a minute are logged at debug level)"
        );
    } else {
        tracing::debug!(error = %e, "database unavailable; answered 503");
    }
}
