//! Stopping work: cancel (heard at once) and timeout kill the whole process tree, shutdown and server drain
//! wait for running tasks (and hand back those still running past the grace), concurrency
//! caps what runs at once.

use super::*;

/// A task running `cmd`, taken by a started worker `w1`, once it printed `ready`; with the
/// lines it logged until then.
async fn running(env: &Env, cmd: &str) -> (Task, RunningWorker, Vec<String>) {
    let task = enqueue_command(env, cmd).await;
    let w = start_w1(env).await;
    let lines = wait_log(&env.store, task.id, "ready").await;
    (task, w, lines)
}

#[tokio::test]
async fn cancel_of_a_running_task_kills_its_grandchildren_and_records_canceled() {
    let env = env().await;
    let (task, w, lines) = running(&env, GRANDCHILDREN).await;
    let children = pids(&lines);
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|p| alive(*p)));
    env.store.cancel(task.id).await.unwrap();
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;
    assert_eq!(done.task.state, TaskState::Canceled);
    assert_eq!(summary.canceled, 1);
    assert_all_gone(&children, "cancel");
}

/// The cancel reaches the task through the heartbeat the worker keeps waiting on the server,
/// not at its next beat: the beats here are five minutes apart (each waiting at most a
/// minute), so a cancel heard only at a beat would outlast the wait for the task to end.
#[tokio::test]
async fn cancel_reaches_a_running_task_without_waiting_for_the_next_heartbeat() {
    let env = env().await;
    let task = enqueue_command(&env, "echo ready; sleep 600").await;
    let mut cfg = config(&env, "w1", TOKEN);
    cfg.heartbeat_interval = Duration::from_secs(300);
    let w = start(cfg, api(&env.store, Duration::from_secs(3600)).await);
    wait_log(&env.store, task.id, "ready").await;
    env.store.cancel(task.id).await.unwrap();
    let done = finished(&env.store, task.id).await;
    assert_eq!(done.task.state, TaskState::Canceled);
    assert_eq!(w.stop().await.canceled, 1);
}

#[tokio::test]
async fn timeout_of_a_task_kills_its_grandchildren_and_records_timeout() {
    let env = env().await;
    let mut spec = command(&env, GRANDCHILDREN);
    spec.timeout_secs = Some(1);
    spec.max_attempts = Some(1);
    let done = run_to_done(&env, spec).await;
    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::Timeout));
    assert_eq!(
        done.task.error_message.as_deref(),
        Some("the task's timeout was hit during the command (timeout 1s)")
    );
    let children = pids(&log_lines(&events(&env.store, done.task.id).await));
    assert_eq!(children.len(), 2);
    assert_all_gone(&children, "timeout");
}

#[tokio::test]
async fn shutdown_lets_a_running_task_finish_within_the_grace_period() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let cmd = format!("echo ready; {wait}; echo done > finished.txt");
    let (task, w, _) = running(&env, &cmd).await;
    w.shutdown.cancel();
    // The worker drains: it is still running the task; let the task finish now.
    until("the worker to report draining", async || {
        env.store
            .get_worker(&WorkerId::parse("w1").unwrap())
            .await
            .unwrap()
            .filter(|w| w.status == agentpool_core::WorkerStatus::Draining)
    })
    .await;
    std::fs::write(&gate, "go").unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), w.handle)
        .await
        .unwrap()
        .unwrap();
    let done = env.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(done.task.state, TaskState::Succeeded);
    assert_eq!(summary.succeeded, 1);
    assert_no_running(&env.store).await;
}

/// A worker stopped while a task still runs past the grace kills the task's processes and
/// hands the task back: nobody canceled it, so it is retried (elsewhere, or here once the
/// worker is back) as an infrastructure failure, like a task whose pod was evicted.
#[tokio::test]
async fn shutdown_stops_tasks_still_running_after_the_grace_period_and_hands_them_back() {
    let env = env().await;
    let task = enqueue_command(&env, GRANDCHILDREN).await;
    let mut cfg = config(&env, "w1", TOKEN);
    cfg.drain_grace = Duration::from_millis(300);
    let w = start(cfg, api(&env.store, Duration::from_secs(30)).await);
    let children = pids(&wait_log(&env.store, task.id, "ready").await);
    let summary = w.stop().await;
    let back = env.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(back.task.state, TaskState::Queued, "{back:#?}");
    assert_eq!(back.task.error_class, Some(ErrorClass::InfraError));
    assert_eq!(back.task.attempts, 0, "the attempt is given back");
    assert_eq!(back.attempts_detail.len(), 1);
    assert_eq!(back.attempts_detail[0].error_class, Some(ErrorClass::InfraError));
    assert_eq!((summary.canceled, summary.failed, summary.handed_back), (0, 0, 1));
    assert_all_gone(&children, "drain");
    assert_no_running(&env.store).await;
}

/// A drained worker's summary tells a task it handed back (its attempt given back) from one
/// that failed: one succeeded, one failed, one still running at the stop.
#[tokio::test]
async fn a_drained_workers_summary_counts_a_hand_back_apart_from_failures() {
    let env = env().await;
    let ok = enqueue_command(&env, "echo ok > ok.txt").await;
    let mut failing = command(&env, "exit 3");
    failing.max_attempts = Some(1);
    let failing = env.store.enqueue(failing).await.unwrap().task;
    let held = enqueue_command(&env, "echo ready; sleep 1000").await;
    let mut cfg = config(&env, "w1", TOKEN);
    cfg.concurrency = 3;
    cfg.drain_grace = Duration::from_millis(300);
    let w = start(cfg, api(&env.store, Duration::from_secs(30)).await);
    assert_eq!(finished(&env.store, ok.id).await.task.state, TaskState::Succeeded);
    assert_eq!(
        finished(&env.store, failing.id).await.task.state,
        TaskState::Failed
    );
    wait_log(&env.store, held.id, "ready").await;
    let summary = w.stop().await;
    let back = env.store.get_task(held.id).await.unwrap().unwrap();
    assert_eq!(back.task.state, TaskState::Queued, "{back:#?}");
    assert_eq!(
        (
            summary.succeeded,
            summary.failed,
            summary.handed_back,
            summary.canceled
        ),
        (1, 1, 1, 0),
        "{summary:?}"
    );
}

#[tokio::test]
async fn a_worker_runs_at_most_its_concurrency_at_once() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let cmd = format!("echo ready; {wait}");
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(enqueue_command(&env, &cmd).await.id);
    }
    let mut cfg = config(&env, "w2", TOKEN);
    cfg.concurrency = 2;
    let w = start(cfg, api(&env.store, Duration::from_secs(30)).await);
    until("two tasks to run", async || {
        let c = env.store.count_by_state().await.unwrap();
        (c.get(&TaskState::Running).copied() == Some(2)).then_some(())
    })
    .await;
    // Both slots are busy: the worker must not claim a third while they run.
    let worker = env
        .store
        .get_worker(&WorkerId::parse("w2").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(worker.slots, 2);
    for _ in 0..10 {
        let c = env.store.count_by_state().await.unwrap();
        assert_eq!(c.get(&TaskState::Running).copied(), Some(2), "{c:?}");
        assert_eq!(c.get(&TaskState::Queued).copied(), Some(2), "{c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&gate, "go").unwrap();
    for id in ids {
        assert_eq!(finished(&env.store, id).await.task.state, TaskState::Succeeded);
    }
    assert_eq!(w.stop().await.succeeded, 4);
}

#[tokio::test]
async fn a_drain_requested_by_the_server_stops_the_worker_after_its_tasks() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let (task, w, _) = running(&env, &format!("echo ready; {wait}")).await;
    env.store
        .drain_worker(&WorkerId::parse("w1").unwrap())
        .await
        .unwrap();
    // A task queued now must not be taken by the draining worker.
    let later = enqueue_command(&env, "true").await;
    std::fs::write(&gate, "go").unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), w.handle)
        .await
        .expect("the worker stops by itself")
        .unwrap();
    assert_eq!(summary.succeeded, 1);
    assert_eq!(
        env.store.get_task(task.id).await.unwrap().unwrap().task.state,
        TaskState::Succeeded
    );
    assert_eq!(
        env.store.get_task(later.id).await.unwrap().unwrap().task.state,
        TaskState::Queued
    );
}

/// Stops the worker once the server answered its claim with a task, and hands the answer on
/// only after the worker told the server it drains: the task was granted before the stop.
struct StopWhileClaiming {
    store: Arc<dyn Store>,
    stop: CancellationToken,
}

#[async_trait]
impl Hooks for StopWhileClaiming {
    async fn after_claim(&self, claimed: &[ClaimedWork]) {
        if claimed.is_empty() || self.stop.is_cancelled() {
            return;
        }
        self.stop.cancel();
        // Polled: the store offers no change feed for tests.
        let w1 = WorkerId::parse("w1").unwrap();
        loop {
            let w = self.store.get_worker(&w1).await.unwrap();
            if w.is_some_and(|w| w.status == agentpool_core::WorkerStatus::Draining) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A task the server hands to the claim under way as the worker is told to stop runs on that
/// worker, which drains with it; the claim's answer is not dropped, leaving the task leased to
/// a worker that never runs it until its lease expires.
#[tokio::test]
async fn a_task_granted_to_the_claim_under_way_at_a_stop_runs_before_the_worker_stops() {
    let env = env().await;
    let stop = CancellationToken::new();
    let hooks = StopWhileClaiming {
        store: env.store.clone(),
        stop: stop.clone(),
    };
    // A lease far longer than the test: only the worker running it ends the task.
    let slow = hooked(&env.store, Duration::from_secs(3600), hooks).await;
    let task = enqueue_command(&env, "echo ran").await;
    let cfg = config(&env, "w1", TOKEN);
    let handle = tokio::spawn(run_worker(cfg, slow, stop.clone()));
    let done = finished(&env.store, task.id).await;
    assert_eq!(done.task.state, TaskState::Succeeded, "{done:#?}");
    assert_eq!(done.attempts_detail.len(), 1, "{done:#?}");
    let summary = tokio::time::timeout(Duration::from_secs(60), handle)
        .await
        .expect("worker stops")
        .unwrap()
        .unwrap();
    assert_eq!(summary.succeeded, 1);
}
