//! `agentpool notifications`: a notification put with a signing credential (refusals told by
//! flag) answers a ping, is told by `agentpool up`'s own loop of a task that ends, signed; its
//! delivery is listed; it is listed without its URL and deleted.

use std::sync::mpsc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;

use crate::run::Pool;
use crate::{assert_exit, assert_stderr_contains, json, stderr, stdout};

/// An HTTP endpoint on a free port, in a thread of its own, that answers 204 and hands each
/// request's signature header and body to the test.
fn receiver() -> (String, mpsc::Receiver<(String, Bytes)>) {
    let (tx, rx) = mpsc::channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sig = headers
                .get("X-Agentpool-Signature-256")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            tx.send((sig, body)).unwrap();
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    (format!("{}/hook", crate::serve_in_thread(app)), rx)
}

#[test]
fn a_notification_is_told_of_a_task_that_ends_signed_and_lists_its_delivery() {
    let pool = Pool::start();
    let (url, got) = receiver();
    let mut put_secret = pool.env.cmd();
    put_secret
        .args(["--server", &pool.up.url, "credentials", "put", "hook-secret"])
        .args(["--from-env", "HOOK_SECRET"])
        .env("HOOK_SECRET", "s3cret-hook-key");
    assert_exit(&put_secret.output().unwrap(), 0);

    // Refusals name the flags.
    let o = pool.on_server(&[
        "notifications",
        "put",
        "ops",
        "--url",
        "ftp://x",
        "--on",
        "running",
    ]);
    assert_exit(&o, 2);
    assert_eq!(
        stderr(&o).trim(),
        "agentpool: notification refused: --url: must start with https:// or http://; \
         --on: running is not an end state: use succeeded, failed or canceled"
    );
    let o = pool.on_server(&["notifications", "put", "ops", "--url", &url, "--on", "sometimes"]);
    assert_exit(&o, 2);
    assert_stderr_contains(&o, "unknown task state \"sometimes\"");

    let o = pool.on_server(&[
        "notifications",
        "put",
        "ops",
        "--url",
        &url,
        "--on",
        "succeeded,failed",
        "--secret-credential",
        "hook-secret",
    ]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "notification ops stored; told of succeeded and failed tasks\n"
    );
    let o = pool.on_server(&["notifications", "list"]);
    assert_eq!(
        stdout(&o),
        "NAME  TOLD OF\nops   succeeded and failed tasks\n",
        "no URL in the list"
    );
    let o = pool.on_server(&["notifications", "show", "ops"]);
    assert_exit(&o, 0);
    let view = stdout(&o);
    let lines: Vec<&str> = view.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "name       ops",
            &format!("url        {url}"),
            "told of    succeeded and failed tasks",
            "format     json (the event, and the task as `GET /v1/tasks/{id}` shows it)",
            "signed     with credential hook-secret (X-Agentpool-Signature-256)",
        ],
        "{view}"
    );

    // A ping, answered at once.
    let o = pool.on_server(&["notifications", "test", "ops"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).starts_with("notification ops: ping delivered (HTTP 204 in "),
        "{}",
        stdout(&o)
    );
    let (sig, body) = got.recv_timeout(Duration::from_secs(10)).expect("the ping");
    assert!(
        agentpool_github::signature::verify(b"s3cret-hook-key", &body, &sig),
        "{sig}"
    );
    assert_eq!(&body[..], br#"{"event":"ping","notification":"ops"}"#);

    // A task that ends: `up`'s loop delivers it, signed, without being driven.
    let remote = pool.remote.to_str().unwrap();
    let o = pool.on_server(&["submit", "--repo", remote, "--command", "true", "--wait"]);
    assert_exit(&o, 0);
    let (sig, body) = got.recv_timeout(Duration::from_secs(60)).expect("a delivery");
    assert!(
        agentpool_github::signature::verify(b"s3cret-hook-key", &body, &sig),
        "{sig}"
    );
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["event"], "task.succeeded");
    assert_eq!(body["task"]["state"], "succeeded");
    assert_eq!(body["notification"], "ops");

    let o = pool.json_of(&["notifications", "deliveries", "ops"]);
    assert_exit(&o, 0);
    let deliveries = json(&o);
    assert_eq!(deliveries[0]["task_id"], body["task"]["id"]);
    assert_eq!(deliveries[0]["state"], "delivered");
    let o = pool.on_server(&["notifications", "deliveries", "ops"]);
    let list = stdout(&o);
    assert!(list.starts_with("ID "), "{list}");
    let row: Vec<&str> = list.lines().nth(1).unwrap().split_whitespace().collect();
    let task = body["task"]["id"].as_str().unwrap();
    assert_eq!(
        row[3..],
        ["task.succeeded", task, "delivered", "(1", "attempt)"],
        "{list}"
    );

    assert_exit(&pool.on_server(&["notifications", "delete", "ops"]), 0);
    let o = pool.on_server(&["notifications", "list"]);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o).trim(), "no notifications");
    let o = pool.on_server(&["notifications", "show", "ops"]);
    assert_exit(&o, 1);
}
