//! A broken worker (`WORKER_ERROR`), infrastructure gone (`INFRA_ERROR`) or a worker that
//! stopped heartbeating (`LEASE_EXPIRED`): the task goes back to the queue without using an
//! attempt, a bounded number of times for all together, and to another worker first; an
//! unhealthy worker claims nothing and stays unhealthy.

use agentpool_core::protocol::{FailOutcome, WaitReason};
use agentpool_core::task::MAX_WORKER_RELEASES;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{ErrorClass, TaskState, WorkerStatus};
use agentpool_store::{Failure, GIVEN_BACK_GRACE};
use agentpool_testkit::worker::registration;

use crate::both;
use crate::harness::{Harness, TTL, cmd, failure};

both!(
    worker_errors_release_the_task_without_using_attempts,
    infrastructure_failures_share_the_bound_of_free_releases,
    a_task_given_back_goes_to_another_worker_first,
    a_worker_that_restarted_takes_back_at_once_what_it_gave_back,
    an_unhealthy_worker_claims_nothing_until_it_registers_again,
    what_a_claiming_worker_says_of_itself_is_kept_until_it_registers_again,
    a_worker_that_registers_again_as_it_runs_keeps_its_drain_its_tasks_and_its_start,
);

/// The worker that gave a task back claims nothing of it until the grace has passed (the
/// store's clock); another worker claims it at once.
async fn a_task_given_back_goes_to_another_worker_first(h: Harness) {
    let a = h.worker("a", &["command"], &[]).await;
    let b = h.worker("b", &["command"], &[]).await;
    let id = h.submit(cmd("make")).await;
    let other = h.submit(cmd("other")).await;
    let c = a.claim(1).await.remove(0);
    assert_eq!(c.task.id, id);
    a.fail(c.lease, worker_error()).await;
    let d = h.store.get_task(id).await.unwrap().unwrap();
    let until = h.clock.now() + chrono::Duration::from_std(GIVEN_BACK_GRACE).unwrap();
    match &d.waiting[..] {
        [WaitReason::GivenBack { worker, until: u }, WaitReason::NoWorker] => {
            assert_eq!(worker, "a");
            assert!((*u - until).num_milliseconds().abs() < 1000, "{u} vs {until}");
        }
        other => panic!("expected given back by a: {other:?}"),
    }
    // Worker a passes over it (and takes the next task); b takes it, with no reason left.
    let next = a.claim(2).await;
    assert_eq!(next.iter().map(|c| c.task.id).collect::<Vec<_>>(), [other]);
    let c = b.claim(1).await.remove(0);
    assert_eq!((c.task.id, c.attempt), (id, 1));
    // b lets its lease expire: now b is passed over and a takes it.
    a.complete(next[0].lease).await;
    h.clock.advance(TTL + std::time::Duration::from_secs(1));
    h.store.requeue_expired().await.unwrap();
    assert!(b.claim(1).await.is_empty(), "b let it expire");
    let c = a.claim(1).await.remove(0);
    assert_eq!(c.task.id, id);
    // With no other worker, the one that gave it back takes it again after the grace.
    a.fail(c.lease, worker_error()).await;
    assert!(a.claim(1).await.is_empty());
    h.clock.advance(GIVEN_BACK_GRACE);
    let c = a.claim(1).await.remove(0);
    assert_eq!(c.task.id, id);
    // A retry for the task's own reasons (an agent's failure) goes to anyone at once.
    let out = a
        .fail(c.lease, failure(ErrorClass::AgentError, "tests failed"))
        .await;
    let FailOutcome::Retrying { run_after, .. } = out else {
        panic!("{out:?}");
    };
    h.clock
        .advance((run_after - h.clock.now()).to_std().unwrap_or_default());
    assert_eq!(a.claim(1).await.len(), 1, "not given back: no grace");
}

/// A worker that registers afresh (it restarted) has nothing of its earlier trouble: the tasks
/// it held are given back and it may take them at once.
async fn a_worker_that_restarted_takes_back_at_once_what_it_gave_back(h: Harness) {
    let a = h.worker("a", &["command"], &[]).await;
    let id = h.submit(cmd("make")).await;
    a.claim(1).await.remove(0);
    h.clock.advance(TTL + std::time::Duration::from_secs(1));
    h.store.requeue_expired().await.unwrap();
    assert!(a.claim(1).await.is_empty(), "its lease expired");
    let restarted = agentpool_core::worker::WorkerRegistration {
        fresh_start: true,
        ..agentpool_testkit::worker::registration(Some(a.id.clone()), &["command"], 4)
    };
    h.store.register_worker(restarted).await.unwrap();
    let c = a.claim(1).await.remove(0);
    assert_eq!(c.task.id, id);
    let d = h.store.get_task(id).await.unwrap().unwrap();
    assert!(d.waiting.is_empty());
}

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
        // (The only worker is the one that gave it back: it waits out the grace.)
        h.clock.advance(GIVEN_BACK_GRACE);
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
        h.clock.advance(GIVEN_BACK_GRACE);
    }
    // A worker that stopped heartbeating (it died, or lost its node) is the third.
    let c = w.claim(1).await.remove(0);
    assert_eq!(c.attempt, 1);
    h.clock.advance(TTL + std::time::Duration::from_secs(1));
    assert_eq!(h.store.requeue_expired().await.unwrap(), 1);
    let t = h.store.get_task(id).await.unwrap().unwrap().task;
    assert_eq!((t.state, t.attempts), (TaskState::Queued, 0));
    assert!(t.run_after <= h.clock.now(), "released at once");
    h.clock.advance(GIVEN_BACK_GRACE);
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
    // A restarted worker registers again (a fresh start) and is healthy, with no reason left.
    let restarted = WorkerRegistration {
        fresh_start: true,
        ..registration(Some(w.id.clone()), &["command"], 4)
    };
    h.store.register_worker(restarted).await.unwrap();
    let got = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.status_message), (WorkerStatus::Idle, None));
    assert_eq!(w.claim(1).await.len(), 1);
}

/// A worker that claims may say which agent it no longer runs: kept until it registers
/// again, and it never hides why a worker is unhealthy.
async fn what_a_claiming_worker_says_of_itself_is_kept_until_it_registers_again(h: Harness) {
    let w = h.worker("w", &["command", "codex"], &[]).await;
    let note = "runs no claude-code tasks: its key was refused";
    h.store.note_worker(&w.id, note).await.unwrap();
    h.store.note_worker(&w.id, note).await.unwrap();
    h.store.heartbeat(&w.id, &[], TTL).await.unwrap();
    let got = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.status_message.as_deref()),
        (WorkerStatus::Idle, Some(note))
    );
    h.store
        .mark_worker_unhealthy(&w.id, Some("git could not be started"))
        .await
        .unwrap();
    h.store.note_worker(&w.id, note).await.unwrap();
    let got = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!(got.status_message.as_deref(), Some("git could not be started"));
    let w = h.worker("w", &["command", "codex"], &[]).await;
    let got = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.status_message), (WorkerStatus::Idle, None));
}

/// A worker registers again while it runs (its agents' versions came late, it stopped offering
/// an agent, it recovered): a drain asked of it meanwhile stands, its running task keeps it
/// busy, and it keeps the time it registered. A fresh start (a new process) begins anew.
async fn a_worker_that_registers_again_as_it_runs_keeps_its_drain_its_tasks_and_its_start(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let since = h.store.get_worker(&w.id).await.unwrap().unwrap().registered_at;
    h.submit(cmd("make")).await;
    let c = w.claim(1).await.remove(0);
    h.store.heartbeat(&w.id, &[c.lease], TTL).await.unwrap();
    h.clock.advance(std::time::Duration::from_secs(5));
    let again = |fresh_start| WorkerRegistration {
        fresh_start,
        ..registration(Some(w.id.clone()), &["command", "codex"], 4)
    };
    let got = h.store.register_worker(again(false)).await.unwrap();
    assert_eq!((got.status, got.registered_at), (WorkerStatus::Busy, since));
    assert_eq!(got.agents.len(), 2, "{got:?}");
    h.store.drain_worker(&w.id).await.unwrap();
    let got = h.store.register_worker(again(false)).await.unwrap();
    assert_eq!(got.status, WorkerStatus::Draining);
    // A worker that recovers from being unhealthy registers again to claim again.
    let u = h.worker("u", &["command"], &[]).await;
    h.store
        .mark_worker_unhealthy(&u.id, Some("git could not be started"))
        .await
        .unwrap();
    let recovered = WorkerRegistration {
        fresh_start: false,
        ..registration(Some(u.id.clone()), &["command"], 4)
    };
    let got = h.store.register_worker(recovered).await.unwrap();
    assert_eq!((got.status, got.status_message), (WorkerStatus::Idle, None));
    // Restarted, the drained worker is a new one: its task goes back to the queue.
    let got = h.store.register_worker(again(true)).await.unwrap();
    assert_eq!(got.status, WorkerStatus::Idle);
    assert!(
        got.registered_at >= since + chrono::Duration::seconds(5),
        "{got:?}"
    );
    assert_eq!(got.running, 0);
    // One that went offline (it stopped and deregistered) starts anew too, fresh start or not.
    h.store.deregister_worker(&w.id).await.unwrap();
    h.clock.advance(std::time::Duration::from_secs(5));
    let got = h.store.register_worker(again(false)).await.unwrap();
    assert_eq!(got.status, WorkerStatus::Idle);
    assert!(
        got.registered_at >= since + chrono::Duration::seconds(10),
        "{got:?}"
    );
}
