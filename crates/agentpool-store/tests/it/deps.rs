//! Dependencies: order of a chain, failure cascade, retry of a failed dependency, and
//! validation at submit.

use agentpool_core::{ErrorClass, TaskSpec, TaskState};
use agentpool_store::{StoreError, WaitReason};

use crate::both;
use crate::harness::{Harness, cmd, failure, ids};

both!(
    dependency_chain_runs_in_order,
    failed_dependency_fails_its_dependents,
    retrying_a_failed_dependency_requeues_the_dependents_it_failed,
    unknown_dependency_is_refused,
);

fn after(spec: TaskSpec, deps: &[agentpool_core::TaskId]) -> TaskSpec {
    TaskSpec {
        depends_on: deps.to_vec(),
        ..spec
    }
}

async fn dependency_chain_runs_in_order(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let a = h.submit(cmd("a")).await;
    let b = h.submit(after(cmd("b"), &[a])).await;
    let c = h.submit(after(cmd("c"), &[a, b])).await;
    let d = h.store.get_task(c).await.unwrap().unwrap();
    assert_eq!(
        d.waiting,
        vec![WaitReason::Dependencies {
            pending: {
                let mut v = vec![a, b];
                v.sort();
                v
            }
        }]
    );
    let mut order = Vec::new();
    loop {
        let got = w.claim(10).await;
        if got.is_empty() {
            break;
        }
        assert_eq!(got.len(), 1, "only one link of the chain is runnable at a time");
        order.extend(ids(&got));
        w.complete(got[0].lease).await;
    }
    assert_eq!(order, vec![a, b, c]);
}

async fn failed_dependency_fails_its_dependents(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let a = h.submit(cmd("a")).await;
    let b = h.submit(after(cmd("b"), &[a])).await;
    let c = h.submit(after(cmd("c"), &[b])).await;
    let unrelated = h.submit(cmd("u")).await;
    let got = w.claim(1).await;
    assert_eq!(ids(&got), vec![a]);
    w.fail(got[0].lease, failure(ErrorClass::InvalidTask, "bad ref"))
        .await;
    for id in [b, c] {
        let t = h.store.get_task(id).await.unwrap().unwrap().task;
        assert_eq!(t.state, TaskState::Failed);
        assert_eq!(t.error_class, Some(ErrorClass::DependencyFailed));
    }
    // Submitting against a failed dependency fails at once; retrying the dependent is refused
    // until the dependency is retried.
    let late = h.store.enqueue(after(cmd("late"), &[a])).await.unwrap().task;
    assert_eq!(late.state, TaskState::Failed);
    assert_eq!(late.error_class, Some(ErrorClass::DependencyFailed));
    assert!(matches!(h.store.retry(b).await, Err(StoreError::Conflict(_))));
    assert_eq!(ids(&w.claim(10).await), vec![unrelated]);
}

async fn state(h: &Harness, id: agentpool_core::TaskId) -> TaskState {
    h.store.get_task(id).await.unwrap().unwrap().task.state
}

/// Claim and complete until nothing is runnable; the ids in the order they ran.
async fn drain(w: &crate::harness::Worker) -> Vec<agentpool_core::TaskId> {
    let mut order = Vec::new();
    loop {
        let got = w.claim(10).await;
        if got.is_empty() {
            return order;
        }
        for c in got {
            order.push(c.task.id);
            w.complete(c.lease).await;
        }
    }
}

async fn retrying_a_failed_dependency_requeues_the_dependents_it_failed(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let a = h.submit(cmd("a")).await;
    let x = h.submit(cmd("x")).await;
    let b = h.submit(after(cmd("b"), &[a])).await;
    let c = h.submit(after(cmd("c"), &[b])).await;
    let d = h.submit(after(cmd("d"), &[a])).await;
    // f waits for two re-queued tasks, one of which is re-queued after f is first looked at.
    let f = h.submit(after(cmd("f"), &[c, d])).await;
    // g is also held back by x, which stays failed.
    let g = h.submit(after(cmd("g"), &[b, x])).await;
    // e was canceled by hand: a retry of a must not bring it back.
    let e = h.submit(after(cmd("e"), &[a])).await;
    h.store.cancel(e).await.unwrap();

    let got = w.claim(2).await;
    assert_eq!(ids(&got), vec![a, x]);
    for c in got {
        w.fail(c.lease, failure(ErrorClass::InvalidTask, "bad ref")).await;
    }
    for id in [b, c, d, f, g] {
        let t = h.store.get_task(id).await.unwrap().unwrap().task;
        assert_eq!(t.error_class, Some(ErrorClass::DependencyFailed), "{id}");
    }

    let (t, requeued) = h.store.retry_with_dependents(a).await.unwrap();
    assert_eq!(t.state, TaskState::Queued);
    // Depth first; f is passed over from d (c still failed) and queued again from c.
    assert_eq!(requeued, vec![b, d, c, f]);
    for id in [b, c, d, f] {
        let t = h.store.get_task(id).await.unwrap().unwrap().task;
        assert_eq!((t.state, t.error_class), (TaskState::Queued, None), "{id}");
        assert_eq!(t.attempts, 0, "{id} never ran");
    }
    assert_eq!(state(&h, g).await, TaskState::Failed, "x still holds g back");
    assert_eq!(state(&h, e).await, TaskState::Canceled);
    let ran = drain(&w).await;
    assert_eq!(ran.len(), 5, "{ran:?}");
    let pos = |id| ran.iter().position(|r| *r == id).unwrap();
    assert!(pos(a) < pos(b) && pos(b) < pos(c) && pos(a) < pos(d), "{ran:?}");
    assert!(pos(c) < pos(f) && pos(d) < pos(f), "{ran:?}");

    // Retrying x now brings g back: its other dependency has succeeded.
    h.store.retry(x).await.unwrap();
    assert_eq!(drain(&w).await, vec![x, g]);
    for id in [a, x, b, c, d, f, g] {
        assert_eq!(state(&h, id).await, TaskState::Succeeded, "{id}");
    }
    assert_eq!(state(&h, e).await, TaskState::Canceled);
}

async fn unknown_dependency_is_refused(h: Harness) {
    let r = h
        .store
        .enqueue(after(cmd("x"), &[agentpool_core::TaskId::new()]))
        .await;
    assert!(matches!(r, Err(StoreError::Invalid(_))));
    assert_eq!(h.store.count_by_state().await.unwrap()[&TaskState::Queued], 0);
}
