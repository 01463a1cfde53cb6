//! Benchmark of schedules (not a test): how long one maintenance pass takes to submit the runs
//! of many schedules due at the same moment (each run: the overlap check, the task checked
//! and enqueued as `POST /v1/tasks` would, its event, the run recorded), and what a pass costs
//! when none is due (every pass, on every replica, pays that).
//!
//! ```sh
//! source scripts/services.sh
//! cargo bench -p agentpool-server --bench schedules -- [--backend postgres|sqlite] [--schedules N] [--runs N]
//! ```

use std::time::{Duration, Instant};

use agentpool_core::TaskSpec;
use agentpool_core::schedule::{Overlap, ScheduleSpec};
use agentpool_server::schedules::run_due;
use agentpool_server::{AppState, ServerConfig};
use agentpool_testkit::bench::BenchArgs;
use agentpool_testkit::db::{Backend, TestDb};

fn spec(i: usize) -> ScheduleSpec {
    ScheduleSpec {
        cron: "@hourly".into(),
        time_zone: Some("Europe/Berlin".into()),
        task: TaskSpec::agent(
            "https://example.com/repo.git",
            "claude-code",
            &format!("Schedule {i}: update the dependencies and fix what breaks"),
        ),
        overlap: Overlap::Skip,
        paused: false,
    }
}

/// One run on a fresh database: the pass that submits `n` due runs, and idle passes after it.
async fn run(backend: Backend, n: usize) -> (Duration, Duration) {
    let Some(db) = TestDb::new(backend).await else {
        eprintln!("no database for {backend:?} (source scripts/services.sh)");
        std::process::exit(2);
    };
    let store = agentpool_store::open_store(db.url()).await.expect("open store");
    let state = AppState::new(
        store.clone(),
        &ServerConfig::new(db.url(), "127.0.0.1:0".parse().expect("addr")),
    );
    let now = store.time();
    for i in 0..n {
        store
            .put_schedule(&format!("s{i:05}"), &spec(i), Some(now))
            .await
            .expect("put");
    }
    let t = Instant::now();
    let submitted = run_due(&state).await.expect("pass");
    let busy = t.elapsed();
    assert_eq!(submitted as usize, n, "every due schedule submitted its task");
    let mut idle = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        assert_eq!(run_due(&state).await.expect("pass"), 0);
        idle.push(t.elapsed());
    }
    idle.sort();
    (busy, idle[idle.len() / 2])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = BenchArgs::from_env();
    let backend = args.backend(Backend::Postgres);
    let schedules: usize = args.value("--schedules", 1000);
    let runs: usize = args.value("--runs", 3);
    let mut busy = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..runs {
        let (b, i) = run(backend, schedules).await;
        busy.push(b);
        idle.push(i);
    }
    busy.sort();
    idle.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mid = busy[busy.len() / 2];
    println!(
        "{:?}: {} schedules due at once: pass median {:.0} ms (min {:.0}, max {:.0}; {:.2} ms a run), \
         {} runs",
        backend,
        schedules,
        ms(mid),
        ms(busy[0]),
        ms(busy[busy.len() - 1]),
        ms(mid) / schedules as f64,
        runs
    );
    println!(
        "{:?}: a pass with none due: median {:.2} ms (medians of 50 passes, min {:.2}, max {:.2})",
        backend,
        ms(idle[idle.len() / 2]),
        ms(idle[0]),
        ms(idle[idle.len() - 1])
    );
}
