//! Warm-cache benchmark (not a test): claim → command start for a repository with a long
//! history, cold clone vs warm mirror, through the real worker loop (a real server on SQLite,
//! reached over HTTP) and the real smart-HTTP git server with basic auth.
//!
//! "Cold" is what a Kubernetes Job does on a fresh pod: no mirror, a full clone from the
//! remote. "Warm" is a WorkerPool pod whose mirror cache is already filled. Each line shows
//! where the workspace preparation went: fetch (mirror), clone, checkout, git processes.
//!
//! `cargo bench -p agentpool-runner --bench warm_cache` — sizes via `BENCH_COMMITS` (5000),
//! `BENCH_BLOB_KB` (60), `BENCH_FILES` (50), `BENCH_RUNS` (3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpool_core::{EventKind, PreparePhases, TaskSpec, TaskState, WorkerId};
use agentpool_runner::{GitCredentials, Secret, WorkerConfig, run_worker};
use agentpool_store::Store;
use agentpool_testkit::git::{GIT_USER, GitServer};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token-0123456789";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Sample {
    claim_to_start_ms: f64,
    prepare_ms: u64,
    phases: PreparePhases,
}

#[tokio::main]
async fn main() {
    let commits = env_or("BENCH_COMMITS", 5000);
    let blob_kb = env_or("BENCH_BLOB_KB", 60);
    let files = env_or("BENCH_FILES", 50);
    let runs = env_or("BENCH_RUNS", 3);

    let server = GitServer::start(TOKEN).await.expect("git server");
    let t = Instant::now();
    server
        .create_large_repo("big", commits, files, blob_kb * 1024)
        .expect("generate repository");
    let size = dir_size(&server.repo_path("big"));
    println!(
        "repository: {commits} commits, {files} files at the tip, {:.0} MB on disk (generated in {:.1} s)",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let db = agentpool_testkit::db::TestDb::sqlite();
    let store = agentpool_store::open_store(db.url()).await.expect("store");
    let dir = tempfile::tempdir().expect("tempdir");

    let cold = measure(&store, &server, dir.path(), "cold", false, runs, false).await;
    let first = measure(&store, &server, dir.path(), "warm", true, 1, false).await;
    let warm = measure(&store, &server, dir.path(), "warm", true, runs, false).await;
    let warm_new = measure(&store, &server, dir.path(), "warm", true, runs, true).await;

    report("cold: Job on a fresh pod, full clone (no mirror)", &cold);
    report("warm pod, first task of a repository (mirror created)", &first);
    report("warm pod, remote unchanged", &warm);
    report("warm pod, one new commit upstream", &warm_new);
    let c = median(&cold);
    println!(
        "claim → command start, median: cold Job {:.0} ms, warm pod {:.0} ms unchanged / {:.0} ms with a new commit \
         ({:.1}x / {:.1}x faster)",
        c,
        median(&warm),
        median(&warm_new),
        c / median(&warm),
        c / median(&warm_new)
    );
}

async fn measure(
    store: &Arc<dyn Store>,
    server: &GitServer,
    dir: &std::path::Path,
    name: &str,
    mirror: bool,
    runs: usize,
    push_between: bool,
) -> Vec<Sample> {
    let mut config = WorkerConfig::new(dir.join(name), 1);
    config.id = Some(WorkerId::generate(name));
    config.claim_wait = Duration::from_millis(200);
    config.pipeline.git_credentials = Some(GitCredentials {
        username: GIT_USER.into(),
        token: Secret::new(TOKEN),
    });
    if mirror {
        config.pipeline.workspace.mirror_dir = Some(dir.join("mirrors"));
    }
    let pool = agentpool_server::serve_loopback(store.clone(), Duration::from_secs(120))
        .await
        .expect("server");
    let api = Arc::new(agentpool_client::Client::new(&pool.url(), None).expect("client"));
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(config, api, shutdown.clone()));
    let mut samples = Vec::new();
    for i in 0..runs {
        if push_between {
            server
                .add_commit(
                    "big",
                    &format!("upstream change {i}"),
                    &[("UPSTREAM.md", &format!("change {i} {name}\n"))],
                )
                .expect("add commit");
        }
        let mut spec = TaskSpec::command(&server.url("big"), "echo start $(date +%s%N)");
        spec.push = false;
        spec.commit = false;
        let task = store.enqueue(spec).await.expect("enqueue").task;
        let done = loop {
            let t = store.get_task(task.id).await.expect("get").expect("task");
            if t.task.state.is_finished() {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            done.task.state,
            TaskState::Succeeded,
            "{:?}",
            done.task.error_message
        );
        let events = store.list_events(task.id, 0, 1000).await.expect("events");
        let claimed = events
            .iter()
            .find(|e| e.kind() == EventKind::Lifecycle && e.data()["state"] == "claimed")
            .expect("claimed event")
            .at;
        let start_ns: i64 = events
            .iter()
            .filter(|e| e.kind() == EventKind::Log)
            .find_map(|e| {
                e.data()["line"]
                    .as_str()?
                    .strip_prefix("start ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .expect("start line");
        let ready = events
            .iter()
            .find(|e| e.kind() == EventKind::Lifecycle && e.data()["state"] == "workspace_ready")
            .expect("workspace_ready event");
        let prepare_ms = ready.data()["prepare_ms"].as_u64().unwrap_or(0);
        let phases: PreparePhases =
            serde_json::from_value(ready.data()["phases"].clone()).expect("prepare phases");
        let claimed_ns = claimed.timestamp_nanos_opt().unwrap_or(0);
        samples.push(Sample {
            claim_to_start_ms: (start_ns - claimed_ns) as f64 / 1e6,
            prepare_ms,
            phases,
        });
    }
    shutdown.cancel();
    let _ = worker.await;
    let _ = pool.shutdown().await;
    samples
}

fn median(s: &[Sample]) -> f64 {
    let mut v: Vec<f64> = s.iter().map(|x| x.claim_to_start_ms).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(label: &str, s: &[Sample]) {
    let all: Vec<String> = s.iter().map(|x| format!("{:.0}", x.claim_to_start_ms)).collect();
    println!(
        "{label}: claim → command start median {:.0} ms (runs: {} ms)",
        median(s),
        all.join(", ")
    );
    for x in s {
        let p = &x.phases;
        println!(
            "    prepare {} ms: fetch {} ms, clone {} ms, checkout {} ms, {} git processes",
            x.prepare_ms, p.fetch_ms, p.clone_ms, p.checkout_ms, p.git_processes
        );
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
