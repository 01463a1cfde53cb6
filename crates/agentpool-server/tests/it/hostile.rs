//! Hostile input answers the same on both backends: NUL characters anywhere in a body, a path
//! or a query, and duplicate JSON keys are refused before they reach a handler or the store.

use axum::http::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{assert_error, router_app};

both_backends!(
    nul_characters_are_refused_everywhere,
    duplicate_keys_are_refused,
    too_many_labels_are_refused
);

async fn nul_characters_are_refused_everywhere(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = Some(app.tokens.admin.as_str());
    let worker = Some(app.tokens.worker.as_str());
    let task = |field: &str| {
        let mut t = json!({"kind": "command", "repo": "https://example.com/r.git", "command": "true"});
        t[field] = json!("a\u{0}b");
        t
    };
    for field in [
        "idempotency_key",
        "command",
        "setup_command",
        "commit_message",
        "base_ref",
    ] {
        let r = app.json("POST", "/v1/tasks", admin, task(field)).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.body["error"]["details"]["fields"][0]["field"], field,
            "{}",
            r.text
        );
    }
    let batch = json!({"tasks": [task("command")]});
    assert_error(
        &app.json("POST", "/v1/tasks", admin, batch).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    // A NUL in a key is refused too.
    let key = json!({"kind": "command", "repo": "https://example.com/r.git", "command": "true",
        "labels": {"a\u{0}": "b"}});
    assert_error(
        &app.json("POST", "/v1/tasks", admin, key).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );

    for field in ["hostname", "version"] {
        let mut reg = json!({"hostname": "h", "version": "1", "agents": [{"name": "command"}], "slots": 1});
        reg[field] = json!("x\u{0}");
        let r = app.json("POST", "/v1/workers/register", worker, reg).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let reg = json!({"hostname": "h", "version": "1", "agents": [{"name": "co\u{0}mmand"}], "slots": 1});
    let r = app.json("POST", "/v1/workers/register", worker, reg).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);

    for (method, uri) in [
        ("DELETE", "/v1/credentials/%00"),
        ("GET", "/v1/projects/a%00b"),
        ("GET", "/v1/profiles/%00"),
    ] {
        assert_error(&app.call(method, uri, admin, None).await, StatusCode::BAD_REQUEST);
    }
    assert_error(
        &app.call("GET", "/v1/tasks?project=a%00", admin, None).await,
        StatusCode::BAD_REQUEST,
    );
    // Nothing was stored.
    let r = app.call("GET", "/v1/tasks", admin, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["tasks"].as_array().map(Vec::len), Some(0), "{}", r.text);
}

async fn duplicate_keys_are_refused(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = Some(app.tokens.admin.as_str());
    let top =
        br#"{"kind":"command","repo":"https://example.com/r.git","command":"true","command":"rm -rf /"}"#;
    let nested = br#"{"kind":"command","repo":"https://example.com/r.git","command":"true","labels":{"a":"1","a":"2"}}"#;
    for (body, field) in [(&top[..], "command"), (&nested[..], "labels.a")] {
        let r = app
            .call(
                "POST",
                "/v1/tasks",
                admin,
                Some(("application/json", body.to_vec())),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text.contains("more than once"), "{}", r.text);
        assert_eq!(
            r.body["error"]["details"]["fields"][0]["field"], field,
            "{}",
            r.text
        );
    }
}

async fn too_many_labels_are_refused(backend: agentpool_testkit::db::Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let admin = Some(app.tokens.admin.as_str());
    let labels: serde_json::Map<_, _> = (0..1000).map(|i| (format!("k{i}"), json!("v"))).collect();
    let body =
        json!({"kind": "command", "repo": "https://example.com/r.git", "command": "true", "labels": labels});
    let r = app.json("POST", "/v1/tasks", admin, body).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["error"]["details"]["fields"][0]["field"], "labels",
        "{}",
        r.text
    );
}
