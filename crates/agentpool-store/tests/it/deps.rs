//! Dependencies: order of a chain, failure cascade, and validation at submit.

use agentpool_core::{ErrorClass, TaskSpec, TaskState};
use agentpool_store::{StoreError, WaitReason};

use crate::both;
use crate::harness::{Harness, cmd, failure, ids};

both!(
    dependency_chain_runs_in_order,
    failed_dependency_fails_its_dependents,
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

async fn unknown_dependency_is_refused(h: Harness) {
    let r = h
        .store
        .enqueue(after(cmd("x"), &[agentpool_core::TaskId::new()]))
        .await;
    assert!(matches!(r, Err(StoreError::Invalid(_))));
    assert_eq!(h.store.count_by_state().await.unwrap()[&TaskState::Queued], 0);
}
