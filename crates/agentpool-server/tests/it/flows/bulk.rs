//! Bulk cancel and retry over the wire: many named tasks in one request (one transaction),
//! each acted on as its own request would, and those the action does not apply to passed over
//! with the code their own request would have answered.

use agentpool_core::protocol::{BulkCancel, MAX_BULK_TASKS, Skipped};
use agentpool_core::{ErrorClass, TaskId, TaskSpec, TaskState};
use agentpool_testkit::db::Backend;
use reqwest::StatusCode;

use super::leases::last_lifecycle;
use crate::support::{command_task, heartbeat, spawn_app, submit_and_claim};

fn skipped(s: &[Skipped]) -> Vec<(TaskId, &str)> {
    s.iter().map(|s| (s.id, s.code.as_str())).collect()
}

/// One request cancels a queued task (failing its dependent), asks a running one's worker to
/// stop, and passes over an unknown id and the dependent it had already failed; an id named
/// twice counts once. One request retries the canceled task with that dependent, passing over
/// the dependent named again and the task still running. Refused requests change nothing.
async fn bulk_cancel_and_retry_act_on_each_named_task_in_one_request(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (sub, wrk, w, running, c) = submit_and_claim(&app, "sleep 100").await;
    let a = sub.submit(&command_task("true")).await.expect("submit").task;
    let after_a = TaskSpec {
        depends_on: vec![a.id],
        ..command_task("true")
    };
    let b = sub.submit(&after_a).await.expect("submit").task;
    let unknown = TaskId::new();

    for (ids, reason, field) in [
        (vec![], None, "ids"),
        (vec![a.id; MAX_BULK_TASKS + 1], None, "ids"),
        (vec![a.id], Some(" "), "reason"),
        (vec![a.id], Some("two\nlines"), "reason"),
    ] {
        let req = BulkCancel {
            ids,
            reason: reason.map(str::to_string),
        };
        let e = sub.cancel_many(&req).await.expect_err("refused");
        assert_eq!(e.status(), Some(StatusCode::UNPROCESSABLE_ENTITY), "{e}");
        assert!(e.to_string().contains(field), "{e}");
    }
    let e = sub.retry_many(&[]).await.expect_err("refused");
    assert_eq!(e.status(), Some(StatusCode::UNPROCESSABLE_ENTITY), "{e}");
    assert_eq!(
        sub.get_task(a.id).await.expect("get").task.state,
        TaskState::Queued
    );

    let req = BulkCancel {
        ids: vec![a.id, running.id, unknown, a.id, b.id],
        reason: Some("the batch had the wrong prompt".into()),
    };
    let r = sub.cancel_many(&req).await.expect("bulk cancel");
    let states: Vec<(TaskId, TaskState, bool)> = r
        .canceled
        .iter()
        .map(|t| (t.id, t.state, t.cancel_requested))
        .collect();
    assert_eq!(
        states,
        vec![
            (a.id, TaskState::Canceled, false),
            (running.id, TaskState::Running, true)
        ]
    );
    assert_eq!(
        skipped(&r.skipped),
        vec![(unknown, "not_found"), (b.id, "invalid_transition")]
    );
    assert_eq!(
        last_lifecycle(&sub, a.id).await,
        "canceled by sub (submitter): the batch had the wrong prompt"
    );
    assert_eq!(
        last_lifecycle(&sub, running.id).await,
        "cancel requested by sub (submitter): the batch had the wrong prompt"
    );
    let failed_b = sub.get_task(b.id).await.expect("get").task;
    assert_eq!(
        (failed_b.state, failed_b.error_class),
        (TaskState::Failed, Some(ErrorClass::DependencyFailed))
    );
    assert_eq!(
        heartbeat(&wrk, &w.id, vec![c.lease]).await.cancel,
        vec![running.id]
    );

    let r = sub
        .retry_many(&[b.id, a.id, running.id])
        .await
        .expect("bulk retry");
    let retried: Vec<(TaskId, TaskState, Vec<TaskId>)> = r
        .retried
        .iter()
        .map(|r| (r.task.id, r.task.state, r.requeued_dependents.clone()))
        .collect();
    assert_eq!(retried, vec![(a.id, TaskState::Queued, vec![b.id])]);
    assert_eq!(
        skipped(&r.skipped),
        vec![(b.id, "invalid_transition"), (running.id, "invalid_transition")]
    );
    assert_eq!(
        sub.get_task(b.id).await.expect("get").task.state,
        TaskState::Queued
    );
}

crate::both_backends!(bulk_cancel_and_retry_act_on_each_named_task_in_one_request);
