//! Lifecycle events: the store writes one with each state change, in the same transaction, in
//! the order the changes happened; and both backends keep the same attempt history.

use std::time::Duration;

use agentpool_core::protocol::FailOutcome;
use agentpool_core::task::MAX_WORKER_RELEASES;
use agentpool_core::{Attempt, ErrorClass, Lifecycle, TaskId, TaskResult, TaskState};
use agentpool_testkit::db::Backend;

use crate::both;
use crate::harness::{Harness, TTL, claimed, cmd, failure, lifecycle};

both!(
    a_run_reads_queued_claimed_succeeded,
    batches_write_one_event_per_task,
    failures_record_retry_then_failed,
    cancel_records_request_and_outcome,
    dependency_failures_are_recorded_on_dependents,
    lease_rescue_records_expiry_and_what_follows,
    one_pass_rescues_more_than_a_thousand_leases,
);

async fn a_run_reads_queued_claimed_succeeded(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let id = h.submit(cmd("x")).await;
    let c = w.claim(1).await.remove(0);
    w.complete(c.lease).await;
    let events = h.store.list_events(id, 0, 100).await.unwrap();
    assert!(events.last().unwrap().is_terminal());
    assert_eq!(
        lifecycle(&*h.store, id).await,
        vec![Lifecycle::Queued, claimed(&w, 1), Lifecycle::Succeeded,]
    );
    // A stale completion writes nothing.
    assert!(
        h.store
            .complete(&w.id, c.lease, TaskResult::default())
            .await
            .is_err()
    );
    assert_eq!(h.store.list_events(id, 0, 100).await.unwrap().len(), 3);
}

async fn batches_write_one_event_per_task(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let tasks: Vec<TaskId> = h.submit_all((0..20).map(|i| cmd(&format!("t{i}")))).await;
    let claimed = w.claim(20).await;
    assert_eq!(claimed.len(), 20);
    let results = h
        .store
        .complete_batch(
            &w.id,
            claimed.iter().map(|c| (c.lease, TaskResult::default())).collect(),
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    for id in tasks {
        let names: Vec<_> = lifecycle(&*h.store, id)
            .await
            .iter()
            .map(Lifecycle::name)
            .collect();
        assert_eq!(names, ["queued", "claimed", "succeeded"], "task {id}");
    }
}

async fn failures_record_retry_then_failed(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let mut spec = cmd("x");
    spec.max_attempts = Some(2);
    let id = h.submit(spec).await;
    let c = w.claim(1).await.remove(0);
    let out = w.fail(c.lease, failure(ErrorClass::AgentError, "exit 1")).await;
    let FailOutcome::Retrying { run_after, .. } = out else {
        panic!("not retried: {out:?}");
    };
    h.clock.advance(Duration::from_secs(3600));
    let c = w.claim(1).await.remove(0);
    w.fail(c.lease, failure(ErrorClass::AgentError, "exit 2")).await;
    assert_eq!(
        lifecycle(&*h.store, id).await,
        vec![
            Lifecycle::Queued,
            claimed(&w, 1),
            Lifecycle::RetryScheduled {
                attempt: 1,
                run_after,
                class: ErrorClass::AgentError,
                message: "exit 1".into(),
                given_back: false,
            },
            claimed(&w, 2),
            Lifecycle::Failed {
                class: ErrorClass::AgentError,
                message: "exit 2".into(),
            },
        ]
    );
}

async fn cancel_records_request_and_outcome(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let queued = h.submit(cmd("q")).await;
    let running = h.submit(cmd("r")).await;
    h.store.cancel(queued).await.unwrap();
    assert_eq!(
        lifecycle(&*h.store, queued).await.last(),
        Some(&Lifecycle::Canceled {
            message: "canceled".into()
        })
    );
    let c = w.claim(1).await.remove(0);
    assert_eq!(c.task.id, running);
    h.store
        .cancel_by(running, Some("ci (submitter)"), Some("superseded"))
        .await
        .unwrap();
    // Asking twice records the request once.
    h.store.cancel(running).await.unwrap();
    w.fail(c.lease, failure(ErrorClass::Canceled, "stopped")).await;
    let events = lifecycle(&*h.store, running).await;
    let names: Vec<_> = events.iter().map(Lifecycle::name).collect();
    assert_eq!(names, ["queued", "claimed", "cancel_requested", "canceled"]);
    // Who asked and why are on the record, and the end says both, not the worker's words.
    assert_eq!(
        events[2].message(),
        "cancel requested by ci (submitter): superseded"
    );
    assert_eq!(events[3].message(), "canceled by ci (submitter): superseded");
    let other = h.submit(cmd("o")).await;
    let t = h
        .store
        .cancel_by(other, Some("ci (submitter)"), None)
        .await
        .unwrap();
    assert_eq!(t.error_message.as_deref(), Some("canceled by ci (submitter)"));
    // A reason without anyone named (the store's own callers).
    let third = h.submit(cmd("t")).await;
    let t = h.store.cancel_by(third, None, Some("not needed")).await.unwrap();
    assert_eq!(t.error_message.as_deref(), Some("canceled: not needed"));
}

async fn dependency_failures_are_recorded_on_dependents(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let a = h.submit(cmd("a")).await;
    let mut b = cmd("b");
    b.depends_on = vec![a];
    let b = h.submit(b).await;
    let mut c = cmd("c");
    c.depends_on = vec![b];
    let c = h.submit(c).await;
    let got = w.claim(1).await.remove(0);
    w.fail(got.lease, failure(ErrorClass::InvalidTask, "bad ref"))
        .await;
    // Each names the dependency it waited for: b's failed, and so c's.
    let dep_failed = |message: String| Lifecycle::Failed {
        class: ErrorClass::DependencyFailed,
        message,
    };
    for (id, dep) in [(b, a), (c, b)] {
        let message = format!("dependency {dep} failed");
        assert_eq!(
            lifecycle(&*h.store, id).await,
            vec![Lifecycle::Queued, dep_failed(message.clone())]
        );
        let t = h.store.find_task(id).await.unwrap().unwrap();
        assert_eq!(t.error_message, Some(message));
    }
    // Submitted after its dependency failed: failed at once, naming the failed one even when
    // another comes first.
    let ok = h.submit(cmd("ok")).await;
    let mut late = cmd("late");
    late.depends_on = vec![ok, a];
    let late = h.store.enqueue(late).await.unwrap().task;
    assert_eq!(late.error_message, Some(format!("dependency {a} failed")));
    assert_eq!(
        lifecycle(&*h.store, late.id).await,
        vec![dep_failed(format!("dependency {a} failed"))]
    );

    // A canceled dependency is named as canceled, at once and by the cascade.
    let x = h.submit(cmd("x")).await;
    let mut y = cmd("y");
    y.depends_on = vec![x];
    let y = h.submit(y).await;
    h.store.cancel(x).await.unwrap();
    let canceled = format!("dependency {x} was canceled");
    assert_eq!(
        lifecycle(&*h.store, y).await,
        vec![Lifecycle::Queued, dep_failed(canceled.clone())]
    );
    let mut z = cmd("z");
    z.depends_on = vec![x];
    let z = h.store.enqueue(z).await.unwrap().task;
    assert_eq!(z.error_message, Some(canceled));
}

/// Expired leases are given back (the attempt keeps its number) until the bound of free
/// releases is reached; after that they use attempts, so a task that kills every worker ends.
async fn lease_rescue_records_expiry_and_what_follows(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let mut spec = cmd("x");
    spec.max_attempts = Some(2);
    let id = h.submit(spec).await;
    let free = MAX_WORKER_RELEASES as usize;
    for _ in 0..free + 2 {
        w.claim(1).await.remove(0);
        h.clock.advance(TTL + Duration::from_secs(1));
        assert_eq!(h.store.requeue_expired().await.unwrap(), 1);
        h.clock.advance(Duration::from_secs(3600));
    }
    let names: Vec<_> = lifecycle(&*h.store, id)
        .await
        .iter()
        .map(Lifecycle::name)
        .collect();
    let mut expected = vec!["queued"];
    for _ in 0..free + 1 {
        expected.extend(["claimed", "lease_expired", "retry_scheduled"]);
    }
    expected.extend(["claimed", "lease_expired", "failed"]);
    assert_eq!(names, expected);
    let attempts: Vec<u32> = lifecycle(&*h.store, id)
        .await
        .into_iter()
        .filter_map(|l| match l {
            Lifecycle::LeaseExpired { attempt, worker } => {
                assert_eq!(worker, w.id);
                Some(attempt)
            }
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [vec![1; free], vec![1, 2]].concat());
    let given_back: Vec<bool> = lifecycle(&*h.store, id)
        .await
        .into_iter()
        .filter_map(|l| match l {
            Lifecycle::RetryScheduled { given_back, .. } => Some(given_back),
            _ => None,
        })
        .collect();
    assert_eq!(given_back, [vec![true; free], vec![false]].concat());
    let d = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!((d.task.state, d.task.attempts), (TaskState::Failed, 2));
    assert_eq!(d.task.error_class, Some(ErrorClass::LeaseExpired));
}

/// One maintenance pass rescues every expired lease, however many there are.
async fn one_pass_rescues_more_than_a_thousand_leases(h: Harness) {
    const N: usize = 1100;
    let w = h.worker("w", &["command"], &[]).await;
    h.submit_all((0..N).map(|i| cmd(&format!("t{i}")))).await;
    let claimed = w.claim(N as u32).await;
    assert_eq!(claimed.len(), N);
    h.clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(h.store.requeue_expired().await.unwrap(), N as u64);
    let counts = h.store.count_by_state().await.unwrap();
    assert_eq!(counts[&TaskState::Running], 0);
    assert_eq!(counts[&TaskState::Queued], N as u64);
    assert_eq!(h.store.requeue_expired().await.unwrap(), 0);
}

/// The attempt history of one scenario — retried failure, rescued lease, cancel, success —
/// as both backends record it, without timestamps.
async fn attempt_history(
    h: Harness,
) -> Vec<Vec<(u32, String, i64, String, Option<ErrorClass>, Option<String>)>> {
    let w = h.worker("w", &["command"], &[]).await;
    let mut ids = Vec::new();
    for name in ["retried", "rescued", "canceled"] {
        let mut spec = cmd(name);
        spec.max_attempts = Some(3);
        ids.push(h.submit(spec).await);
    }
    let claimed = w.claim(3).await;
    let lease_of = |id: TaskId, claimed: &[agentpool_core::protocol::ClaimedTask]| {
        claimed.iter().find(|c| c.task.id == id).unwrap().lease
    };
    w.fail(lease_of(ids[0], &claimed), failure(ErrorClass::Timeout, "slow"))
        .await;
    h.store.cancel(ids[2]).await.unwrap();
    w.fail(
        lease_of(ids[2], &claimed),
        failure(ErrorClass::AgentError, "killed"),
    )
    .await;
    h.clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(h.store.requeue_expired().await.unwrap(), 1);
    h.clock.advance(Duration::from_secs(3600));
    for c in w.claim(3).await {
        w.complete(c.lease).await;
    }
    let mut out = Vec::new();
    for id in ids {
        let d = h.store.get_task(id).await.unwrap().unwrap();
        out.push(
            d.attempts_detail
                .iter()
                .map(|a: &Attempt| {
                    (
                        a.number,
                        a.worker_id.to_string(),
                        a.lease_token.0,
                        a.outcome.as_str().to_string(),
                        a.error_class,
                        a.error_message.clone(),
                    )
                })
                .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_history_is_identical_on_both_backends() {
    let sqlite = Harness::new(Backend::Sqlite).await.expect("sqlite");
    let Some(pg) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let a = attempt_history(sqlite).await;
    let b = attempt_history(pg).await;
    assert_eq!(a, b);
    // And it is the history the scenario describes.
    let outcomes: Vec<Vec<&str>> = a
        .iter()
        .map(|t| t.iter().map(|x| x.3.as_str()).collect())
        .collect();
    assert_eq!(
        outcomes,
        [
            vec!["failed", "succeeded"],
            vec!["expired", "succeeded"],
            vec!["canceled"],
        ]
    );
}
