//! What a dashboard request can fail with, as a small HTML page (or, for a page that needs a
//! login, a redirect to it). API errors keep their status and client-safe message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::html::{self, Nav, esc};
use crate::error::ApiError;

#[derive(Debug)]
pub enum DashError {
    /// No valid session: pages redirect to the login, with where to come back to.
    Login { next: String },
    /// Anything else: a status and a sentence for the person.
    Page { status: StatusCode, message: String },
}

impl DashError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Page {
            status,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<ApiError> for DashError {
    fn from(e: ApiError) -> Self {
        // An ApiError's message is written for clients (internal causes are logged, not kept).
        Self::new(e.status, e.message)
    }
}

impl From<agentpool_store::StoreError> for DashError {
    fn from(e: agentpool_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        match self {
            Self::Login { next } => {
                let to = format!("/login?next={}", html::Url(&next));
                let mut r = StatusCode::SEE_OTHER.into_response();
                if let Ok(v) = HeaderValue::from_str(&to) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            Self::Page { status, message } => {
                let title = status.canonical_reason().unwrap_or("Error");
                let body = format!(
                    r#"<h1>{}</h1><p class="error" role="alert">{}</p><p><a href="/">Back to the overview</a></p>"#,
                    esc(title),
                    esc(&message)
                );
                let doc = html::page(title, Nav::None, None, None, &body);
                (status, super::html_headers(), doc).into_response()
            }
        }
    }
}

pub type DashResult<T> = Result<T, DashError>;
