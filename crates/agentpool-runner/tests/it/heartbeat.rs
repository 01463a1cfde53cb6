//! Heartbeats keep short leases alive when one beat gets no answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentpool_core::TaskState;
use agentpool_core::protocol::HeartbeatRequest;
use agentpool_runner::ApiError;
use async_trait::async_trait;

use crate::worker::{
    Hooks, TOKEN, config, enqueue_command, env, finished, gate, hooked, start, until, wait_log,
};

/// The real protocol, except that the first heartbeat never gets an answer: a request sent on
/// a keep-alive connection the server side no longer has.
struct FirstBeatHangs {
    beats: AtomicUsize,
}

#[async_trait]
impl Hooks for FirstBeatHangs {
    async fn before_heartbeat(&self, _req: &HeartbeatRequest) -> Result<(), ApiError> {
        if self.beats.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_heartbeat_without_answer_does_not_hold_back_the_next_ones() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let task = enqueue_command(&env, &format!("echo running; {wait}")).await;
    let beats = FirstBeatHangs {
        beats: AtomicUsize::new(0),
    };
    let api = hooked(&env.store, Duration::from_secs(3), beats).await;
    // 200 ms beats: the stuck one is given up after 1 s (the floor), well within the 3 s lease.
    let w = start(config(&env, "w1", TOKEN), api.clone());
    wait_log(&env.store, task.id, "running").await;
    until("heartbeats after the stuck one", async || {
        (api.hooks.beats.load(Ordering::SeqCst) >= 4).then_some(())
    })
    .await;
    std::fs::write(&gate, "go").unwrap();
    assert_eq!(
        finished(&env.store, task.id).await.task.state,
        TaskState::Succeeded
    );
    w.stop().await;
}

/// A worker configured to beat every 10 minutes against a server whose leases last 2 s: it
/// learns the lease length from its claim and beats often enough, so the task, which runs past
/// several lease lengths, keeps its one attempt instead of being rescued from a live worker.
#[tokio::test]
async fn a_worker_beats_often_enough_for_the_server_s_leases() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let task = enqueue_command(&env, &format!("echo running; {wait}")).await;
    let api = crate::worker::api(&env.store, Duration::from_secs(2)).await;
    let mut cfg = config(&env, "w1", TOKEN);
    cfg.heartbeat_interval = Duration::from_secs(600);
    let w = start(cfg, api);
    wait_log(&env.store, task.id, "running").await;
    // Nothing to await: the point is that nothing happens while three lease lengths pass (the
    // rescue runs meanwhile) and the task still runs.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        env.store.requeue_expired().await.unwrap();
    }
    std::fs::write(&gate, "go").unwrap();
    let done = finished(&env.store, task.id).await;
    assert_eq!(done.task.state, TaskState::Succeeded);
    assert_eq!(done.attempts_detail.len(), 1, "{:?}", done.attempts_detail);
    w.stop().await;
}
