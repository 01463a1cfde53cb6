//! Maintenance: offline workers and retention.

use std::time::Duration;

use agentpool_core::{NewEvent, TaskResult, TaskState, WorkerStatus};

use crate::both;
use crate::harness::{Harness, TTL, cmd};

both!(silent_workers_go_offline, retention_deletes_only_what_is_past_it);

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

async fn retention_deletes_only_what_is_past_it(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let old = h.store.enqueue(cmd("old")).await.unwrap().task.id;
    let c = w.claim(1).await.remove(0);
    h.store
        .append_events(old, Some(c.lease), vec![NewEvent::log("stdout", "x")])
        .await
        .unwrap();
    h.store
        .complete(&w.id, c.lease, TaskResult::default())
        .await
        .unwrap();
    let old_canceled = h.store.enqueue(cmd("old canceled")).await.unwrap().task.id;
    h.store.cancel(old_canceled).await.unwrap();
    h.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let recent = h.store.enqueue(cmd("recent")).await.unwrap().task.id;
    let c = w.claim(1).await.remove(0);
    h.store
        .complete(&w.id, c.lease, TaskResult::default())
        .await
        .unwrap();
    let running = h.store.enqueue(cmd("running")).await.unwrap().task.id;
    assert_eq!(w.claim(1).await[0].task.id, running);
    let queued = h.store.enqueue(cmd("queued")).await.unwrap().task.id;
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
