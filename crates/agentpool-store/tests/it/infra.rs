//! A broken worker (`WORKER_ERROR`), infrastructure gone (`INFRA_ERROR`) or a worker that
//! stopped heartbeating (`LEASE_EXPIRED`): the task goes back to the queue without using an
//! attempt, a bounded number of times for all together; an unhealthy worker claims nothing and
//! stays unhealthy.

use agentpool_core::protocol::FailOutcome;
use agentpool_core::task::MAX_WORKER_RELEASES;
use agentpool_core::{ErrorClass, TaskState, WorkerStatus};
use agentpool_store::Failure;

use crate::both;
use crate::harness::{Harness, TTL, cmd, failure};

both!(
    worker_errors_release_the_task_without_using_attempts,
    infrastructure_failures_share_the_bound_of_free_releases,
    an_unhealthy_worker_claims_nothing_until_it_registers_again,
);

fn worker_error() -> Failure {
    failure(
        ErrorClass::WorkerError,
        "could not run git: No such file or directory (os error 2)",
    )
}

async fn worker_errors_release_the_task_without_using_attempts(h: Harness) {
    let w = h.worker("broken", &["command"], &[]).await;
    let mut spec = cmd("true");
    spec.max_attempts = Some(2);
    let id = h.submit(spec).await;
    for n in 0..MAX_WORKER_RELEASES {
        let c = w.claim(1).await.remove(0);
        assert_eq!(c.attempt, 1, "release {n} used no attempt");
        let out = w.fail(c.lease, worker_error()).await;
        assert!(
            matches!(
                out,
                FailOutcome::Retrying {
                    attempt: 1,
                    given_back: true,
                    ..
                }
            ),
            "{out:?}"
        );
        let t = h.store.get_task(id).await.unwrap().unwrap().task;
        assert_eq!(t.state, TaskState::Queued);
        assert_eq!(t.attempts, 0);
        assert!(t.run_after <= h.clock.now(), "released at once");
    }
    // Past the bound it counts like any retryable failure: attempt 1 of 2 used.
    let c = w.claim(1).await.remove(0);
    w.fail(c.lease, worker_error()).await;
    let d = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(d.task.state, TaskState::Queued);
    assert_eq!(d.task.attempts, 1);
    let classes: Vec<_> = d.attempts_detail.iter().map(|a| a.error_class).collect();
    assert_eq!(
        classes,
        vec![Some(ErrorClass::WorkerError); MAX_WORKER_RELEASES as usize + 1]
    );
}

async fn infrastructure_failures_share_the_bound_of_free_releases(h: Harness) {
    let w = h.worker("evicted", &["command"], &[]).await;
    let id = h.submit(cmd("true")).await;
    let infra = || {
        failure(
            ErrorClass::InfraError,
            "the worker was stopped before the task finished",
        )
    };
    let classes = [infra(), worker_error()];
    for f in classes.iter().cloned() {
        let c = w.claim(1).await.remove(0);
        assert_eq!(c.attempt, 1, "{:?} used no attempt", f.class);
        w.fail(c.lease, f).await;
        let t = h.store.get_task(id).await.unwrap().unwrap().task;
        assert_eq!((t.state, t.attempts), (TaskState::Queued, 0));
        assert!(t.run_after <= h.clock.now(), "released at once");
    }
    // A worker that stopped heartbeating (it died, or lost its node) is the third.
    let c = w.claim(1).await.remove(0);
    assert_eq!(c.attempt, 1);
    h.clock.advance(TTL + std::time::Duration::from_secs(1));
    assert_eq!(h.store.requeue_expired().await.unwrap(), 1);
    let t = h.store.get_task(id).await.unwrap().unwrap().task;
    assert_eq!((t.state, t.attempts), (TaskState::Queued, 0));
    assert!(t.run_after <= h.clock.now(), "released at once");
    // The bound is shared: the next one counts, and waits out the backoff.
    let c = w.claim(1).await.remove(0);
    w.fail(c.lease, infra()).await;
    let t = h.store.get_task(id).await.unwrap().unwrap().task;
    assert_eq!((t.state, t.attempts), (TaskState::Queued, 1));
    assert!(t.run_after > h.clock.now(), "retried after a backoff");
    // A user's cancel still wins over a hand-back.
    h.clock.advance(std::time::Duration::from_secs(3600));
    let c = w.claim(1).await.remove(0);
    h.store.cancel(id).await.unwrap();
    w.fail(c.lease, infra()).await;
    let t = h.store.get_task(id).await.unwrap().unwrap().task;
    assert_eq!(t.state, TaskState::Canceled);
}

async fn an_unhealthy_worker_claims_nothing_until_it_registers_again(h: Harness) {
    let w = h.worker("sick", &["command"], &[]).await;
    h.store.enqueue(cmd("true")).await.unwrap();
    h.store
        .mark_worker_unhealthy(&w.id, Some("git could not be started"))
        .await
        .unwrap();
    assert!(w.claim(1).await.is_empty());
    // Heartbeats keep it unhealthy, and a beat that says no more keeps the reason.
    h.store.heartbeat(&w.id, &[], crate::harness::TTL).await.unwrap();
    h.store.mark_worker_unhealthy(&w.id, None).await.unwrap();
    let got = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!(got.status, WorkerStatus::Unhealthy);
    assert_eq!(got.status_message.as_deref(), Some("git could not be started"));
    assert!(w.claim(1).await.is_empty());
    // Drained, it is no longer said to be unhealthy, nor why.
    let drained = h.store.drain_worker(&w.id).await.unwrap();
    assert_eq!(
        (drained.status, drained.status_message),
        (WorkerStatus::Draining, None)
    );
    // A restarted worker registers again and is healthy, with no reason left.
    let w = h.worker("sick", &["command"], &[]).await;
    let got = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.status_message), (WorkerStatus::Idle, None));
    assert_eq!(w.claim(1).await.len(), 1);
}
