//! Scale benchmark harness (not a test; run it on a quiet machine): the queue engine against
//! graphile-worker on the same PostgreSQL, a fleet of long-polling workers over real HTTP, the
//! event path (ingest and SSE delivery), and PNG plots of the results.
//!
//! ```sh
//! source scripts/services.sh
//! cargo bench -p agentpool-server --bench scale -- queue     # agentpool vs graphile-worker
//! cargo bench -p agentpool-server --bench scale -- fleet     # --workers 100,1000,5000
//! cargo bench -p agentpool-server --bench scale -- events
//! cargo bench -p agentpool-server --bench scale -- plot      # PNGs from the saved results
//! cargo bench -p agentpool-server --bench scale -- all --smoke   # tiny sizes: does it work
//! ```
//!
//! Results accumulate in `target/bench-scale/results.json` (one entry per mode, replaced by
//! the next run of that mode); `plot` draws whatever is there into `target/bench-scale/*.png`.

mod events;
mod fleet;
mod graphile;
mod plot;
mod queue;
mod raw;
mod results;
mod sys;

use std::time::Duration;

/// Command-line options shared by every mode (`--key value`, lists comma-separated).
pub struct Args {
    pub mode: String,
    pub smoke: bool,
    kv: Vec<(String, String)>,
}

impl Args {
    fn parse() -> Self {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut mode = String::new();
        let mut smoke = false;
        let mut kv = Vec::new();
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            if a == "--smoke" {
                smoke = true;
            } else if a == "--bench" {
                // cargo bench passes it
            } else if let Some(k) = a.strip_prefix("--") {
                kv.push((k.to_string(), argv.get(i + 1).cloned().unwrap_or_default()));
                i += 1;
            } else if mode.is_empty() {
                mode = a.clone();
            }
            i += 1;
        }
        Self { mode, smoke, kv }
    }

    pub fn get<T: std::str::FromStr>(&self, key: &str, full: T, smoke: T) -> T {
        match self.kv.iter().find(|(k, _)| k == key) {
            Some((_, v)) => v.parse().unwrap_or_else(|_| panic!("--{key}: cannot read {v:?}")),
            None if self.smoke => smoke,
            None => full,
        }
    }

    pub fn list(&self, key: &str, full: &[usize], smoke: &[usize]) -> Vec<usize> {
        match self.kv.iter().find(|(k, _)| k == key) {
            Some((_, v)) => v
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("--{key}: cannot read {s:?}"))
                })
                .collect(),
            None if self.smoke => smoke.to_vec(),
            None => full.to_vec(),
        }
    }
}

fn main() {
    let args = Args::parse();
    if args.mode == sys::SERVE_CHILD {
        sys::serve_child();
        return;
    }
    sys::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let modes: Vec<&str> = match args.mode.as_str() {
        "all" => vec!["queue", "fleet", "events", "plot"],
        "queue" | "fleet" | "events" | "plot" => vec![args.mode.as_str()],
        other => {
            eprintln!("usage: scale queue|fleet|events|plot|all [--smoke] [options]; got {other:?}");
            std::process::exit(2);
        }
    };
    for m in modes {
        let t0 = std::time::Instant::now();
        match m {
            "queue" => rt.block_on(queue::run(&args)),
            "fleet" => rt.block_on(fleet::run(&args)),
            "events" => rt.block_on(events::run(&args)),
            _ => plot::run(),
        }
        eprintln!("[scale] {m} took {:.1} s", t0.elapsed().as_secs_f64());
    }
    // Child processes and connections go with the runtime.
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// The value at quantile `q` (0..=1) of sorted `v` (nearest rank); 0 when empty.
pub fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    pct(v, 0.5)
}
