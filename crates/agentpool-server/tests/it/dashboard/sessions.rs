//! Sessions beyond the login form: the cookie's flags when the server serves TLS itself, where
//! a login may lead (never off the site), links from other sites that find the session, every
//! form refused from another site, forms of `agentpool up` that outlive a restart, and the
//! notices after a bulk action that only the server can write.

use agentpool_server::{AppState, ServerConfig, ServerKey};
use agentpool_testkit::db::{Backend, TestDb};
use axum::http::StatusCode;

use super::{SESSION_COOKIE, enc, enqueue_true, get, login, post_expecting, send, session};
use crate::both_backends;
use crate::support::{RouterApp, make_tokens, no_auth_config, open_store, router_app, test_config};

both_backends!(
    the_cookie_is_secure_when_the_server_serves_tls,
    a_login_never_leads_off_the_site,
    a_link_from_another_site_finds_the_session,
    every_form_is_refused_from_another_site_or_without_its_token,
    forms_of_a_server_without_login_outlive_its_restart,
    only_the_servers_own_notices_are_shown,
);

/// A router over a fresh database with `config`.
async fn router_with(backend: Backend, config: ServerConfig) -> Option<RouterApp> {
    let db = TestDb::new(backend).await?;
    let store = open_store(&db, &agentpool_store::Clock::system()).await;
    let tokens = make_tokens(store.as_ref()).await;
    let state = AppState::new(store.clone(), &config);
    Some(RouterApp {
        router: agentpool_server::router(state.clone(), 64 * 1024),
        state,
        store,
        tokens,
        _db: db,
    })
}

fn session_cookie(r: &super::Resp) -> String {
    r.cookies()
        .into_iter()
        .find(|c| c.starts_with(SESSION_COOKIE))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", r.headers))
}

async fn the_cookie_is_secure_when_the_server_serves_tls(backend: Backend) {
    let mut config = test_config();
    // The files are read when the server binds, not by the router.
    config.tls = Some(agentpool_server::tls::TlsFiles {
        cert: "cert.pem".into(),
        key: "key.pem".into(),
    });
    let Some(app) = router_with(backend, config).await else {
        return;
    };
    // No proxy header: the server itself is the TLS end.
    let r = login(&app, &app.tokens.admin, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let cookie = session_cookie(&r);
    assert!(cookie.contains("; Secure"), "{cookie}");
    let page = send(&app, "GET", "/login", None, &[], None).await;
    assert!(
        page.cookies().iter().all(|c| c.contains("; Secure")),
        "the login nonce too: {:?}",
        page.cookies()
    );
}

async fn a_login_never_leads_off_the_site(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let page = send(&app, "GET", "/login", None, &[], None).await;
    let nonce = page
        .cookies()
        .into_iter()
        .find_map(|c| {
            c.strip_prefix("agentpool_login=")
                .map(|v| v.split(';').next().unwrap_or("").to_string())
        })
        .expect("login nonce");
    for (next, to) in [
        ("/tasks?state=queued", "/tasks?state=queued"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\r\n/evil.example", "/"),
        ("/tasks\r\nSet-Cookie: x=y", "/"),
        ("https://evil.example/", "/"),
    ] {
        let form = format!(
            "nonce={nonce}&next={}&token={}",
            enc(next),
            enc(&app.tokens.admin)
        );
        let cookie = format!("agentpool_login={nonce}");
        let r = send(&app, "POST", "/login", Some(&cookie), &[], Some(&form)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{next:?}: {}", r.text);
        assert_eq!(r.location(), to, "{next:?}");
        // The login page's own form carries only a local path on.
        let page = get(&app, &format!("/login?next={}", enc(next)), None).await;
        assert!(
            page.text
                .contains(&format!(r#"name="next" value="{}""#, to.replace('&', "&amp;"))),
            "{next:?}: {}",
            page.text
        );
    }
    // A refused login goes back to the form with the (local) path, whatever was asked.
    let form = format!("nonce={nonce}&next={}&token=apt_nope", enc("/\t/evil.example"));
    let cookie = format!("agentpool_login={nonce}");
    let r = send(&app, "POST", "/login", Some(&cookie), &[], Some(&form)).await;
    assert_eq!(r.location(), "/login?error=invalid&next=%2F");
}

async fn a_link_from_another_site_finds_the_session(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let r = login(&app, &app.tokens.submitter, &[]).await;
    let cookie = session_cookie(&r);
    // Lax: sent along when a link on another site (a chat, a pull request) is followed.
    assert!(
        cookie.contains("SameSite=Lax") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let id = enqueue_true(app.store.as_ref()).await;
    let sub = session(&app.tokens.submitter);
    let link = format!("/tasks/{id}");
    let r = send(
        &app,
        "GET",
        &link,
        Some(&sub),
        &[("sec-fetch-site", "cross-site")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A page that already sent the person to the login (a stale tab) goes on at once.
    let r = get(&app, &format!("/login?next={}", enc(&link)), Some(&sub)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(r.location(), link);
    // Not with a session that is no longer valid, nor with a worker's token; nor when another
    // token was just tried and refused (the form says why).
    for (stale, uri) in [
        (session("apt_revoked"), "/login?next=%2Ftasks"),
        (session(&app.tokens.worker), "/login?next=%2Ftasks"),
        (sub.clone(), "/login?error=invalid&next=%2Ftasks"),
    ] {
        let r = get(&app, uri, Some(&stale)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.text.contains(r#"<form method="post" action="/login">"#));
    }
}

/// Every address that changes something, with a form it would take.
fn actions(task: &str, worker: &str, token: &str) -> Vec<(String, String)> {
    vec![
        (format!("/tasks/{task}/cancel"), String::new()),
        (format!("/tasks/{task}/retry"), String::new()),
        (format!("/tasks/{task}/follow-up"), "prompt=more".into()),
        ("/tasks/bulk".into(), format!("action=cancel&id={task}")),
        (format!("/workers/{worker}/drain"), String::new()),
        ("/schedules/nightly/run".into(), String::new()),
        ("/schedules/nightly/pause".into(), String::new()),
        ("/schedules/nightly/resume".into(), String::new()),
        (format!("/tokens/{token}/revoke"), String::new()),
        ("/logout".into(), String::new()),
    ]
}

async fn every_form_is_refused_from_another_site_or_without_its_token(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let id = enqueue_true(app.store.as_ref()).await;
    let w = super::register(app.store.as_ref(), "w-1").await;
    let tokens = app.store.list_tokens().await.expect("tokens");
    let token = &tokens.iter().find(|t| t.name == "sub").expect("sub").id;
    let admin = session(&app.tokens.admin);
    let csrf = get(&app, "/tasks", Some(&admin)).await.csrf();
    let before = app.store.get_task(id).await.expect("get").expect("task").task;
    for (uri, form) in actions(&id.to_string(), w.id.as_str(), token) {
        let with = |csrf: &str| {
            if form.is_empty() {
                format!("csrf={csrf}")
            } else {
                format!("csrf={csrf}&{form}")
            }
        };
        for (extra, csrf, why) in [
            (
                vec![("sec-fetch-site", "cross-site")],
                csrf.as_str(),
                "cross-site",
            ),
            (vec![("sec-fetch-site", "same-site")], csrf.as_str(), "same-site"),
            (
                vec![("origin", "https://evil.example")],
                csrf.as_str(),
                "cross-origin",
            ),
            (vec![], "forged", "without the token"),
        ] {
            let r = send(&app, "POST", &uri, Some(&admin), &extra, Some(&with(csrf))).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri} {why}: {}", r.text);
        }
    }
    let after = app.store.get_task(id).await.expect("get").expect("task").task;
    assert_eq!(after.state, before.state);
    let w = app.store.get_worker(&w.id).await.expect("get").expect("worker");
    assert_ne!(w.status, agentpool_core::WorkerStatus::Draining);
    assert!(
        !app.store
            .list_tokens()
            .await
            .expect("tokens")
            .iter()
            .any(|t| t.revoked)
    );
    // The login form, which has no session yet, is refused from another site too.
    let r = send(
        &app,
        "POST",
        "/login",
        Some("agentpool_login=n"),
        &[("sec-fetch-site", "cross-site")],
        Some(&format!("nonce=n&token={}", enc(&app.tokens.admin))),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

async fn forms_of_a_server_without_login_outlive_its_restart(backend: Backend) {
    let key = ServerKey::generate();
    let config = |key: &ServerKey| {
        let mut c = no_auth_config();
        c.server_key = Some(key.clone());
        c
    };
    let Some(mut app) = router_with(backend, config(&key)).await else {
        return;
    };
    let id = enqueue_true(app.store.as_ref()).await;
    let page = get(&app, &format!("/tasks/{id}"), None).await;
    let form = format!("csrf={}", page.csrf());
    assert!(!page.text.contains(&key.to_base64()));
    // The same database, another process: the open page's form works under the same key.
    let restart = |app: &mut RouterApp, key: &ServerKey| {
        let state = AppState::new(app.store.clone(), &config(key));
        app.router = agentpool_server::router(state, 64 * 1024);
    };
    let cancel = format!("/tasks/{id}/cancel");
    restart(&mut app, &ServerKey::generate());
    let r = send(&app, "POST", &cancel, None, &[], Some(&form)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "another key: {}", r.text);
    restart(&mut app, &key);
    let r = send(&app, "POST", &cancel, None, &[], Some(&form)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let t = app.store.get_task(id).await.expect("get").expect("task");
    assert_eq!(t.task.state, agentpool_core::TaskState::Canceled);
}

async fn only_the_servers_own_notices_are_shown(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = session(&app.tokens.admin);
    let csrf = get(&app, "/tasks", Some(&admin)).await.csrf();
    let (a, b) = (
        enqueue_true(app.store.as_ref()).await,
        enqueue_true(app.store.as_ref()).await,
    );
    let form = format!("csrf={csrf}&action=cancel&id={a}&id={b}&return=%2Ftasks%3Fstate%3Dqueued");
    let r = post_expecting(&app, "/tasks/bulk", &admin, &form, StatusCode::SEE_OTHER).await;
    let to = r.location().to_string();
    assert!(
        to.starts_with("/tasks?state=queued&done=cancel&ok=2&failed=0&at=") && to.contains("&sig="),
        "{to}"
    );
    let shown = get(&app, &to, Some(&admin)).await;
    assert!(shown.text.contains(">Canceled 2 tasks.</p>"), "{}", shown.text);

    // Made up, changed, or signed for someone else: nothing is said.
    let forged = [
        "/tasks?done=retry&ok=999999&failed=5".to_string(),
        to.replace("ok=2", "ok=999999"),
        to.replace("done=cancel", "done=retry"),
        to.replace("&sig=", "&sig=x"),
    ];
    for uri in &forged {
        let r = get(&app, uri, Some(&admin)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
        assert!(!r.text.contains(r#"class="notice""#), "{uri}: {}", r.text);
    }
    let other = get(&app, &to, Some(&session(&app.tokens.submitter))).await;
    assert!(!other.text.contains(r#"class="notice""#), "{}", other.text);
    // A malformed count is a page saying so, not a made-up notice.
    let r = get(&app, "/tasks?done=retry&ok=abc", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}
