//! The "work available" signal: a waiting claimer wakes on enqueue, not on a poll.

use std::time::Duration;

use crate::both;
use crate::harness::{Harness, cmd};

both!(
    wait_for_work_wakes_on_enqueue,
    unblocking_a_dependent_wakes_claimers,
    delayed_task_wakes_claimers_when_due,
);

async fn delayed_task_wakes_claimers_when_due(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let due = h.clock.now() + chrono::Duration::milliseconds(300);
    let id = h
        .submit(agentpool_core::TaskSpec {
            run_after: Some(due),
            ..cmd("later")
        })
        .await;
    let mut l = h.store.work_listener();
    assert!(w.claim(1).await.is_empty(), "not due yet");
    // Spurious wake-ups are allowed; what must come is one at or after the due time.
    let give_up = std::time::Instant::now() + WAIT;
    while h.clock.now() < due {
        let left = give_up.saturating_duration_since(std::time::Instant::now());
        assert!(l.wait(left).await, "no wake-up when the task came due");
    }
    assert_eq!(crate::harness::ids(&w.claim(1).await), vec![id]);
}

/// Long enough never to be hit on a healthy machine; a wake-up by polling would not come
/// within it either, since the store's fallback is the caller's own timeout.
const WAIT: Duration = Duration::from_secs(20);

async fn wait_for_work_wakes_on_enqueue(h: Harness) {
    let mut l = h.store.work_listener();
    let store = h.store.clone();
    let t0 = std::time::Instant::now();
    let waiter = tokio::spawn(async move { l.wait(WAIT).await });
    h.store.enqueue(cmd("x")).await.unwrap();
    assert!(waiter.await.unwrap(), "listener timed out instead of waking");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // The trait's convenience wait also wakes (subscribing at call time).
    let s2 = store.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let waiter = tokio::spawn(async move {
        let mut l = s2.work_listener();
        let _ = ready_tx.send(());
        l.wait(WAIT).await
    });
    ready_rx.await.unwrap();
    store.enqueue_batch(vec![cmd("a"), cmd("b")]).await.unwrap();
    assert!(waiter.await.unwrap());
    // Another replica on the same database hears it too (LISTEN/NOTIFY on PostgreSQL).
    if h.backend() == agentpool_testkit::db::Backend::Postgres {
        let replica = h.replica().await;
        let mut l = replica.work_listener();
        // Give the replica's listener connection time to LISTEN: wait for a signal from a
        // first enqueue, then measure a second one.
        h.store.enqueue(cmd("warm-up")).await.unwrap();
        assert!(l.wait(WAIT).await, "replica never heard the first enqueue");
        let t0 = std::time::Instant::now();
        h.store.enqueue(cmd("y")).await.unwrap();
        assert!(l.wait(WAIT).await, "replica did not wake on NOTIFY");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}

async fn unblocking_a_dependent_wakes_claimers(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let a = h.submit(cmd("a")).await;
    h.store
        .enqueue(agentpool_core::TaskSpec {
            depends_on: vec![a],
            ..cmd("b")
        })
        .await
        .unwrap();
    let c = w.claim(5).await;
    assert_eq!(c.len(), 1);
    let mut l = h.store.work_listener();
    w.complete(c[0].lease).await;
    assert!(l.wait(WAIT).await);
    assert_eq!(w.claim(5).await.len(), 1);
}
