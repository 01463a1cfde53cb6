//! Leases over the wire: a stale lease is refused with 409, and cancel reaches a running task
//! through its heartbeat.

use std::time::Duration;

use agentpool_core::protocol::FailOutcome;
use agentpool_core::{ErrorClass, NewEvent, TaskResult, TaskState};
use agentpool_testkit::db::Backend;
use reqwest::StatusCode;

use crate::support::{claim_one, complete, fail, heartbeat, register, spawn_app, submit_and_claim};

async fn stale_lease_is_refused_with_409(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (sub, wrk, a, t, first) = submit_and_claim(&app, "slow").await;
    let b = register(&wrk).await;
    // A's lease runs out (the store's clock moves past the TTL) and the task is rescued.
    app.clock.advance(Duration::from_secs(120));
    assert_eq!(app.store.requeue_expired().await.expect("requeue"), 1);
    // Past the retry backoff too.
    app.clock.advance(Duration::from_secs(3600));
    let second = claim_one(&wrk, &b.id).await;
    assert_eq!(second.task.id, t.id);
    assert!(second.lease.token > first.lease.token);

    let e = wrk
        .complete(&a.id, t.id, first.lease.token, TaskResult::default())
        .await
        .expect_err("stale complete");
    assert!(e.is_stale_lease(), "{e}");
    assert_eq!(e.status(), Some(StatusCode::CONFLICT));
    let e = wrk
        .append_events(
            &a.id,
            t.id,
            first.lease.token,
            vec![NewEvent::log("stdout", "late")],
        )
        .await
        .expect_err("stale events");
    assert!(e.is_stale_lease(), "{e}");
    let e = fail(&wrk, &a.id, &first, ErrorClass::AgentError, "x")
        .await
        .expect_err("stale fail");
    assert!(e.is_stale_lease(), "{e}");
    let hb = heartbeat(&wrk, &a.id, vec![first.lease]).await;
    assert_eq!(hb.lost, vec![t.id]);
    // The stale calls changed nothing: B still holds the task and completes it.
    complete(&wrk, &b.id, &second).await;
    let d = sub.get_task(t.id).await.expect("get");
    assert_eq!(d.task.state, TaskState::Succeeded);
    assert!(!d.attempts_detail.is_empty());
}

async fn cancel_reaches_a_running_task_through_heartbeat(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (sub, wrk, w, t, c) = submit_and_claim(&app, "sleep 100").await;
    let running = sub.cancel(t.id).await.expect("cancel");
    assert_eq!(running.state, TaskState::Running);
    assert!(running.cancel_requested);
    let hb = heartbeat(&wrk, &w.id, vec![c.lease]).await;
    assert_eq!(hb.cancel, vec![t.id]);
    let out = fail(&wrk, &w.id, &c, ErrorClass::Canceled, "canceled by user")
        .await
        .expect("report canceled");
    assert_eq!(
        out,
        FailOutcome::Finished {
            state: TaskState::Canceled
        }
    );
    assert_eq!(
        sub.get_task(t.id).await.expect("get").task.state,
        TaskState::Canceled
    );
}

crate::both_backends!(
    stale_lease_is_refused_with_409,
    cancel_reaches_a_running_task_through_heartbeat,
);
