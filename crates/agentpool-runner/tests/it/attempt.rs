//! One attempt taken over from the worker that claimed it (what `agentpool run-task` does in a
//! launcher's pod): it runs under the claimer's id, heartbeats and reports fenced by the lease,
//! a stale copy is refused, and SIGTERM ends it as an infrastructure failure that is retried.

use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::Registry;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{ErrorClass, Task, TaskState, WorkerId};
use agentpool_runner::{AttemptConfig, AttemptOutcome, ClaimedWork, WorkerApi, run_attempt};
use agentpool_testkit::bench::command_worker;
use tokio_util::sync::CancellationToken;

use crate::worker::{Env, TOKEN, api, config, enqueue_command, env, finished, until, wait_log};

/// A command task enqueued and claimed by the worker `launcher`, as a launcher would before it
/// hands the attempt to a pod.
struct Claimed {
    task: Task,
    api: Arc<dyn WorkerApi>,
    launcher: WorkerId,
    work: ClaimedWork,
}

async fn claimed_command(env: &Env, cmd: &str) -> Claimed {
    let task = enqueue_command(env, cmd).await;
    let api = api(&env.store, Duration::from_secs(30)).await;
    let launcher = WorkerId::parse("launcher").unwrap();
    let work = claim_one(&*api, &launcher).await;
    Claimed {
        task,
        api,
        launcher,
        work,
    }
}

impl Claimed {
    /// Run the claimed attempt as a pod would, in its own directory `dir`.
    fn run(
        &self,
        env: &Env,
        dir: &str,
        terminate: CancellationToken,
    ) -> impl Future<Output = AttemptOutcome> + Send + 'static {
        run_attempt(
            self.api.clone(),
            self.launcher.clone(),
            self.work.clone(),
            Registry::new(),
            attempt_config(env, dir),
            terminate,
        )
    }
}

async fn claim_one(api: &dyn WorkerApi, id: &WorkerId) -> ClaimedWork {
    api.register(WorkerRegistration {
        hostname: "launcher".into(),
        slots: 1,
        ..command_worker(Some(id.clone()))
    })
    .await
    .unwrap();
    let mut works = api.claim(id, 1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(works.len(), 1);
    works.remove(0)
}

fn attempt_config(env: &crate::worker::Env, dir: &str) -> AttemptConfig {
    let mut c = AttemptConfig::new(env.dir.path().join(dir));
    c.pipeline = config(env, dir, TOKEN).pipeline;
    c.heartbeat_interval = Duration::from_millis(200);
    c.report_retry_for = Duration::from_secs(5);
    c
}

#[tokio::test]
async fn a_taken_over_attempt_reports_under_the_claimers_id_and_a_stale_copy_is_refused() {
    let env = env().await;
    let claimed = claimed_command(&env, "echo pod > pod.txt").await;
    let outcome = claimed.run(&env, "pod-1", CancellationToken::new()).await;
    assert_eq!(outcome, AttemptOutcome::Succeeded);
    let done = finished(&env.store, claimed.task.id).await;
    assert_eq!(done.task.state, TaskState::Succeeded);
    assert_eq!(done.attempts_detail[0].worker_id, claimed.launcher);

    // The same attempt run again (a duplicate pod) cannot change the recorded outcome.
    let again = claimed.run(&env, "pod-2", CancellationToken::new()).await;
    assert_eq!(again, AttemptOutcome::Lost);
    let after = env.store.get_task(claimed.task.id).await.unwrap().unwrap();
    assert_eq!(after.task.state, TaskState::Succeeded);
    assert_eq!(after.attempts_detail.len(), 1);
}

#[tokio::test]
async fn sigterm_stops_the_attempt_as_a_retried_infrastructure_failure() {
    let env = env().await;
    let claimed = claimed_command(&env, "echo ready; sleep 1000").await;
    let task = &claimed.task;
    let terminate = CancellationToken::new();
    let run = tokio::spawn(claimed.run(&env, "pod", terminate.clone()));
    wait_log(&env.store, task.id, "ready").await;
    terminate.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap();
    // Handed back: the task is queued again at once, its attempt given back.
    assert!(
        matches!(
            outcome,
            AttemptOutcome::Retrying {
                class: ErrorClass::InfraError,
                attempt: 1,
                ..
            }
        ),
        "{outcome:?}"
    );
    let d = until("the attempt to be closed", async || {
        env.store
            .get_task(task.id)
            .await
            .unwrap()
            .filter(|d| d.attempts_detail.first().is_some_and(|a| a.error_class.is_some()))
    })
    .await;
    assert_eq!(d.task.state, TaskState::Queued, "retried");
    assert_eq!(d.attempts_detail[0].error_class, Some(ErrorClass::InfraError));
}
