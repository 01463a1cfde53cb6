//! What a dashboard request can fail with, as a small HTML page (or, for a page that needs a
//! login, a redirect to it). API errors keep their status and client-safe message. Every
//! error page of a visitor with a session carries the navigation ([`with_nav`]), however the
//! request failed: in a handler, reading its URL, or with a method the address does not take.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Dash;
use super::auth::Session;
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
                let doc = page(status, &message, None);
                let mut r = (status, super::html_headers(), doc).into_response();
                r.extensions_mut().insert(ErrorPage { message });
                r
            }
        }
    }
}

pub type DashResult<T> = Result<T, DashError>;

/// Marks a response as an error page, with what it says, so that [`with_nav`] can render it
/// again with the navigation once it knows the session.
#[derive(Clone)]
struct ErrorPage {
    message: String,
}

fn page(status: StatusCode, message: &str, session: Option<&Session>) -> String {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        r#"<h1>{}</h1><p class="error" role="alert">{}</p><p><a href="/">Back to the overview</a></p>"#,
        esc(title),
        esc(message)
    );
    html::page(title, Nav::None, session, None, &body)
}

/// `POST`-only addresses (and the others) asked with another method: a page, not an empty 405.
pub async fn method_not_allowed() -> DashError {
    DashError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this address does not take that method: use the buttons and links of the dashboard's pages",
    )
}

/// Middleware: an error page of a request with a valid session gets the navigation (and the
/// log-out button). The session is looked up only when the answer is an error page.
pub async fn with_nav(State(dash): State<Dash>, req: Request, next: Next) -> Response {
    let mut probe = Request::new(());
    *probe.uri_mut() = req.uri().clone();
    *probe.headers_mut() = req.headers().clone();
    let r = next.run(req).await;
    let Some(ErrorPage { message }) = r.extensions().get::<ErrorPage>().cloned() else {
        return r;
    };
    let (mut parts, ()) = probe.into_parts();
    let Ok(session) = Session::from_request_parts(&mut parts, &dash).await else {
        return r;
    };
    let (mut head, _) = r.into_parts();
    head.headers.remove(header::CONTENT_LENGTH);
    let doc = page(head.status, &message, Some(&session));
    Response::from_parts(head, Body::from(doc))
}
