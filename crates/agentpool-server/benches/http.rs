//! Benchmark of the HTTP worker protocol (not a test): claim+complete throughput with batched
//! claims and completions, and submit→claim latency with a long-polling worker.
//!
//! ```sh
//! source scripts/services.sh
//! cargo bench -p agentpool-server --bench http -- [--backend postgres|sqlite] [--tasks N] [--workers N] [--batch N] [--runs N]
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpool_client::Client;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{AgentInfo, TaskId, TaskSpec};
use agentpool_server::api::CompleteItem;
use agentpool_server::{Role, ServerConfig, create_token};
use agentpool_testkit::db::{Backend, TestDb};

struct Args {
    backend: Backend,
    tasks: usize,
    workers: usize,
    batch: u32,
    runs: usize,
    latency_tasks: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        backend: Backend::Postgres,
        tasks: 20_000,
        workers: 4,
        batch: 200,
        runs: 3,
        latency_tasks: 500,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--backend" => {
                a.backend = if v.starts_with("sqlite") {
                    Backend::Sqlite
                } else {
                    Backend::Postgres
                };
                i += 1;
            }
            "--tasks" => {
                a.tasks = v.parse().unwrap_or(a.tasks);
                i += 1;
            }
            "--workers" => {
                a.workers = v.parse().unwrap_or(a.workers);
                i += 1;
            }
            "--batch" => {
                a.batch = v.parse().unwrap_or(a.batch);
                i += 1;
            }
            "--runs" => {
                a.runs = v.parse().unwrap_or(a.runs);
                i += 1;
            }
            "--latency-tasks" => {
                a.latency_tasks = v.parse().unwrap_or(a.latency_tasks);
                i += 1;
            }
            _ => {} // cargo bench passes `--bench`
        }
        i += 1;
    }
    a
}

struct Server {
    _db: TestDb,
    server: agentpool_server::RunningServer,
    base: String,
    submit_token: String,
    worker_token: String,
}

async fn server(backend: Backend) -> Server {
    let db = TestDb::new(backend)
        .await
        .expect("database (source scripts/services.sh for PostgreSQL)");
    let store = agentpool_store::open_store(db.url()).await.expect("open store");
    let submit_token = create_token(store.as_ref(), Role::Submitter, "bench")
        .await
        .expect("token")
        .plaintext;
    let worker_token = create_token(store.as_ref(), Role::Worker, "bench")
        .await
        .expect("token")
        .plaintext;
    let mut cfg = ServerConfig::new(db.url(), "127.0.0.1:0".parse().expect("addr"));
    cfg.body_limit = 16 * 1024 * 1024;
    let server = agentpool_server::start_with_store(cfg, store)
        .await
        .expect("start");
    let base = format!("http://{}", server.addr);
    Server {
        _db: db,
        server,
        base,
        submit_token,
        worker_token,
    }
}

fn task(i: usize) -> TaskSpec {
    TaskSpec::command("https://example.com/bench.git", &format!("true {i}"))
}

fn reg() -> WorkerRegistration {
    WorkerRegistration {
        id: None,
        hostname: "bench".into(),
        version: "0".into(),
        agents: vec![AgentInfo {
            name: "command".into(),
            version: None,
        }],
        labels: Default::default(),
        slots: 1000,
        fresh_start: false,
    }
}

/// Enqueue `n` tasks (untimed), then time workers draining them with batched claims and
/// batched completions over HTTP.
async fn throughput_run(args: &Args) -> f64 {
    let s = server(args.backend).await;
    let sub = Client::new(&s.base, Some(s.submit_token.clone())).expect("client");
    let specs: Vec<TaskSpec> = (0..args.tasks).map(task).collect();
    for chunk in specs.chunks(1000) {
        sub.submit_batch(chunk.to_vec()).await.expect("submit");
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..args.workers {
        let c = Client::new(&s.base, Some(s.worker_token.clone())).expect("client");
        let batch = args.batch;
        handles.push(tokio::spawn(async move {
            let w = c.register(&reg()).await.expect("register");
            let mut done = 0usize;
            loop {
                let got = c.claim(&w.id, batch, Duration::ZERO).await.expect("claim");
                if got.is_empty() {
                    return done;
                }
                let items: Vec<CompleteItem> = got
                    .iter()
                    .map(|g| CompleteItem {
                        task_id: g.claimed.task.id,
                        lease_token: g.claimed.lease.token,
                        result: Default::default(),
                    })
                    .collect();
                let r = c.complete_batch(&w.id, items).await.expect("complete");
                done += r.iter().filter(|x| x.ok).count();
            }
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.expect("worker");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(total, args.tasks, "not every task completed");
    let _ = s.server.shutdown().await;
    total as f64 / secs
}

/// One worker long-polls (max 1); tasks are submitted one at a time at ~100/s. Latency is from
/// the start of the submit request (including its commit) to the worker holding the claim.
async fn latency_run(args: &Args) -> Vec<f64> {
    let s = server(args.backend).await;
    let sub = Client::new(&s.base, Some(s.submit_token.clone())).expect("client");
    let wrk = Client::new(&s.base, Some(s.worker_token.clone())).expect("client");
    let w = wrk.register(&reg()).await.expect("register");
    let sent: Arc<Mutex<HashMap<TaskId, Instant>>> = Arc::default();
    let n = args.latency_tasks;
    let claimer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            let mut pending: Vec<(TaskId, Instant)> = Vec::new();
            while lat.len() < n {
                let got = wrk.claim(&w.id, 1, Duration::from_secs(30)).await.expect("claim");
                let now = Instant::now();
                for g in &got {
                    pending.push((g.claimed.task.id, now));
                    // Complete off the claim loop, as a worker with free slots does: the next
                    // long poll starts at once.
                    let items = vec![CompleteItem {
                        task_id: g.claimed.task.id,
                        lease_token: g.claimed.lease.token,
                        result: Default::default(),
                    }];
                    let (c, id) = (wrk.clone(), w.id.clone());
                    tokio::spawn(async move {
                        let _ = c.complete_batch(&id, items).await;
                    });
                }
                // The submit's start time is recorded just before its request; a claim can
                // beat the map insert only by a hair, so resolve pending entries lazily.
                let map = sent.lock().expect("lock");
                pending.retain(|(id, at)| match map.get(id) {
                    Some(t0) => {
                        lat.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
                        false
                    }
                    None => true,
                });
            }
            lat
        })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut submit_ms = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let t0 = Instant::now();
        // Submit, then record by the id the server assigned.
        let e = sub.submit(&task(i)).await.expect("submit");
        submit_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        sent.lock().expect("lock").insert(e.task.id, t0);
    }
    let lat = claimer.await.expect("claimer");
    let _ = s.server.shutdown().await;
    submit_ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  (of which the submit request alone: p50 {:.2} ms, p99 {:.2} ms)",
        pct(&submit_ms, 0.5),
        pct(&submit_ms, 0.99)
    );
    lat
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    println!(
        "backend={:?} tasks={} workers={} batch={} runs={}",
        args.backend, args.tasks, args.workers, args.batch, args.runs
    );
    let mut rates = Vec::new();
    for r in 0..args.runs {
        let rate = throughput_run(&args).await;
        println!("throughput run {}: {:.0} tasks/s", r + 1, rate);
        rates.push(rate);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "claim+complete over HTTP: median {:.0} tasks/s (min {:.0}, max {:.0})",
        pct(&rates, 0.5),
        rates.first().copied().unwrap_or(f64::NAN),
        rates.last().copied().unwrap_or(f64::NAN)
    );
    let mut lat = latency_run(&args).await;
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "submit→claim latency over HTTP ({} tasks at ~100/s, long-polling worker): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}
