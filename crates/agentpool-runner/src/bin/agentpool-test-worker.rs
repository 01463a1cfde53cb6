//! A worker process for crash tests: runs one worker against a server over HTTP so that a
//! test can kill it with SIGKILL mid-task. Configured by environment variables:
//! `AGENTPOOL_TEST_SERVER` (the server's URL; no auth), `AGENTPOOL_TEST_DIR` (work dir),
//! `AGENTPOOL_TEST_WORKER` (worker id), `AGENTPOOL_TEST_GIT_TOKEN`, and optionally
//! `AGENTPOOL_TEST_GIT` (the git program to run).

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::sync::Arc;
use std::time::Duration;

use agentpool_client::Client;
use agentpool_core::WorkerId;
use agentpool_runner::{GitCredentials, Secret, WorkerConfig, run_worker};
use tokio_util::sync::CancellationToken;

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let api = Client::new(&var("AGENTPOOL_TEST_SERVER")?, None).map_err(|e| e.to_string())?;
    let mut config = WorkerConfig::new(var("AGENTPOOL_TEST_DIR")?, 1);
    config.id = Some(WorkerId::parse(var("AGENTPOOL_TEST_WORKER")?).map_err(|e| e.to_string())?);
    config.heartbeat_interval = Duration::from_millis(200);
    config.claim_wait = Duration::from_millis(500);
    config.pipeline.git_credentials = Some(GitCredentials {
        username: "agentpool".into(),
        token: Secret::new(var("AGENTPOOL_TEST_GIT_TOKEN")?),
    });
    if let Some(git) = std::env::var_os("AGENTPOOL_TEST_GIT") {
        config.pipeline.git_program = git.into();
    }
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    run_worker(config, Arc::new(api), shutdown)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
