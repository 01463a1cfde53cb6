//! Dashboard sessions: a login with an API token that becomes an HttpOnly, SameSite=Strict
//! cookie (Secure behind TLS), CSRF tokens on every form that changes something, and the
//! origin checks that back them. Without auth (`agentpool up` on loopback) every visitor is
//! admin, but only under a loopback host name, so a DNS-rebinding page cannot reach it.
//!
//! The session cookie holds the API token itself, so revoking the token ends the session
//! (within the token cache's few seconds) and several server replicas need no shared session
//! store. The CSRF token is derived from the session secret (the API token, or a per-process
//! secret without auth): a page on another site can neither read nor compute it.

use agentpool_core::TaskId;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Dash;
use super::error::{DashError, DashResult};
use super::html::{self, Nav, esc};
use crate::auth::{AuthMode, Caller, Role};

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
        format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(&self.csrf))
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

fn derive_csrf(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"agentpool dashboard csrf\0");
    h.update(secret);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
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

/// Whether the browser reached us over TLS (the server runs behind a TLS proxy).
fn is_https(headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    get("x-forwarded-proto").eq_ignore_ascii_case("https")
        || get("forwarded")
            .to_ascii_lowercase()
            .split([';', ','])
            .any(|p| p.trim() == "proto=https")
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// The host part of a `Host` header value or an origin's authority.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Without auth, answer only requests addressed to a loopback name: a DNS-rebinding page
/// (evil.example resolving to 127.0.0.1) sends its own name in `Host`.
fn check_loopback_host(headers: &HeaderMap) -> DashResult<()> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name)
        .unwrap_or("");
    let ok = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if ok {
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

/// Where a page's URL says to go after login: a local path only (no open redirect).
pub fn local_path(next: &str) -> &str {
    let ok = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if ok { next } else { "/" }
}

impl FromRequestParts<Dash> for Session {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Self, Self::Rejection> {
        let auth = &dash.app.inner.auth;
        if auth.mode() == AuthMode::NoAuthLoopback {
            check_loopback_host(&parts.headers)?;
            return Ok(Session {
                caller: Caller::loopback(),
                token: None,
                csrf: derive_csrf(&dash.secret[..]),
            });
        }
        let login = || DashError::Login {
            next: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty() && t.len() <= 512)
        else {
            return Err(login());
        };
        match auth.caller_of(dash.app.store().as_ref(), &token).await? {
            Some(c) if c.role == Role::Worker => Err(DashError::forbidden(
                "a worker token cannot use the dashboard; log in with an admin or submitter token",
            )),
            Some(caller) => Ok(Session {
                caller,
                csrf: derive_csrf(token.as_bytes()),
                token: Some(token),
            }),
            None => Err(login()),
        }
    }
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

/// An `application/x-www-form-urlencoded` body as ordered pairs (repeated names kept: the
/// task list posts one `id` per selected task).
pub struct Form(Vec<(String, String)>);

impl Form {
    async fn read(req: Request, dash: &Dash) -> DashResult<Self> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(DashError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the form as application/x-www-form-urlencoded",
            ));
        }
        let bytes = Bytes::from_request(req, dash)
            .await
            .map_err(|_| DashError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
        Ok(Self::parse(&bytes))
    }

    pub fn parse(body: &[u8]) -> Self {
        let pairs = body
            .split(|b| *b == b'&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = match p.iter().position(|b| *b == b'=') {
                    Some(i) => (&p[..i], &p[i + 1..]),
                    None => (p, &b""[..]),
                };
                (decode(k), decode(v))
            })
            .collect();
        Self(pairs)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decoding with `+` as space; invalid escapes are kept as written.
fn decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = std::str::from_utf8(&s[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters of the login page.
#[derive(serde::Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

/// `GET /login`: the token form. Without auth there is nothing to log in to.
pub async fn login_page(
    State(dash): State<Dash>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    let next = local_path(q.next.as_deref().unwrap_or("/")).to_string();
    if dash.app.inner.auth.mode() == AuthMode::NoAuthLoopback {
        return redirect(&next);
    }
    let mut nonce = [0u8; 18];
    rand::rng().fill_bytes(&mut nonce);
    let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
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
        esc(&next)
    ));
    let doc = html::page("Log in", Nav::None, None, None, &body);
    let mut r = (super::html_headers(), doc).into_response();
    if let Some(c) = set_cookie(LOGIN_COOKIE, &nonce, "/login", 3600, is_https(&headers)) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
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
            let secure = is_https(&headers);
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
pub async fn logout(headers: HeaderMap, _action: Action) -> Response {
    let mut r = redirect("/login");
    if let Some(c) = set_cookie(SESSION_COOKIE, "", "/", 0, is_https(&headers)) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// 303 to `to` (after a form post, so a reload does not post again).
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
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
    fn forms_decode_percent_plus_and_repeats() {
        let f = Form::parse(b"a=1&id=x&id=y%2Fz&msg=hello+world%21&bad=%zz&end=%4");
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.all("id").collect::<Vec<_>>(), ["x", "y/z"]);
        assert_eq!(f.get("msg"), Some("hello world!"));
        assert_eq!(f.get("bad"), Some("%zz"));
        assert_eq!(f.get("end"), Some("%4"));
    }

    #[test]
    fn next_is_a_local_path_only() {
        assert_eq!(local_path("/tasks?state=queued"), "/tasks?state=queued");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
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
