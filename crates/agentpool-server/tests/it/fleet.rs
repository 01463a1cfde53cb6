//! Long polls over HTTP on two replicas sharing PostgreSQL: while polls end and start around
//! the submits, every task is claimed through a wake-up, well before any poll's own timeout.
//! (The sharper race, a poll dropped just after being handed a wake-up, is in the store's
//! suite: `dispatch::no_wake_up_is_lost_when_polls_start_and_end_during_submits`.)

use std::collections::HashSet;
use std::time::Duration;

use agentpool_client::Client;
use agentpool_core::TaskId;
use agentpool_store::Clock;
use agentpool_testkit::db::{Backend, TestDb};

use crate::support::{command_task, complete, eventually, open_store, register, spawn_on, test_config};

/// One long poll: claim once (waiting up to `wait`), complete what came, report it.
fn poll_once(
    c: Client,
    wait: Duration,
    tx: tokio::sync::mpsc::UnboundedSender<TaskId>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let w = register(&c).await;
        for g in c.claim(&w.id, 1, wait).await.expect("claim") {
            complete(&c, &w.id, &g.claimed).await;
            let _ = tx.send(g.claimed.task.id);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_is_claimed_while_polls_end_and_start_on_two_replicas() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let url = db.url().to_string();
    let clock = Clock::system();
    let store_a = open_store(&db, &clock).await;
    let a = spawn_on(db, store_a, clock.clone(), test_config()).await;
    let store_b = agentpool_store::open_store(&url).await.expect("open b");
    let b = agentpool_server::start_with_store(test_config(), store_b)
        .await
        .expect("start b");
    let token = Some(a.tokens.worker.clone());
    let clients = [
        Client::new(&a.base, token.clone()).expect("client a"),
        Client::new(&format!("http://{}", b.addr), token).expect("client b"),
    ];
    const TASKS: usize = 16;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // One poll per task, half on each replica, each polling once (30 s): after its first,
    // empty claim only a wake-up brings it a task.
    let mut polls: Vec<_> = (0..TASKS)
        .map(|i| poll_once(clients[i % 2].clone(), Duration::from_secs(30), tx.clone()))
        .collect();
    let (sa, sb) = (a.state().clone(), b.state.clone());
    eventually(Duration::from_secs(20), || {
        sa.waiting_claims() + sb.waiting_claims() == TASKS
    })
    .await;
    let sub = [
        a.submitter(),
        Client::new(&format!("http://{}", b.addr), Some(a.tokens.submitter.clone())).expect("client"),
    ];
    for i in 0..TASKS {
        // A short poll that the server ends (1 s) while later submits go on; it takes the
        // task it is woken for if it gets there first.
        polls.push(poll_once(
            clients[(i + 1) % 2].clone(),
            Duration::from_secs(1),
            tx.clone(),
        ));
        sub[i % 2]
            .submit(&command_task(&format!("t{i}")))
            .await
            .expect("submit");
        // Pacing, so that short polls end during later submits.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    let mut got = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        while got.len() < TASKS {
            match rx.recv().await {
                Some(id) => got.push(id),
                None => break,
            }
        }
    })
    .await;
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a task was claimed twice");
    assert!(
        all.is_ok() && got.len() == TASKS,
        "{} of {TASKS} tasks claimed within 20 s: a wake-up was lost",
        got.len()
    );
    for p in polls {
        p.abort();
    }
    b.shutdown().await.expect("stop b");
}
