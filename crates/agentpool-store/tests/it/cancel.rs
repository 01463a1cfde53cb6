//! Cancel: a queued task ends at once, a running one is flagged for its worker.

use agentpool_core::{ErrorClass, Lifecycle, TaskResult, TaskState};
use agentpool_store::{Failure, StoreError};

use crate::both;
use crate::harness::{Harness, TTL, cmd, failure, lifecycle};

both!(
    cancel_queued_task_ends_it_at_once,
    cancel_running_task_tells_its_worker,
    a_running_task_canceled_on_request_says_by_whom,
    tasks_are_listed_by_the_class_their_last_attempt_ended_with,
    bulk_cancels_on_overlapping_tasks_in_opposite_orders_each_cancel_a_task_once,
);

/// Two bulk cancels of the same tasks named in opposite orders, at once (as two operators
/// running the same filter would): neither waits on the other in a cycle (each locks rows in
/// id order), and every task is canceled by exactly one of them, once.
async fn bulk_cancels_on_overlapping_tasks_in_opposite_orders_each_cancel_a_task_once(h: Harness) {
    let ids = h.submit_all((0..300).map(|i| cmd(&format!("t{i}")))).await;
    let reversed: Vec<_> = ids.iter().rev().copied().collect();
    let (one, other) = tokio::join!(
        h.store.cancel_many(&ids, Some("one"), None),
        h.store.cancel_many(&reversed, Some("other"), None),
    );
    let (one, other) = (one.unwrap(), other.unwrap());
    let mut by_one = 0;
    for (i, id) in ids.iter().enumerate() {
        let first = one[i].as_ref().ok();
        let second = other[ids.len() - 1 - i].as_ref().ok();
        match (first, second) {
            (Some(t), None) | (None, Some(t)) => assert_eq!((t.id, t.state), (*id, TaskState::Canceled)),
            both => panic!("task {i}: canceled {both:?}"),
        }
        if first.is_some() {
            by_one += 1;
        }
        let canceled = lifecycle(&*h.store, *id)
            .await
            .into_iter()
            .filter(|l| matches!(l, Lifecycle::Canceled { .. }))
            .count();
        assert_eq!(canceled, 1, "task {i}");
    }
    // The loser of each task was told why, as its own request would have been.
    let passed: Vec<_> = one
        .iter()
        .chain(&other)
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert_eq!(passed.len(), ids.len());
    assert!(passed.iter().all(|e| matches!(e, StoreError::Transition(_))));
    assert!(by_one <= ids.len());
}

async fn cancel_queued_task_ends_it_at_once(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let id = h.submit(cmd("x")).await;
    let t = h.store.cancel(id).await.unwrap();
    assert_eq!(t.state, TaskState::Canceled);
    assert_eq!(t.error_class, Some(ErrorClass::Canceled));
    assert!(t.finished_at.is_some());
    assert!(w.claim(1).await.is_empty());
    assert!(matches!(h.store.cancel(id).await, Err(StoreError::Transition(_))));
    let t = h.store.retry(id).await.unwrap();
    assert_eq!(t.state, TaskState::Queued);
    assert_eq!(
        (t.attempts, t.max_attempts),
        (0, 3),
        "it never ran: the same budget again"
    );
    assert!(matches!(
        h.store.cancel(agentpool_core::TaskId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn cancel_running_task_tells_its_worker(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let id = h.submit(cmd("x")).await;
    let c = w.claim(1).await.remove(0);
    let t = h.store.cancel(id).await.unwrap();
    assert_eq!(t.state, TaskState::Running);
    assert!(t.cancel_requested);
    let hb = h.store.heartbeat(&w.id, &[c.lease], TTL).await.unwrap();
    assert_eq!(hb.cancel, vec![id]);
    // Whatever the worker reports after killing the agent, the task ends canceled.
    let out = w
        .fail(
            c.lease,
            Failure {
                result: Some(TaskResult::default()),
                ..failure(ErrorClass::AgentError, "killed")
            },
        )
        .await;
    assert_eq!(
        out,
        agentpool_core::protocol::FailOutcome::Finished {
            state: TaskState::Canceled
        }
    );
    let d = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(d.task.state, TaskState::Canceled);
    assert_eq!(
        d.attempts_detail[0].outcome,
        agentpool_core::AttemptOutcome::Canceled
    );
    // Asked anonymously: the worker's own words stand.
    assert_eq!(d.task.error_message.as_deref(), Some("killed"));
}

/// A running task canceled on someone's request ends saying who asked, as a queued one does;
/// the worker that stopped it only knows it was asked to.
async fn a_running_task_canceled_on_request_says_by_whom(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let id = h.submit(cmd("x")).await;
    let c = w.claim(1).await.remove(0);
    h.store.cancel_by(id, Some("ci (submitter)"), None).await.unwrap();
    w.fail(c.lease, failure(ErrorClass::Canceled, "canceled")).await;
    let d = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(d.task.state, TaskState::Canceled);
    assert_eq!(
        d.task.error_message.as_deref(),
        Some("canceled by ci (submitter)")
    );
    assert_eq!(
        d.attempts_detail[0].error_message.as_deref(),
        Some("canceled by ci (submitter)")
    );
    let events = h.store.list_events(id, 0, 100).await.unwrap();
    let last = events.last().and_then(|e| e.payload.lifecycle()).unwrap();
    assert_eq!(last.terminal_state(), Some(TaskState::Canceled));
    assert_eq!(last.message(), "canceled by ci (submitter)");
}

/// The list filter by error class: what `tasks retry --class AUTH_FAILED` selects.
async fn tasks_are_listed_by_the_class_their_last_attempt_ended_with(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let refused = h.submit(cmd("r")).await;
    let c = w.claim(1).await.remove(0);
    w.fail(c.lease, failure(ErrorClass::AuthFailed, "invalid api key"))
        .await;
    let canceled = h.submit(cmd("c")).await;
    h.store.cancel(canceled).await.unwrap();
    h.submit(cmd("q")).await;
    let listed = |class: ErrorClass, state: Option<TaskState>| {
        let store = h.store.clone();
        async move {
            let filter = agentpool_store::TaskFilter {
                error_class: Some(class),
                state,
                limit: 10,
                ..Default::default()
            };
            let tasks = store.list_tasks(&filter).await.unwrap();
            tasks.iter().map(|t| t.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(ErrorClass::AuthFailed, None).await, vec![refused]);
    assert_eq!(listed(ErrorClass::Canceled, None).await, vec![canceled]);
    assert_eq!(
        listed(ErrorClass::Canceled, Some(TaskState::Canceled)).await,
        vec![canceled]
    );
    assert!(
        listed(ErrorClass::AuthFailed, Some(TaskState::Queued))
            .await
            .is_empty()
    );
    assert!(listed(ErrorClass::Timeout, None).await.is_empty());
}
