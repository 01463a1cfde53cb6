//! A worker process for crash tests: runs one embedded worker against a SQLite store so that
//! a test can kill it with SIGKILL mid-task. Configured by environment variables:
//! `AGENTPOOL_TEST_DB` (sqlite URL), `AGENTPOOL_TEST_DIR` (work dir), `AGENTPOOL_TEST_WORKER`
//! (worker id), `AGENTPOOL_TEST_GIT_TOKEN`, `AGENTPOOL_TEST_LEASE_MS`.

use std::sync::Arc;
use std::time::Duration;

use agentpool_core::WorkerId;
use agentpool_runner::{GitCredentials, Secret, StoreWorkerApi, WorkerConfig, run_worker};
use tokio_util::sync::CancellationToken;

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let store = agentpool_store::open_store(&var("AGENTPOOL_TEST_DB")?)
        .await
        .map_err(|e| e.to_string())?;
    let lease_ms: u64 = var("AGENTPOOL_TEST_LEASE_MS")?.parse().map_err(|_| "bad lease")?;
    let mut config = WorkerConfig::new(var("AGENTPOOL_TEST_DIR")?, 1);
    config.id = Some(WorkerId::parse(var("AGENTPOOL_TEST_WORKER")?).map_err(|e| e.to_string())?);
    config.heartbeat_interval = Duration::from_millis(200);
    config.claim_wait = Duration::from_millis(500);
    config.pipeline.git_credentials = Some(GitCredentials {
        username: "agentpool".into(),
        token: Secret::new(var("AGENTPOOL_TEST_GIT_TOKEN")?),
    });
    let api = Arc::new(StoreWorkerApi::new(store, Duration::from_millis(lease_ms)));
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    run_worker(config, api, shutdown)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
