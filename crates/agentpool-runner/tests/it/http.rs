//! The worker over HTTP with a worker's bearer token (every other worker test runs without
//! auth), and a worker that loses the server keeps its task running and reports once the
//! server is back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentpool_client::Client;
use agentpool_server::{AuthMode, Role, RunningServer, ServerConfig, create_token, start_with_store};
use agentpool_store::Store;

use crate::worker::{
    Env, TOKEN, assert_succeeded, config, enqueue_command, env, finished, gate, start, succeeded_result,
    wait_log,
};

fn server_config(listen: SocketAddr) -> ServerConfig {
    let mut c = ServerConfig::new("sqlite::memory:", listen);
    c.auth = AuthMode::Tokens;
    c.lease_ttl = Duration::from_secs(30);
    c
}

async fn worker_token(store: &Arc<dyn Store>) -> String {
    create_token(&**store, Role::Worker, "worker")
        .await
        .unwrap()
        .plaintext
}

/// A server on a free loopback port over the test's store, and a worker client for it.
async fn serve(env: &Env) -> (RunningServer, Client) {
    let server = start_with_store(server_config("127.0.0.1:0".parse().unwrap()), env.store.clone())
        .await
        .unwrap();
    let api = Client::new(&server.url(), Some(worker_token(&env.store).await)).unwrap();
    (server, api)
}

#[tokio::test]
async fn a_worker_over_http_runs_a_command_task_to_a_pushed_commit() {
    let env = env().await;
    let (server, api) = serve(&env).await;
    let task = enqueue_command(&env, "echo over-http > http.txt").await;
    let w = start(config(&env, "http-worker", TOKEN), Arc::new(api));
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;
    let sha = succeeded_result(&done).commit_sha.unwrap();
    assert_eq!(
        env.server.branch_sha("app", &format!("agentpool/{}", task.id)),
        Some(sha)
    );
    assert_eq!(summary.succeeded, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_that_loses_the_server_keeps_running_and_reports_when_it_is_back() {
    let env = env().await;
    let (server, api) = serve(&env).await;
    let addr = server.addr;
    let (gate, wait) = gate(&env);
    let cmd = format!("echo ready; {wait}; echo after-outage");
    let task = enqueue_command(&env, &cmd).await;
    let w = start(config(&env, "http-worker", TOKEN), Arc::new(api));
    wait_log(&env.store, task.id, "ready").await;

    // The server goes away; the task finishes meanwhile and its report cannot be delivered.
    server.shutdown().await.unwrap();
    std::fs::write(&gate, "go").unwrap();

    // The server comes back on the same address (same store): the worker reports.
    let server = loop {
        match start_with_store(server_config(addr), env.store.clone()).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;
    assert_succeeded(&done);
    assert_eq!(done.attempts_detail.len(), 1, "the task ran once");
    assert_eq!(summary.succeeded, 1);
    let lines = crate::worker::log_lines(&crate::worker::events(&env.store, task.id).await);
    assert!(
        lines.contains(&"after-outage".to_string()),
        "events from the outage were kept: {lines:?}"
    );
    server.shutdown().await.unwrap();
}
