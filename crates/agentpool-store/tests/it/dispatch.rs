//! Wake-one dispatch: a new task wakes (or is handed to) one waiting claimer that can run it,
//! not every waiter, and no wake-up is lost when submits race against polls that start and end
//! — also when a poll ends just after a task was handed to it.

use std::time::Duration;

use agentpool_core::{ErrorClass, TaskId, TaskResult, TaskSpec};
use agentpool_store::Wake;

use crate::both;
use crate::harness::{Harness, Worker, cmd, failure, labels};

both!(
    a_task_wakes_one_waiter_not_all,
    a_task_given_back_wakes_another_worker_though_its_own_waits_longest,
    no_wake_up_is_lost_when_polls_start_and_end_during_submits,
);

/// A wait no healthy run reaches: a task is only claimed in time through a wake-up.
const LONG: Duration = Duration::from_secs(600);
/// How long the whole race may take before a task counts as lost.
const DEADLINE: Duration = Duration::from_secs(60);

async fn a_task_wakes_one_waiter_not_all(h: Harness) {
    let mut waiters = Vec::new();
    for i in 0..20 {
        let w = h.worker(&format!("idle{i}"), &["command"], &[]).await;
        let mut waiter = h.store.claim_waiter(&w.filter(1));
        assert!(w.claim(1).await.is_empty());
        let (tx, rx) = tokio::sync::oneshot::channel();
        waiters.push((
            tokio::spawn(async move {
                let woken = waiter.wait(LONG).await;
                let _ = tx.send(());
                (woken, waiter, w)
            }),
            rx,
        ));
    }
    let id = h.submit(cmd("one")).await;
    // The enqueue hands its wake-ups out before it returns: a waiter it woke is runnable now.
    let (first, i, _) = futures::future::select_all(waiters.iter_mut().map(|(_, rx)| rx)).await;
    assert!(first.is_ok());
    let (j, _) = waiters.swap_remove(i);
    let (wake, waiter, w) = j.await.unwrap();
    // Handed over when the waiter was parked by the time of the enqueue, else woken to claim.
    let got = match wake {
        Wake::Handed(got) => got,
        Wake::Claim => w.claim(1).await,
        Wake::TimedOut => panic!("the woken waiter timed out"),
    };
    assert_eq!(crate::harness::ids(&got), vec![id]);
    waiter.finish(false);
    // Had the enqueue woken the others, they would have run by now: the claim above was a
    // database round trip, and the runtime has had every chance to run them.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    for (j, _) in &waiters {
        assert!(!j.is_finished(), "a second waiter woke for the same task");
        j.abort();
    }
}

/// The worker that gives a task back passes it over in its claims, so a wake-up that reached
/// only its own waiter (the longest waiting of the class) would leave the task to wait out the
/// grace: the give-back wakes a second waiter, and the other worker takes it at once.
async fn a_task_given_back_wakes_another_worker_though_its_own_waits_longest(h: Harness) {
    let a = h.worker("a", &["command"], &[]).await;
    let b = h.worker("b", &["command"], &[]).await;
    let id = h.submit(cmd("make")).await;
    let held = a.claim(1).await.remove(0);
    let park = |w: Worker| {
        let mut waiter = w.store.claim_waiter(&w.filter(1));
        async move {
            assert!(w.claim(1).await.is_empty());
            let wake = waiter.wait(LONG).await;
            let got = match wake {
                Wake::Claim => w.claim(1).await,
                Wake::Handed(got) => got,
                Wake::TimedOut => Vec::new(),
            };
            waiter.finish(false);
            got
        }
    };
    let a_again = a.clone();
    let a_waits = tokio::spawn(park(a_again));
    // a's waiter is the class's longest waiting: b's starts after it is parked.
    while h.store.parked_claimers() < 1 {
        tokio::task::yield_now().await;
    }
    let b_waits = tokio::spawn(park(b));
    while h.store.parked_claimers() < 2 {
        tokio::task::yield_now().await;
    }
    a.fail(held.lease, failure(ErrorClass::WorkerError, "disk full"))
        .await;
    // Before the grace ends (when a timer wakes the class again): b was woken by the give-back.
    let got = tokio::time::timeout(agentpool_store::GIVEN_BACK_GRACE / 3, b_waits)
        .await
        .expect("b was woken at once")
        .unwrap();
    assert_eq!(crate::harness::ids(&got), vec![id]);
    let got = tokio::time::timeout(DEADLINE, a_waits)
        .await
        .expect("a was woken")
        .unwrap();
    assert!(got.is_empty(), "a passed over what it gave back");
}

/// A kind of worker: its agents and labels.
struct Kind(&'static [&'static str], &'static [(&'static str, &'static str)]);

/// One long poll as a worker makes it: register, claim, wait, claim again, until it gets a
/// task (completed at once) or `end` fires (its poll ended: timed out or the client left).
/// `armed` fires after the first empty claim, when the poll is waiting.
async fn poll_once(
    w: Worker,
    armed: tokio::sync::oneshot::Sender<()>,
    mut end: tokio::sync::oneshot::Receiver<()>,
) -> Vec<TaskId> {
    let f = w.filter(1);
    let mut waiter = w.store.claim_waiter(&f);
    let mut armed = Some(armed);
    let mut handed = Vec::new();
    loop {
        let got = if handed.is_empty() {
            w.store.claim(&f).await.expect("claim")
        } else {
            std::mem::take(&mut handed)
        };
        if !got.is_empty() {
            waiter.finish(true);
            let items = got.iter().map(|c| (c.lease, TaskResult::default())).collect();
            let r = w.store.complete_batch(&w.id, items).await.expect("complete");
            assert!(r.iter().all(|r| r.is_ok()));
            return crate::harness::ids(&got);
        }
        if let Some(a) = armed.take() {
            let _ = a.send(());
        }
        tokio::select! {
            wake = waiter.wait(LONG) => match wake {
                Wake::Claim => {}
                Wake::Handed(got) => handed = got,
                Wake::TimedOut => panic!("a poll timed out: a wake-up was lost"),
            },
            _ = &mut end => return Vec::new(),
        }
    }
}

/// Rounds of: pollers of one kind wait (on two replicas on PostgreSQL), a task they can run is
/// submitted, and all but the one that started last end their polls at a random moment
/// around the wake-up — often just after being handed it, before claiming. The task must still
/// be claimed, by one of the enders or by the last poller, which nothing but a wake-up passed
/// on can reach.
async fn no_wake_up_is_lost_when_polls_start_and_end_during_submits(h: Harness) {
    const ROUNDS: usize = 24;
    const ENDERS: usize = 6;
    // On PostgreSQL half the pollers wait on a second store (another replica): its wake-ups
    // come by NOTIFY. SQLite's signal is in-process, so one store plays both.
    let replica = if h.backend() == agentpool_testkit::db::Backend::Postgres {
        h.replica().await
    } else {
        h.store.clone()
    };
    let stores = [h.store.clone(), replica];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let kinds = [
        Kind(&["command"], &[]),
        Kind(&["codex", "command"], &[("gpu", "1")]),
    ];
    let mut pools: Vec<Vec<Worker>> = Vec::new();
    for (k, Kind(agents, lbls)) in kinds.iter().enumerate() {
        let mut pool = Vec::new();
        for i in 0..=ENDERS {
            let mut w = h.worker(&format!("k{k}-{i}"), agents, lbls).await;
            w.store = stores[i % 2].clone();
            pool.push(w);
        }
        pools.push(pool);
    }
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let kind = round % 2;
        let mut polls = Vec::new();
        // Enders first: they are the longest-waiting, so the wake-up goes to one of them.
        for w in &pools[kind] {
            let (armed, armed_rx) = tokio::sync::oneshot::channel();
            let (end_tx, end) = tokio::sync::oneshot::channel();
            let w = w.clone();
            polls.push((tokio::spawn(poll_once(w, armed, end)), end_tx));
            armed_rx.await.unwrap();
        }
        let spec = if kind == 0 {
            cmd(&format!("round {round}"))
        } else {
            TaskSpec {
                labels: labels(&[("gpu", "1")]),
                ..TaskSpec::agent(
                    "https://git.example.com/r.git",
                    "codex",
                    &format!("round {round}"),
                )
            }
        };
        let id = stores[(rnd() % 2) as usize].enqueue(spec).await.unwrap().task.id;
        // Mostly end the polls at once (the woken one may not have looked yet), sometimes a
        // little later (it may be claiming).
        if rnd() % 4 == 0 {
            for _ in 0..=(rnd() % 3) {
                tokio::task::yield_now().await;
            }
        }
        let (last, last_end) = polls.pop().unwrap();
        let mut got = Vec::new();
        for (p, end) in polls {
            let _ = end.send(());
            got.extend(p.await.unwrap());
        }
        if got.is_empty() {
            match tokio::time::timeout(DEADLINE, last).await {
                Ok(r) => got.extend(r.unwrap()),
                Err(_) => lost.push(round),
            }
        } else {
            let _ = last_end.send(());
            got.extend(last.await.unwrap());
        }
        if !lost.contains(&round) {
            assert_eq!(got, vec![id], "round {round}: claimed {got:?}");
        }
    }
    assert!(
        lost.is_empty(),
        "tasks of rounds {lost:?} were never claimed: wake-ups lost"
    );
}
