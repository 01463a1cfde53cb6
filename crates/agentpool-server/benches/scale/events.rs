//! The event path over real HTTP: T running tasks (each claimed by its own worker) stream
//! agent events in batches to the server for a fixed time while one SSE watcher per task
//! follows its stream. Events/s ingested (acknowledged appends), and delivery latency to the
//! watchers (append request start → event received over SSE, same clock).
//!
//! Options: `--tasks 100 --seconds 10 --batch 50`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentpool_client::Client;
use agentpool_core::{EventPayload, NewEvent, TaskResult, TaskSpec};
use futures::StreamExt;
use serde_json::json;

use crate::fleet::{register_all, start_server};
use crate::sys::{CpuMark, rss_mib};
use crate::{Args, pct, results};

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub async fn run(args: &Args) {
    let tasks = args.get("tasks", 100usize, 5);
    let secs = args.get("seconds", 10.0f64, 2.0);
    let batch = args.get("batch", 50usize, 20);
    let f = start_server().await;
    let wc = Client::new(&f.server.base, Some(f.worker_token.clone())).expect("client");
    let ids = register_all(&wc, "ev-", tasks).await;
    let specs = (0..tasks)
        .map(|i| TaskSpec::command("https://git.example.com/events.git", &format!("stream {i}")))
        .collect();
    f.submitter.submit_batch(specs).await.expect("submit");
    // Each worker holds one task.
    let mut held = Vec::new();
    for id in &ids {
        let mut got = wc.claim(id, 1, Duration::from_secs(5)).await.expect("claim");
        let w = got.pop().expect("a task for every worker");
        held.push((id.clone(), w.claimed.task.id, w.claimed.lease.token));
    }
    // One watcher per task, following from the start.
    let mut watchers = Vec::new();
    for (_, task, _) in &held {
        let mut s = Box::pin(f.submitter.stream_events(*task, 0).await.expect("subscribe"));
        watchers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Some(e) = s.next().await {
                let Ok(e) = e else { break };
                if let EventPayload::Log { line, .. } = &e.payload
                    && let Some(sent) = line.strip_prefix("t ").and_then(|v| v.parse::<u64>().ok())
                {
                    lat.push(unix_micros().saturating_sub(sent) as f64 / 1000.0);
                }
            }
            lat
        }));
    }
    let pid = f.server.pid();
    let mark = CpuMark::now(pid);
    let acked = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(secs);
    let mut streams = Vec::new();
    for (worker, task, token) in held.clone() {
        let (c, acked) = (wc.clone(), acked.clone());
        streams.push(tokio::spawn(async move {
            while Instant::now() < until {
                let sent = unix_micros();
                let events: Vec<NewEvent> = (0..batch)
                    .map(|_| {
                        NewEvent::new(EventPayload::Log {
                            stream: "stdout".into(),
                            line: format!("t {sent}"),
                        })
                    })
                    .collect();
                c.append_events(&worker, task, token, events)
                    .await
                    .expect("append");
                acked.fetch_add(batch as u64, Ordering::Relaxed);
            }
        }));
    }
    for s in streams {
        s.await.expect("join");
    }
    let took = t0.elapsed().as_secs_f64();
    let (srv_cpu, pg_cpu) = mark.since(pid);
    let rss = rss_mib(pid);
    // Finishing the tasks ends their streams.
    for (worker, task, token) in &held {
        wc.complete(worker, *task, *token, TaskResult::default())
            .await
            .expect("complete");
    }
    let mut lat = Vec::new();
    for w in watchers {
        match tokio::time::timeout(Duration::from_secs(120), w).await {
            Ok(Ok(v)) => lat.extend(v),
            _ => eprintln!("[scale] a watcher did not finish"),
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let n = acked.load(Ordering::Relaxed);
    let rate = n as f64 / took;
    println!(
        "events: {tasks} tasks × batches of {batch} for {took:.1} s: {rate:.0} events/s ingested \
         ({n} events; server CPU {srv_cpu:.1} s, PostgreSQL CPU {pg_cpu:.1} s, server RSS {rss:.0} MiB); \
         SSE delivery to {tasks} watchers p50 {:.1} / p99 {:.1} / max {:.1} ms over {} events",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0),
        lat.len()
    );
    results::save(
        "events",
        json!({
            "tasks": tasks, "batch": batch, "seconds": took, "events": n, "per_sec": rate,
            "sse_p50_ms": pct(&lat, 0.5), "sse_p99_ms": pct(&lat, 0.99),
            "sse_max_ms": lat.last().copied().unwrap_or(0.0), "delivered": lat.len(),
            "server_cpu_s": srv_cpu, "pg_cpu_s": pg_cpu, "server_rss_mib": rss,
        }),
    );
    f.server.stop();
}
