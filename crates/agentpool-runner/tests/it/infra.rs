//! A broken worker (its git cannot be started) does not burn tasks' attempts: each failure is
//! `WORKER_ERROR`, the task goes back to the queue unchanged, the worker turns unhealthy and
//! stops claiming (also on its local health probe), and a healthy worker completes the task.

use std::time::Duration;

use agentpool_core::{ErrorClass, TaskState, WorkerStatus};
use agentpool_runner::WorkerHealth;

use crate::worker::{TOKEN, api, config, enqueue_command, env, finished, start, until};

#[tokio::test]
async fn a_worker_whose_git_cannot_start_hands_tasks_back_and_goes_unhealthy() {
    let env = env().await;
    let api = api(&env.store, Duration::from_secs(30)).await;
    let mut broken = config(&env, "broken-1", TOKEN);
    broken.pipeline.git_program = env.dir.path().join("no-such-git");
    broken.unhealthy_after = 3;
    let (reporter, mut health) = agentpool_runner::HealthReporter::new();
    broken.health = Some(reporter);
    let broken_id = broken.id.clone().unwrap();
    let broken = start(broken, api.clone());

    let task = enqueue_command(&env, "echo done > done.txt").await;
    until("the broken worker to report itself unhealthy", async || {
        let w = env.store.get_worker(&broken_id).await.unwrap()?;
        (w.status == WorkerStatus::Unhealthy).then_some(())
    })
    .await;
    // Its local probe says so too (what a readiness probe reads).
    health
        .wait_for(|h| *h == WorkerHealth::Unhealthy)
        .await
        .expect("the worker reports its health");
    let d = env.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(d.task.state, TaskState::Queued, "the task is not failed");
    assert_eq!(d.task.attempts, 0, "no attempt was used");
    assert_eq!(d.attempts_detail.len(), 3);
    for a in &d.attempts_detail {
        assert_eq!(a.error_class, Some(ErrorClass::WorkerError));
        assert_eq!(a.worker_id, broken_id);
        let msg = a.error_message.as_deref().unwrap_or("");
        assert!(msg.contains("could not run git"), "{msg}");
    }

    let healthy = start(config(&env, "healthy-1", TOKEN), api.clone());
    let d = finished(&env.store, task.id).await;
    assert_eq!(d.task.state, TaskState::Succeeded, "{:?}", d.task.error_message);
    assert_eq!(d.task.attempts, 1);
    assert_eq!(d.task.worker_id.as_ref().map(|w| w.as_str()), Some("healthy-1"));

    // Still unhealthy, and it took nothing more.
    let w = env.store.get_worker(&broken_id).await.unwrap().unwrap();
    assert_eq!(w.status, WorkerStatus::Unhealthy);
    let summary = broken.stop().await;
    assert!(summary.unhealthy);
    assert_eq!(summary.failed, 3);
    assert_eq!(summary.succeeded, 0);
    assert_eq!(healthy.stop().await.succeeded, 1);
}
