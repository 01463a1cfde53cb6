//! Branch locks and project slots, within one batch claim and across claims.

use std::collections::HashSet;

use agentpool_core::{TaskResult, TaskSpec};
use agentpool_store::WaitReason;

use crate::both;
use crate::harness::{Harness, cmd, ids};

both!(
    two_tasks_on_one_branch_never_run_together,
    project_with_two_slots_never_runs_three,
    locks_and_slots_hold_under_racing_claimers_on_two_replicas,
);

async fn two_tasks_on_one_branch_never_run_together(h: Harness) {
    let w1 = h.worker("w1", &["command"], &[]).await;
    let w2 = h.worker("w2", &["command"], &[]).await;
    let on_branch = |c: &str| TaskSpec {
        branch: Some("feature/x".into()),
        ..cmd(c)
    };
    let first = h.submit(on_branch("one")).await;
    // Same repo spelled with .git and trailing slash differences: still the same lock.
    let second = h
        .submit(TaskSpec {
            repo: Some("https://git.example.com/r".into()),
            ..on_branch("two")
        })
        .await;
    let other_branch = h
        .submit(TaskSpec {
            branch: Some("feature/y".into()),
            ..cmd("three")
        })
        .await;
    let got = w1.claim(10).await;
    assert_eq!(
        ids(&got).into_iter().collect::<HashSet<_>>(),
        HashSet::from([first, other_branch]),
        "one batch takes only one task per branch"
    );
    assert!(w2.claim(10).await.is_empty(), "branch is held by a running task");
    let d = h.store.get_task(second).await.unwrap().unwrap();
    assert_eq!(
        d.waiting,
        vec![WaitReason::BranchLocked {
            branch: "feature/x".into(),
            held_by: first
        }]
    );
    let lease = got.iter().find(|c| c.task.id == first).unwrap().lease;
    w1.complete(lease).await;
    assert_eq!(ids(&w2.claim(10).await), vec![second]);
}

async fn project_with_two_slots_never_runs_three(h: Harness) {
    h.project_with_slots("p", 2).await;
    let in_project = |c: &str| TaskSpec {
        project: Some("p".into()),
        ..cmd(c)
    };
    let tasks = h.submit_all((0..5).map(|i| in_project(&format!("t{i}")))).await;
    let free = h.submit(cmd("no project")).await;
    let w1 = h.worker("w1", &["command"], &[]).await;
    let w2 = h.worker("w2", &["command"], &[]).await;
    let got = w1.claim(10).await;
    assert_eq!(
        ids(&got).into_iter().collect::<HashSet<_>>(),
        HashSet::from([tasks[0], tasks[1], free])
    );
    assert!(w2.claim(10).await.is_empty(), "project slots are full");
    let d = h.store.get_task(tasks[2]).await.unwrap().unwrap();
    assert_eq!(
        d.waiting,
        vec![WaitReason::ProjectSlotsFull {
            project: "p".into(),
            slots: 2
        }]
    );
    w1.complete(got[0].lease).await;
    let next = w2.claim(10).await;
    assert_eq!(ids(&next), vec![tasks[2]]);
    let running = h.store.count_by_state().await.unwrap()[&agentpool_core::TaskState::Running];
    assert_eq!(running, 3, "two of the project plus the unrelated task");
    // Racing claimers on a fresh project with free slots take exactly its slots, no more.
    h.project_with_slots("q", 2).await;
    h.store
        .enqueue_batch(
            (0..20)
                .map(|i| TaskSpec {
                    project: Some("q".into()),
                    ..cmd(&format!("q{i}"))
                })
                .collect(),
        )
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..4 {
        let w = h.worker(&format!("r{i}"), &["command"], &[]).await;
        handles.push(tokio::spawn(async move { w.claim(5).await }));
    }
    let mut q_running = 0;
    for hd in handles {
        q_running += hd
            .await
            .unwrap()
            .iter()
            .filter(|c| c.task.spec.project.as_deref() == Some("q"))
            .count();
    }
    assert_eq!(q_running, 2);
}

/// Eight claimers on two store instances (two server replicas on PostgreSQL) race over tasks
/// that share four branches and one two-slot project. Each claimer records what it holds in a
/// shared ledger and asserts the limits at the moment it gets a task, releasing its entry
/// before it reports completion (the task is still running in the database until then, so no
/// one else can have taken its place).
async fn locks_and_slots_hold_under_racing_claimers_on_two_replicas(h: Harness) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    h.project_with_slots("p", 2).await;
    const N: usize = 60;
    let specs = (0..N)
        .map(|i| {
            if i % 2 == 0 {
                TaskSpec {
                    branch: Some(format!("b{}", i % 4)),
                    ..cmd(&format!("branch {i}"))
                }
            } else {
                TaskSpec {
                    project: Some("p".into()),
                    ..cmd(&format!("project {i}"))
                }
            }
        })
        .collect();
    h.store.enqueue_batch(specs).await.unwrap();
    let replica = h.replica().await;
    #[derive(Default)]
    struct Ledger {
        branches: HashMap<String, u32>,
        project: u32,
        done: usize,
        max_project: u32,
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut handles = Vec::new();
    for i in 0..8 {
        let mut w = h.worker(&format!("race{i}"), &["command"], &[]).await;
        if i % 2 == 1 {
            w.store = replica.clone();
        }
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let mut signal = w.store.work_listener();
                let got = w.claim(3).await;
                if got.is_empty() {
                    if ledger.lock().unwrap().done == N {
                        return;
                    }
                    signal.wait(std::time::Duration::from_millis(200)).await;
                    continue;
                }
                {
                    let mut l = ledger.lock().unwrap();
                    for c in &got {
                        if let Some(b) = &c.task.spec.branch {
                            let n = l.branches.entry(b.clone()).or_default();
                            *n += 1;
                            assert!(*n <= 1, "two tasks on branch {b} run at once");
                        } else {
                            l.project += 1;
                            l.max_project = l.max_project.max(l.project);
                            assert!(l.project <= 2, "project ran {} tasks", l.project);
                        }
                    }
                }
                tokio::task::yield_now().await;
                {
                    let mut l = ledger.lock().unwrap();
                    for c in &got {
                        match &c.task.spec.branch {
                            Some(b) => *l.branches.get_mut(b).unwrap() -= 1,
                            None => l.project -= 1,
                        }
                    }
                }
                let items = got.iter().map(|c| (c.lease, TaskResult::default())).collect();
                let r = w.store.complete_batch(&w.id, items).await.unwrap();
                assert!(r.iter().all(|r| r.is_ok()));
                ledger.lock().unwrap().done += got.len();
            }
        }));
    }
    for hd in handles {
        hd.await.unwrap();
    }
    let l = ledger.lock().unwrap();
    assert_eq!(l.done, N);
    assert!(l.max_project >= 1);
}
