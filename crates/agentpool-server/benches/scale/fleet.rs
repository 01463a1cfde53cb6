//! A fleet of long-polling workers over real HTTP: `agentpool serve` (this binary in a child
//! process) on PostgreSQL, N simulated workers (each registers, heartbeats every 10 s and
//! long-polls `claim?max=1&wait=30`, completing each task at once), and command tasks
//! submitted one at a time at a fixed rate. Per fleet size: submit→claim p50/p99, server and
//! PostgreSQL CPU per 100 tasks (from /proc), server RSS.
//!
//! Options: `--workers 10,100,1000,5000 --tasks 500 --rate 75`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpool_client::Client;
use agentpool_core::protocol::HeartbeatRequest;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{TaskId, TaskResult, TaskSpec, WorkerId};
use agentpool_server::{Role, create_token};
use agentpool_testkit::db::{Backend, TestDb};
use serde_json::json;

use crate::sys::{CpuMark, ServerProc, rss_mib};
use crate::{Args, pct, results};

pub struct Fleet {
    pub db: TestDb,
    pub server: ServerProc,
    pub submitter: Client,
    pub worker_token: String,
}

/// A fresh database, tokens, and the server in its own process.
pub async fn start_server() -> Fleet {
    let db = TestDb::new(Backend::Postgres)
        .await
        .expect("PostgreSQL: source scripts/services.sh (AGENTPOOL_TEST_PG_URL)");
    let (sub, wrk) = {
        let store = agentpool_store::open_store(db.url()).await.expect("open store");
        let s = create_token(store.as_ref(), Role::Submitter, "bench")
            .await
            .expect("token");
        let w = create_token(store.as_ref(), Role::Worker, "bench")
            .await
            .expect("token");
        (s.plaintext, w.plaintext)
    };
    let server = ServerProc::start(db.url());
    let submitter = Client::new(&server.base, Some(sub)).expect("client");
    Fleet {
        db,
        server,
        submitter,
        worker_token: wrk,
    }
}

pub fn registration(name: &str) -> WorkerRegistration {
    WorkerRegistration {
        slots: 1,
        projects: Vec::new(),
        ..agentpool_testkit::bench::command_worker(Some(WorkerId::parse(name).expect("worker id")))
    }
}

/// Register `n` workers, 100 at a time.
pub async fn register_all(c: &Client, prefix: &str, n: usize) -> Vec<WorkerId> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let regs = chunk.iter().map(|i| {
            let c = c.clone();
            let name = format!("{prefix}{i}");
            async move { c.register(&registration(&name)).await.expect("register").id }
        });
        ids.extend(futures::future::join_all(regs).await);
    }
    ids
}

struct Ledger {
    claimed: Mutex<Vec<(TaskId, Instant)>>,
    done: AtomicUsize,
    all_done: tokio::sync::Notify,
    target: usize,
}

async fn worker(c: Client, id: WorkerId, ledger: Arc<Ledger>, heartbeat_offset: Duration) {
    let hb = {
        let (c, id) = (c.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(heartbeat_offset).await;
            let mut t = tokio::time::interval(Duration::from_secs(10));
            loop {
                t.tick().await;
                let req = HeartbeatRequest {
                    leases: Vec::new(),
                    status: None,
                    status_message: None,
                    cache: None,
                };
                let _ = c.heartbeat(&id, &req).await;
            }
        })
    };
    loop {
        let got = match c.claim(&id, 1, Duration::from_secs(30)).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("[scale] claim failed: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let now = Instant::now();
        for w in got {
            let t = &w.claimed;
            ledger.claimed.lock().expect("lock").push((t.task.id, now));
            c.complete(&id, t.task.id, t.lease.token, TaskResult::default())
                .await
                .expect("complete");
            if ledger.done.fetch_add(1, Ordering::SeqCst) + 1 >= ledger.target {
                ledger.all_done.notify_one();
            }
        }
        if hb.is_finished() {
            return;
        }
    }
}

pub async fn run(args: &Args) {
    let sizes = args.list("workers", &[10, 100, 1000, 5000], &[5, 20]);
    let tasks = args.get("tasks", 500usize, 20);
    let rate = args.get("rate", 75.0f64, 50.0);
    let mut rows = Vec::new();
    println!("fleet: {tasks} command tasks submitted at {rate}/s, workers long-poll claim?max=1&wait=30");
    println!(
        "| workers | submit→claim p50 / p99 / max ms | submit call p50 ms | submitting took s | server CPU s / 100 tasks | PostgreSQL CPU s / 100 tasks | server RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let f = start_server().await;
        let wc = Client::new(&f.server.base, Some(f.worker_token.clone())).expect("client");
        let ids = register_all(&wc, "fleet-", n).await;
        let ledger = Arc::new(Ledger {
            claimed: Mutex::new(Vec::with_capacity(tasks)),
            done: AtomicUsize::new(0),
            all_done: tokio::sync::Notify::new(),
            target: tasks,
        });
        let hs: Vec<_> = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let off = Duration::from_millis((i as u64 * 10_000) / n.max(1) as u64);
                tokio::spawn(worker(wc.clone(), id, ledger.clone(), off))
            })
            .collect();
        // Let every worker reach its first long poll (a bench settle, not synchronization).
        tokio::time::sleep(Duration::from_millis(2000 + n as u64)).await;
        let pid = f.server.pid();
        let mark = CpuMark::now(pid);
        let starts: Arc<Mutex<HashMap<TaskId, Instant>>> = Arc::default();
        let mut submit_ms = Vec::with_capacity(tasks);
        let t_submit = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut inflight = Vec::new();
        for i in 0..tasks {
            tick.tick().await;
            let (c, starts) = (f.submitter.clone(), starts.clone());
            inflight.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let spec = TaskSpec::command("https://git.example.com/fleet.git", &format!("true {i}"));
                let e = c.submit(&spec).await.expect("submit");
                starts.lock().expect("lock").insert(e.task.id, t0);
                t0.elapsed().as_secs_f64() * 1000.0
            }));
        }
        for h in inflight {
            submit_ms.push(h.await.expect("join"));
        }
        let submitting = t_submit.elapsed().as_secs_f64();
        let notified = ledger.all_done.notified();
        if ledger.done.load(Ordering::SeqCst) < tasks {
            let _ = tokio::time::timeout(Duration::from_secs(120), notified).await;
        }
        let (srv_cpu, pg_cpu) = mark.since(pid);
        let rss = rss_mib(pid);
        for h in hs {
            h.abort();
        }
        let starts = starts.lock().expect("lock").clone();
        let mut lat: Vec<f64> = ledger
            .claimed
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(id, at)| {
                starts
                    .get(id)
                    .map(|s| at.saturating_duration_since(*s).as_secs_f64() * 1000.0)
            })
            .collect();
        let claimed = lat.len();
        lat.sort_by(|a, b| a.total_cmp(b));
        submit_ms.sort_by(|a, b| a.total_cmp(b));
        let per100 = 100.0 / tasks as f64;
        println!(
            "| {n} | {:.1} / {:.1} / {:.1} | {:.1} | {submitting:.1} | {:.2} | {:.2} | {rss:.0} |{}",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(0.0),
            pct(&submit_ms, 0.5),
            srv_cpu * per100,
            pg_cpu * per100,
            if claimed < tasks {
                format!(" only {claimed} of {tasks} claimed")
            } else {
                String::new()
            }
        );
        rows.push(json!({
            "workers": n, "tasks": tasks, "rate": rate, "claimed": claimed,
            "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99),
            "max_ms": lat.last().copied().unwrap_or(0.0),
            "submit_p50_ms": pct(&submit_ms, 0.5), "submitting_s": submitting,
            "server_cpu_per_100": srv_cpu * per100, "pg_cpu_per_100": pg_cpu * per100,
            "server_rss_mib": rss,
        }));
        f.server.stop();
        drop(f.db);
    }
    results::save("fleet", json!({ "rows": rows }));
}
