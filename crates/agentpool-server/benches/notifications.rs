//! Benchmark of notifications (not a test): how long one pass of the notifications loop takes
//! to find many task ends and deliver each over HTTP to a local endpoint, and what a pass
//! costs afterwards — while those ends are still inside the 30 s look-back (every pass
//! re-reads them and adds nothing) and once they are past it. Every replica pays the second
//! and third every 2 s.
//!
//! ```sh
//! source scripts/services.sh
//! cargo bench -p agentpool-server --bench notifications -- [--backend postgres|sqlite] [--tasks N] [--runs N]
//! ```

use std::time::{Duration, Instant};

use agentpool_core::TaskSpec;
use agentpool_core::notification::{Format, NotificationSpec};
use agentpool_server::notifications::pass;
use agentpool_server::{AppState, ServerConfig};
use agentpool_store::{Clock, StoreConfig};
use agentpool_testkit::bench::BenchArgs;
use agentpool_testkit::db::{Backend, TestDb};

/// An endpoint on a free port answering every POST 204; its URL.
async fn receiver() -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The median of 50 passes, each of which must find and send nothing.
async fn idle(state: &AppState) -> Duration {
    let mut took = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let r = pass(state).await.expect("pass");
        assert_eq!((r.found, r.delivered), (0, 0));
        took.push(t.elapsed());
    }
    took.sort();
    took[took.len() / 2]
}

/// One run on a fresh database: the pass that finds and delivers `n` ends, then idle passes
/// with those ends inside and past the look-back.
async fn run(backend: Backend, url: &str, n: usize) -> [Duration; 3] {
    let Some(db) = TestDb::new(backend).await else {
        eprintln!("no database for {backend:?} (source scripts/services.sh)");
        std::process::exit(2);
    };
    let clock = Clock::system();
    let cfg = StoreConfig {
        clock: clock.clone(),
        ..StoreConfig::default()
    };
    let store = agentpool_store::open_store_with(db.url(), cfg)
        .await
        .expect("open store");
    let state = AppState::new(
        store.clone(),
        &ServerConfig::new(db.url(), "127.0.0.1:0".parse().expect("addr")),
    );
    let spec = NotificationSpec {
        url: url.into(),
        on: vec![],
        project: None,
        labels: Default::default(),
        secret_credential: None,
        format: Format::Json,
    };
    store.put_notification("bench", &spec).await.expect("put");
    clock.advance(Duration::from_millis(1));
    let specs = (0..n).map(|i| TaskSpec::command("https://example.com/repo.git", &format!("make {i}")));
    let enqueued = store.enqueue_batch(specs.collect()).await.expect("enqueue");
    let ids: Vec<_> = enqueued.iter().map(|e| e.task.id).collect();
    for chunk in ids.chunks(1000) {
        store.cancel_many(chunk, None, None).await.expect("cancel");
    }

    let t = Instant::now();
    let r = pass(&state).await.expect("pass");
    let busy = t.elapsed();
    assert_eq!(
        (r.found, r.delivered as usize),
        (n as u64, n),
        "every end found and delivered"
    );
    let recent = idle(&state).await;
    clock.advance(Duration::from_secs(31));
    let past = idle(&state).await;
    [busy, recent, past]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = BenchArgs::from_env();
    let backend = args.backend(Backend::Postgres);
    let tasks: usize = args.value("--tasks", 1000);
    let runs: usize = args.value("--runs", 3);
    let url = receiver().await;
    let mut all: [Vec<Duration>; 3] = Default::default();
    for _ in 0..runs {
        for (v, d) in all.iter_mut().zip(run(backend, &url, tasks).await) {
            v.push(d);
        }
    }
    for v in &mut all {
        v.sort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let [busy, recent, past] = &all;
    let mid = busy[busy.len() / 2];
    println!(
        "{backend:?}: {tasks} task ends found and delivered in one pass: median {:.0} ms (min {:.0}, \
         max {:.0}; {:.2} ms a delivery), {runs} runs",
        ms(mid),
        ms(busy[0]),
        ms(busy[busy.len() - 1]),
        ms(mid) / tasks as f64,
    );
    for (what, v) in [
        ("inside the 30 s look-back", recent),
        ("past the look-back", past),
    ] {
        println!(
            "{backend:?}: an idle pass with those {tasks} ends {what}: median {:.2} ms (medians of 50 \
             passes, min {:.2}, max {:.2})",
            ms(v[v.len() / 2]),
            ms(v[0]),
            ms(v[v.len() - 1])
        );
    }
}
