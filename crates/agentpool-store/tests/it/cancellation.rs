//! Store calls dropped mid-way (a long poll whose client went away, a `select!` that took
//! another branch) leave the store usable: no transaction stays open on a pooled connection.
//!
//! Each call is cancelled at every point where it waits, in turn: the test polls it by hand,
//! waits for its waker (the event that lets it go on, not a sleep), and drops it after `k`
//! wake-ups, for k = 0, 1, … until the call completes on its own. Where a call waits on
//! another thread (SQLite's connection thread) the points it stops at vary a little from run to
//! run, so each sweep is repeated; `sqlite::pool`'s unit test makes the SQLite case exactly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use tokio::sync::Notify;

use crate::both;
use crate::harness::{Harness, cmd};

both!(
    a_claim_cancelled_at_any_point_leaves_the_store_usable,
    an_enqueue_cancelled_at_any_point_leaves_the_store_usable,
);

/// Sweeps per scenario (each takes a few milliseconds).
const SWEEPS: usize = 10;

struct Woken(Notify);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        // A permit is stored when nobody waits yet, so a wake-up is never lost.
        self.0.notify_one();
    }
}

/// Drive `fut` through `steps` wake-ups and drop it there. Returns whether it completed first.
async fn cancel_after<F: Future + ?Sized>(mut fut: Pin<Box<F>>, steps: usize) -> bool {
    let woken = Arc::new(Woken(Notify::new()));
    let waker = Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);
    for _ in 0..steps {
        if fut.as_mut().poll(&mut cx).is_ready() {
            return true;
        }
        tokio::time::timeout(Duration::from_secs(30), woken.0.notified())
            .await
            .expect("a pending store call was never woken");
    }
    false
}

/// After a cancelled call, a write on the store still works: the connection it used was
/// handed back clean.
async fn assert_usable(h: &Harness, after: &str, step: usize) {
    if let Err(e) = h.store.enqueue(cmd("probe")).await {
        panic!("enqueue after {after} cancelled at wake-up {step}: {e}");
    }
}

async fn a_claim_cancelled_at_any_point_leaves_the_store_usable(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    h.store.enqueue(cmd("work")).await.unwrap();
    let filter = w.filter(1);
    for _ in 0..SWEEPS {
        let mut completed = false;
        for step in 0..200 {
            if cancel_after(h.store.claim(&filter), step).await {
                completed = true;
                break;
            }
            assert_usable(&h, "claim", step).await;
        }
        assert!(completed, "the claim never completed within 200 wake-ups");
    }
    // The queue still behaves: what is queued can be claimed.
    assert!(!w.claim(10).await.is_empty());
}

async fn an_enqueue_cancelled_at_any_point_leaves_the_store_usable(h: Harness) {
    for _ in 0..SWEEPS {
        let mut completed = false;
        for step in 0..200 {
            if cancel_after(h.store.enqueue(cmd("work")), step).await {
                completed = true;
                break;
            }
            assert_usable(&h, "enqueue", step).await;
        }
        assert!(completed, "the enqueue never completed within 200 wake-ups");
    }
}
