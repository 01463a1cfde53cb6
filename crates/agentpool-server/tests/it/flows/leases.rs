//! Leases over the wire: a stale lease is refused with 409, and cancel reaches a running task
//! through its heartbeat — at once when the heartbeat waits for news — saying why when asked
//! with a reason. And what a heartbeat says of its worker: why it is unhealthy.

use std::time::Duration;

use agentpool_core::protocol::{CancelRequest, FailOutcome, HeartbeatReply, HeartbeatRequest};
use agentpool_core::{ErrorClass, NewEvent, TaskResult, TaskState, WorkerStatus};
use agentpool_testkit::db::Backend;
use reqwest::StatusCode;

use crate::support::{
    claim_one, command_task, complete, fail, heartbeat, register, spawn_app, submit_and_claim,
};

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

/// A cancel may say why: the reason is kept in the task's message and events, for a queued
/// task at once and for a running one once its worker has stopped it. A reason that is empty,
/// too long or has control characters is refused by field, and a body that is not JSON is
/// refused, the task untouched.
async fn a_cancel_says_why_in_the_message_and_events(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (sub, wrk, w, running, c) = submit_and_claim(&app, "sleep 100").await;
    let why = |r: &str| CancelRequest {
        reason: Some(r.to_string()),
    };
    let queued = sub.submit(&command_task("true")).await.expect("submit").task;
    for bad in [String::new(), "  ".into(), "x".repeat(501), "two\nlines".into()] {
        let e = sub
            .cancel_because(queued.id, &why(&bad))
            .await
            .expect_err("refused");
        assert_eq!(e.status(), Some(StatusCode::UNPROCESSABLE_ENTITY), "{bad:?}: {e}");
        assert!(e.to_string().contains("reason"), "{e}");
    }
    let http = reqwest::Client::new();
    let url = format!("{}/v1/tasks/{}/cancel", app.base, queued.id);
    let send = |ct: &'static str, body: &'static str| {
        http.post(&url)
            .bearer_auth(&app.tokens.submitter)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = send("text/plain", r#"{"reason":"x"}"#).await.expect("send");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = send("application/json", r#"{"why":"x"}"#).await.expect("send");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        sub.get_task(queued.id).await.expect("get").task.state,
        TaskState::Queued
    );

    // Counted in characters: 500 of a two-byte one are accepted.
    let long = "é".repeat(500);
    let t = sub.cancel_because(queued.id, &why(&long)).await.expect("cancel");
    assert_eq!(t.state, TaskState::Canceled);
    let said = format!("canceled by sub (submitter): {long}");
    assert_eq!(t.error_message.as_deref(), Some(said.as_str()));
    assert_eq!(last_lifecycle(&sub, queued.id).await, said);

    let t = sub
        .cancel_because(running.id, &why("  superseded by #42 "))
        .await
        .expect("cancel");
    assert!(t.state == TaskState::Running && t.cancel_requested, "{t:?}");
    assert_eq!(
        last_lifecycle(&sub, running.id).await,
        "cancel requested by sub (submitter): superseded by #42"
    );
    assert_eq!(
        heartbeat(&wrk, &w.id, vec![c.lease]).await.cancel,
        vec![running.id]
    );
    // The worker knows only that it was asked to stop; the task says who asked and why.
    fail(&wrk, &w.id, &c, ErrorClass::Canceled, "canceled on request")
        .await
        .expect("report canceled");
    let t = sub.get_task(running.id).await.expect("get").task;
    assert_eq!(
        (t.state, t.error_message.as_deref()),
        (
            TaskState::Canceled,
            Some("canceled by sub (submitter): superseded by #42")
        )
    );
}

/// The message of task `id`'s last lifecycle event.
pub(crate) async fn last_lifecycle(sub: &agentpool_client::Client, id: agentpool_core::TaskId) -> String {
    let events = sub.events(id, 0, 100).await.expect("events").events;
    let last = events.iter().rev().find_map(|e| e.payload.lifecycle());
    last.map(agentpool_core::Lifecycle::message).unwrap_or_default()
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
/// a later beat without one keeps it; an overlong one is refused by field. A busy worker's
/// message (which agent it no longer runs) is kept too, until the worker turns unhealthy.
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
    // A worker that claims says which agent it no longer runs; being unhealthy says why instead.
    let retired = "runs no claude-code tasks: claude-code's provider refused this worker's own key";
    beat(WorkerStatus::Busy, Some(retired.into()))
        .await
        .expect("beat");
    let got = wrk.get_worker(&w.id).await.expect("get");
    assert_eq!(
        (got.status, got.status_message.as_deref()),
        (WorkerStatus::Busy, Some(retired))
    );
    let m = crate::support::scrape(&app.base).await;
    assert!(m.contains("\nagentpool_workers_agent_key_refused 1\n"), "{m}");

    beat(WorkerStatus::Unhealthy, Some(why.into()))
        .await
        .expect("beat");
    beat(WorkerStatus::Unhealthy, None).await.expect("beat");
    let listed = wrk.list_workers().await.expect("list");
    let got = listed.iter().find(|x| x.id == w.id).expect("listed");
    assert_eq!(got.status, WorkerStatus::Unhealthy);
    assert_eq!(got.status_message.as_deref(), Some(why));
    let m = crate::support::scrape(&app.base).await;
    assert!(m.contains("\nagentpool_workers_agent_key_refused 0\n"), "{m}");

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
    a_cancel_says_why_in_the_message_and_events,
    a_waiting_heartbeat_is_answered_at_once_by_a_cancel_or_a_drain,
);
