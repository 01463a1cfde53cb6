//! Leases over the wire: a stale lease is refused with 409, and cancel reaches a running task
//! through its heartbeat — at once when the heartbeat waits for news. And what a heartbeat
//! says of its worker: why it is unhealthy.

use std::time::Duration;

use agentpool_core::protocol::{FailOutcome, HeartbeatReply, HeartbeatRequest};
use agentpool_core::{ErrorClass, NewEvent, TaskResult, TaskState, WorkerStatus};
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

/// Resolve once `base`'s metrics say `n` heartbeats are held open there.
pub(crate) async fn heartbeats_waiting(base: &str, n: u32) {
    let needle = format!("agentpool_waiting_heartbeats {n}\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = crate::support::scrape(base).await;
        if m.contains(&needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {n} waiting heartbeats:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A heartbeat that may wait a minute is answered as soon as its task is canceled (and then
/// as soon as its worker is asked to drain), with the news in it; a quiet one ends empty when
/// its wait is over. Were the wait not cut short, each answer would come a minute later and
/// without the news.
async fn a_waiting_heartbeat_is_answered_at_once_by_a_cancel_or_a_drain(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (sub, wrk, w, t, c) = submit_and_claim(&app, "sleep 100").await;
    let beat = |leases| {
        let (wrk, id) = (wrk.clone(), w.id.clone());
        tokio::spawn(async move {
            let req = HeartbeatRequest {
                leases,
                ..HeartbeatRequest::default()
            };
            wrk.heartbeat_waiting(&id, &req, Duration::from_secs(60))
                .await
                .expect("heartbeat")
        })
    };
    let waiting = beat(vec![c.lease]);
    heartbeats_waiting(&app.base, 1).await;
    sub.cancel(t.id).await.expect("cancel");
    assert_eq!(waiting.await.expect("join").cancel, vec![t.id]);
    heartbeats_waiting(&app.base, 0).await;

    fail(&wrk, &w.id, &c, ErrorClass::Canceled, "canceled by user")
        .await
        .expect("report canceled");
    let waiting = beat(Vec::new());
    heartbeats_waiting(&app.base, 1).await;
    wrk.drain_worker(&w.id).await.expect("drain");
    let reply = waiting.await.expect("join");
    assert!(reply.drain && reply.cancel.is_empty(), "{reply:?}");

    let other = register(&wrk).await;
    let quiet = wrk
        .heartbeat_waiting(&other.id, &HeartbeatRequest::default(), Duration::from_secs(1))
        .await
        .expect("quiet heartbeat");
    assert_eq!(quiet, HeartbeatReply::default());
}

/// A worker that beats `unhealthy` with a reason is listed with it until it registers again;
/// a later beat without one keeps it; an overlong one is refused by field, and a reason with
/// a healthy status is not kept.
async fn an_unhealthy_worker_is_listed_with_its_reason(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (_sub, wrk, w, _t, c) = submit_and_claim(&app, "sleep 100").await;
    let beat = |status, message: Option<String>| {
        let (wrk, id) = (wrk.clone(), w.id.clone());
        async move {
            let req = HeartbeatRequest {
                leases: vec![c.lease],
                status: Some(status),
                status_message: message,
                cache: None,
            };
            wrk.heartbeat(&id, &req).await
        }
    };
    let why = "git or an agent could not be started 3 times in a row; the last: no git";
    let e = beat(WorkerStatus::Unhealthy, Some("x".repeat(1001)))
        .await
        .expect_err("an overlong reason");
    assert_eq!(e.status(), Some(StatusCode::UNPROCESSABLE_ENTITY), "{e}");
    assert!(e.to_string().contains("status_message"), "{e}");
    beat(WorkerStatus::Busy, Some(why.into())).await.expect("beat");
    assert_eq!(wrk.get_worker(&w.id).await.expect("get").status_message, None);

    beat(WorkerStatus::Unhealthy, Some(why.into()))
        .await
        .expect("beat");
    beat(WorkerStatus::Unhealthy, None).await.expect("beat");
    let listed = wrk.list_workers().await.expect("list");
    let got = listed.iter().find(|x| x.id == w.id).expect("listed");
    assert_eq!(got.status, WorkerStatus::Unhealthy);
    assert_eq!(got.status_message.as_deref(), Some(why));

    let again = wrk
        .register(&agentpool_core::worker::WorkerRegistration {
            id: Some(w.id.clone()),
            ..crate::support::registration(&["command"])
        })
        .await
        .expect("register again");
    assert_eq!((again.status, again.status_message), (WorkerStatus::Idle, None));
}

crate::both_backends!(
    an_unhealthy_worker_is_listed_with_its_reason,
    stale_lease_is_refused_with_409,
    cancel_reaches_a_running_task_through_heartbeat,
    a_waiting_heartbeat_is_answered_at_once_by_a_cancel_or_a_drain,
);
