//! Branch locks and project slots, within one batch claim and across claims.

use std::collections::HashSet;

use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskResult, TaskSpec};
use agentpool_store::WaitReason;

use crate::both;
use crate::harness::{Harness, cmd, ids};

both!(
    two_tasks_on_one_branch_never_run_together,
    project_with_two_slots_never_runs_three,
);

async fn two_tasks_on_one_branch_never_run_together(h: Harness) {
    let w1 = h.worker("w1", &["command"], &[]).await;
    let w2 = h.worker("w2", &["command"], &[]).await;
    let on_branch = |c: &str| TaskSpec {
        branch: Some("feature/x".into()),
        ..cmd(c)
    };
    let first = h.store.enqueue(on_branch("one")).await.unwrap().task.id;
    // Same repo spelled with .git and trailing slash differences: still the same lock.
    let second = h
        .store
        .enqueue(TaskSpec {
            repo: Some("https://git.example.com/r".into()),
            ..on_branch("two")
        })
        .await
        .unwrap()
        .task
        .id;
    let other_branch = h
        .store
        .enqueue(TaskSpec {
            branch: Some("feature/y".into()),
            ..cmd("three")
        })
        .await
        .unwrap()
        .task
        .id;
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
    h.store
        .complete(&w1.id, lease, TaskResult::default())
        .await
        .unwrap();
    assert_eq!(ids(&w2.claim(10).await), vec![second]);
}

async fn project_with_two_slots_never_runs_three(h: Harness) {
    h.store
        .put_project(ProjectSpec {
            name: "p".into(),
            repo: "https://git.example.com/p.git".into(),
            default_base: None,
            slots: Some(2),
            default_agent: None,
            default_model: None,
            allowed_agents: vec![],
            credentials: vec![],
        })
        .await
        .unwrap();
    let in_project = |c: &str| TaskSpec {
        project: Some("p".into()),
        ..cmd(c)
    };
    let tasks: Vec<_> = h
        .store
        .enqueue_batch((0..5).map(|i| in_project(&format!("t{i}"))).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.task.id)
        .collect();
    let free = h.store.enqueue(cmd("no project")).await.unwrap().task.id;
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
    h.store
        .complete(&w1.id, got[0].lease, TaskResult::default())
        .await
        .unwrap();
    let next = w2.claim(10).await;
    assert_eq!(ids(&next), vec![tasks[2]]);
    let running = h.store.count_by_state().await.unwrap()[&agentpool_core::TaskState::Running];
    assert_eq!(running, 3, "two of the project plus the unrelated task");
    // Racing claimers on a fresh project with free slots take exactly its slots, no more.
    h.store
        .put_project(ProjectSpec {
            name: "q".into(),
            repo: "https://git.example.com/q.git".into(),
            default_base: None,
            slots: Some(2),
            default_agent: None,
            default_model: None,
            allowed_agents: vec![],
            credentials: vec![],
        })
        .await
        .unwrap();
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
