//! Waiting over HTTP: SSE resume and end, the claim long poll, its 429 limit, and the no-auth
//! mode's loopback rule.

use std::time::{Duration, Instant};

use agentpool_core::{NewEvent, TaskSpec, TaskState};
use agentpool_testkit::db::Backend;
use futures::StreamExt;
use reqwest::StatusCode;

use crate::support::{command_task, complete, eventually, register, spawn_app, submit_and_claim};

async fn sse_stream_resumes_after_disconnect_and_ends_when_the_task_finishes(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (sub, wrk, w, t, c) = submit_and_claim(&app, "talk").await;
    let log = |i: usize| NewEvent::log("stdout", format!("line {i}"));
    wrk.append_events(&w.id, t.id, c.lease.token, (0..3).map(log).collect())
        .await
        .expect("events");

    // Read until "line 1", then disconnect.
    let mut last_seq = 0;
    {
        let mut s = Box::pin(sub.stream_events(t.id, 0).await.expect("stream"));
        while let Some(ev) = s.next().await {
            let ev = ev.expect("event");
            last_seq = ev.seq;
            if ev.data()["line"] == "line 1" {
                break;
            }
        }
    }
    assert!(last_seq > 0);
    // More events while disconnected, then resume from the last seq seen.
    wrk.append_events(&w.id, t.id, c.lease.token, (3..5).map(log).collect())
        .await
        .expect("more events");
    let mut s = Box::pin(sub.stream_events(t.id, last_seq).await.expect("resume"));
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        assert!(ev.seq > last_seq, "resume repeated an event");
        if let Some(l) = ev.data()["line"].as_str() {
            lines.push(l.to_string());
        }
    }
    assert_eq!(lines, ["line 2", "line 3", "line 4"]);
    // Live: an event appended now arrives on the open stream.
    wrk.append_events(&w.id, t.id, c.lease.token, vec![log(5)])
        .await
        .expect("live event");
    let ev = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("live event in time")
        .expect("open")
        .expect("event");
    assert_eq!(ev.data()["line"], "line 5");
    // Completion ends the stream after its last events.
    complete(&wrk, &w.id, &c).await;
    let rest = tokio::time::timeout(Duration::from_secs(10), s.collect::<Vec<_>>())
        .await
        .expect("stream ends after the task finished");
    // It ends with the terminal event the store wrote with the completion, and nothing after.
    let rest: Vec<_> = rest.into_iter().map(|e| e.expect("event")).collect();
    let last = rest.last().expect("the terminal event");
    assert!(last.is_terminal(), "{last:?}");
    assert_eq!(
        last.payload.lifecycle(),
        Some(&agentpool_core::Lifecycle::Succeeded)
    );
    assert_eq!(rest.iter().filter(|e| e.is_terminal()).count(), 1);

    // The raw stream carries `id: <seq>` so browsers' EventSource resumes by itself.
    let raw = reqwest::Client::new()
        .get(format!("{}/v1/tasks/{}/events/stream", app.base, t.id))
        .bearer_auth(&app.tokens.submitter)
        .header("Last-Event-ID", last_seq.to_string())
        .send()
        .await
        .expect("raw stream");
    assert_eq!(
        raw.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let text = raw.text().await.expect("finished stream body");
    assert!(text.contains(&format!("id: {}", last_seq + 1)), "{text}");
}

async fn long_poll_returns_promptly_when_a_task_is_submitted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sub = app.submitter();
    let wrk = app.worker();
    let w = register(&wrk).await;
    let state = app.state().clone();
    let waiter = {
        let wrk = wrk.clone();
        let id = w.id.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let got = wrk.claim(&id, 1, Duration::from_secs(30)).await;
            (got, t0.elapsed())
        })
    };
    // The claim is parked inside the server before the submit.
    eventually(Duration::from_secs(10), || state.store().parked_claimers() == 1).await;
    let submitted_at = Instant::now();
    let t = sub.submit(&command_task("wake up")).await.expect("submit").task;
    // Handed over: the submit itself claimed the task for the waiting worker.
    assert_eq!(t.state, TaskState::Running);
    assert_eq!(t.worker_id.as_ref(), Some(&w.id));
    let (got, waited) = waiter.await.expect("join");
    let got = got.expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].claimed.task.id, t.id);
    assert_eq!(Some(got[0].claimed.lease.token), t.lease_token);
    assert_eq!(got[0].claimed.attempt, 1);
    let metrics = crate::support::scrape(&app.base).await;
    assert!(
        metrics.contains("agentpool_tasks_handed_over_total 1"),
        "{metrics}"
    );
    assert!(
        submitted_at.elapsed() < Duration::from_secs(2),
        "claim returned {:?} after the submit (waited {waited:?} in all)",
        submitted_at.elapsed()
    );
    assert_eq!(state.waiting_claims(), 0);
}

/// A new worker with a claim parked on `app` (it waits up to a minute for work), and that
/// claim's answer to come.
async fn parked_claim(
    app: &crate::support::TestApp,
) -> (
    agentpool_client::Client,
    agentpool_core::Worker,
    tokio::task::JoinHandle<Vec<agentpool_core::protocol::ClaimedWork>>,
) {
    let wrk = app.worker();
    let w = register(&wrk).await;
    let waiter = {
        let (wrk, id) = (wrk.clone(), w.id.clone());
        tokio::spawn(async move { wrk.claim(&id, 1, Duration::from_secs(60)).await.expect("claim") })
    };
    let state = app.state().clone();
    eventually(Duration::from_secs(10), || state.store().parked_claimers() == 1).await;
    (wrk, w, waiter)
}

/// The answer of a parked claim, which comes long before its minute is over: empty.
async fn answered_at_once(waiter: tokio::task::JoinHandle<Vec<agentpool_core::protocol::ClaimedWork>>) {
    let got = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("answered before its wait is over")
        .expect("join");
    assert!(got.is_empty(), "{got:?}");
}

/// A worker asked to drain while its claim waits gets the claim's answer (empty) at once,
/// not after the wait: a worker that stops awaits the claim it has under way, which may
/// hand it a task, rather than drop it.
async fn a_waiting_claim_ends_when_its_worker_is_drained(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (wrk, w, waiter) = parked_claim(&app).await;
    wrk.drain_worker(&w.id).await.expect("drain");
    answered_at_once(waiter).await;
    assert_eq!(app.state().waiting_claims(), 0);
}

/// Likewise a worker whose beat says it turned unhealthy: it claims nothing now, and hands
/// back what the claim under way brings, so the sooner that answer comes the better. Its later
/// beats, unhealthy still, do not ring again (they would end its own waiting beats at once).
async fn a_waiting_claim_ends_when_its_worker_turns_unhealthy(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (wrk, w, waiter) = parked_claim(&app).await;
    let unhealthy = agentpool_core::protocol::HeartbeatRequest {
        status: Some(agentpool_core::WorkerStatus::Unhealthy),
        status_message: Some("git cannot be started".into()),
        ..Default::default()
    };
    wrk.heartbeat(&w.id, &unhealthy).await.expect("heartbeat");
    answered_at_once(waiter).await;
    // A waiting beat of the worker, still unhealthy, is not cut short by its own report.
    let started = Instant::now();
    let reply = wrk
        .heartbeat_waiting(&w.id, &unhealthy, Duration::from_secs(1))
        .await
        .expect("waiting heartbeat");
    assert_eq!(reply, Default::default());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let listed = app
        .state()
        .store()
        .get_worker(&w.id)
        .await
        .expect("get")
        .expect("listed");
    assert_eq!(listed.status, agentpool_core::WorkerStatus::Unhealthy);
    assert_eq!(listed.status_message.as_deref(), Some("git cannot be started"));
}

async fn long_poll_answers_204_when_nothing_comes(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let wrk = app.worker();
    let w = register(&wrk).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/workers/{}/claim?wait=1&max=5", app.base, w.id))
        .bearer_auth(&app.tokens.worker)
        .send()
        .await
        .expect("claim");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A submitter's task for an agent this worker lacks is not handed to it.
    let sub = app.submitter();
    sub.submit(&TaskSpec::agent("https://e.com/r", "gemini", "hi"))
        .await
        .expect("submit");
    assert!(
        wrk.claim(&w.id, 1, Duration::ZERO)
            .await
            .expect("claim")
            .is_empty()
    );
}

async fn no_auth_mode_is_refused_off_loopback_and_open_on_it(backend: Backend) {
    let Some(db) = agentpool_testkit::db::TestDb::new(backend).await else {
        return;
    };
    let clock = agentpool_store::Clock::system();
    let store = crate::support::open_store(&db, &clock).await;
    let mut cfg = crate::support::no_auth_config();
    cfg.listen = "0.0.0.0:0".parse().expect("addr");
    let e = agentpool_server::start_with_store(cfg, store.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(e, agentpool_server::ServeError::NoAuthOnNonLoopback(_)),
        "{e}"
    );
    let app = crate::support::spawn_on(db, store, clock, crate::support::no_auth_config()).await;
    let anon = agentpool_client::Client::new(&app.base, None).expect("client");
    anon.submit(&command_task("x"))
        .await
        .expect("no token needed on loopback");
    anon.put_credential("c", "value-1")
        .await
        .expect("admin in no-auth mode");

    // A web page is not a caller: a DNS-rebinding page sends its own name as Host, and any
    // other site's page its own Origin or `Sec-Fetch-Site: cross-site`. Each is refused, and
    // nothing is queued.
    let body = serde_json::json!({"kind": "command", "repo": "https://example.com/r.git", "command": "id"});
    let port = app.base.rsplit(':').next().expect("port").to_string();
    let http = reqwest::Client::new();
    for (name, value) in [
        ("host", format!("evil.example:{port}")),
        ("origin", "https://evil.example".to_string()),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
    ] {
        let resp = http
            .post(format!("{}/v1/tasks", app.base))
            .header(name, &value)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        let err: serde_json::Value = resp.json().await.expect("json error");
        assert_eq!(err["error"]["code"], "forbidden", "{err}");
    }
    assert_eq!(
        anon.list_tasks(&Default::default())
            .await
            .expect("list")
            .tasks
            .len(),
        1,
        "a refused request queued a task"
    );
}

async fn too_many_waiting_long_polls_get_429(backend: Backend) {
    let mut cfg = crate::support::test_config();
    cfg.max_waiting_claims = 0;
    let Some(app) = crate::support::spawn_app_with(backend, cfg).await else {
        return;
    };
    let wrk = app.worker();
    let w = register(&wrk).await;
    let e = wrk
        .claim(&w.id, 1, Duration::from_secs(5))
        .await
        .expect_err("refused");
    assert_eq!(e.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    // A claim that does not wait is still served.
    assert!(
        wrk.claim(&w.id, 1, Duration::ZERO)
            .await
            .expect("no wait")
            .is_empty()
    );
}

crate::both_backends!(
    too_many_waiting_long_polls_get_429,
    sse_stream_resumes_after_disconnect_and_ends_when_the_task_finishes,
    long_poll_returns_promptly_when_a_task_is_submitted,
    long_poll_answers_204_when_nothing_comes,
    a_waiting_claim_ends_when_its_worker_is_drained,
    a_waiting_claim_ends_when_its_worker_turns_unhealthy,
    no_auth_mode_is_refused_off_loopback_and_open_on_it,
);
