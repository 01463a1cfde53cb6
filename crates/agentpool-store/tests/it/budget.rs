//! A project's daily budget: once its tasks' reported cost today (UTC) reaches it, its queued
//! tasks wait, saying why and until when; the next UTC day they run again.

use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskResult, TaskSpec};
use agentpool_store::WaitReason;

use crate::both;
use crate::harness::{Harness, cmd};

both!(a_spent_daily_budget_holds_the_projects_tasks_until_the_next_utc_day);

fn project(budget: Option<f64>) -> ProjectSpec {
    ProjectSpec {
        name: "p".into(),
        repo: "https://git.example.com/p.git".into(),
        daily_budget_usd: budget,
        ..ProjectSpec::default()
    }
}

async fn a_spent_daily_budget_holds_the_projects_tasks_until_the_next_utc_day(h: Harness) {
    h.store.put_project(project(Some(0.05))).await.unwrap();
    let in_project = |c: &str| TaskSpec {
        project: Some("p".into()),
        ..cmd(c)
    };
    let w = h.worker("w", &["command"], &[]).await;
    h.store.enqueue(in_project("first")).await.unwrap();
    let c = w.claim(1).await.remove(0);
    let spent = TaskResult {
        cost_usd: Some(0.06),
        ..TaskResult::default()
    };
    w.complete_with(c.lease, spent).await;

    let held = h.submit(in_project("second")).await;
    let free = h.submit(cmd("no project")).await;
    let got = w.claim(2).await;
    assert_eq!(got.len(), 1, "only the task outside the project runs");
    assert_eq!(got[0].task.id, free);
    let d = h.store.get_task(held).await.unwrap().unwrap();
    let next_midnight = {
        let now = h.clock.now_ms();
        let day = 86_400_000;
        (now.div_euclid(day) + 1) * day
    };
    match d.waiting.as_slice() {
        [
            WaitReason::BudgetExhausted {
                project,
                budget_usd,
                spent_usd,
                until,
                message,
            },
        ] => {
            assert_eq!(project, "p");
            assert_eq!(*budget_usd, 0.05);
            assert!((spent_usd - 0.06).abs() < 1e-9);
            assert_eq!(until.timestamp_millis(), next_midnight);
            assert!(message.starts_with("budget exhausted until "), "{message}");
        }
        other => panic!("unexpected waiting reasons {other:?}"),
    }

    // Raising the budget releases the task at once …
    h.store.put_project(project(Some(1.0))).await.unwrap();
    let c = w.claim(1).await.remove(0);
    assert_eq!(c.task.id, held);
    w.complete_with(
        c.lease,
        TaskResult {
            cost_usd: Some(2.0),
            ..TaskResult::default()
        },
    )
    .await;
    // … and a new UTC day starts a new budget.
    let next = h.submit(in_project("third")).await;
    assert!(w.claim(1).await.is_empty(), "today's budget is spent again");
    let wait = next_midnight - h.clock.now_ms() + 1;
    h.clock
        .advance(Duration::from_millis(u64::try_from(wait).unwrap()));
    let c = w.claim(1).await.remove(0);
    assert_eq!(c.task.id, next);
}
