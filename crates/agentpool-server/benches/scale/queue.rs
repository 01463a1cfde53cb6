//! Queue engine, side by side: agentpool's store claim+complete (N claimers, batched claims
//! and completions, no-op tasks) and graphile-worker in its documented fast configuration, on
//! the same PostgreSQL, alternating, each on a fresh database; median of the rounds and the
//! ratio. Then agentpool alone with 1, 4, 16 claimers (throughput vs claimers).
//!
//! Each run also reports the write-ahead log PostgreSQL wrote per task while draining: unlike
//! tasks/s it does not depend on what else the machine is doing, and it is what the raw-SQL
//! ceiling is made of (every byte is written and, at commit, flushed).
//!
//! Options: `--tasks 20000 --rounds 3 --claimers 16 --batch 100 --gw-procs 2
//! --gw-concurrency 8 --sweep 1,4,16`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpool_core::{TaskResult, TaskSpec, WorkerId};
use agentpool_store::{ClaimFilter, Store};
use agentpool_testkit::db::{Backend, TestDb};
use serde_json::json;

use crate::raw::{self, Finish};
use crate::{Args, graphile, median, results};

/// The server's current WAL position, in bytes.
pub async fn wal_lsn(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("connect for WAL position");
    let v: i64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        .fetch_one(&pool)
        .await
        .expect("WAL position");
    pool.close().await;
    v
}

/// tasks/s and WAL bytes per task of one drain.
#[derive(Clone, Copy)]
pub struct Run {
    pub per_sec: f64,
    pub wal_per_task: f64,
}

pub async fn fresh_db() -> TestDb {
    TestDb::new(Backend::Postgres)
        .await
        .expect("PostgreSQL: source scripts/services.sh (AGENTPOOL_TEST_PG_URL)")
}

async fn claimer(store: &Arc<dyn Store>, name: &str, batch: u32) -> ClaimFilter {
    let id = WorkerId::parse(name).expect("worker id");
    store
        .register_worker(agentpool_testkit::bench::command_worker(Some(id.clone())))
        .await
        .expect("register");
    ClaimFilter {
        worker_id: id,
        agents: vec!["command".into()],
        labels: Default::default(),
        projects: Vec::new(),
        max: batch,
        lease_ttl: Duration::from_secs(300),
    }
}

/// Claim and complete until the queue is empty; tasks done.
async fn drain(store: Arc<dyn Store>, f: ClaimFilter) -> usize {
    let mut done = 0;
    loop {
        let c = store.claim(&f).await.expect("claim");
        if c.is_empty() {
            return done;
        }
        let items = c.iter().map(|c| (c.lease, TaskResult::default())).collect();
        let r = store.complete_batch(&f.worker_id, items).await.expect("complete");
        done += r.iter().filter(|r| r.is_ok()).count();
    }
}

/// agentpool claim+complete on a fresh database.
pub async fn agentpool(tasks: usize, claimers: usize, batch: u32) -> Run {
    let db = fresh_db().await;
    let store = agentpool_store::open_store(db.url()).await.expect("open store");
    let mut left = tasks;
    while left > 0 {
        let k = left.min(1000);
        let specs = (0..k)
            .map(|i| TaskSpec::command("https://git.example.com/bench.git", &format!("noop {i}")))
            .collect();
        store.enqueue_batch(specs).await.expect("enqueue");
        left -= k;
    }
    let mut filters = Vec::new();
    for i in 0..claimers {
        filters.push(claimer(&store, &format!("q{i}"), batch).await);
    }
    let drains = filters.into_iter().map(|f| drain(store.clone(), f)).collect();
    timed(db.url(), tasks, drains).await
}

/// Run `drains` (each returning how many tasks it completed) concurrently: tasks/s from their
/// start to the last one's end, and the WAL written meanwhile; every one of `tasks` must have
/// been completed once.
pub async fn timed<F>(url: &str, tasks: usize, drains: Vec<F>) -> Run
where
    F: Future<Output = usize> + Send + 'static,
{
    let wal0 = wal_lsn(url).await;
    let t0 = Instant::now();
    let hs: Vec<_> = drains.into_iter().map(tokio::spawn).collect();
    let mut done = 0;
    for h in hs {
        done += h.await.expect("join");
    }
    let secs = t0.elapsed().as_secs_f64();
    let wal = wal_lsn(url).await - wal0;
    assert_eq!(done, tasks, "every task completed once");
    Run {
        per_sec: done as f64 / secs,
        wal_per_task: wal as f64 / tasks as f64,
    }
}

/// graphile-worker on a fresh database.
async fn graphile_run(tasks: usize, procs: usize, conc: usize) -> Run {
    let db = fresh_db().await;
    graphile::prefill(db.url(), tasks).await;
    let wal0 = wal_lsn(db.url()).await;
    let per_sec = graphile::drain(db.url(), tasks, procs, conc).await;
    let wal = wal_lsn(db.url()).await - wal0;
    Run {
        per_sec,
        wal_per_task: wal as f64 / tasks as f64,
    }
}

pub async fn run(args: &Args) {
    let tasks = args.get("tasks", 20_000usize, 500);
    let rounds = args.get("rounds", 3usize, 1);
    let claimers = args.get("claimers", 16usize, 4);
    let batch = args.get("batch", 100u32, 50);
    let procs = args.get("gw-procs", 2usize, 1);
    let conc = args.get("gw-concurrency", 8usize, 4);
    let sweep = args.list("sweep", &[1, 4, 16], &[1, 4]);
    graphile::install().await;
    eprintln!(
        "[scale] queue: {tasks} no-op tasks, agentpool {claimers} claimers × batches of {batch} \
         vs graphile-worker {procs} processes × {conc}, {rounds} rounds alternating"
    );
    // The raw-SQL rows carry agentpool's own spec of a bench task, so the rows are as wide.
    let payload = serde_json::to_string(&TaskSpec::command("https://git.example.com/bench.git", "noop 1"))
        .expect("spec json");
    let (mut ap, mut gw) = (Vec::new(), Vec::new());
    let (mut ap_wal, mut gw_wal) = (Vec::new(), Vec::new());
    let mut raws = [Finish::Delete, Finish::Keep].map(|f| (f, Vec::new(), Vec::new()));
    for r in 0..rounds {
        let a = agentpool(tasks, claimers, batch).await;
        let g = graphile_run(tasks, procs, conc).await;
        eprintln!(
            "[scale]   round {}: agentpool {:.0}/s ({:.0} B WAL/task), graphile-worker {:.0}/s ({:.0} B WAL/task)",
            r + 1,
            a.per_sec,
            a.wal_per_task,
            g.per_sec,
            g.wal_per_task
        );
        ap.push(a.per_sec);
        gw.push(g.per_sec);
        ap_wal.push(a.wal_per_task);
        gw_wal.push(g.wal_per_task);
        for (f, per_sec, wal) in &mut raws {
            let x = raw::run(tasks, claimers, batch, *f, &payload).await;
            eprintln!(
                "[scale]   round {}: {} {:.0}/s ({:.0} B WAL/task)",
                r + 1,
                f.label(),
                x.per_sec,
                x.wal_per_task
            );
            per_sec.push(x.per_sec);
            wal.push(x.wal_per_task);
        }
    }
    let (ap_wal_m, gw_wal_m) = (median(&mut ap_wal), median(&mut gw_wal));
    let (ap_m, gw_m) = (median(&mut ap.clone()), median(&mut gw.clone()));
    let ratio = ap_m / gw_m.max(1e-9);
    println!(
        "queue: agentpool {ap_m:.0}/s (rounds {}), graphile-worker {gw_m:.0}/s (rounds {}): ratio {ratio:.2}×",
        list(&ap),
        list(&gw)
    );
    println!(
        "queue: WAL per task while draining: agentpool {ap_wal_m:.0} B, graphile-worker {gw_wal_m:.0} B"
    );
    let mut ceiling = Vec::new();
    for (f, per_sec, wal) in &mut raws {
        let m = median(&mut per_sec.clone());
        let w = median(wal);
        println!(
            "queue: {} (same claimers and batches) {m:.0}/s (rounds {}), {w:.0} B WAL/task: {:.2}× graphile-worker",
            f.label(),
            list(per_sec),
            m / gw_m.max(1e-9)
        );
        ceiling.push(
            json!({"finish": format!("{f:?}").to_lowercase(), "label": f.label(), "short": f.short(),
            "rounds": per_sec, "median": m, "wal_per_task": w}),
        );
    }
    let mut by_claimers = Vec::new();
    for &c in &sweep {
        let v = agentpool(tasks, c, batch).await.per_sec;
        println!("queue: agentpool, {c} claimers × batches of {batch}: {v:.0}/s");
        by_claimers.push(json!({"claimers": c, "per_sec": v}));
    }
    results::save(
        "queue",
        json!({
            "tasks": tasks, "batch": batch, "claimers": claimers,
            "graphile": {"procs": procs, "concurrency": conc},
            "agentpool_rounds": ap, "graphile_rounds": gw,
            "agentpool_median": ap_m, "graphile_median": gw_m, "ratio": ratio,
            "agentpool_wal_per_task": ap_wal_m, "graphile_wal_per_task": gw_wal_m,
            "by_claimers": by_claimers, "raw": ceiling,
        }),
    );
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}
