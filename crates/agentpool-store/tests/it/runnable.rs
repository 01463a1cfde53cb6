//! Which queued tasks a worker could claim now, as an autoscaler counts them: not those
//! waiting for their time, a dependency, a branch another task holds, or their project's slots
//! or daily budget; a branch's tasks one at a time and a project's up to its free slots.

use std::collections::HashSet;
use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskId, TaskResult, TaskSpec};

use crate::both;
use crate::harness::{Harness, cmd, labels};

both!(only_the_tasks_a_claim_could_take_now_are_runnable);
both!(queued_tasks_are_read_with_what_a_pool_is_matched_on);

fn of(project: &str, c: &str) -> TaskSpec {
    TaskSpec {
        project: Some(project.into()),
        ..cmd(c)
    }
}

async fn only_the_tasks_a_claim_could_take_now_are_runnable(h: Harness) {
    h.project_with_slots("two-slots", 2).await;
    h.project_with_slots("one-slot", 1).await;
    h.store
        .put_project(ProjectSpec {
            name: "spent".into(),
            repo: "https://git.example.com/spent.git".into(),
            daily_budget_usd: Some(0.01),
            ..ProjectSpec::default()
        })
        .await
        .unwrap();
    let w = h.worker("w", &["command"], &[]).await;
    // The spent project spends its budget; the one-slot project's slot is taken.
    h.submit(of("spent", "pays")).await;
    let c = w.claim(1).await.remove(0);
    let cost = TaskResult {
        cost_usd: Some(0.02),
        ..TaskResult::default()
    };
    w.complete_with(c.lease, cost).await;
    h.submit(of("one-slot", "holds the slot")).await;
    assert_eq!(w.claim(1).await.len(), 1);

    let free = h.submit(cmd("free")).await;
    let later = h
        .submit(TaskSpec {
            run_after: Some(h.clock.now() + chrono::Duration::hours(1)),
            ..cmd("later")
        })
        .await;
    h.submit(TaskSpec {
        depends_on: vec![free],
        ..cmd("after free")
    })
    .await;
    let on_branch = |c: &str| TaskSpec {
        branch: Some("release".into()),
        ..cmd(c)
    };
    let first_on_branch = h.submit(on_branch("first on the branch")).await;
    h.submit(on_branch("second on the branch")).await;
    let mut slotted = Vec::new();
    for i in 1..=3 {
        slotted.push(h.submit(of("two-slots", &format!("slotted {i}"))).await);
    }
    h.submit(of("one-slot", "waits for the slot")).await;
    h.submit(of("spent", "waits for tomorrow")).await;

    let runnable: HashSet<TaskId> = h
        .store
        .runnable_now(None, 100)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let want: HashSet<TaskId> = [free, first_on_branch, slotted[0], slotted[1]].into();
    assert_eq!(runnable, want);

    // Of some projects only; and no more than asked, in claim order.
    let of_two = h
        .store
        .runnable_now(Some(&["two-slots".to_string()]), 100)
        .await
        .unwrap();
    assert_eq!(of_two, slotted[..2]);
    assert_eq!(h.store.runnable_now(None, 1).await.unwrap(), [free]);

    // Time passes: the later task is due; tomorrow the spent project may spend again.
    h.clock.advance(Duration::from_secs(86_400));
    let runnable = h.store.runnable_now(None, 100).await.unwrap();
    assert!(runnable.contains(&later));
    assert_eq!(runnable.len(), 6, "{runnable:?}");
}

/// What queue statistics read of each queued task: its labels, the agent it needs and when it
/// is due; every queued task (waiting for a dependency too), of some projects only when asked,
/// and no more than asked.
async fn queued_tasks_are_read_with_what_a_pool_is_matched_on(h: Harness) {
    h.project_with_slots("p", 1).await;
    let w = h.worker("w", &["command"], &[]).await;
    let claimed = h.submit(cmd("claimed")).await;
    assert_eq!(w.claim(1).await[0].task.id, claimed);
    let gpu = h
        .submit(TaskSpec {
            labels: labels(&[("gpu", "a100"), ("zone", "eu")]),
            ..TaskSpec::agent("https://git.example.com/r.git", "codex", "fix it")
        })
        .await;
    let in_an_hour = h.clock.now() + chrono::Duration::hours(1);
    let later = h
        .submit(TaskSpec {
            run_after: Some(in_an_hour),
            ..cmd("later")
        })
        .await;
    let of_p = h.submit(of("p", "a project's")).await;
    let waiting = h
        .submit(TaskSpec {
            depends_on: vec![claimed],
            ..cmd("after the claimed one")
        })
        .await;

    let all = h.store.queued_shapes(None, 100).await.unwrap();
    let ids: HashSet<TaskId> = all.iter().map(|q| q.id).collect();
    assert_eq!(ids, [gpu, later, of_p, waiting].into(), "the queued tasks");
    let of = |id: TaskId| all.iter().find(|q| q.id == id).unwrap();
    assert_eq!(of(gpu).labels, labels(&[("gpu", "a100"), ("zone", "eu")]));
    assert_eq!(of(gpu).agent.as_deref(), Some("codex"));
    assert!(of(gpu).run_after <= h.clock.now());
    assert!(of(later).labels.is_empty());
    assert_eq!(of(later).agent.as_deref(), Some("command"));
    assert_eq!(
        of(later).run_after.timestamp_millis(),
        in_an_hour.timestamp_millis()
    );

    let only_p = h
        .store
        .queued_shapes(Some(&["p".to_string()]), 100)
        .await
        .unwrap();
    assert_eq!(only_p.iter().map(|q| q.id).collect::<Vec<_>>(), [of_p]);
    assert!(h.store.queued_shapes(Some(&[]), 100).await.unwrap().is_empty());
    assert_eq!(h.store.queued_shapes(None, 2).await.unwrap().len(), 2);
}
