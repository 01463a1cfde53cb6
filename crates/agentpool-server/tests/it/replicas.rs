//! Two server replicas on one PostgreSQL database, with plain-HTTP workers on both claiming
//! and completing in loops: no task is ever claimed twice, and every task finishes. A cancel
//! made through one replica reaches a heartbeat waiting on the other.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentpool_core::TaskState;
use agentpool_server::RunningServer;
use agentpool_server::api::CompleteItem;
use agentpool_store::Clock;
use agentpool_testkit::db::{Backend, TestDb};

use crate::support::{TestApp, command_task, complete, open_store, register, spawn_on, test_config};

/// Replica A (a test app) and replica B: B has its own store (own pool, own LISTEN) on the same
/// PostgreSQL database and shares A's tokens.
async fn two_replicas() -> Option<(TestApp, RunningServer)> {
    let db = TestDb::new(Backend::Postgres).await?;
    let url = db.url().to_string();
    let clock = Clock::system();
    let store_a = open_store(&db, &clock).await;
    let a = spawn_on(db, store_a, clock, test_config()).await;
    let store_b = agentpool_store::open_store(&url).await.expect("open b");
    let b = agentpool_server::start_with_store(test_config(), store_b)
        .await
        .expect("start b");
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_never_hand_out_a_task_twice() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let base_b = format!("http://{}", b.addr);

    const TASKS: usize = 400;
    let sub = a.submitter();
    let specs: Vec<_> = (0..TASKS).map(|i| command_task(&format!("job {i}"))).collect();
    for chunk in specs.chunks(100) {
        sub.submit_batch(chunk.to_vec()).await.expect("submit");
    }

    let claimed: Arc<Mutex<Vec<agentpool_core::TaskId>>> = Arc::default();
    let mut workers = Vec::new();
    for (i, base) in [a.base.clone(), base_b.clone(), a.base.clone(), base_b.clone()]
        .into_iter()
        .enumerate()
    {
        let c = agentpool_client::Client::new(&base, Some(a.tokens.worker.clone())).expect("client");
        let claimed = claimed.clone();
        workers.push(tokio::spawn(async move {
            let w = register(&c).await;
            let mut empty = 0;
            while empty < 2 {
                let got = c
                    .claim(&w.id, 1 + (i as u32 % 2) * 15, Duration::from_secs(1))
                    .await
                    .expect("claim");
                if got.is_empty() {
                    empty += 1;
                    continue;
                }
                empty = 0;
                claimed
                    .lock()
                    .expect("lock")
                    .extend(got.iter().map(|g| g.claimed.task.id));
                // Half the workers complete one by one, half in batches.
                if i % 2 == 0 {
                    for g in &got {
                        complete(&c, &w.id, &g.claimed).await;
                    }
                } else {
                    let items = got.iter().map(|g| CompleteItem::success(&g.claimed)).collect();
                    let r = c.complete_batch(&w.id, items).await.expect("batch");
                    assert!(r.iter().all(|x| x.ok), "{r:?}");
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let claimed = claimed.lock().expect("lock").clone();
    let unique: HashSet<_> = claimed.iter().collect();
    assert_eq!(unique.len(), claimed.len(), "a task was claimed twice");
    assert_eq!(claimed.len(), TASKS);
    let counts = a.store.count_by_state().await.expect("counts");
    assert_eq!(
        counts.get(&TaskState::Succeeded).copied().unwrap_or(0),
        TASKS as u64
    );
    b.shutdown().await.expect("stop b");
}

/// A long poll on replica B is woken by a submit through replica A (PostgreSQL's NOTIFY), and
/// a task's live event stream on A carries events a worker appends through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_work_signals_and_live_events() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let wrk_b = agentpool_client::Client::new(&format!("http://{}", b.addr), Some(a.tokens.worker.clone()))
        .expect("client");
    let w = register(&wrk_b).await;
    let state_b = b.state.clone();
    let waiter = {
        let (c, id) = (wrk_b.clone(), w.id.clone());
        tokio::spawn(async move { c.claim(&id, 1, Duration::from_secs(30)).await })
    };
    crate::support::eventually(Duration::from_secs(10), || state_b.waiting_claims() == 1).await;
    let submitted = std::time::Instant::now();
    let t = a
        .submitter()
        .submit(&command_task("cross-replica"))
        .await
        .expect("submit")
        .task;
    let got = waiter.await.expect("join").expect("claim");
    assert!(
        submitted.elapsed() < Duration::from_secs(2),
        "replica B's long poll took {:?} to see replica A's submit",
        submitted.elapsed()
    );
    let c = &got[0].claimed;
    assert_eq!(c.task.id, t.id);

    use futures::StreamExt;
    let mut stream = Box::pin(a.submitter().stream_events(t.id, 0).await.expect("stream on A"));
    wrk_b
        .append_events(
            &w.id,
            t.id,
            c.lease.token,
            vec![agentpool_core::NewEvent::log("stdout", "from B")],
        )
        .await
        .expect("append on B");
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = stream.next().await {
            if ev.expect("event").data()["line"] == "from B" {
                return true;
            }
        }
        false
    })
    .await
    .expect("event from replica B arrives on A's stream");
    assert!(found);
    complete(&wrk_b, &w.id, c).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.collect::<Vec<_>>()).await;
    assert!(ended.is_ok(), "A's stream did not end after B completed the task");
    b.shutdown().await.expect("stop b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_replica_answers_a_heartbeat_waiting_on_the_other() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let base_b = format!("http://{}", b.addr);
    let (sub, _, w, t, c) = crate::support::submit_and_claim(&a, "sleep 100").await;
    let on_b = agentpool_client::Client::new(&base_b, Some(a.tokens.worker.clone())).expect("client");
    let waiting = tokio::spawn(async move {
        let req = agentpool_core::protocol::HeartbeatRequest {
            leases: vec![c.lease],
            ..Default::default()
        };
        on_b.heartbeat_waiting(&w.id, &req, Duration::from_secs(60)).await
    });
    crate::flows::leases::heartbeats_waiting(&base_b, 1).await;
    sub.cancel(t.id).await.expect("cancel through a");
    let reply = waiting.await.expect("join").expect("heartbeat on b");
    assert_eq!(reply.cancel, vec![t.id]);
}
