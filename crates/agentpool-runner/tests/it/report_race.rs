//! A heartbeat that crosses the worker's own completion report: the server answers that the
//! lease is lost (the report ended it), and the worker must not take that for a lost lease.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentpool_core::TaskState;
use agentpool_core::protocol::HeartbeatReply;
use agentpool_runner::api::ApiError;
use async_trait::async_trait;
use tokio::sync::Notify;

use crate::worker::{Hooks, TOKEN, command, config, env, finished, hooked, start};

/// Holds each completion, after the server recorded it, until two more heartbeats went out:
/// the first carries the completed lease (the server says "lost"), and the second starts only
/// after the worker acted on the first reply.
struct SlowReport {
    beats: AtomicU64,
    beat: Notify,
    lost_replies: AtomicU64,
}

#[async_trait]
impl Hooks for SlowReport {
    fn after_heartbeat(&self, reply: &Result<HeartbeatReply, ApiError>) {
        if reply.as_ref().is_ok_and(|r| !r.lost.is_empty()) {
            self.lost_replies.fetch_add(1, Ordering::SeqCst);
        }
        self.beats.fetch_add(1, Ordering::SeqCst);
        self.beat.notify_waiters();
    }
    async fn after_complete(&self) {
        let target = self.beats.load(Ordering::SeqCst) + 2;
        loop {
            let beat = self.beat.notified();
            if self.beats.load(Ordering::SeqCst) >= target {
                break;
            }
            beat.await;
        }
    }
}

#[tokio::test]
async fn a_lease_ended_by_the_workers_own_report_is_not_abandoned() {
    let env = env().await;
    let mut spec = command(&env, "echo done");
    spec.push = false;
    let task = env.store.enqueue(spec).await.unwrap().task;
    let hooks = SlowReport {
        beats: AtomicU64::new(0),
        beat: Notify::new(),
        lost_replies: AtomicU64::new(0),
    };
    let slow = hooked(&env.store, Duration::from_secs(30), hooks).await;
    let mut cfg = config(&env, "w1", TOKEN);
    cfg.heartbeat_interval = Duration::from_millis(50);
    let w = start(cfg, slow.clone());
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;
    assert_eq!(done.task.state, TaskState::Succeeded);
    assert!(
        slow.hooks.lost_replies.load(Ordering::SeqCst) >= 1,
        "the server reported the completed lease as lost while the report was in flight"
    );
    assert_eq!(summary.succeeded, 1);
    assert_eq!(summary.abandoned, 0, "{summary:?}");
    assert_eq!(summary.lost, 0, "{summary:?}");
}
