//! A project's daily budget: once its tasks' reported cost today (UTC) reaches it, its queued
//! tasks wait, saying why and until when; the next UTC day they run again.

use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::FailOutcome;
use agentpool_core::{ErrorClass, TaskResult, TaskSpec};
use agentpool_store::{Failure, WaitReason};

use crate::both;
use crate::harness::{Harness, cmd};

both!(
    a_spent_daily_budget_holds_the_projects_tasks_until_the_next_utc_day,
    every_attempt_that_reported_a_cost_counts_and_a_purge_keeps_todays_spend,
);

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

fn costing(usd: f64) -> TaskResult {
    TaskResult {
        cost_usd: Some(usd),
        ..TaskResult::default()
    }
}

/// The spend a task held back by the budget waits on, as `get_task` says it.
async fn spent_as_waited_on(h: &Harness, id: agentpool_core::TaskId) -> Option<f64> {
    let d = h.store.get_task(id).await.unwrap().unwrap();
    d.waiting.iter().find_map(|w| match w {
        WaitReason::BudgetExhausted { spent_usd, .. } => Some(*spent_usd),
        _ => None,
    })
}

/// A task whose first attempt spent money and failed, and whose retry spent again, cost the
/// project both: the second result replaces the first on the task, but the money of both runs
/// is gone. And a purge of today's finished tasks (a short retention) forgets their rows, not
/// what they spent.
async fn every_attempt_that_reported_a_cost_counts_and_a_purge_keeps_todays_spend(h: Harness) {
    h.store.put_project(project(Some(0.05))).await.unwrap();
    let in_project = |c: &str| TaskSpec {
        project: Some("p".into()),
        max_attempts: Some(2),
        ..cmd(c)
    };
    let w = h.worker("w", &["command"], &[]).await;
    let first = h.submit(in_project("first")).await;
    let c = w.claim(1).await.remove(0);
    let failed = w
        .fail(
            c.lease,
            Failure {
                class: ErrorClass::AgentError,
                message: "the agent gave up".into(),
                retry_after: Some(Duration::ZERO),
                result: Some(costing(0.03)),
            },
        )
        .await;
    let FailOutcome::Retrying { run_after, .. } = failed else {
        panic!("not retried: {failed:?}");
    };
    let backoff = run_after.timestamp_millis() - h.clock.now_ms() + 1;
    h.clock
        .advance(Duration::from_millis(u64::try_from(backoff.max(0)).unwrap()));
    // 0.03 of 0.05 spent: the retry may run.
    let c = w.claim(1).await.remove(0);
    assert_eq!(c.task.id, first);
    w.complete_with(c.lease, costing(0.03)).await;
    let next = h.submit(in_project("second")).await;
    let d = h.store.get_task(first).await.unwrap().unwrap();
    assert_eq!(
        d.task.result.and_then(|r| r.cost_usd),
        Some(0.03),
        "the task keeps its last result"
    );
    let costs: Vec<Option<f64>> = d.attempts_detail.iter().map(|a| a.cost_usd).collect();
    assert_eq!(costs, [Some(0.03), Some(0.03)], "each attempt says what it cost");
    assert_eq!(agentpool_core::task::total_cost(&d.attempts_detail), Some(0.06));

    assert!(
        w.claim(1).await.is_empty(),
        "0.06 of 0.05 spent: the second waits"
    );
    let spent = spent_as_waited_on(&h, next).await.expect("waits on the budget");
    assert!((spent - 0.06).abs() < 1e-9, "both attempts count: {spent}");
    let p = h.store.get_project("p").await.unwrap().unwrap();
    assert_eq!(p.spent_today_usd, Some(spent), "the project says the same");

    assert_eq!(h.store.purge_finished(Duration::ZERO).await.unwrap(), 1);
    assert!(h.store.get_task(first).await.unwrap().is_none(), "purged");
    assert!(
        w.claim(1).await.is_empty(),
        "the purge did not give the budget back"
    );
    let spent = spent_as_waited_on(&h, next)
        .await
        .expect("still waits on the budget");
    assert!((spent - 0.06).abs() < 1e-9, "{spent}");
}
