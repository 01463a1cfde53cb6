//! The dashboard's errors are pages: a wrong method, a query or path that does not parse, a
//! task that is not there — each an HTML page with a fitting status and, for a visitor with a
//! session, the navigation. The API's errors stay JSON.

use agentpool_testkit::db::Backend;
use axum::http::StatusCode;

use super::{enqueue_true, get, send, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(dashboard_errors_are_pages_with_the_navigation);

async fn dashboard_errors_are_pages_with_the_navigation(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let id = enqueue_true(app.store.as_ref()).await;
    let admin = session(&app.tokens.admin);
    let missing = agentpool_core::TaskId::new();
    for (method, uri, status) in [
        ("GET", "/logout".to_string(), StatusCode::METHOD_NOT_ALLOWED),
        (
            "GET",
            format!("/tasks/{id}/cancel"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        ("DELETE", "/tasks".to_string(), StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/tasks?ok=abc".to_string(), StatusCode::BAD_REQUEST),
        (
            "GET",
            "/tasks?state=sleeping".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            format!("/live/tasks/{id}?after=abc"),
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/tasks/not-a-uuid".to_string(), StatusCode::NOT_FOUND),
        (
            "POST",
            "/tasks/not-a-uuid/cancel".to_string(),
            StatusCode::NOT_FOUND,
        ),
        ("GET", "/live/tasks/not-a-uuid".to_string(), StatusCode::NOT_FOUND),
        ("GET", format!("/tasks/{missing}"), StatusCode::NOT_FOUND),
        ("GET", "/assets/nope.css".to_string(), StatusCode::NOT_FOUND),
    ] {
        let r = send(&app, method, &uri, Some(&admin), &[], None).await;
        let what = format!("{method} {uri}");
        assert_eq!(r.status, status, "{what}: {}", r.text);
        let ct = r.headers["content-type"].to_str().unwrap_or("");
        assert!(ct.starts_with("text/html"), "{what}: {ct}");
        assert!(
            r.text.starts_with("<!doctype html>") && r.text.contains(r#"class="error" role="alert""#),
            "{what}: {}",
            r.text
        );
        assert!(
            r.text.contains(r#"<nav aria-label="Main">"#) && r.text.contains("Log out"),
            "{what} has no navigation: {}",
            r.text
        );
        assert!(!r.text.contains("\"error\":"), "{what}: {}", r.text);
    }
    // An address nothing serves is a page too; under /v1 it is the API's JSON.
    let r = get(&app, "/nothing-here", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let ct = r.headers["content-type"].to_str().unwrap_or("");
    assert!(
        ct.starts_with("text/html") && r.text.contains(r#"role="alert""#),
        "{ct}: {}",
        r.text
    );
    let r = get(&app, "/v1/nothing-here", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text.contains(r#""code":"not_found""#), "{}", r.text);
    // Without a session: a page without the navigation, or first the login.
    let r = get(&app, "/logout", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.text.contains(r#"role="alert""#) && !r.text.contains(r#"<nav aria-label="Main">"#));
    let r = get(&app, "/tasks/not-a-uuid", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert!(r.location().starts_with("/login?next="), "{}", r.location());
    // A form refused for its CSRF token says so on a page with the navigation.
    let r = send(
        &app,
        "POST",
        &format!("/tasks/{id}/cancel"),
        Some(&admin),
        &[],
        Some("csrf=x"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains(r#"<nav aria-label="Main">"#), "{}", r.text);

    // The API keeps its JSON errors.
    let token = Some(app.tokens.admin.as_str());
    for (method, uri, status) in [
        ("GET", "/v1/tasks/not-a-uuid", StatusCode::BAD_REQUEST),
        ("GET", "/v1/tasks?limit=abc", StatusCode::BAD_REQUEST),
        ("DELETE", "/v1/tasks", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let r = app.call(method, uri, token, None).await;
        assert_eq!(r.status, status, "{method} {uri}: {}", r.text);
        assert!(
            r.content_type.starts_with("application/json"),
            "{}",
            r.content_type
        );
        assert!(r.body["error"]["code"].is_string(), "{}", r.text);
    }
}
