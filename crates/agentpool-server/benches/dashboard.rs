//! Benchmark of the dashboard (not a test): server time to render the overview, the first
//! page of the task list and a task page with its events, on a database filled with many
//! tasks (default 10,000: 70% succeeded, 10% failed, 10% canceled, 10% queued, over three
//! projects and two labels). Requests go through the router in process (`oneshot`), so the
//! figures are server time: routing, store queries, rendering — no socket, no browser.
//!
//! ```sh
//! source scripts/services.sh
//! cargo bench -p agentpool-server --bench dashboard -- [--backend postgres|sqlite] [--tasks N] [--runs N]
//! cargo bench -p agentpool-server --bench dashboard -- --smoke   # a few tasks, one run: does it work
//! ```

use std::time::{Duration, Instant};

use agentpool_core::project::ProjectSpec;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{
    AgentInfo, ErrorClass, EventKind, EventPayload, Lease, NewEvent, TaskId, TaskResult, TaskSpec, WorkerId,
};
use agentpool_server::{AppState, AuthMode, ServerConfig};
use agentpool_store::{ClaimFilter, Failure, Store};
use agentpool_testkit::bench::BenchArgs;
use agentpool_testkit::db::{Backend, TestDb};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

struct Args {
    backend: Backend,
    tasks: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let args = BenchArgs::from_env();
    let smoke = args.flag("--smoke");
    Args {
        backend: args.backend(Backend::Sqlite),
        tasks: if smoke { 200 } else { args.value("--tasks", 10_000) },
        runs: if smoke { 1 } else { args.value("--runs", 20) },
    }
}

const PROJECTS: [&str; 3] = ["web", "api", "cli"];

fn spec(i: usize) -> TaskSpec {
    let mut s = TaskSpec::agent(
        "https://example.com/repo.git",
        "claude-code",
        &format!(
            "Task {i}: fix the flaky test in module {} and explain the change",
            i % 97
        ),
    );
    s.project = Some(PROJECTS[i % 3].into());
    s.labels
        .insert(format!("team-{}", ["a", "b"][i % 2]), "yes".into());
    s
}

/// Claim `n` tasks for `worker` (in batches), returning their leases.
async fn claim(store: &dyn Store, worker: &WorkerId, n: usize) -> Vec<Lease> {
    let mut out = Vec::new();
    while out.len() < n {
        let got = store
            .claim(&ClaimFilter {
                worker_id: worker.clone(),
                agents: vec!["claude-code".into()],
                labels: [("team-a", "yes"), ("team-b", "yes")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                projects: Vec::new(),
                max: u32::try_from((n - out.len()).min(500)).unwrap_or(500),
                lease_ttl: Duration::from_secs(3600),
            })
            .await
            .expect("claim");
        if got.is_empty() {
            break;
        }
        out.extend(got.into_iter().map(|c| c.lease));
    }
    out
}

/// Fill the store; returns the id of a finished task with a few hundred events.
async fn fill(store: &dyn Store, n: usize) -> TaskId {
    for p in PROJECTS {
        store
            .put_project(ProjectSpec {
                name: p.into(),
                repo: "https://example.com/repo.git".into(),
                ..ProjectSpec::default()
            })
            .await
            .expect("project");
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        store
            .enqueue_batch(chunk.iter().map(|i| spec(*i)).collect())
            .await
            .expect("enqueue");
    }
    let worker = store
        .register_worker(WorkerRegistration {
            id: Some(WorkerId::parse("bench-worker").expect("id")),
            hostname: "bench".into(),
            version: "0".into(),
            agents: vec![AgentInfo {
                name: "claude-code".into(),
                version: Some("2.1".into()),
            }],
            labels: Default::default(),
            slots: 1000,
            projects: Vec::new(),
            fresh_start: false,
        })
        .await
        .expect("register");
    let leases = claim(store, &worker.id, n * 9 / 10).await;
    let target = leases.first().expect("a claimed task").task_id;
    let events: Vec<NewEvent> = (0..300)
        .map(|i| match i % 4 {
            0 => NewEvent::new(EventPayload::from_parts(EventKind::AssistantMessage, json!({ "text": format!("Step {i}: reading the code") }))),
            1 => NewEvent::new(EventPayload::from_parts(EventKind::ToolCall, json!({ "id": format!("t{i}"), "name": "Bash", "input": { "command": "cargo test -p web" } }))),
            2 => NewEvent::new(EventPayload::from_parts(EventKind::ToolResult, json!({ "id": format!("t{i}"), "ok": true, "output": "test result: ok. 12 passed\n".repeat(20) }))),
            _ => NewEvent::new(EventPayload::from_parts(EventKind::Usage, json!({ "input_tokens": 1000, "output_tokens": 200 }))),
        })
        .collect();
    store
        .append_events(target, Some(leases[0]), events)
        .await
        .expect("events");
    let (done, rest) = leases.split_at(leases.len() * 7 / 9);
    for batch in done.chunks(500) {
        let items = batch.iter().map(|l| (*l, TaskResult::default())).collect();
        store.complete_batch(&worker.id, items).await.expect("complete");
    }
    let (failed, canceled) = rest.split_at(rest.len() / 2);
    for (leases, class, message) in [
        (failed, ErrorClass::AuthFailed, "invalid api key"),
        (canceled, ErrorClass::Canceled, "canceled"),
    ] {
        for l in leases {
            if class == ErrorClass::Canceled {
                store.cancel(l.task_id).await.expect("cancel");
            }
            let failure = Failure {
                class,
                message: message.into(),
                retry_after: None,
                result: None,
            };
            store.fail(&worker.id, *l, failure).await.expect("fail");
        }
    }
    target
}

async fn time(router: &axum::Router, uri: &str) -> Duration {
    let req = Request::builder()
        .uri(uri)
        .header("host", "127.0.0.1")
        .body(Body::empty())
        .expect("request");
    let t = Instant::now();
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let took = t.elapsed();
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    took
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.1} ms (min {:.1}, max {:.1}, {} runs)",
        ms(&v[v.len() / 2]),
        ms(&v[0]),
        ms(&v[v.len() - 1]),
        v.len()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let Some(db) = TestDb::new(args.backend).await else {
        eprintln!("no database for {:?} (source scripts/services.sh)", args.backend);
        std::process::exit(2);
    };
    let store = agentpool_store::open_store(db.url()).await.expect("open store");
    let t = Instant::now();
    let target = fill(store.as_ref(), args.tasks).await;
    eprintln!(
        "filled {} tasks in {:.1} s",
        args.tasks,
        t.elapsed().as_secs_f64()
    );
    let mut cfg = ServerConfig::new(db.url(), "127.0.0.1:0".parse().expect("addr"));
    cfg.auth = AuthMode::NoAuthLoopback;
    let router = agentpool_server::router(AppState::new(store.clone(), &cfg), 1 << 20);
    // One warm-up request each (connection pools, statement caches).
    for uri in ["/", "/tasks", &format!("/tasks/{target}")] {
        time(&router, uri).await;
    }
    for (name, uri) in [
        ("overview /", "/".to_string()),
        ("task list /tasks", "/tasks".to_string()),
        ("task page (300 events)", format!("/tasks/{target}")),
    ] {
        let mut v = Vec::new();
        for _ in 0..args.runs {
            v.push(time(&router, &uri).await);
        }
        println!("{name:<24} {}", summary(v));
    }
}
