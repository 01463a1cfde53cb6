//! Hand-over: a task submitted while a claimer waits is claimed for that claimer in the
//! enqueue's own transaction and delivered to it; when the hand-over cannot happen (the
//! worker is draining) or the claimer left before taking the task, the task stays or goes
//! back in the queue and another claimer is woken for it — nothing is lost or held twice.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use agentpool_core::protocol::ClaimedTask;
use agentpool_core::{Lease, Lifecycle, TaskResult, TaskState};
use agentpool_store::{ClaimWaiter, StoreError, Wake};

use crate::both;
use crate::harness::{Harness, Worker, claimed, cmd, lifecycle};

both!(
    a_waiting_claimer_is_handed_the_task_claimed_in_the_enqueue,
    a_draining_worker_is_not_handed_a_task_and_another_claimer_is_woken,
    a_task_left_in_a_dropped_waiter_goes_back_to_the_queue,
    delayed_constrained_and_dependent_tasks_are_not_handed_over,
);

/// Longer than any healthy test: a wait only ends through what the test does.
const LONG: Duration = Duration::from_secs(600);

type Waiting<'a> = Pin<Box<dyn Future<Output = Wake> + Send + 'a>>;

/// Start `waiter`'s wait and poll it once, so that it is parked (as a long poll with nothing
/// to claim is) before the test goes on.
async fn park(waiter: &mut ClaimWaiter) -> Waiting<'_> {
    let mut wait: Waiting<'_> = Box::pin(waiter.wait(LONG));
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(wait.as_mut().poll(cx).is_pending())).await;
    assert!(polled, "nothing to wake the waiter yet");
    wait
}

/// Workers `a` and `b` (command workers), each with a claim waiter for one task, not yet
/// parked.
async fn two_claimers(h: &Harness, a: &str, b: &str) -> ([Worker; 2], [ClaimWaiter; 2]) {
    let workers = [
        h.worker(a, &["command"], &[]).await,
        h.worker(b, &["command"], &[]).await,
    ];
    let waiters = workers.each_ref().map(|w| h.store.claim_waiter(&w.filter(1)));
    (workers, waiters)
}

fn handed(w: Wake) -> Vec<ClaimedTask> {
    match w {
        Wake::Handed(c) => c,
        other => panic!("expected a hand-over, got {other:?}"),
    }
}

async fn a_waiting_claimer_is_handed_the_task_claimed_in_the_enqueue(h: Harness) {
    let w = h.worker("waiting", &["command"], &[]).await;
    let other = h.worker("other", &["command"], &[]).await;
    let mut waiter = h.store.claim_waiter(&w.filter(1));
    assert!(w.claim(1).await.is_empty());
    let wait = park(&mut waiter).await;
    let e = h.store.enqueue(cmd("handed")).await.unwrap();
    // The submitter sees the task as it is: already running on the waiting worker.
    assert_eq!(e.task.state, TaskState::Running);
    assert_eq!(e.task.worker_id.as_ref(), Some(&w.id));
    assert_eq!(e.task.attempts, 1);
    let got = handed(wait.await);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].task.id, got[0].attempt), (e.task.id, 1));
    assert_eq!(Some(got[0].lease.token), e.task.lease_token);
    // Held once: nobody else can claim it, and the lease handed over is the live one.
    assert!(other.claim(10).await.is_empty());
    w.complete(got[0].lease).await;
    assert_eq!(
        lifecycle(&*h.store, e.task.id).await,
        vec![Lifecycle::Queued, claimed(&w, 1), Lifecycle::Succeeded]
    );
    assert_eq!(
        h.store.get_task(e.task.id).await.unwrap().unwrap().task.attempts,
        1
    );
}

async fn a_draining_worker_is_not_handed_a_task_and_another_claimer_is_woken(h: Harness) {
    let ([draining, healthy], [mut first, mut second]) = two_claimers(&h, "draining", "healthy").await;
    // The draining worker's poll waits longest: it is the one the enqueue reserves.
    let w1 = park(&mut first).await;
    let w2 = park(&mut second).await;
    h.store.drain_worker(&draining.id).await.unwrap();
    let e = h.store.enqueue(cmd("not for a draining worker")).await.unwrap();
    assert_eq!(e.task.state, TaskState::Queued);
    // Its waiter is told to claim (and gets nothing); the other is woken and claims the task.
    assert!(matches!(w1.await, Wake::Claim));
    assert!(draining.claim(1).await.is_empty());
    assert!(matches!(w2.await, Wake::Claim));
    let got = healthy.claim(1).await;
    assert_eq!(crate::harness::ids(&got), vec![e.task.id]);
    assert_eq!(got[0].attempt, 1);
}

async fn a_task_left_in_a_dropped_waiter_goes_back_to_the_queue(h: Harness) {
    let ([gone, next], [mut first, mut second]) = two_claimers(&h, "gone", "next").await;
    let w1 = park(&mut first).await;
    let w2 = park(&mut second).await;
    let e = h.store.enqueue(cmd("left behind")).await.unwrap();
    assert_eq!(e.task.worker_id.as_ref(), Some(&gone.id));
    // The long poll ends (its client went away) before it took the task from its mailbox.
    drop(w1);
    drop(first);
    // The task goes back to the queue and the other waiter is woken for it.
    assert!(matches!(w2.await, Wake::Claim));
    let got = next.claim(1).await;
    assert_eq!(crate::harness::ids(&got), vec![e.task.id]);
    // Not counted as an attempt; the lease handed over is fenced off.
    assert_eq!(got[0].attempt, 1);
    let stale = h
        .store
        .complete(
            &gone.id,
            Lease {
                task_id: e.task.id,
                token: e.task.lease_token.unwrap(),
            },
            TaskResult::default(),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::StaleLease(_))), "{stale:?}");
    next.complete(got[0].lease).await;
    assert_eq!(
        lifecycle(&*h.store, e.task.id).await,
        vec![
            Lifecycle::Queued,
            claimed(&gone, 1),
            Lifecycle::Queued,
            claimed(&next, 1),
            Lifecycle::Succeeded
        ]
    );
}

async fn delayed_constrained_and_dependent_tasks_are_not_handed_over(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let mut waiter = h.store.claim_waiter(&w.filter(10));
    let wait = park(&mut waiter).await;
    let dep = h.store.enqueue(cmd("dependency")).await.unwrap().task;
    assert_eq!(dep.state, TaskState::Running, "the plain task is handed over");
    assert_eq!(crate::harness::ids(&handed(wait.await)), vec![dep.id]);
    let wait = park(&mut waiter).await;
    let specs = vec![
        agentpool_core::TaskSpec {
            run_after: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            ..cmd("later")
        },
        agentpool_core::TaskSpec {
            branch: Some("main".into()),
            ..cmd("on a branch")
        },
        agentpool_core::TaskSpec {
            depends_on: vec![dep.id],
            ..cmd("after the dependency")
        },
    ];
    let out = h.store.enqueue_batch(specs).await.unwrap();
    assert!(out.iter().all(|e| e.task.state == TaskState::Queued), "{out:?}");
    // The branch task wakes the waiter instead; its claim takes it.
    assert!(matches!(wait.await, Wake::Claim));
    let got = w.claim(10).await;
    assert_eq!(crate::harness::ids(&got), vec![out[1].task.id]);
}
