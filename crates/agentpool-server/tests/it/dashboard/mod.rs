//! The dashboard's HTML routes through the real router: login and its cookie, sessions, CSRF
//! and origin checks on every action, roles, the loopback no-auth mode, escaping of hostile
//! prompts, branches and agent output on every page and in the live stream.

use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{AgentInfo, Labels, TaskSpec, TaskState};
use agentpool_server::dashboard::SESSION_COOKIE;
use agentpool_store::Store;
use agentpool_testkit::db::Backend;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::both_backends;

mod attempts;
mod browser;
mod cancel;
mod errors;
mod escaping;
mod lists;
mod notifications;
mod pages;
mod project_tokens;
mod projects;
mod schedules;
mod sessions;
mod tokens;
use crate::support::{RouterApp, no_auth_config, router_app};

both_backends!(
    login_sets_a_lax_httponly_cookie_and_refuses_bad_tokens,
    pages_need_a_session_and_the_api_keeps_its_own_auth,
    actions_need_the_csrf_token_and_our_own_origin,
    submitters_see_no_admin_actions_and_cannot_take_them,
    without_auth_everyone_is_admin_on_loopback_host_names_only,
);

pub(super) struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no csrf field in {}", self.text));
        let rest = &self.text[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').expect("end of value")].to_string()
    }
}

/// One request to the router as a browser on 127.0.0.1:7700 would send it.
pub(super) async fn send(
    app: &RouterApp,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
    form: Option<&str>,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:7700");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let req = match form {
        Some(f) => b
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(f.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request");
    let resp = app.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `GET uri`, with the session `cookie` when given.
pub(super) async fn get(app: &RouterApp, uri: &str, cookie: Option<&str>) -> Resp {
    send(app, "GET", uri, cookie, &[], None).await
}

/// `POST uri` of `form` in the session `cookie`.
pub(super) async fn post(app: &RouterApp, uri: &str, cookie: &str, form: &str) -> Resp {
    send(app, "POST", uri, Some(cookie), &[], Some(form)).await
}

/// `POST uri` of `form` in the session `cookie`, which must answer `status`.
pub(super) async fn post_expecting(
    app: &RouterApp,
    uri: &str,
    cookie: &str,
    form: &str,
    status: StatusCode,
) -> Resp {
    let r = post(app, uri, cookie, form).await;
    assert_eq!(r.status, status, "POST {uri}: {}", r.text);
    r
}

pub(super) fn session(token: &str) -> String {
    format!("{SESSION_COOKIE}={token}")
}

pub(super) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Log in through the form (nonce cookie + field), returning the response to the POST.
pub(super) async fn login(app: &RouterApp, token: &str, extra: &[(&str, &str)]) -> Resp {
    let page = send(app, "GET", "/login?next=/tasks", None, extra, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let nonce_cookie = page
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("agentpool_login="))
        .expect("login nonce cookie");
    let nonce = nonce_cookie["agentpool_login=".len()..]
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    let form = format!("nonce={nonce}&next=%2Ftasks&token={}", enc(token));
    send(
        app,
        "POST",
        "/login",
        Some(&format!("agentpool_login={nonce}")),
        extra,
        Some(&form),
    )
    .await
}

async fn login_sets_a_lax_httponly_cookie_and_refuses_bad_tokens(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let ok = login(&app, &app.tokens.admin, &[]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/tasks");
    let cookie = ok
        .cookies()
        .into_iter()
        .find(|c| c.starts_with(SESSION_COOKIE))
        .expect("session cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: no Secure flag ({cookie})"
    );
    let tls = login(&app, &app.tokens.submitter, &[("x-forwarded-proto", "https")]).await;
    let cookie = tls
        .cookies()
        .into_iter()
        .find(|c| c.starts_with(SESSION_COOKIE))
        .expect("session cookie");
    assert!(
        cookie.contains("; Secure"),
        "behind TLS the cookie is Secure: {cookie}"
    );

    for (token, error) in [
        ("apt_not-a-real-token", "invalid"),
        ("", "invalid"),
        (app.tokens.worker.as_str(), "worker"),
    ] {
        let r = login(&app, token, &[]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert!(
            r.location().starts_with(&format!("/login?error={error}")),
            "{}",
            r.location()
        );
        assert!(
            !r.cookies().iter().any(|c| c.starts_with(SESSION_COOKIE)),
            "no session for {token:?}"
        );
        let page = get(&app, r.location(), None).await;
        assert!(page.text.contains(r#"role="alert""#), "{}", page.text);
    }
    // A login form posted without the nonce its page set (another site's form) is refused.
    let forged = send(
        &app,
        "POST",
        "/login",
        None,
        &[],
        Some(&format!("token={}", enc(&app.tokens.admin))),
    )
    .await;
    assert!(forged.location().starts_with("/login?error=expired"));
    assert!(!forged.cookies().iter().any(|c| c.starts_with(SESSION_COOKIE)));
    // The token never appears in a page.
    let page = get(&app, "/tasks", Some(&session(&app.tokens.admin))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.text.contains(&app.tokens.admin));
}

async fn pages_need_a_session_and_the_api_keeps_its_own_auth(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let id = enqueue_true(app.store.as_ref()).await;
    for path in [
        "/",
        "/tasks?state=queued",
        &format!("/tasks/{id}"),
        "/workers",
        "/projects",
    ] {
        let r = get(&app, path, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            r.location().starts_with("/login?next=%2F"),
            "{path}: {}",
            r.location()
        );
        let bad = get(&app, path, Some(&session("apt_revoked"))).await;
        assert_eq!(bad.status, StatusCode::SEE_OTHER, "{path}");
        let ok = get(&app, path, Some(&session(&app.tokens.submitter))).await;
        assert_eq!(ok.status, StatusCode::OK, "{path}: {}", ok.text);
        assert!(
            ok.headers["content-type"]
                .to_str()
                .unwrap_or("")
                .starts_with("text/html")
        );
        let csp = ok.headers["content-security-policy"].to_str().unwrap_or("");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(ok.headers["x-frame-options"], "DENY");
    }
    // A live stream is not redirected (an EventSource cannot follow to a login page): 401.
    for path in [
        "/live/overview",
        "/live/tasks",
        "/live/workers",
        &format!("/live/tasks/{id}"),
    ] {
        let live = get(&app, path, None).await;
        assert_eq!(live.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // The cookie is no API credential: the JSON API still wants a bearer token.
    let api = get(&app, "/v1/tasks", Some(&session(&app.tokens.admin))).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    // Assets are public and cacheable.
    let css = get(&app, "/assets/app.css", None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers["cache-control"]
            .to_str()
            .unwrap_or("")
            .contains("immutable")
    );
}

async fn actions_need_the_csrf_token_and_our_own_origin(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let id = enqueue_true(app.store.as_ref()).await;
    let cookie = session(&app.tokens.admin);
    let page = get(&app, &format!("/tasks/{id}"), Some(&cookie)).await;
    let csrf = page.csrf();
    let cancel = format!("/tasks/{id}/cancel");
    let other = login(&app, &app.tokens.submitter, &[]).await;
    assert_eq!(other.status, StatusCode::SEE_OTHER);
    let sub_page = get(&app, "/tasks", Some(&session(&app.tokens.submitter))).await;
    let sub_csrf = sub_page.csrf();
    assert_ne!(csrf, sub_csrf, "CSRF tokens are per session");

    for (form, extra, why) in [
        (String::new(), vec![], "no token"),
        ("csrf=wrong".to_string(), vec![], "wrong token"),
        (format!("csrf={sub_csrf}"), vec![], "another session's token"),
        (
            format!("csrf={csrf}"),
            vec![("origin", "http://evil.example")],
            "cross-origin",
        ),
        (
            format!("csrf={csrf}"),
            vec![("sec-fetch-site", "cross-site")],
            "cross-site",
        ),
    ] {
        let r = send(&app, "POST", &cancel, Some(&cookie), &extra, Some(&form)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{why}: {}", r.text);
        let t = app.store.get_task(id).await.expect("get").expect("task");
        assert_eq!(t.task.state, TaskState::Queued, "{why} changed nothing");
    }
    // Without a session a form post is 401, not a redirect that could replay it.
    let anon = send(&app, "POST", &cancel, None, &[], Some(&format!("csrf={csrf}"))).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    let ok = send(
        &app,
        "POST",
        &cancel,
        Some(&cookie),
        &[
            ("origin", "http://127.0.0.1:7700"),
            ("sec-fetch-site", "same-origin"),
        ],
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.text);
    let t = app.store.get_task(id).await.expect("get").expect("task");
    assert_eq!(t.task.state, TaskState::Canceled);
    // Logging out needs the token too, and clears the cookie.
    post_expecting(&app, "/logout", &cookie, "csrf=nope", StatusCode::FORBIDDEN).await;
    let out = post_expecting(
        &app,
        "/logout",
        &cookie,
        &format!("csrf={csrf}"),
        StatusCode::SEE_OTHER,
    )
    .await;
    assert!(
        out.cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{SESSION_COOKIE}=;")) && c.contains("Max-Age=0"))
    );
}

/// Enqueue a command task (`true`) straight into the store; its id.
pub(super) async fn enqueue_true(store: &dyn Store) -> agentpool_core::TaskId {
    store
        .enqueue(TaskSpec::command("https://example.com/r.git", "true"))
        .await
        .expect("enqueue")
        .task
        .id
}

/// Claim up to `max` command tasks for `worker` straight from the store (a one-minute lease).
pub(super) async fn claim_commands(
    store: &dyn Store,
    worker: &agentpool_core::WorkerId,
    max: u32,
) -> Vec<agentpool_core::protocol::ClaimedTask> {
    let filter = agentpool_store::ClaimFilter {
        worker_id: worker.clone(),
        agents: vec!["command".into()],
        labels: Labels::new(),
        projects: Vec::new(),
        max,
        lease_ttl: std::time::Duration::from_secs(60),
    };
    store.claim(&filter).await.expect("claim")
}

pub(super) async fn register(store: &dyn Store, name: &str) -> agentpool_core::Worker {
    store
        .register_worker(WorkerRegistration {
            id: Some(agentpool_core::WorkerId::parse(name).expect("id")),
            hostname: "host<i>".into(),
            version: "1.0".into(),
            agents: vec![AgentInfo::unversioned("command")],
            labels: Labels::new(),
            slots: 2,
            projects: Vec::new(),
            fresh_start: false,
        })
        .await
        .expect("register")
}

async fn submitters_see_no_admin_actions_and_cannot_take_them(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let w = register(app.store.as_ref(), "w-1").await;
    let id = enqueue_true(app.store.as_ref()).await;
    let admin = session(&app.tokens.admin);
    let sub = session(&app.tokens.submitter);

    let a = get(&app, "/workers", Some(&admin)).await;
    assert!(a.text.contains(&format!("/workers/{}/drain", w.id)), "{}", a.text);
    let a = get(&app, "/tasks", Some(&admin)).await;
    assert!(a.text.contains("Cancel selected") && a.text.contains(r#"name="id""#));
    let a = get(&app, "/projects", Some(&admin)).await;
    assert!(a.text.contains("Credentials"));

    let s = get(&app, "/workers", Some(&sub)).await;
    assert_eq!(s.status, StatusCode::OK);
    assert!(
        !s.text.contains("/drain") && !s.text.contains(">Drain<"),
        "{}",
        s.text
    );
    let s = get(&app, "/tasks", Some(&sub)).await;
    assert!(!s.text.contains("Cancel selected") && !s.text.contains(r#"name="id""#));
    let csrf = s.csrf();
    let s = get(&app, "/projects", Some(&sub)).await;
    assert!(s.text.contains("shown to admins"));

    post_expecting(
        &app,
        &format!("/workers/{}/drain", w.id),
        &sub,
        &format!("csrf={csrf}"),
        StatusCode::FORBIDDEN,
    )
    .await;
    post_expecting(
        &app,
        "/tasks/bulk",
        &sub,
        &format!("csrf={csrf}&action=cancel&id={id}"),
        StatusCode::FORBIDDEN,
    )
    .await;
    let t = app.store.get_task(id).await.expect("get").expect("task");
    assert_eq!(t.task.state, TaskState::Queued);
    let w_now = app.store.get_worker(&w.id).await.expect("get").expect("worker");
    assert_ne!(w_now.status, agentpool_core::WorkerStatus::Draining);

    // The admin's bulk cancel and drain do work.
    let admin_csrf = get(&app, "/tasks", Some(&admin)).await.csrf();
    let bulk = post_expecting(
        &app,
        "/tasks/bulk",
        &admin,
        &format!("csrf={admin_csrf}&return=%2Ftasks&action=cancel&id={id}"),
        StatusCode::SEE_OTHER,
    )
    .await;
    assert!(bulk.location().starts_with("/tasks?done=cancel&ok=1&failed=0&"));
    let done = get(&app, bulk.location(), Some(&admin)).await;
    assert!(done.text.contains(">Canceled 1 task.</p>"), "{}", done.text);
    post_expecting(
        &app,
        &format!("/workers/{}/drain", w.id),
        &admin,
        &format!("csrf={admin_csrf}"),
        StatusCode::SEE_OTHER,
    )
    .await;
    let w_now = app.store.get_worker(&w.id).await.expect("get").expect("worker");
    assert_eq!(w_now.status, agentpool_core::WorkerStatus::Draining);
}

async fn without_auth_everyone_is_admin_on_loopback_host_names_only(backend: Backend) {
    let Some(db) = agentpool_testkit::db::TestDb::new(backend).await else {
        return;
    };
    let store = crate::support::open_store(&db, &agentpool_store::Clock::system()).await;
    let state = agentpool_server::AppState::new(store.clone(), &no_auth_config());
    let app = RouterApp {
        router: agentpool_server::router(state.clone(), 64 * 1024),
        state,
        store: store.clone(),
        tokens: crate::support::make_tokens(store.as_ref()).await,
        _db: db,
    };
    let id = store
        .enqueue(TaskSpec::command("https://example.com/r.git", "sleep 1"))
        .await
        .expect("enqueue")
        .task
        .id;
    let page = get(&app, &format!("/tasks/{id}"), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains(">admin<") && !page.text.contains("Log out"));
    let login = get(&app, "/login", None).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    // A rebinding page reaches the loopback server under its own host name: refused.
    let mut b = Request::builder().uri("/").header("host", "evil.example:7700");
    b = b.header("cookie", "x=y");
    let r = app
        .router
        .clone()
        .oneshot(b.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Actions still need the CSRF token of this server's pages.
    let cancel = format!("/tasks/{id}/cancel");
    let r = send(&app, "POST", &cancel, None, &[], Some("csrf=guess")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app,
        "POST",
        &cancel,
        None,
        &[],
        Some(&format!("csrf={}", page.csrf())),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let t = store.get_task(id).await.expect("get").expect("task");
    assert_eq!(t.task.state, TaskState::Canceled);
}
