//! Router-level tests (`oneshot`, no socket): role refusals on every endpoint, malformed or
//! oversized input never producing a 500, and the status a submit answers.

use agentpool_server::Role;
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;
use serde_json::json;

use crate::support::{RouterApp, assert_error, router_app};

/// Every authenticated endpoint with a concrete path, a body that would be acceptable, and the
/// roles (besides admin) it admits.
fn endpoints() -> Vec<(&'static str, String, Option<serde_json::Value>, &'static [Role])> {
    let t = "0190d2a5-0000-7000-8000-000000000000";
    let sub: &'static [Role] = &[Role::Submitter];
    let wrk: &'static [Role] = &[Role::Worker];
    let both: &'static [Role] = &[Role::Submitter, Role::Worker];
    let admin: &'static [Role] = &[];
    let project = json!({"name": "p", "repo": "https://example.com/r.git"});
    vec![
        (
            "POST",
            "/v1/tasks".into(),
            Some(json!({"kind": "command", "repo": "https://e.com/r", "command": "true"})),
            sub,
        ),
        ("GET", "/v1/tasks".into(), None, sub),
        ("GET", format!("/v1/tasks/{t}"), None, sub),
        ("POST", format!("/v1/tasks/{t}/cancel"), None, sub),
        ("POST", format!("/v1/tasks/{t}/retry"), None, sub),
        ("POST", "/v1/tasks/cancel".into(), Some(json!({"ids": [t]})), sub),
        ("POST", "/v1/tasks/retry".into(), Some(json!({"ids": [t]})), sub),
        ("GET", format!("/v1/tasks/{t}/events"), None, sub),
        ("GET", format!("/v1/tasks/{t}/events/stream"), None, sub),
        (
            "POST",
            "/v1/workers/register".into(),
            Some(json!({"hostname": "h", "version": "1", "agents": [], "slots": 1})),
            wrk,
        ),
        ("GET", "/v1/workers".into(), None, both),
        ("GET", "/v1/queue/stats".into(), None, both),
        ("GET", "/v1/workers/w1".into(), None, both),
        ("DELETE", "/v1/workers/w1".into(), None, wrk),
        (
            "POST",
            "/v1/workers/w1/heartbeat".into(),
            Some(json!({"leases": []})),
            wrk,
        ),
        ("POST", "/v1/workers/w1/claim".into(), None, wrk),
        (
            "POST",
            format!("/v1/workers/w1/tasks/{t}/events"),
            Some(json!({"lease_token": 1, "events": []})),
            wrk,
        ),
        (
            "POST",
            format!("/v1/workers/w1/complete/{t}"),
            Some(json!({"lease_token": 1})),
            wrk,
        ),
        (
            "POST",
            "/v1/workers/w1/complete".into(),
            Some(json!({"items": [{"task_id": t, "lease_token": 1}]})),
            wrk,
        ),
        (
            "POST",
            format!("/v1/workers/w1/fail/{t}"),
            Some(json!({"lease_token": 1, "class": "AGENT_ERROR", "message": "x"})),
            wrk,
        ),
        ("POST", "/v1/workers/w1/drain".into(), None, wrk),
        ("GET", "/v1/projects".into(), None, sub),
        ("POST", "/v1/projects".into(), Some(project.clone()), sub),
        ("GET", "/v1/projects/p".into(), None, sub),
        ("PUT", "/v1/projects/p".into(), Some(project), sub),
        ("DELETE", "/v1/projects/p".into(), None, sub),
        (
            "POST",
            "/v1/projects/p/builds".into(),
            Some(json!({"prompt": "hi"})),
            sub,
        ),
        ("GET", "/v1/projects/p/builds".into(), None, sub),
        (
            "POST",
            "/v1/builds".into(),
            Some(
                json!({"project": {"name": "p", "repo": "https://example.com/r.git"}, "build": {"prompt": "hi"}}),
            ),
            sub,
        ),
        ("GET", "/v1/credentials".into(), None, admin),
        (
            "PUT",
            "/v1/credentials/c".into(),
            Some(json!({"value": "value-1"})),
            admin,
        ),
        ("DELETE", "/v1/credentials/c".into(), None, admin),
        ("GET", "/v1/profiles".into(), None, sub),
        ("GET", "/v1/profiles/p".into(), None, sub),
        ("PUT", "/v1/profiles/p".into(), Some(json!({"model": "m"})), admin),
        ("DELETE", "/v1/profiles/p".into(), None, admin),
        ("GET", "/v1/schedules".into(), None, sub),
        ("GET", "/v1/schedules/s".into(), None, sub),
        (
            "PUT",
            "/v1/schedules/s".into(),
            Some(
                json!({"cron": "@daily", "task": {"kind": "command", "repo": "https://example.com/r.git", "command": "make"}}),
            ),
            sub,
        ),
        ("POST", "/v1/schedules/s/run".into(), None, sub),
        ("POST", "/v1/schedules/s/pause".into(), None, sub),
        ("POST", "/v1/schedules/s/resume".into(), None, sub),
        ("DELETE", "/v1/schedules/s".into(), None, sub),
        ("GET", "/v1/notifications".into(), None, admin),
        ("GET", "/v1/notifications/n".into(), None, admin),
        (
            "PUT",
            "/v1/notifications/n".into(),
            Some(json!({"url": "https://hooks.example.com/agentpool"})),
            admin,
        ),
        ("GET", "/v1/notifications/n/deliveries".into(), None, admin),
        ("POST", "/v1/notifications/n/test".into(), None, admin),
        ("DELETE", "/v1/notifications/n".into(), None, admin),
        ("GET", "/v1/tokens".into(), None, admin),
        (
            "POST",
            "/v1/tokens".into(),
            Some(json!({"name": "t", "role": "worker"})),
            admin,
        ),
        ("DELETE", "/v1/tokens/t".into(), None, admin),
        ("POST", "/v1/tokens/t/rotate".into(), None, admin),
    ]
}

async fn send(
    app: &RouterApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Option<serde_json::Value>,
) -> crate::support::Resp {
    match body {
        Some(b) => app.json(method, path, token, b.clone()).await,
        None => app.call(method, path, token, None).await,
    }
}

async fn every_role_refusal_is_401_or_403_with_the_error_shape(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let table = endpoints();
    // The operations the document says take no token (`security: [{}]`; the others inherit
    // its bearer requirement) are exactly the probes, the metrics, the document itself and
    // the GitHub webhook, which authenticates by its signature (tests/it/github).
    let doc = app.call("GET", "/v1/openapi.json", None, None).await.body;
    let mut open: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let security = op.get("security").unwrap_or(&doc["security"]);
            let anonymous = security
                .as_array()
                .expect("a security list")
                .iter()
                .any(|r| r.as_object().is_some_and(|o| o.is_empty()));
            if anonymous {
                open.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    open.sort();
    assert_eq!(
        open,
        [
            "GET /healthz",
            "GET /metrics",
            "GET /readyz",
            "GET /v1/openapi.json",
            "POST /v1/webhooks/github"
        ]
    );
    // The table covers every route the document says takes a token.
    for (m, p) in agentpool_server::route_list() {
        if open.contains(&format!("{m} {p}")) {
            continue;
        }
        let covered = table
            .iter()
            .any(|(tm, tp, _, _)| *tm == m.as_str() && path_matches(p, tp));
        assert!(covered, "{m} {p} is missing from the role table");
    }
    for (method, path, body, allowed) in &table {
        let r = send(&app, method, path, None, body).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        let r = send(&app, method, path, Some("apt_not-a-real-token"), body).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        let r = app.call(method, path, Some(""), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        for role in [Role::Submitter, Role::Worker] {
            let r = send(&app, method, path, Some(app.tokens.of(role)), body).await;
            if allowed.contains(&role) {
                assert!(
                    r.status != StatusCode::UNAUTHORIZED && r.status != StatusCode::FORBIDDEN,
                    "{role} refused on {method} {path}: {}",
                    r.text
                );
            } else {
                assert_error(&r, StatusCode::FORBIDDEN);
                assert_eq!(r.body["error"]["code"], "forbidden");
            }
        }
        let r = send(&app, method, path, Some(&app.tokens.admin), body).await;
        assert!(
            r.status != StatusCode::UNAUTHORIZED && r.status != StatusCode::FORBIDDEN,
            "admin refused on {method} {path}: {}",
            r.text
        );
    }
}

/// `/v1/tasks/{id}` matches `/v1/tasks/0190…`.
fn path_matches(pattern: &str, path: &str) -> bool {
    let a: Vec<&str> = pattern.split('/').collect();
    let b: Vec<&str> = path.split('/').collect();
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.starts_with('{') || x == y)
}

async fn revoked_token_stops_working(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let t = agentpool_server::create_token(app.store.as_ref(), Role::Submitter, "temp")
        .await
        .expect("token");
    app.store.revoke_token(&t.id).await.expect("revoke");
    let r = app.call("GET", "/v1/tasks", Some(&t.plaintext), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
    // Stored hashed: the plaintext appears nowhere in the token table.
    let tokens = app.store.list_tokens().await.expect("list");
    let rec = tokens.iter().find(|r| r.id == t.id).expect("record");
    assert_eq!(rec.hash, agentpool_server::hash_token(&t.plaintext));
    assert_ne!(rec.hash, t.plaintext);
}

/// (method, path, token, (content type, body), expected status).
type Case<'a> = (&'a str, &'a str, &'a str, Option<(&'a str, Vec<u8>)>, StatusCode);

async fn malformed_and_oversized_inputs_never_500(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let sub = app.tokens.submitter.clone();
    let wrk = app.tokens.worker.clone();
    let ct = "application/json";
    let big = vec![b' '; 70 * 1024]; // the router app's limit is 64 KiB
    let mut big_json = b"{\"kind\":\"command\",\"repo\":\"https://e.com/r\",\"command\":\"".to_vec();
    big_json.extend(std::iter::repeat_n(b'a', 80 * 1024));
    big_json.extend(b"\"}");
    // JSON bodies a submitter posts to /v1/tasks, by the status each must get: unparseable
    // (400), well-formed but invalid (422), over the body limit (413).
    let task_bodies: &[(StatusCode, &[&[u8]])] = &[
        (StatusCode::BAD_REQUEST, &[b"{not json", b"", b"[1,2"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &[
                br#"{"kind":"command","repo":"https://e.com/r","command":"x","bogus":1}"#,
                br#"{"kind":"nope"}"#,
                br#"{"priority":"high"}"#,
                br#"{"priority":99999999999999999999}"#,
                br#"{"tasks":[{"kind":"command","oops":true}]}"#,
                br#"{"tasks":[]}"#,
                br#"{"repo":"ext::sh -c evil","prompt":"x"}"#,
                br#"{"repo":"https://e.com/r","prompt":"x","branch":"-rf"}"#,
                b"null",
                b"\"str\"",
                b"[1,2]",
                b"[]",
            ],
        ),
        (StatusCode::PAYLOAD_TOO_LARGE, &[&big, &big_json]),
    ];
    // Task paths and queries a submitter GETs that are refused as bad requests.
    let bad_task_gets = [
        "/v1/tasks/not-a-uuid",
        "/v1/tasks/not-a-uuid/events",
        "/v1/tasks?state=bogus",
        "/v1/tasks?limit=-1",
        "/v1/tasks?limit=100000",
        "/v1/tasks?unknown=1",
        "/v1/tasks?cursor=zzz",
        "/v1/tasks?label=novalue",
        "/v1/tasks?agent=no%20such",
    ];
    let mut cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/tasks",
            &sub,
            Some(("text/plain", br#"{"prompt":"x"}"#.to_vec())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        ("GET", "/v1/nothing-here", &sub, None, StatusCode::NOT_FOUND),
        ("PATCH", "/v1/tasks", &sub, None, StatusCode::METHOD_NOT_ALLOWED),
        (
            "POST",
            "/v1/workers/bad%2Fid/claim",
            &wrk,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/workers/w1/claim?wait=999",
            &wrk,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/v1/workers/w1/claim",
            &wrk,
            Some((ct, big.clone())),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "POST",
            "/v1/workers/w1/claim",
            &wrk,
            Some(("text/plain", b"max=1".to_vec())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "POST",
            "/v1/workers/w1/heartbeat",
            &wrk,
            Some((ct, big.clone())),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "POST",
            "/v1/workers/w1/claim?max=0",
            &wrk,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/v1/workers/w1/claim",
            &wrk,
            Some((ct, br#"{"max":1,"extra":2}"#.to_vec())),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/v1/workers/register",
            &wrk,
            Some((
                ct,
                br#"{"hostname":"h","version":"1","agents":[],"slots":0}"#.to_vec(),
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/v1/workers/register",
            &wrk,
            Some((
                ct,
                br#"{"id":"bad id!","hostname":"h","version":"1","agents":[],"slots":1}"#.to_vec(),
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/v1/workers/w1/heartbeat",
            &wrk,
            Some((ct, br#"{"leases":[{"task_id":"x","token":1}]}"#.to_vec())),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/v1/workers/w1/fail/0190d2a5-0000-7000-8000-000000000000",
            &wrk,
            Some((
                ct,
                br#"{"lease_token":1,"class":"NOT_A_CLASS","message":"m"}"#.to_vec(),
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/v1/projects",
            &sub,
            Some((ct, br#"{"name":"bad name","repo":"https://e.com/r"}"#.to_vec())),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/v1/projects/a",
            &sub,
            Some((ct, br#"{"name":"b","repo":"https://e.com/r"}"#.to_vec())),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/v1/projects/none/builds",
            &sub,
            Some((ct, br#"{"prompt":"x"}"#.to_vec())),
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/v1/tasks/0190d2a5-0000-7000-8000-000000000000/events/stream",
            &sub,
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    cases.extend(bad_task_gets.map(|path| ("GET", path, sub.as_str(), None, StatusCode::BAD_REQUEST)));
    for (want, bodies) in task_bodies {
        for body in *bodies {
            cases.push(("POST", "/v1/tasks", &sub, Some((ct, body.to_vec())), *want));
        }
    }
    for (method, path, token, body, want) in cases {
        let r = app.call(method, path, Some(token), body).await;
        assert_error(&r, want);
        assert!(
            r.content_type.starts_with("application/json"),
            "{method} {path}: {}",
            r.content_type
        );
    }
    // A body that is no object is refused as such, not read by position into a task (where
    // `[]` was a task with every field left out, and `[1,2]` a syntax error).
    for body in [&b"[]"[..], b"[1,2]", b"[{\"kind\":\"command\"}]"] {
        let r = app
            .call("POST", "/v1/tasks", Some(&sub), Some((ct, body.to_vec())))
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["error"]["code"], "invalid_body");
        assert_eq!(r.body["error"]["message"], "invalid body: expected a JSON object");
    }
    // Field-level messages name the fields.
    let r = app
        .json(
            "POST",
            "/v1/tasks",
            Some(&sub),
            json!({"kind": "agent", "repo": "https://e.com/r", "priority": 5000}),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<String> = r.body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str().map(String::from))
        .collect();
    assert!(
        fields.contains(&"prompt".to_string()) && fields.contains(&"priority".to_string()),
        "{fields:?}"
    );
    let r = app
        .json("POST", "/v1/tasks", Some(&sub), json!({"tasks": [{"kind": "command", "repo": "https://e.com/r", "command": "ok"}, {"kind": "command", "repo": "https://e.com/r"}]}))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["error"]["details"]["fields"][0]["field"],
        "tasks[1].command"
    );
    // Nothing of the refused batch was enqueued (all or none).
    let r = app.call("GET", "/v1/tasks", Some(&sub), None).await;
    assert_eq!(r.body["tasks"].as_array().map(Vec::len), Some(0));
    let r = app
        .json(
            "POST",
            "/v1/tasks",
            Some(&sub),
            json!({"kind": "command", "repo": "https://e.com/r", "command": "x", "labels": {"a": 1}}),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["error"]["details"]["fields"][0]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("labels")),
        "{}",
        r.text
    );
}

async fn draining_server_refuses_claims_and_is_not_ready(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let r = app.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .json(
            "POST",
            "/v1/workers/register",
            Some(&app.tokens.worker),
            json!({"id": "w1", "hostname": "h", "version": "1", "agents": [{"name": "command"}], "slots": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    app.state.drain();
    let r = app
        .call("POST", "/v1/workers/w1/claim", Some(&app.tokens.worker), None)
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["error"]["code"], "draining");
    let r = app.call("GET", "/readyz", None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE);
    let r = app.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// A submit answers 201 when it creates a task and 200 when idempotency keys matched earlier
/// tasks, one task or a batch of them; a batch that creates any is 201.
async fn a_submit_is_201_when_it_creates_and_200_when_every_key_matched(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let task = |key: &str| json!({"kind": "command", "repo": "https://e.com/r", "command": "true", "idempotency_key": key});
    let submit = async |body: serde_json::Value| {
        let r = app.json("POST", "/v1/tasks", Some(&app.tokens.admin), body).await;
        (r.status, r.body)
    };
    let (status, first) = submit(task("a")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = submit(task("a")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["created"].as_bool(), &again["task"]["id"]),
        (Some(false), &first["task"]["id"])
    );
    let (status, batch) = submit(json!({"tasks": [task("a"), task("b")]})).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let (status, batch) = submit(json!({"tasks": [task("b"), task("a")]})).await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let created: Vec<_> = batch["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["created"].clone())
        .collect();
    assert_eq!(created, [json!(false), json!(false)]);
}

crate::both_backends!(
    a_submit_is_201_when_it_creates_and_200_when_every_key_matched,
    every_role_refusal_is_401_or_403_with_the_error_shape,
    revoked_token_stops_working,
    malformed_and_oversized_inputs_never_500,
    draining_server_refuses_claims_and_is_not_ready,
);
