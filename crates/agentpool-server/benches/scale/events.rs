//! The event path over real HTTP: T running tasks (each claimed by its own worker) stream
//! agent events in batches to the server while one SSE watcher per task follows its stream.
//! Two phases on the same server and tasks: **saturated** (every task appends as fast as its
//! acknowledgements come back: the events/s the server ingests) and **paced** (appends spread
//! evenly at `--rate` events/s in all: SSE delivery latency at that load). Latency under a
//! saturating closed loop is queueing by construction — it grows with whatever the producers
//! manage to push — so the paced phase is the one that says how fast a watcher sees an event.
//! Latency = append request start → event received over SSE, same clock.
//!
//! Options: `--tasks 100 --seconds 10 --batch 50 --rate 20000`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::MissedTickBehavior;

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

/// One phase's figures.
struct Phase {
    took: f64,
    events: u64,
    srv_cpu: f64,
    pg_cpu: f64,
}

pub async fn run(args: &Args) {
    let tasks = args.get("tasks", 100usize, 5);
    let secs = args.get("seconds", 10.0f64, 2.0);
    let batch = args.get("batch", 50usize, 20);
    let rate = args.get("rate", 20_000.0f64, 500.0);
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
    // One watcher per task, following from the start; each event's line names its phase.
    let mut watchers = Vec::new();
    for (_, task, _) in &held {
        let mut s = Box::pin(f.submitter.stream_events(*task, 0).await.expect("subscribe"));
        watchers.push(tokio::spawn(async move {
            let mut lat: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            while let Some(e) = s.next().await {
                let Ok(e) = e else { break };
                if let EventPayload::Log { line, .. } = &e.payload
                    && let Some((phase, sent)) = parse_line(line)
                {
                    lat[phase].push(unix_micros().saturating_sub(sent) as f64 / 1000.0);
                }
            }
            lat
        }));
    }
    let pid = f.server.pid();
    let saturated = phase(&wc, &held, 0, secs, batch, None, pid).await;
    let paced = phase(&wc, &held, 1, secs, batch, Some(rate), pid).await;
    let rss = rss_mib(pid);
    // Finishing the tasks ends their streams.
    for (worker, task, token) in &held {
        wc.complete(worker, *task, *token, TaskResult::default())
            .await
            .expect("complete");
    }
    let mut lat: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for w in watchers {
        match tokio::time::timeout(Duration::from_secs(120), w).await {
            Ok(Ok([a, b])) => {
                lat[0].extend(a);
                lat[1].extend(b);
            }
            _ => eprintln!("[scale] a watcher did not finish"),
        }
    }
    for l in &mut lat {
        l.sort_by(|a, b| a.total_cmp(b));
    }
    let mut out = serde_json::Map::new();
    out.insert("tasks".into(), json!(tasks));
    out.insert("batch".into(), json!(batch));
    out.insert("server_rss_mib".into(), json!(rss));
    for (name, p, l) in [("saturated", &saturated, &lat[0]), ("paced", &paced, &lat[1])] {
        let per_sec = p.events as f64 / p.took;
        println!(
            "events, {name}: {tasks} tasks × batches of {batch} for {:.1} s: {per_sec:.0} events/s \
             ingested ({} events; server CPU {:.1} s, PostgreSQL CPU {:.1} s); SSE delivery to \
             {tasks} watchers p50 {:.1} / p99 {:.1} / max {:.1} ms over {} events",
            p.took,
            p.events,
            p.srv_cpu,
            p.pg_cpu,
            pct(l, 0.5),
            pct(l, 0.99),
            l.last().copied().unwrap_or(0.0),
            l.len()
        );
        out.insert(
            name.into(),
            json!({
                "seconds": p.took, "events": p.events, "per_sec": per_sec,
                "sse_p50_ms": pct(l, 0.5), "sse_p99_ms": pct(l, 0.99),
                "sse_max_ms": l.last().copied().unwrap_or(0.0), "delivered": l.len(),
                "server_cpu_s": p.srv_cpu, "pg_cpu_s": p.pg_cpu,
            }),
        );
    }
    if saturated.events as f64 / saturated.took < rate {
        println!("events: the paced rate ({rate:.0}/s) is above what was ingested saturated");
    }
    println!("events: server RSS {rss:.0} MiB");
    results::save("events", serde_json::Value::Object(out));
    f.server.stop();
}

/// `t <phase> <micros>` → (phase, micros).
fn parse_line(line: &str) -> Option<(usize, u64)> {
    let mut it = line.strip_prefix("t ")?.split(' ');
    let phase = it.next()?.parse::<usize>().ok().filter(|p| *p < 2)?;
    Some((phase, it.next()?.parse().ok()?))
}

/// Every held task appends batches for `secs`: back to back, or (with `rate`) one batch per
/// task every `tasks × batch / rate` seconds, the tasks' ticks spread over that interval.
async fn phase(
    wc: &Client,
    held: &[(
        agentpool_core::WorkerId,
        agentpool_core::TaskId,
        agentpool_core::LeaseToken,
    )],
    phase: usize,
    secs: f64,
    batch: usize,
    rate: Option<f64>,
    pid: u32,
) -> Phase {
    let mark = CpuMark::now(pid);
    let acked = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(secs);
    let every = rate.map(|r| Duration::from_secs_f64(held.len() as f64 * batch as f64 / r));
    let mut streams = Vec::new();
    for (i, (worker, task, token)) in held.iter().cloned().enumerate() {
        let (c, acked) = (wc.clone(), acked.clone());
        let mut tick = every.map(|e| {
            let start = tokio::time::Instant::from_std(t0) + e.mul_f64(i as f64 / held.len() as f64);
            let mut t = tokio::time::interval_at(start, e);
            // Open loop: a late tick is sent at once, and the schedule keeps its rate.
            t.set_missed_tick_behavior(MissedTickBehavior::Burst);
            t
        });
        streams.push(tokio::spawn(async move {
            loop {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                if Instant::now() >= until {
                    break;
                }
                let sent = unix_micros();
                let events: Vec<NewEvent> = (0..batch)
                    .map(|_| {
                        NewEvent::new(EventPayload::Log {
                            stream: "stdout".into(),
                            line: format!("t {phase} {sent}"),
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
    Phase {
        took,
        events: acked.load(Ordering::Relaxed),
        srv_cpu,
        pg_cpu,
    }
}
