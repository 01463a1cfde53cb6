//! The web dashboard, served at `/`: server-rendered HTML pages (overview, tasks, one task,
//! workers, projects) that update live over server-sent events, a token login with an HttpOnly
//! session cookie, and CSRF-checked forms for every action (cancel, retry, follow-up, bulk
//! cancel/retry, drain). Assets are embedded in the binary; there is no build step.
//!
//! Every value from a task, an agent or a worker is escaped where it is written into HTML
//! ([`html::esc`]), and the Content-Security-Policy admits only this server's own script and
//! style, so markup that slipped through still could not run.

mod auth;
mod error;
mod events;
mod form;
mod html;
mod live;
mod overview;
mod projects;
mod request;
mod task;
mod tasks;
mod tokens;
mod workers;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::RngCore;

use crate::state::AppState;

pub use auth::{LOGIN_COOKIE, SESSION_COOKIE};

/// The dashboard's state: the server's, plus the secret that CSRF tokens are derived from when
/// there is no login (`agentpool up`).
#[derive(Clone)]
pub(crate) struct Dash {
    pub app: AppState,
    secret: Arc<[u8; 32]>,
}

/// The dashboard's routes, to merge into the server's router.
pub fn router(state: AppState) -> Router {
    // Derived from the server key, so that pages open across a restart of `agentpool up` can
    // still post their forms; without a key, one per process.
    let secret = state.inner.dashboard_secret.unwrap_or_else(|| {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        secret
    });
    let dash = Dash {
        app: state,
        secret: Arc::new(secret),
    };
    Router::new()
        .route("/", get(overview::page))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/tasks", get(tasks::page))
        .route("/tasks/bulk", post(tasks::bulk))
        .route("/tasks/{id}", get(task::page))
        .route("/tasks/{id}/cancel", post(task::cancel))
        .route("/tasks/{id}/retry", post(task::retry))
        .route("/tasks/{id}/follow-up", post(task::follow_up))
        .route("/workers", get(workers::page))
        .route("/workers/{id}/drain", post(workers::drain))
        .route("/projects", get(projects::page))
        .route("/schedules/{name}/run", post(projects::run))
        .route("/schedules/{name}/pause", post(projects::pause))
        .route("/schedules/{name}/resume", post(projects::resume))
        .route("/tokens/{id}/revoke", post(tokens::revoke))
        .route("/live/overview", get(live::overview))
        .route("/live/tasks", get(live::tasks))
        .route("/live/workers", get(live::workers))
        .route("/live/tasks/{id}", get(live::task))
        .route("/assets/{name}", get(asset))
        .method_not_allowed_fallback(error::method_not_allowed)
        // Forms are a few fields; a follow-up prompt is the largest.
        .layer(DefaultBodyLimit::max(256 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            dash.clone(),
            error::with_nav,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(dash)
}

/// The embedded assets. Their URLs carry [`assets::VERSION`], a hash of their content, so
/// browsers may cache them for good.
pub(crate) mod assets {
    pub const CSS: &str = include_str!("assets/app.css");
    pub const JS: &str = include_str!("assets/app.js");
    pub const ICON: &str = include_str!("assets/icon.svg");

    const fn fnv(mut h: u64, b: &[u8]) -> u64 {
        let mut i = 0;
        while i < b.len() {
            h ^= b[i] as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
            i += 1;
        }
        h
    }

    pub const VERSION: u64 = fnv(
        fnv(fnv(0xcbf2_9ce4_8422_2325, CSS.as_bytes()), JS.as_bytes()),
        ICON.as_bytes(),
    ) >> 16;
}

async fn asset(request::DashPath(name): request::DashPath<String>) -> Response {
    let (body, ct) = match name.as_str() {
        "app.css" => (assets::CSS, "text/css; charset=utf-8"),
        "app.js" => (assets::JS, "text/javascript; charset=utf-8"),
        "icon.svg" => (assets::ICON, "image/svg+xml"),
        _ => return error::DashError::not_found("no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn html_headers() -> [(header::HeaderName, &'static str); 1] {
    [(header::CONTENT_TYPE, "text/html; charset=utf-8")]
}

/// Only our own script, style and images; no framing; no sniffing; pages are not cached (they
/// show live state and, behind a login, should not outlive it in a shared cache).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The page for a path nothing serves outside `/v1` (a mistyped dashboard address): the API
/// router's fallback answers it through this, since a router has one fallback.
pub(crate) async fn no_such_page() -> Response {
    security_headers(error::DashError::not_found("there is no page at this address").into_response()).await
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// 403 page for an action the session's role may not take.
pub(crate) fn require(
    session: &auth::Session,
    roles: &[crate::auth::Role],
    what: &str,
) -> error::DashResult<()> {
    if session.can(roles) {
        Ok(())
    } else {
        Err(error::DashError::new(
            StatusCode::FORBIDDEN,
            format!("a {} token may not {what}", session.role()),
        ))
    }
}
