//! Notifications through a real server and a real HTTP receiver: checked when set; each task
//! end a notification wants is POSTed once (two replicas), signed with its credential, with
//! the task in the body; a ping is sent at once and answered with how it went; a refused
//! delivery is retried after its backoff under the same id, and one that keeps failing is
//! given up, saying why without its URL; a `slack` notification posts a line of text.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentpool_core::notification::{DeliveryBody, DeliveryState, Format, NotificationSpec};
use agentpool_core::project::ProjectSpec;
use agentpool_core::{ErrorClass, TaskId, TaskSpec, TaskState};
use agentpool_server::notifications::{MAX_ATTEMPTS, PassReport, pass};
use agentpool_testkit::db::Backend;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::mpsc;

use crate::support::{
    TestApp, claim_one, complete, fail, fields, open_store, register, scrape, spawn_app, spawn_app_with,
    test_config,
};

crate::both_backends!(
    notifications_are_checked_stored_and_deleted,
    a_task_end_is_delivered_signed_once_and_retried_until_accepted,
    a_delivery_that_keeps_failing_is_given_up_without_its_url,
    a_slack_notification_posts_a_line_of_text,
);

const SECRET: &str = "s3cret-hook-key";

/// One request the receiver got.
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> DeliveryBody {
        serde_json::from_slice(&self.body).expect("a delivery body")
    }
}

/// An HTTP endpoint on a free port that answers each request with the next status queued
/// (204 once none is left) and hands the request to the test.
struct Receiver {
    url: String,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    got: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start() -> Self {
        let (tx, got) = mpsc::unbounded_channel();
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let queued = statuses.clone();
        let app = axum::Router::new().route(
            "/hooks/{token}",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let status = queued.lock().unwrap().pop_front().unwrap_or(204);
                tx.send(Received { headers, body }).unwrap();
                async move {
                    let status = StatusCode::from_u16(status).unwrap();
                    ([("Retry-After", "1")], status)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/T0KEN-in-the-path",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, statuses, got }
    }

    fn answer(&self, statuses: &[u16]) {
        self.statuses.lock().unwrap().extend(statuses);
    }

    /// What came since the last call (a pass has ended, so whatever it sent is here).
    fn drain(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.got.try_recv().ok()).collect()
    }
}

fn spec(url: &str) -> NotificationSpec {
    NotificationSpec {
        url: url.into(),
        on: vec![TaskState::Succeeded, TaskState::Failed],
        project: Some("web".into()),
        labels: Default::default(),
        secret_credential: Some("hook-secret".into()),
        format: Format::Json,
    }
}

async fn notifications_are_checked_stored_and_deleted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    let bad = NotificationSpec {
        url: "https://user:pw@hooks.example.com/".into(),
        on: vec![TaskState::Running],
        ..spec("")
    };
    assert_eq!(
        fields(admin.put_notification("Ops", &bad).await.unwrap_err()),
        ["name", "url", "on[0]", "project", "secret_credential"]
    );
    // The shape is right; what it names does not exist.
    let dangling = spec("https://hooks.example.com/x");
    let e = admin.put_notification("ops", &dangling).await.unwrap_err();
    // The missing credential's message says how to store it, from the CLI or the API.
    if let agentpool_client::Error::Rejected { fields, .. } = &e {
        let secret = fields.iter().find(|f| f.field == "secret_credential");
        assert_eq!(
            secret.map(|f| f.message.as_str()),
            Some(
                "credential hook-secret does not exist: store it first \
                 (`agentpool credentials put hook-secret`, or PUT /v1/credentials/hook-secret)"
            )
        );
    }
    assert_eq!(fields(e), ["project", "secret_credential"]);
    assert!(
        admin.list_notifications().await.unwrap().is_empty(),
        "nothing stored"
    );

    web_and_secret(&app).await;
    let n = admin.put_notification("ops", &dangling).await.expect("put");
    assert_eq!((n.name.as_str(), &n.spec), ("ops", &dangling));
    assert_eq!(admin.get_notification("ops").await.unwrap().spec, dangling);
    assert_eq!(admin.list_notifications().await.unwrap().len(), 1);
    assert!(admin.list_deliveries("ops", 10).await.unwrap().is_empty());
    // Submitters may not set one: it sends tasks to a URL of its setter's choosing.
    let e = app
        .submitter()
        .put_notification("mine", &dangling)
        .await
        .unwrap_err();
    assert!(
        matches!(e, agentpool_client::Error::Rejected { status: 403, .. }),
        "{e:?}"
    );

    admin.delete_notification("ops").await.expect("delete");
    let e = admin.get_notification("ops").await.unwrap_err();
    assert!(matches!(e, agentpool_client::Error::NotFound { .. }), "{e:?}");
    let e = admin.list_deliveries("ops", 10).await.unwrap_err();
    assert!(matches!(e, agentpool_client::Error::NotFound { .. }), "{e:?}");
}

/// Project `web` and the credential `hook-secret`.
async fn web_and_secret(app: &TestApp) {
    let admin = app.admin();
    admin
        .put_project(&ProjectSpec {
            name: "web".into(),
            repo: "https://example.com/web.git".into(),
            ..ProjectSpec::default()
        })
        .await
        .expect("project");
    admin
        .put_credential("hook-secret", SECRET)
        .await
        .expect("credential");
}

fn in_web(cmd: &str) -> TaskSpec {
    TaskSpec {
        project: Some("web".into()),
        repo: None,
        ..TaskSpec::command("https://example.com/web.git", cmd)
    }
}

/// Submit `spec`, claim it and end it as `end` (canceled while queued).
async fn run_to(app: &TestApp, spec: TaskSpec, end: TaskState) -> TaskId {
    let (sub, wrk) = (app.submitter(), app.worker());
    let id = sub.submit(&spec).await.expect("submit").task.id;
    if end == TaskState::Canceled {
        sub.cancel(id).await.expect("cancel");
        return id;
    }
    let worker = register(&wrk).await;
    let claimed = claim_one(&wrk, &worker.id).await;
    assert_eq!(claimed.task.id, id);
    if end == TaskState::Succeeded {
        complete(&wrk, &worker.id, &claimed).await;
    } else {
        fail(&wrk, &worker.id, &claimed, ErrorClass::AuthFailed, "no key")
            .await
            .expect("fail");
    }
    id
}

async fn a_task_end_is_delivered_signed_once_and_retried_until_accepted(backend: Backend) {
    // Replicas share the server key: each must decrypt the signing credential.
    let config = test_config();
    let Some(app) = spawn_app_with(backend, config.clone()).await else {
        return;
    };
    let mut receiver = Receiver::start().await;
    web_and_secret(&app).await;
    let admin = app.admin();
    admin
        .put_notification("ops", &spec(&receiver.url))
        .await
        .expect("put");
    app.clock.advance(Duration::from_millis(5));

    // A ping: sent now, signed, with no delivery id; how it went is the answer, and nothing is
    // recorded as a delivery.
    let r = admin.ping_notification("ops").await.expect("ping");
    assert_eq!((r.delivered, r.status, r.error), (true, Some(204), None));
    let ping = receiver.drain();
    assert_eq!(ping.len(), 1);
    assert_eq!(ping[0].header("X-Agentpool-Event"), "ping");
    assert_eq!(ping[0].header("X-Agentpool-Delivery"), "");
    assert!(agentpool_github::signature::verify(
        SECRET.as_bytes(),
        &ping[0].body,
        ping[0].header("X-Agentpool-Signature-256")
    ));
    let body: serde_json::Value = serde_json::from_slice(&ping[0].body).unwrap();
    assert_eq!(body, serde_json::json!({"event": "ping", "notification": "ops"}));
    receiver.answer(&[500]);
    let r = admin.ping_notification("ops").await.expect("ping");
    assert_eq!(
        (r.delivered, r.status, r.error.as_deref()),
        (false, Some(500), Some("HTTP 500 Internal Server Error"))
    );
    receiver.drain();
    assert!(admin.list_deliveries("ops", 10).await.unwrap().is_empty());

    let succeeded = run_to(&app, in_web("make"), TaskState::Succeeded).await;
    let failed = run_to(&app, in_web("make lint"), TaskState::Failed).await;
    run_to(&app, in_web("make docs"), TaskState::Canceled).await; // an end it does not want
    run_to(
        &app,
        TaskSpec::command("https://example.com/other.git", "make"),
        TaskState::Succeeded,
    )
    .await;

    // The first request is refused (503), the second accepted. Two replicas pass at once.
    receiver.answer(&[503]);
    let replica_store = open_store(&app._db, &app.clock).await;
    let replica = agentpool_server::start_with_store(config, replica_store)
        .await
        .expect("replica");
    let (a, b) = tokio::join!(pass(app.state()), pass(&replica.state));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.found + b.found, 2, "each end found once");
    assert_eq!((a.delivered + b.delivered, a.retried + b.retried), (1, 1));
    let first = receiver.drain();
    assert_eq!(first.len(), 2, "each delivery sent once");

    let mut tasks = Vec::new();
    for r in &first {
        let body = r.json();
        // Signed with the credential, as GitHub signs its webhooks.
        assert!(agentpool_github::signature::verify(
            SECRET.as_bytes(),
            &r.body,
            r.header("X-Agentpool-Signature-256")
        ));
        assert_eq!(r.header("X-Agentpool-Event"), body.event);
        assert_eq!(r.header("X-Agentpool-Delivery"), body.delivery.to_string());
        assert_eq!(r.header("Content-Type"), "application/json");
        assert!(r.header("User-Agent").starts_with("agentpool/"));
        assert_eq!(body.notification, "ops");
        assert_eq!(body.event, format!("task.{}", body.task.task.state));
        assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
        tasks.push((body.task.task.id, body.task.task.state));
    }
    tasks.sort();
    let mut want = vec![(succeeded, TaskState::Succeeded), (failed, TaskState::Failed)];
    want.sort();
    assert_eq!(tasks, want);
    let failed_body = first
        .iter()
        .map(Received::json)
        .find(|b| b.task.task.id == failed)
        .unwrap();
    assert_eq!(failed_body.task.task.error_class, Some(ErrorClass::AuthFailed));
    // As `GET /v1/tasks/{id}` shows it: with its attempts.
    assert_eq!(failed_body.task.attempts_detail.len(), 1);
    assert_eq!(
        failed_body.task.attempts_detail[0].error_class,
        Some(ErrorClass::AuthFailed)
    );

    // The refused one is not due again before its backoff (15 s).
    assert_eq!(pass(app.state()).await.unwrap(), PassReport::default());
    assert!(receiver.drain().is_empty());
    app.clock.advance(Duration::from_secs(16));
    let report = pass(app.state()).await.unwrap();
    assert_eq!((report.found, report.delivered, report.retried), (0, 1, 0));
    let again = receiver.drain();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].header("X-Agentpool-Delivery"),
        first[0].header("X-Agentpool-Delivery"),
        "the refused one (the first to arrive) again, under its id"
    );

    let deliveries = admin.list_deliveries("ops", 10).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Delivered && d.last_status == Some(204))
    );
    let mut attempts: Vec<u32> = deliveries.iter().map(|d| d.attempts).collect();
    attempts.sort();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(
        pass(app.state()).await.unwrap(),
        PassReport::default(),
        "nothing left"
    );

    // The replica sent one of the first two; this server the rest.
    let metrics = format!(
        "{}{}",
        scrape(&app.base).await,
        scrape(&format!("http://{}", replica.addr)).await
    );
    let count = |outcome: &str| -> u64 {
        let series = format!("agentpool_notification_deliveries_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!((count("delivered"), count("retried"), count("failed")), (2, 1, 0));
}

async fn a_delivery_that_keeps_failing_is_given_up_without_its_url(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut receiver = Receiver::start().await;
    receiver.answer(&[500; MAX_ATTEMPTS as usize]);
    // A port nothing listens on: bound, then closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let admin = app.admin();
    let every = |url: String| NotificationSpec {
        url,
        on: vec![],
        project: None,
        labels: Default::default(),
        secret_credential: None,
        format: Format::Json,
    };
    admin
        .put_notification("broken", &every(receiver.url.clone()))
        .await
        .unwrap();
    admin
        .put_notification("down", &every(format!("http://{closed}/hooks/T0KEN-in-the-path")))
        .await
        .unwrap();
    app.clock.advance(Duration::from_millis(5));
    run_to(
        &app,
        TaskSpec::command("https://example.com/r.git", "make"),
        TaskState::Succeeded,
    )
    .await;

    let mut reports = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        reports.push(pass(app.state()).await.unwrap());
        // Past any backoff (at most an hour).
        app.clock.advance(Duration::from_secs(3601));
    }
    assert_eq!(
        reports.iter().map(|r| r.retried).sum::<u32>(),
        2 * (MAX_ATTEMPTS - 1)
    );
    assert_eq!(reports.iter().map(|r| r.failed).sum::<u32>(), 2);
    assert_eq!(receiver.drain().len(), MAX_ATTEMPTS as usize);
    assert_eq!(
        pass(app.state()).await.unwrap(),
        PassReport::default(),
        "given up"
    );

    let broken = &admin.list_deliveries("broken", 10).await.unwrap()[0];
    assert_eq!(
        (
            broken.state,
            broken.attempts,
            broken.last_status,
            broken.last_error.as_deref()
        ),
        (
            DeliveryState::Failed,
            MAX_ATTEMPTS,
            Some(500),
            Some("HTTP 500 Internal Server Error")
        )
    );
    assert_eq!(broken.next_attempt_at, None);
    let down = &admin.list_deliveries("down", 10).await.unwrap()[0];
    let why = down.last_error.as_deref().unwrap_or_default();
    assert_eq!((down.state, down.last_status), (DeliveryState::Failed, None));
    assert!(
        why.contains("Connection refused") || why.contains("connect"),
        "{why}"
    );
    assert!(
        !why.contains("T0KEN") && !why.contains("127.0.0.1"),
        "no URL in {why}"
    );
}

async fn a_slack_notification_posts_a_line_of_text(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut receiver = Receiver::start().await;
    web_and_secret(&app).await;
    let slack = NotificationSpec {
        format: Format::Slack,
        ..spec(&receiver.url)
    };
    let admin = app.admin();
    assert_eq!(
        admin.put_notification("chat", &slack).await.unwrap().spec.format,
        Format::Slack
    );
    admin.ping_notification("chat").await.expect("ping");
    let ping = receiver.drain();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&ping[0].body).unwrap(),
        serde_json::json!({"text": "agentpool: ping from notification chat"})
    );
    app.clock.advance(Duration::from_millis(5));
    let failed = run_to(&app, in_web("make lint"), TaskState::Failed).await;
    assert_eq!(pass(app.state()).await.unwrap().delivered, 1);
    let got = receiver.drain();
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    let id = failed.to_string();
    assert_eq!(
        body,
        serde_json::json!({
            "text": format!("agentpool: task `{}` failed (AUTH_FAILED): no key — project web, command", &id[..8])
        })
    );
    // Signed and labelled as a JSON delivery is.
    assert_eq!(got[0].header("X-Agentpool-Event"), "task.failed");
    assert!(agentpool_github::signature::verify(
        SECRET.as_bytes(),
        &got[0].body,
        got[0].header("X-Agentpool-Signature-256")
    ));
}
