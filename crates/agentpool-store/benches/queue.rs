//! Queue benchmark (not a test): enqueue rates, claim+complete throughput with 1/4/16 claimers
//! using batched claims and completions, and enqueue→claimed latency with a waiting claimer
//! (waiting on the work signal, and as a long poll that is handed the task), on
//! SQLite and PostgreSQL, each with 1k and 100k finished tasks already in the table; how
//! long reading a small project's tasks among them takes; and claim+complete of a project's
//! tasks by workers of any project and by workers limited to it, and of a project with a
//! daily budget.
//!
//! `cargo bench -p agentpool-store --bench queue [-- sqlite|postgres] [--quick]`
//! PostgreSQL needs `AGENTPOOL_TEST_PG_URL` (`source scripts/services.sh`); each run gets a
//! fresh database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpool_core::protocol::ClaimedTask;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{TaskResult, TaskSpec, TaskState, WorkerId};
use agentpool_store::{ClaimFilter, Store, StoreConfig, TaskFilter, Wake, open_store_with};
use agentpool_testkit::bench::command_worker;
use agentpool_testkit::db::{Backend, TestDb};

const LEASE: Duration = Duration::from_secs(300);

fn spec(i: usize) -> TaskSpec {
    TaskSpec::command("https://git.example.com/bench.git", &format!("run {i}"))
}

async fn worker(store: &Arc<dyn Store>, name: &str) -> ClaimFilter {
    worker_of(store, name, Vec::new()).await
}

/// A command worker limited to `projects` (empty: any task).
async fn worker_of(store: &Arc<dyn Store>, name: &str, projects: Vec<String>) -> ClaimFilter {
    let id = WorkerId::parse(name).expect("worker id");
    store
        .register_worker(WorkerRegistration {
            projects: projects.clone(),
            ..command_worker(Some(id.clone()))
        })
        .await
        .expect("register");
    ClaimFilter {
        worker_id: id,
        agents: vec!["command".into()],
        labels: Default::default(),
        projects,
        max: 100,
        lease_ttl: LEASE,
    }
}

/// Tasks of the small project.
const RARE: usize = 20;

fn rare(i: usize) -> TaskSpec {
    TaskSpec {
        project: Some("rare".into()),
        ..spec(i)
    }
}

/// Median milliseconds of reading the small project's newest page, and of counting its tasks by
/// state, 21 times each.
async fn project_reads(store: &Arc<dyn Store>) -> (f64, f64) {
    let filter = agentpool_store::TaskFilter {
        projects: Some(vec!["rare".into()]),
        limit: 50,
        ..Default::default()
    };
    let (mut page, mut counts) = (Vec::new(), Vec::new());
    for _ in 0..21 {
        let t0 = Instant::now();
        let got = store.list_tasks(&filter).await.expect("list");
        page.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(got.len(), RARE);
        let t0 = Instant::now();
        let n = store
            .count_by_state_of(&["rare".to_string()])
            .await
            .expect("count");
        counts.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n.values().sum::<u64>(), RARE as u64);
    }
    page.sort_by(|a, b| a.total_cmp(b));
    counts.sort_by(|a, b| a.total_cmp(b));
    (pct(&page, 0.5), pct(&counts, 0.5))
}

/// Queued tasks [`runnable_reads`] reads: a large backlog for an autoscaled pool.
const QUEUED: usize = 10_000;

/// Median milliseconds of finding the runnable tasks among [`QUEUED`] queued ones, 11 times:
/// every tenth task a project's, every tenth on one of ten branches. The tasks are then drained.
async fn runnable_reads(store: &Arc<dyn Store>) -> (f64, (f64, f64)) {
    let specs = (0..QUEUED).map(|i| TaskSpec {
        project: (i % 10 == 0).then(|| "rare".to_string()),
        branch: (i % 10 == 1).then(|| format!("b{}", i % 100 / 10)),
        ..spec(i)
    });
    let specs: Vec<TaskSpec> = specs.collect();
    for chunk in specs.chunks(1000) {
        store.enqueue_batch(chunk.to_vec()).await.expect("enqueue");
    }
    let mut took = Vec::new();
    for _ in 0..11 {
        let t0 = Instant::now();
        let n = store.runnable_now(None, 20_000).await.expect("runnable").len();
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        // The branches' tasks one at a time: 10 of the 1,000 on branches.
        assert_eq!(n, QUEUED - QUEUED / 10 + 10);
    }
    let listed = queued_reads(store).await;
    let f = worker(store, "runnable").await;
    drain(store.clone(), ClaimFilter { max: 500, ..f }, None).await;
    took.sort_by(|a, b| a.total_cmp(b));
    (pct(&took, 0.5), listed)
}

/// Median milliseconds, 11 times each, of reading the [`QUEUED`] queued tasks as queue stats
/// match them against a pool: whole rows in pages of 1,000 (`list_tasks`, what they read
/// before), and only the matched columns in one read (`queued_shapes`).
async fn queued_reads(store: &Arc<dyn Store>) -> (f64, f64) {
    let (mut pages, mut shapes) = (Vec::new(), Vec::new());
    for _ in 0..11 {
        let t0 = Instant::now();
        let (mut n, mut before) = (0, None);
        loop {
            let filter = TaskFilter {
                state: Some(TaskState::Queued),
                before,
                limit: 1000,
                ..TaskFilter::default()
            };
            let page = store.list_tasks(&filter).await.expect("list");
            n += page.len();
            before = page.last().map(|t| t.id);
            if page.len() < 1000 {
                break;
            }
        }
        pages.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, QUEUED);
        let t0 = Instant::now();
        let n = store.queued_shapes(None, 20_000).await.expect("shapes").len();
        shapes.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, QUEUED);
    }
    pages.sort_by(|a, b| a.total_cmp(b));
    shapes.sort_by(|a, b| a.total_cmp(b));
    (pct(&pages, 0.5), pct(&shapes, 0.5))
}

async fn enqueue_n(store: &Arc<dyn Store>, n: usize) {
    enqueue_of(store, n, None).await;
}

/// Enqueue `n` tasks, of `project` when given.
async fn enqueue_of(store: &Arc<dyn Store>, n: usize, project: Option<&str>) {
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let of = |i| TaskSpec {
            project: project.map(str::to_string),
            ..spec(i)
        };
        store
            .enqueue_batch((0..k).map(of).collect())
            .await
            .expect("enqueue batch");
        left -= k;
    }
}

/// Which tasks a throughput run claims, and with which workers.
#[derive(Clone, Copy, PartialEq)]
enum Claimed {
    /// Tasks of no project (the single-statement hot path), workers of any task.
    Plain,
    /// Tasks of a project (the serialized constrained step), by workers of any task or
    /// workers limited to that project.
    OfProject { limited: bool },
    /// Tasks of a project with a daily budget (never reached), by workers of any task, each
    /// reporting a cost as an agent's does: each claim also reads what the project spent
    /// today, and each completion adds to it.
    OfBudgetedProject,
    /// Tasks of a project with slots (more than the claimers ever hold), by workers of any
    /// task: each candidate also counts the project's running tasks.
    OfSlottedProject,
}

/// Store project `name`, as `set` makes it; its name.
async fn put_project(
    store: &Arc<dyn Store>,
    name: &'static str,
    set: impl FnOnce(&mut agentpool_core::project::ProjectSpec),
) -> Option<&'static str> {
    let mut spec = agentpool_core::project::ProjectSpec {
        name: name.into(),
        repo: "https://git.example.com/bench.git".into(),
        ..Default::default()
    };
    set(&mut spec);
    store.put_project(spec).await.expect("project");
    Some(name)
}

/// Claim and complete until the queue is empty, each task reporting `cost_usd`; returns tasks
/// done.
async fn drain(store: Arc<dyn Store>, f: ClaimFilter, cost_usd: Option<f64>) -> usize {
    let mut done = 0;
    loop {
        let c = store.claim(&f).await.expect("claim");
        if c.is_empty() {
            return done;
        }
        let items = c
            .iter()
            .map(|c| {
                let result = TaskResult {
                    cost_usd,
                    ..TaskResult::default()
                };
                (c.lease, result)
            })
            .collect::<Vec<_>>();
        let r = store.complete_batch(&f.worker_id, items).await.expect("complete");
        done += r.iter().filter(|r| r.is_ok()).count();
    }
}

async fn throughput(store: &Arc<dyn Store>, claimers: usize, batch: u32, tasks: usize) -> f64 {
    throughput_of(store, claimers, batch, tasks, Claimed::Plain).await
}

async fn throughput_of(
    store: &Arc<dyn Store>,
    claimers: usize,
    batch: u32,
    tasks: usize,
    claimed: Claimed,
) -> f64 {
    let project = match claimed {
        Claimed::Plain => None,
        Claimed::OfProject { .. } => Some("team"),
        Claimed::OfBudgetedProject => put_project(store, "spender", |p| p.daily_budget_usd = Some(1e9)).await,
        Claimed::OfSlottedProject => put_project(store, "slotted", |p| p.slots = Some(100_000)).await,
    };
    enqueue_of(store, tasks, project).await;
    let mut filters = Vec::new();
    for i in 0..claimers {
        let name = format!("tp-{claimers}-{batch}-{i}");
        let limited = claimed == Claimed::OfProject { limited: true };
        let projects = if limited { vec!["team".into()] } else { Vec::new() };
        let mut f = worker_of(store, &format!("{name}-{limited}"), projects).await;
        f.max = batch;
        filters.push(f);
    }
    let cost = (claimed == Claimed::OfBudgetedProject).then_some(0.01);
    let t0 = Instant::now();
    let handles: Vec<_> = filters
        .into_iter()
        .map(|f| tokio::spawn(drain(store.clone(), f, cost)))
        .collect();
    let mut done = 0;
    for h in handles {
        done += h.await.expect("join");
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(done, tasks, "every task completed once");
    done as f64 / secs
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How the latency claimer waits between claims.
#[derive(Clone, Copy)]
enum Waiting {
    /// On the work signal, then claims: the enqueue's commit, a wake-up, the claim's commit.
    Signal,
    /// As a long poll does ([`Store::claim_waiter`]): a task submitted while it waits is
    /// handed over, claimed in the enqueue's own commit.
    LongPoll,
}

/// Claim once for `f`, waiting as `how` says until something is there.
async fn claim_waiting(s: &Arc<dyn Store>, f: &ClaimFilter, how: Waiting) -> Vec<ClaimedTask> {
    loop {
        match how {
            Waiting::Signal => {
                let mut l = s.work_listener();
                let c = s.claim(f).await.expect("claim");
                if !c.is_empty() {
                    return c;
                }
                l.wait(Duration::from_secs(2)).await;
            }
            Waiting::LongPoll => {
                let mut w = s.claim_waiter(f);
                loop {
                    let c = s.claim(f).await.expect("claim");
                    if !c.is_empty() {
                        w.finish(c.len() >= f.max as usize);
                        return c;
                    }
                    match w.wait(Duration::from_secs(2)).await {
                        Wake::Handed(c) => return c,
                        Wake::Claim => {}
                        Wake::TimedOut => break,
                    }
                }
            }
        }
    }
}

/// 500 tasks added one at a time at ~100/s with one claimer waiting as `how` says;
/// latency = from before the enqueue call to the claim returning the task.
async fn latency(store: &Arc<dyn Store>, n: usize, how: Waiting) -> Latency {
    let mut f = worker(store, &format!("lat-{}", how as u8)).await;
    // One task when one is there; more only when a backlog formed.
    f.max = 10;
    let starts: Arc<std::sync::Mutex<Vec<Option<Instant>>>> = Arc::new(std::sync::Mutex::new(vec![None; n]));
    let s2 = store.clone();
    let st2 = starts.clone();
    let claimer = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(n);
        while lat.len() < n {
            let c = claim_waiting(&s2, &f, how).await;
            let now = Instant::now();
            for t in &c {
                let i: usize = t
                    .task
                    .spec
                    .command
                    .as_deref()
                    .and_then(|c| c.strip_prefix("run "))
                    .and_then(|s| s.parse().ok())
                    .expect("bench task");
                let start = st2.lock().expect("lock")[i].expect("start recorded");
                lat.push((now - start).as_secs_f64() * 1000.0);
            }
            // Report in the background, as a worker running tasks concurrently would, so the
            // claimer is back waiting at once.
            let items: Vec<_> = c.iter().map(|c| (c.lease, TaskResult::default())).collect();
            let (s3, w) = (s2.clone(), f.worker_id.clone());
            tokio::spawn(async move { s3.complete_batch(&w, items).await.expect("complete") });
        }
        lat
    });
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut adds = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let t0 = Instant::now();
        starts.lock().expect("lock")[i] = Some(t0);
        store.enqueue(spec(i)).await.expect("enqueue");
        adds.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let mut lat = claimer.await.expect("join");
    lat.sort_by(|a, b| a.total_cmp(b));
    adds.sort_by(|a, b| a.total_cmp(b));
    Latency {
        p50: pct(&lat, 0.5),
        p95: pct(&lat, 0.95),
        p99: pct(&lat, 0.99),
        add_p50: pct(&adds, 0.5),
    }
}

/// Let the database catch up with the prefill as autovacuum would in steady state (PostgreSQL:
/// VACUUM ANALYZE the tasks table), so the measurements see the history, not its dead rows.
async fn settle(url: &str) {
    use sqlx::Connection;
    if !url.starts_with("postgres") {
        return;
    }
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query("VACUUM ANALYZE tasks")
        .execute(&mut c)
        .await
        .expect("vacuum");
}

struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    /// Median duration of the enqueue call alone (its commit included).
    add_p50: f64,
}

/// What one durable commit costs on this machine right now (PostgreSQL only): the median of
/// 200 single-row INSERT commits on a scratch table. Disk flushes dominate it, and they vary
/// with whatever else the machine is doing.
async fn commit_cost(url: &str) -> Option<f64> {
    use sqlx::Connection;
    if !url.starts_with("postgres") {
        return None;
    }
    let mut c = sqlx::PgConnection::connect(url).await.ok()?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_probe (x int)")
        .execute(&mut c)
        .await
        .ok()?;
    let mut v = Vec::new();
    for _ in 0..200 {
        let t0 = Instant::now();
        sqlx::query("INSERT INTO bench_probe VALUES (1)")
            .execute(&mut c)
            .await
            .ok()?;
        v.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(pct(&v, 0.5))
}

async fn run(backend: Backend, prefill: usize, quick: bool) {
    let Some(db) = TestDb::new(backend).await else {
        eprintln!("{backend:?}: skipped (no database)");
        return;
    };
    let store = open_store_with(
        db.url(),
        StoreConfig {
            max_connections: Some(24),
            ..StoreConfig::default()
        },
    )
    .await
    .expect("open");
    let name = format!("{backend:?}").to_lowercase();
    // The oldest tasks are a small project's, so the newest-first page of that project is found
    // past all the history (a project token's list, `tasks list --project`).
    store
        .enqueue_batch((0..RARE).map(rare).collect())
        .await
        .expect("enqueue");
    // Finished history the queue must not slow down for.
    enqueue_n(&store, prefill).await;
    let f = worker(&store, "prefill").await;
    let done = drain(store.clone(), ClaimFilter { max: 500, ..f }, None).await;
    assert_eq!(done, prefill + RARE);
    settle(db.url()).await;
    let (page, counts) = project_reads(&store).await;
    println!(
        "| {name} | {prefill} | a small project's newest page among them (TaskFilter.projects), p50 | {page:.2} ms |"
    );
    println!("| {name} | {prefill} | a small project's tasks counted by state, p50 | {counts:.2} ms |");
    let (runnable, (pages, shapes)) = runnable_reads(&store).await;
    println!(
        "| {name} | {prefill} | the runnable tasks among {QUEUED} queued (Store::runnable_now, what queue stats read), p50 | {runnable:.2} ms |"
    );
    println!(
        "| {name} | {prefill} | {QUEUED} queued tasks as whole rows, pages of 1,000 (list_tasks), p50 | {pages:.2} ms |"
    );
    println!(
        "| {name} | {prefill} | {QUEUED} queued tasks' labels, agent and time (queued_shapes, what queue stats read), p50 | {shapes:.2} ms |"
    );

    let singles = if quick { 200 } else { 1000 };
    let t0 = Instant::now();
    for i in 0..singles {
        store.enqueue(spec(i)).await.expect("enqueue");
    }
    let single = singles as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let batches = if quick { 3 } else { 10 };
    for _ in 0..batches {
        store
            .enqueue_batch((0..1000).map(spec).collect())
            .await
            .expect("enqueue");
    }
    let batch = (batches * 1000) as f64 / t0.elapsed().as_secs_f64();
    // Clear what the enqueue measurements added.
    let f = worker(&store, "clear").await;
    drain(store.clone(), ClaimFilter { max: 500, ..f }, None).await;
    println!("| {name} | {prefill} | enqueue single | {single:.0} tasks/s |");
    println!("| {name} | {prefill} | enqueue batch of 1000 | {batch:.0} tasks/s |");

    let tasks = if quick { 5_000 } else { 20_000 };
    for claimers in [1, 4, 16] {
        let r = throughput(&store, claimers, 100, tasks).await;
        println!(
            "| {name} | {prefill} | claim+complete, {claimers} claimers, batches of 100 | {r:.0} tasks/s |"
        );
    }
    let r = throughput(&store, 4, 1, if quick { 1_000 } else { 4_000 }).await;
    println!("| {name} | {prefill} | claim+complete, 4 claimers, one task per claim | {r:.0} tasks/s |");
    for (limited, who) in [(false, "of any project"), (true, "limited to the project")] {
        let r = throughput_of(&store, 4, 100, tasks / 2, Claimed::OfProject { limited }).await;
        println!(
            "| {name} | {prefill} | claim+complete of a project's tasks, 4 claimers {who}, batches of 100 | {r:.0} tasks/s |"
        );
    }
    let r = throughput_of(&store, 4, 100, tasks / 2, Claimed::OfBudgetedProject).await;
    println!(
        "| {name} | {prefill} | claim+complete of the tasks of a project with a daily budget, 4 claimers, batches of 100 | {r:.0} tasks/s |"
    );
    let r = throughput_of(&store, 4, 100, tasks / 2, Claimed::OfSlottedProject).await;
    println!(
        "| {name} | {prefill} | claim+complete of the tasks of a project with slots (never all taken), 4 claimers, batches of 100 | {r:.0} tasks/s |"
    );
    // Both ways of waiting, one after the other on the same store.
    for (how, label) in [
        (Waiting::Signal, "waiting on the work signal"),
        (Waiting::LongPoll, "waiting as a long poll (hand-over)"),
    ] {
        let l = latency(&store, if quick { 200 } else { 500 }, how).await;
        println!(
            "| {name} | {prefill} | enqueue→claimed, claimer {label} | p50 {:.2} / p95 {:.2} / p99 {:.2} ms (the enqueue call alone: p50 {:.2} ms) |",
            l.p50, l.p95, l.p99, l.add_p50
        );
    }
    if let Some(c) = commit_cost(db.url()).await {
        println!("| {name} | {prefill} | one single-row INSERT commit (machine baseline) | p50 {c:.2} ms |");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only =
        |b: &str| !args.iter().any(|a| a == "sqlite" || a == "postgres") || args.iter().any(|a| a == b);
    println!("| backend | finished tasks in table | measurement | result |");
    println!("|---|---|---|---|");
    for prefill in [1_000, 100_000] {
        if only("sqlite") {
            run(Backend::Sqlite, prefill, quick).await;
        }
        if only("postgres") {
            run(Backend::Postgres, prefill, quick).await;
        }
    }
}
