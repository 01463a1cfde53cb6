//! Hostile input answers the same on both backends: NUL characters anywhere in a body, a path
//! or a query, and duplicate JSON keys are refused before they reach a handler or the store,
//! and a worker flooding a task with events is refused past a limit.

use axum::http::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::support::{assert_error, router_app};

both_backends!(
    nul_characters_are_refused_everywhere,
    duplicate_keys_are_refused,
    too_many_labels_are_refused,
    an_attempt_flooding_events_is_refused_past_the_limit,
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

/// A worker that floods a task with events (an old or a custom one: agentpool's own bounds its
/// output) is refused past the server's limit per attempt, with 413 `event_limit` and nothing of
/// the refused batch recorded; the task goes on, and its next attempt starts a new count.
async fn an_attempt_flooding_events_is_refused_past_the_limit(backend: agentpool_testkit::db::Backend) {
    let mut config = crate::support::test_config();
    config.max_events_per_attempt = 5;
    let Some(app) = crate::support::spawn_app_with(backend, config).await else {
        return;
    };
    let (sub, wrk, w, t, c) = crate::support::submit_and_claim(&app, "chatty").await;
    let lines = |n: usize| {
        (0..n)
            .map(|i| agentpool_core::NewEvent::log("stdout", format!("line {i}")))
            .collect()
    };
    let append = |lease: agentpool_core::LeaseToken, n: usize| {
        let (wrk, id) = (wrk.clone(), w.id.clone());
        async move { wrk.append_events(&id, t.id, lease, lines(n)).await }
    };
    append(c.lease.token, 3).await.expect("within the limit");
    match append(c.lease.token, 3).await {
        Err(agentpool_client::Error::Rejected {
            status,
            code,
            message,
            ..
        }) => {
            assert_eq!((status, code.as_str()), (413, "event_limit"));
            assert!(message.contains("already sent 3 events"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    append(c.lease.token, 2).await.expect("up to the limit");
    let page = sub.events(t.id, 0, 100).await.expect("events");
    let logged = page
        .events
        .iter()
        .filter(|e| e.data()["stream"] == "stdout")
        .count();
    assert_eq!(logged, 5, "the refused batch left nothing");

    // The attempt fails; the next one has a count of its own.
    crate::support::fail(&wrk, &w.id, &c, agentpool_core::ErrorClass::AgentError, "x")
        .await
        .expect("fail");
    app.clock.advance(std::time::Duration::from_secs(3600));
    let again = crate::support::claim_one(&wrk, &w.id).await;
    append(again.lease.token, 5)
        .await
        .expect("a new attempt, a new count");
}
