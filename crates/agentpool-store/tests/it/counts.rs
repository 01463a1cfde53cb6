//! Counts for overviews: the tasks that ended lately, per interval and by state, exactly and
//! of a project token's projects only.

use std::time::Duration;

use agentpool_core::{ErrorClass, TaskSpec, TaskState};
use agentpool_store::FinishedCount;

use crate::both;
use crate::harness::{Harness, cmd, failure};

both!(the_tasks_that_ended_are_counted_per_interval_by_state);

const STEP: Duration = Duration::from_secs(300);

async fn the_tasks_that_ended_are_counted_per_interval_by_state(h: Harness) {
    h.project_with_slots("web", 10).await;
    let web = |c: &str| TaskSpec {
        project: Some("web".into()),
        max_attempts: Some(1),
        ..cmd(c)
    };
    let w = h.worker("w", &["command"], &[]).await;
    // Ended before the window: not counted.
    h.submit(cmd("old")).await;
    let old = w.claim(1).await.remove(0);
    w.complete(old.lease).await;
    h.clock.advance(Duration::from_secs(60));
    let since = h.clock.now();

    h.submit(cmd("first")).await;
    let first = w.claim(1).await.remove(0);
    w.complete(first.lease).await;
    h.submit(web("second")).await;
    let failing = h.submit(web("fails")).await;
    let queued = h.submit(cmd("canceled while queued")).await;
    let claimed = w.claim(2).await;
    assert_eq!(claimed.len(), 2);
    h.clock.advance(STEP);
    for c in claimed.iter().filter(|c| c.task.id != failing) {
        w.complete(c.lease).await;
    }
    h.clock.advance(STEP);
    for c in claimed.iter().filter(|c| c.task.id == failing) {
        w.fail(c.lease, failure(ErrorClass::AgentError, "no")).await;
    }
    h.store.cancel(queued).await.unwrap();

    let count = |projects: Option<Vec<String>>| {
        let store = h.store.clone();
        async move {
            let mut c = store
                .count_finished(since, STEP, projects.as_deref())
                .await
                .unwrap();
            c.sort_by_key(|c| (c.interval, c.state));
            c.into_iter()
                .map(|c| (c.interval, c.state, c.tasks))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        count(None).await,
        [
            (0, TaskState::Succeeded, 1),
            (1, TaskState::Succeeded, 1),
            (2, TaskState::Failed, 1),
            (2, TaskState::Canceled, 1),
        ]
    );
    assert_eq!(
        count(Some(vec!["web".into()])).await,
        [(1, TaskState::Succeeded, 1), (2, TaskState::Failed, 1)]
    );
    assert_eq!(count(Some(vec!["other".into()])).await, []);
    assert_eq!(count(Some(Vec::new())).await, []);
    // Every task that ended is in some interval of a window opened before them all.
    let all: u64 = h
        .store
        .count_finished(since - chrono::Duration::hours(1), STEP, None)
        .await
        .unwrap()
        .iter()
        .map(|c: &FinishedCount| c.tasks)
        .sum();
    assert_eq!(all, 5);
}
