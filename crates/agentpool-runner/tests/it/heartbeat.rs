//! Heartbeats keep short leases alive when one beat gets no answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentpool_core::protocol::{
    AppendEventsRequest, CompleteRequest, FailOutcome, FailRequest, HeartbeatReply, HeartbeatRequest,
};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{TaskId, TaskState, Worker, WorkerId};
use agentpool_runner::api::{ApiError, ClaimedWork, WorkerApi};
use async_trait::async_trait;

use crate::worker::{TOKEN, api, config, enqueue_command, env, finished, gate, start, until, wait_log};

/// The real protocol, except that the first heartbeat never gets an answer: a request sent on
/// a keep-alive connection the server side no longer has.
struct FirstBeatHangs {
    inner: Arc<dyn WorkerApi>,
    beats: AtomicUsize,
}

#[async_trait]
impl WorkerApi for FirstBeatHangs {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError> {
        self.inner.register(reg).await
    }
    async fn heartbeat(&self, w: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError> {
        if self.beats.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        self.inner.heartbeat(w, req).await
    }
    async fn claim(&self, w: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        self.inner.claim(w, max, wait).await
    }
    async fn append_events(&self, w: &WorkerId, t: TaskId, req: AppendEventsRequest) -> Result<(), ApiError> {
        self.inner.append_events(w, t, req).await
    }
    async fn complete(&self, w: &WorkerId, t: TaskId, req: CompleteRequest) -> Result<(), ApiError> {
        self.inner.complete(w, t, req).await
    }
    async fn fail(&self, w: &WorkerId, t: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError> {
        self.inner.fail(w, t, req).await
    }
    async fn drain(&self, w: &WorkerId) -> Result<(), ApiError> {
        self.inner.drain(w).await
    }
    async fn deregister(&self, w: &WorkerId) -> Result<(), ApiError> {
        self.inner.deregister(w).await
    }
}

#[tokio::test]
async fn a_heartbeat_without_answer_does_not_hold_back_the_next_ones() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let task = enqueue_command(&env, &format!("echo running; {wait}")).await;
    let api = Arc::new(FirstBeatHangs {
        inner: api(&env.store, Duration::from_secs(3)).await,
        beats: AtomicUsize::new(0),
    });
    // 200 ms beats: the stuck one is given up after 1 s (the floor), well within the 3 s lease.
    let w = start(config(&env, "w1", TOKEN), api.clone());
    wait_log(&env.store, task.id, "running").await;
    until("heartbeats after the stuck one", async || {
        (api.beats.load(Ordering::SeqCst) >= 4).then_some(())
    })
    .await;
    std::fs::write(&gate, "go").unwrap();
    assert_eq!(
        finished(&env.store, task.id).await.task.state,
        TaskState::Succeeded
    );
    w.stop().await;
}
