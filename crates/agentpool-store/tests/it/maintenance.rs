//! Maintenance: offline workers and retention.

use std::time::Duration;

use agentpool_core::{TaskState, WorkerStatus};

use crate::both;
use crate::harness::{Harness, TTL, cmd};

both!(
    silent_workers_go_offline,
    workers_offline_past_retention_are_forgotten_unless_they_hold_a_task,
    retention_deletes_only_what_is_past_it,
    replicas_rescue_each_expired_lease_once,
);

/// Two replicas run the rescue at the same moment: every expired lease is rescued exactly once
/// (one `expired` attempt per task, counts adding up), none twice.
async fn replicas_rescue_each_expired_lease_once(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    h.submit_all((0..50).map(|i| cmd(&format!("t{i}")))).await;
    let claimed = w.claim(50).await;
    assert_eq!(claimed.len(), 50);
    h.clock.advance(TTL + Duration::from_secs(1));
    let replica = h.replica().await;
    let (a, b) = tokio::join!(h.store.requeue_expired(), replica.requeue_expired());
    assert_eq!(a.unwrap() + b.unwrap(), 50);
    for c in &claimed {
        let d = h.store.get_task(c.task.id).await.unwrap().unwrap();
        assert_eq!(d.task.state, TaskState::Queued);
        assert_eq!(d.attempts_detail.len(), 1, "rescued more than once");
        assert_eq!(
            d.attempts_detail[0].outcome,
            agentpool_core::AttemptOutcome::Expired
        );
    }
    let (a, b) = tokio::join!(
        h.store.purge_finished(Duration::ZERO),
        replica.purge_finished(Duration::ZERO)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 0, "nothing finished yet");
}

async fn silent_workers_go_offline(h: Harness) {
    let quiet = h.worker("quiet", &["command"], &[]).await;
    let alive = h.worker("alive", &["command"], &[]).await;
    h.clock.advance(Duration::from_secs(60));
    h.store.heartbeat(&alive.id, &[], TTL).await.unwrap();
    h.clock.advance(Duration::from_secs(40));
    assert_eq!(
        h.store
            .mark_workers_offline(Duration::from_secs(90))
            .await
            .unwrap(),
        1
    );
    let q = h.store.get_worker(&quiet.id).await.unwrap().unwrap();
    assert_eq!(q.status, WorkerStatus::Offline);
    let a = h.store.get_worker(&alive.id).await.unwrap().unwrap();
    assert_eq!(a.status, WorkerStatus::Idle);
    assert_eq!(
        h.store
            .mark_workers_offline(Duration::from_secs(90))
            .await
            .unwrap(),
        0
    );
    // A heartbeat brings it back.
    h.store.heartbeat(&quiet.id, &[], TTL).await.unwrap();
    let q = h.store.get_worker(&quiet.id).await.unwrap().unwrap();
    assert_eq!(q.status, WorkerStatus::Idle);
}

async fn workers_offline_past_retention_are_forgotten_unless_they_hold_a_task(h: Harness) {
    let gone = h.worker("gone", &["command"], &[]).await;
    let holding = h.worker("holding", &["command"], &[]).await;
    let alive = h.worker("alive", &["command"], &[]).await;
    h.submit(cmd("long")).await;
    assert_eq!(holding.claim(1).await.len(), 1);
    let day = Duration::from_secs(24 * 3600);
    h.clock.advance(Duration::from_secs(120));
    h.store.heartbeat(&alive.id, &[], TTL).await.unwrap();
    assert_eq!(
        h.store
            .mark_workers_offline(Duration::from_secs(90))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        h.store.forget_offline_workers(day).await.unwrap(),
        0,
        "offline, not for a day"
    );

    h.clock.advance(day);
    h.store.heartbeat(&alive.id, &[], TTL).await.unwrap();
    assert_eq!(h.store.forget_offline_workers(day).await.unwrap(), 1);
    let mut left: Vec<_> = h
        .store
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    left.sort();
    // The one still holding a lease stays until the rescue takes its task.
    assert_eq!(left, [alive.id.clone(), holding.id.clone()]);
    assert!(h.store.get_worker(&gone.id).await.unwrap().is_none());
    h.store.requeue_expired().await.unwrap();
    assert_eq!(h.store.forget_offline_workers(day).await.unwrap(), 1);

    // A forgotten worker that comes back is unknown, and registers again.
    assert!(matches!(
        h.store.heartbeat(&gone.id, &[], TTL).await,
        Err(agentpool_store::StoreError::NotFound { .. })
    ));
    h.worker("gone", &["command"], &[]).await;
    assert_eq!(h.store.list_workers().await.unwrap().len(), 2);
}

async fn retention_deletes_only_what_is_past_it(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let old = h.submit(cmd("old")).await;
    let c = w.claim(1).await.remove(0);
    w.log(c.lease, "x").await;
    w.complete(c.lease).await;
    let old_canceled = h.submit(cmd("old canceled")).await;
    h.store.cancel(old_canceled).await.unwrap();
    h.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let recent = h.submit(cmd("recent")).await;
    let c = w.claim(1).await.remove(0);
    w.complete(c.lease).await;
    let running = h.submit(cmd("running")).await;
    assert_eq!(w.claim(1).await[0].task.id, running);
    let queued = h.submit(cmd("queued")).await;
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(h.store.purge_finished(week).await.unwrap(), 2);
    assert!(h.store.get_task(old).await.unwrap().is_none());
    assert!(h.store.get_task(old_canceled).await.unwrap().is_none());
    assert!(h.store.list_events(old, 0, 10).await.unwrap().is_empty());
    let kept = h.store.get_task(recent).await.unwrap().unwrap();
    assert_eq!(kept.task.state, TaskState::Succeeded);
    assert_eq!(kept.attempts_detail.len(), 1);
    let counts = h.store.count_by_state().await.unwrap();
    assert_eq!(counts[&TaskState::Running], 1);
    assert_eq!(counts[&TaskState::Queued], 1);
    assert!(h.store.get_task(queued).await.unwrap().is_some());
    assert!(h.store.get_task(running).await.unwrap().is_some());
    assert_eq!(h.store.purge_finished(week).await.unwrap(), 0);
}
