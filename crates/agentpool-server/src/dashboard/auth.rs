//! Dashboard sessions: a login with an API token that becomes an HttpOnly, SameSite=Lax
//! cookie (Secure over TLS), CSRF tokens on every form that changes something, and the origin
//! checks that back them. Without auth (`agentpool up` on loopback) every visitor is admin, but
//! only under a loopback host name, so a DNS-rebinding page cannot reach it.
//!
//! The session cookie holds the API token itself, so revoking the token ends the session
//! (within the token cache's few seconds) and several server replicas need no shared session
//! store. Lax, not Strict: a link to a task followed from a chat or a pull request carries the
//! session, while no other site's form post does (and every post must also carry the CSRF
//! token and come from our origin). The CSRF token, and the signature of what the server tells
//! a page after an action, are keyed by the session secret (the API token, or without auth a
//! secret derived from the server key): a page on another site can neither read nor compute
//! them.

use agentpool_core::TaskId;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use super::Dash;
use super::error::{DashError, DashResult};
pub use super::form::Form;
use super::html::{self, Nav, attr};
use super::request::DashQuery;
use crate::auth::{AuthMode, Caller, Role};
use crate::crypto::keyed_hash;

/// The session cookie: the API token the person logged in with.
pub const SESSION_COOKIE: &str = "agentpool_session";
/// A random value set by the login page and echoed by its form (double-submit): the login form
/// has no session yet to derive a CSRF token from.
pub const LOGIN_COOKIE: &str = "agentpool_login";
/// How long a login lasts in the browser.
const SESSION_MAX_AGE_SECS: u64 = 12 * 3600;

/// Who is looking at the dashboard, and the CSRF token their forms carry.
pub struct Session {
    /// Who the session's token is: its role, and its name for the log of who changed what.
    caller: Caller,
    /// The API token (the cookie value); `None` without auth.
    token: Option<String>,
    /// Keys this session's CSRF token and signatures; derived from the session secret.
    key: [u8; 32],
    csrf: String,
}

impl Session {
    /// Who acts, as the server log says: `ci (submitter) on the dashboard`.
    pub fn who(&self) -> String {
        format!("{} on the dashboard", self.caller)
    }

    pub fn role(&self) -> Role {
        self.caller.role
    }

    /// Who the session's token is, with the projects it reaches.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    pub fn is_admin(&self) -> bool {
        self.caller.role == Role::Admin
    }

    /// Whether an API endpoint admitting `roles` (admin always) admits this session.
    pub fn can(&self, roles: &[Role]) -> bool {
        self.is_admin() || roles.contains(&self.caller.role)
    }

    pub fn can_log_out(&self) -> bool {
        self.token.is_some()
    }

    /// The hidden field every state-changing form carries.
    pub fn csrf_field(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf" value="{}">"#,
            attr(&self.csrf)
        )
    }

    /// A signature of `what` that only this session's secret makes: for values the server
    /// puts in a URL and must trust when they come back.
    pub fn sign(&self, what: &str) -> String {
        let mut msg = b"sign\0".to_vec();
        msg.extend_from_slice(what.as_bytes());
        URL_SAFE_NO_PAD.encode(keyed_hash(&self.key, &msg))
    }

    /// Whether `sig` is this session's signature of `what`.
    pub fn signed(&self, what: &str, sig: &str) -> bool {
        same(&self.sign(what), sig)
    }

    fn new(caller: Caller, token: Option<String>, secret: &[u8]) -> Self {
        let key = keyed_hash(secret, b"agentpool dashboard session");
        let csrf = URL_SAFE_NO_PAD.encode(keyed_hash(&key, b"csrf"));
        Self {
            caller,
            token,
            key,
            csrf,
        }
    }

    /// Is the session still valid (its token not revoked)? Live streams ask this as they go.
    pub async fn still_valid(&self, dash: &Dash) -> bool {
        match &self.token {
            None => true,
            Some(t) => matches!(
                dash.app.inner.auth.role_of(dash.app.store().as_ref(), t).await,
                Ok(Some(r)) if r == self.caller.role
            ),
        }
    }
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Whether the browser reached us over TLS: the server terminates TLS itself, or it runs
/// behind a TLS proxy that says so.
fn is_https(dash: &Dash, headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    dash.app.inner.tls
        || get("x-forwarded-proto").eq_ignore_ascii_case("https")
        || get("forwarded")
            .to_ascii_lowercase()
            .split([';', ','])
            .any(|p| p.trim() == "proto=https")
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// Without auth, answer only requests addressed to a loopback name: a DNS-rebinding page
/// (evil.example resolving to 127.0.0.1) sends its own name in `Host`.
fn check_loopback_host(headers: &HeaderMap) -> DashResult<()> {
    if crate::loopback::addressed_to_loopback(headers) {
        Ok(())
    } else {
        Err(DashError::forbidden(
            "this dashboard runs without auth and answers only on a loopback address (127.0.0.1, localhost)",
        ))
    }
}

/// A state-changing request must come from our own pages: refused when the browser says it
/// comes from another site (`Sec-Fetch-Site`) or another origin (`Origin`).
fn check_same_origin(headers: &HeaderMap) -> DashResult<()> {
    let refuse = || DashError::forbidden("this action must be sent from the dashboard's own pages");
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refuse());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| refuse())?;
        let authority = origin
            .split_once("://")
            .map(|(_, a)| a.trim_end_matches('/'))
            .ok_or_else(refuse)?;
        // Behind a proxy that rewrites `Host`, the public name is in `X-Forwarded-Host`.
        let matches = |h: header::HeaderName| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|h| h == authority)
        };
        if !matches(header::HOST) && !matches(header::HeaderName::from_static("x-forwarded-host")) {
            return Err(refuse());
        }
    }
    Ok(())
}

/// Where a page's URL says to go after login: a local path only (no open redirect). A
/// browser reads `\` as `/` and drops tabs and line breaks, so `/\evil.example` and
/// `/<tab>/evil.example` would leave the site like `//evil.example`: refused, as is any other
/// control character.
pub fn local_path(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next[1..].starts_with('/')
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if ok { next } else { "/" }
}

impl FromRequestParts<Dash> for Session {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Self, Self::Rejection> {
        if dash.app.inner.auth.mode() == AuthMode::NoAuthLoopback {
            check_loopback_host(&parts.headers)?;
            return Ok(Session::new(Caller::loopback(), None, &dash.secret[..]));
        }
        let login = || DashError::Login {
            next: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty() && t.len() <= 512)
        else {
            return Err(login());
        };
        match cookie_caller(dash, &token).await? {
            Some(c) if c.role == Role::Worker => Err(DashError::forbidden(
                "a worker token cannot use the dashboard; log in with an admin or submitter token",
            )),
            Some(caller) => {
                let mut session = Session::new(caller, None, token.as_bytes());
                session.token = Some(token);
                Ok(session)
            }
            None => Err(login()),
        }
    }
}

/// Who the session cookie's token is, when it is a token at all.
async fn cookie_caller(dash: &Dash, token: &str) -> DashResult<Option<Caller>> {
    Ok(dash
        .app
        .inner
        .auth
        .caller_of(dash.app.store().as_ref(), token)
        .await?)
}

/// A form submission that changes something: a valid session, sent from our own origin, with
/// the session's CSRF token. Handlers that change state take this, never a bare form.
pub struct Action {
    pub session: Session,
    pub form: Form,
}

impl FromRequest<Dash> for Action {
    type Rejection = DashError;

    async fn from_request(req: Request, dash: &Dash) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = match Session::from_request_parts(&mut parts, dash).await {
            Ok(s) => s,
            // A form posted without a session cannot be replayed after a login redirect.
            Err(DashError::Login { .. }) => {
                return Err(DashError::new(
                    StatusCode::UNAUTHORIZED,
                    "your session has ended; log in again",
                ));
            }
            Err(e) => return Err(e),
        };
        check_same_origin(&parts.headers)?;
        let form = Form::read(Request::from_parts(parts, body), dash).await?;
        match form.get("csrf") {
            Some(t) if same(t, &session.csrf) => Ok(Action { session, form }),
            _ => Err(DashError::forbidden(
                "the form's CSRF token is missing or wrong; reload the page and try again",
            )),
        }
    }
}

/// Query parameters of the login page.
#[derive(serde::Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

/// `GET /login`: the token form. Without auth there is nothing to log in to, and with a valid
/// session (a link from another site that landed here) the page asked for is shown at once —
/// unless the form is back with an error: another token was tried and refused.
pub async fn login_page(
    State(dash): State<Dash>,
    headers: HeaderMap,
    DashQuery(q): DashQuery<LoginQuery>,
) -> DashResult<Response> {
    let next = local_path(q.next.as_deref().unwrap_or("/")).to_string();
    if dash.app.inner.auth.mode() == AuthMode::NoAuthLoopback {
        return Ok(redirect(&next));
    }
    if q.error.is_none()
        && let Some(token) = cookie(&headers, SESSION_COOKIE).filter(|t| !t.is_empty() && t.len() <= 512)
        && cookie_caller(&dash, &token)
            .await?
            .is_some_and(|c| c.role != Role::Worker)
    {
        return Ok(redirect(&next));
    }
    let mut nonce = [0u8; 18];
    rand::rng().fill_bytes(&mut nonce);
    let nonce = URL_SAFE_NO_PAD.encode(nonce);
    let error = match q.error.as_deref() {
        Some("invalid") => Some("That token is unknown, revoked or expired."),
        Some("worker") => Some("A worker token cannot use the dashboard."),
        Some("expired") => Some("The login form expired; try again."),
        _ => None,
    };
    let mut body = String::from(r#"<section class="login"><h1>Log in</h1>"#);
    if let Some(e) = error {
        body.push_str(&format!(
            r#"<p class="error" role="alert" id="login-error">{e}</p>"#
        ));
    }
    body.push_str(&format!(
        r#"<form method="post" action="/login">
<input type="hidden" name="nonce" value="{nonce}"><input type="hidden" name="next" value="{}">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus spellcheck="false">
<button type="submit">Log in</button></form>
<p class="hint">Use an admin or submitter token (<code>agentpool tokens create NAME --role submitter</code>).</p></section>"#,
        attr(&next)
    ));
    let doc = html::page("Log in", Nav::None, None, None, &body);
    let mut r = (super::html_headers(), doc).into_response();
    if let Some(c) = set_cookie(LOGIN_COOKIE, &nonce, "/login", 3600, is_https(&dash, &headers)) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(r)
}

/// `POST /login`: check the token; on success set the session cookie and go where asked.
pub async fn login(State(dash): State<Dash>, req: Request) -> DashResult<Response> {
    let headers = req.headers().clone();
    check_same_origin(&headers)?;
    let form = Form::read(req, &dash).await?;
    let next = local_path(form.get("next").unwrap_or("/")).to_string();
    let back = |error: &str| redirect(&format!("/login?error={error}&next={}", html::Url(&next)));
    let nonce_ok = matches!(
        (cookie(&headers, LOGIN_COOKIE), form.get("nonce")),
        (Some(c), Some(f)) if !c.is_empty() && same(&c, f)
    );
    if !nonce_ok {
        return Ok(back("expired"));
    }
    let token = form.get("token").unwrap_or("").trim().to_string();
    if token.is_empty() || token.len() > 512 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(back("invalid"));
    }
    let caller = dash
        .app
        .inner
        .auth
        .caller_of(dash.app.store().as_ref(), &token)
        .await
        .map_err(DashError::from)?;
    match caller {
        None => Ok(back("invalid")),
        Some(c) if c.role == Role::Worker => Ok(back("worker")),
        Some(_) => {
            let secure = is_https(&dash, &headers);
            let mut r = redirect(&next);
            if let Some(c) = set_cookie(SESSION_COOKIE, &token, "/", SESSION_MAX_AGE_SECS, secure) {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            if let Some(c) = set_cookie(LOGIN_COOKIE, "", "/login", 0, secure) {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            Ok(r)
        }
    }
}

/// `POST /logout`: forget the session cookie.
pub async fn logout(State(dash): State<Dash>, headers: HeaderMap, _action: Action) -> Response {
    let mut r = redirect("/login");
    if let Some(c) = set_cookie(SESSION_COOKIE, "", "/", 0, is_https(&dash, &headers)) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// 303 to the local path `to` (after a form post, so a reload does not post again); to `/`
/// when `to` is no local path. Always with a `Location`: characters a header cannot carry
/// (from a query a person typed) are percent-encoded.
pub fn redirect(to: &str) -> Response {
    let to = local_path(to);
    let mut r = StatusCode::SEE_OTHER.into_response();
    let mut location = String::with_capacity(to.len());
    for b in to.bytes() {
        if b.is_ascii_graphic() {
            location.push(char::from(b));
        } else {
            location.push_str(&format!("%{b:02X}"));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Task ids posted by a form (`id` fields); a malformed one is a 400.
pub fn task_ids(form: &Form) -> DashResult<Vec<TaskId>> {
    form.all("id")
        .map(|s| {
            s.parse::<TaskId>()
                .map_err(|_| DashError::bad_request(format!("{s:?} is not a task id")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_local_path_only() {
        assert_eq!(local_path("/tasks?state=queued"), "/tasks?state=queued");
        assert_eq!(local_path("/"), "/");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "\\/evil.example",
            "/\t/evil.example",
            "/\r\n/evil.example",
            "/\n/evil.example",
            "/tasks\r\nSet-Cookie: x=y",
            "/\u{85}/evil.example",
            "",
            "tasks",
        ] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn redirects_always_say_where_and_stay_local() {
        let at = |to: &str| {
            let r = redirect(to);
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            r.headers()[header::LOCATION].as_bytes().to_vec()
        };
        assert_eq!(at("/tasks/x"), b"/tasks/x");
        assert_eq!(at("/tasks\r\n/evil"), b"/");
        assert_eq!(at("//evil.example"), b"/");
        assert_eq!(at("/tasks?q=é x"), b"/tasks?q=%C3%A9%20x");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; agentpool_session=apt_x; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("apt_x"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn loopback_hosts_only_without_auth() {
        for (host, ok) in [
            ("127.0.0.1:7700", true),
            ("localhost:7700", true),
            ("[::1]:7700", true),
            ("evil.example:7700", false),
            ("127.0.0.1.evil.example", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(host));
            assert_eq!(check_loopback_host(&h).is_ok(), ok, "{host}");
        }
    }
}
