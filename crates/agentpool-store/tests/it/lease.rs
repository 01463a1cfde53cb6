//! Leases and fencing: expiry and rescue, heartbeats, and refusal of stale tokens.

use std::time::Duration;

use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{AttemptOutcome, ErrorClass, NewEvent, TaskResult, TaskState};
use agentpool_store::StoreError;

use crate::both;
use crate::harness::{Harness, TTL, cmd, failure};

both!(
    expired_lease_is_reclaimed_and_stale_complete_refused,
    heartbeat_extends_the_lease_and_reports_lost_ones,
    stale_token_cannot_append_events,
    a_worker_registering_again_releases_its_previous_attempts_at_once,
);

async fn expired_lease_is_reclaimed_and_stale_complete_refused(h: Harness) {
    let a = h.worker("a", &["command"], &[]).await;
    let b = h.worker("b", &["command"], &[]).await;
    let id = h.submit(cmd("slow")).await;
    let first = a.claim(1).await.remove(0);
    assert_eq!(h.store.requeue_expired().await.unwrap(), 0, "lease still valid");
    h.clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(h.store.requeue_expired().await.unwrap(), 1);
    // A worker that stopped heartbeating is not the task's fault: the attempt is given back and
    // the task runs again at once, under the same attempt number.
    let second = b.claim(1).await.remove(0);
    assert_eq!(second.task.id, id);
    assert_eq!(second.attempt, 1);
    assert!(second.lease.token > first.lease.token);
    let stale = h.store.complete(&a.id, first.lease, TaskResult::default()).await;
    assert!(matches!(stale, Err(StoreError::StaleLease(t)) if t == id));
    let d = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(d.task.state, TaskState::Running, "stale complete changed nothing");
    assert_eq!(d.task.worker_id.as_ref(), Some(&b.id));
    b.complete_with(
        second.lease,
        TaskResult {
            commit_sha: Some("abc".into()),
            ..TaskResult::default()
        },
    )
    .await;
    let d = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(d.task.state, TaskState::Succeeded);
    assert_eq!(d.task.result.unwrap().commit_sha.as_deref(), Some("abc"));
    let outcomes: Vec<_> = d.attempts_detail.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![AttemptOutcome::Expired, AttemptOutcome::Succeeded]);
    assert_eq!(d.attempts_detail[0].error_class, Some(ErrorClass::LeaseExpired));
    assert_eq!(d.attempts_detail[0].worker_id, a.id);
    // The stale worker's fail is refused as well.
    let f = h
        .store
        .fail(&a.id, first.lease, failure(ErrorClass::AgentError, "late"))
        .await;
    assert!(matches!(f, Err(StoreError::StaleLease(_))));
}

async fn heartbeat_extends_the_lease_and_reports_lost_ones(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    h.store.enqueue(cmd("a")).await.unwrap();
    h.store.enqueue(cmd("b")).await.unwrap();
    let c = w.claim(2).await;
    let leases: Vec<_> = c.iter().map(|c| c.lease).collect();
    for _ in 0..3 {
        h.clock.advance(TTL - Duration::from_secs(5));
        let r = h.store.heartbeat(&w.id, &leases, TTL).await.unwrap();
        assert!(r.lost.is_empty() && r.cancel.is_empty() && !r.drain);
    }
    assert_eq!(h.store.requeue_expired().await.unwrap(), 0);
    let worker = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!(worker.status, agentpool_core::WorkerStatus::Busy);
    assert_eq!(worker.running, 2);
    // One finishes elsewhere (here: completes); a heartbeat naming it reports it lost.
    w.complete(leases[0]).await;
    let r = h.store.heartbeat(&w.id, &leases, TTL).await.unwrap();
    assert_eq!(r.lost, vec![leases[0].task_id]);
}

async fn stale_token_cannot_append_events(h: Harness) {
    let a = h.worker("a", &["command"], &[]).await;
    let b = h.worker("b", &["command"], &[]).await;
    let id = h.submit(cmd("x")).await;
    let first = a.claim(1).await.remove(0);
    a.log(first.lease, "one").await;
    h.clock.advance(TTL + Duration::from_secs(1));
    h.store.requeue_expired().await.unwrap();
    h.clock.advance(Duration::from_secs(3600));
    let second = b.claim(1).await.remove(0);
    let r = h
        .store
        .append_events(id, Some(first.lease), vec![NewEvent::log("stdout", "stale")])
        .await;
    assert!(matches!(r, Err(StoreError::StaleLease(_))));
    b.log(second.lease, "two").await;
    let ev = h.store.list_events(id, 0, 100).await.unwrap();
    let lines: Vec<_> = ev
        .iter()
        .filter(|e| e.kind() == agentpool_core::EventKind::Log)
        .map(|e| e.data()["line"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lines, vec!["one", "two"]);
}

async fn a_worker_registering_again_releases_its_previous_attempts_at_once(h: Harness) {
    let a = h.worker("a", &["command"], &[]).await;
    let other = h.worker("other", &["command"], &[]).await;
    let mine = h.submit(cmd("mine")).await;
    let first = a.claim(1).await.remove(0);
    assert_eq!(first.task.id, mine);
    let theirs = h.submit(cmd("theirs")).await;
    other.claim(1).await;
    // Registering again without a fresh start (a worker the server forgot, a launcher whose
    // Jobs outlive it) keeps the attempt.
    let again = h.worker("a", &["command"], &[]).await;
    let d = h.store.get_task(mine).await.unwrap().unwrap();
    assert_eq!(d.task.state, TaskState::Running);
    // The worker restarts under the same id, long before its lease would expire.
    let mut reg = h
        .store
        .get_worker(&a.id)
        .await
        .unwrap()
        .map(|w| WorkerRegistration {
            id: Some(w.id),
            hostname: w.hostname,
            version: w.version,
            agents: w.agents,
            labels: w.labels,
            slots: w.slots,
            projects: Vec::new(),
            fresh_start: false,
        });
    if let Some(r) = reg.as_mut() {
        r.fresh_start = true;
    }
    h.store.register_worker(reg.expect("registered")).await.unwrap();
    let d = h.store.get_task(mine).await.unwrap().unwrap();
    assert_eq!(
        d.task.state,
        TaskState::Queued,
        "released without waiting for the lease"
    );
    assert_eq!(d.attempts_detail[0].outcome, AttemptOutcome::Expired);
    assert_eq!(d.attempts_detail[0].error_class, Some(ErrorClass::LeaseExpired));
    assert!(
        d.attempts_detail[0]
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("registered again")),
        "{:?}",
        d.attempts_detail[0].error_message
    );
    let stale = h.store.complete(&a.id, first.lease, TaskResult::default()).await;
    assert!(matches!(stale, Err(StoreError::StaleLease(_))), "{stale:?}");
    // Another worker's attempt is untouched, and the task runs again at once, its attempt
    // given back.
    let t = h.store.get_task(theirs).await.unwrap().unwrap();
    assert_eq!(t.task.state, TaskState::Running);
    let second = again.claim(1).await.remove(0);
    assert_eq!((second.task.id, second.attempt), (mine, 1));
}
