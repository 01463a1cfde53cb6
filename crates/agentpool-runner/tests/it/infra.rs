//! A broken worker (its git cannot be started) does not burn tasks' attempts: its failure is
//! `WORKER_ERROR`, the task goes back to the queue unchanged, the worker's own check confirms
//! the cause so it turns unhealthy at once, says why, and stops claiming (also on its local
//! health probe), and a healthy worker completes the task. A cause its check cannot see takes
//! `unhealthy_after` tasks in a row.

use std::time::Duration;

use agentpool_core::protocol::HeartbeatRequest;
use agentpool_core::{ErrorClass, TaskState, WorkerStatus};
use agentpool_runner::{ApiError, WorkerHealth};
use async_trait::async_trait;

use crate::worker::{Hooks, TOKEN, api, config, enqueue_command, env, finished, hooked, start, until};

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
    assert_eq!(
        d.attempts_detail.len(),
        1,
        "its check found git missing before the task went back: it did not claim it again"
    );
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

    // Still unhealthy, it took nothing more, and it says why.
    let w = env.store.get_worker(&broken_id).await.unwrap().unwrap();
    assert_eq!(w.status, WorkerStatus::Unhealthy);
    let why = w.status_message.unwrap_or_default();
    assert!(
        why.starts_with("git or an agent could not be started, and this worker's own check agrees (")
            && why.contains("no-such-git cannot be started")
            && why.contains("the last task's error: ")
            && why.contains("could not run git"),
        "{why}"
    );
    let summary = broken.stop().await;
    assert!(summary.unhealthy);
    assert_eq!(
        (summary.succeeded, summary.failed, summary.handed_back),
        (0, 0, 1),
        "its task was handed back, not failed"
    );
    assert_eq!(healthy.stop().await.succeeded, 1);
}

/// A server from before status messages: it refuses a beat with the field, as any server
/// refuses unknown fields.
struct NoStatusMessages;

#[async_trait]
impl Hooks for NoStatusMessages {
    async fn before_heartbeat(&self, req: &HeartbeatRequest) -> Result<(), ApiError> {
        match req.status_message {
            Some(_) => Err(ApiError::Rejected {
                status: 400,
                code: "invalid_json".into(),
                message: "unknown field `status_message`".into(),
                fields: Vec::new(),
            }),
            None => Ok(()),
        }
    }
}

/// On a server that does not take the reason, the worker's beats still go through without it:
/// the server learns that the worker is unhealthy, and the leases of its beats stay extended.
#[tokio::test]
async fn an_unhealthy_worker_still_beats_on_a_server_without_status_messages() {
    let env = env().await;
    let api = hooked(&env.store, Duration::from_secs(30), NoStatusMessages).await;
    let mut broken = config(&env, "broken-1", TOKEN);
    broken.pipeline.git_program = env.dir.path().join("no-such-git");
    broken.unhealthy_after = 1;
    let broken_id = broken.id.clone().unwrap();
    let broken = start(broken, api);
    enqueue_command(&env, "true").await;
    let w = until("the server to learn the worker is unhealthy", async || {
        let w = env.store.get_worker(&broken_id).await.unwrap()?;
        (w.status == WorkerStatus::Unhealthy).then_some(w)
    })
    .await;
    assert_eq!(w.status_message, None);
    assert!(broken.stop().await.unhealthy);
}

/// A worker whose git could not be started checks again with a growing pause and, once git
/// starts (here: installed where it looks), registers again and claims again: the task it
/// handed back runs on it, and the server no longer lists it unhealthy.
#[tokio::test]
async fn a_worker_whose_git_starts_again_claims_again() {
    let env = env().await;
    let api = api(&env.store, Duration::from_secs(30)).await;
    let bin = env.dir.path().join("later-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let git_later = bin.join("git");
    let mut w = config(&env, "w-later", TOKEN);
    w.pipeline.git_program = git_later.clone();
    w.unhealthy_after = 1;
    w.recheck_after = Duration::from_millis(100);
    let (reporter, mut health) = agentpool_runner::HealthReporter::new();
    w.health = Some(reporter);
    let id = w.id.clone().unwrap();
    let w = start(w, api);

    let task = enqueue_command(&env, "echo done > done.txt").await;
    let sick = until("the worker to report itself unhealthy", async || {
        let w = env.store.get_worker(&id).await.unwrap()?;
        (w.status == WorkerStatus::Unhealthy).then_some(w)
    })
    .await;
    assert!(
        sick.status_message
            .as_deref()
            .unwrap_or("")
            .contains("could not run git"),
        "{sick:?}"
    );
    let d = env.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!((d.task.state, d.task.attempts), (TaskState::Queued, 0));

    // Git appears where the worker looks for it.
    let real = which("git");
    std::os::unix::fs::symlink(&real, &git_later).unwrap();
    let d = finished(&env.store, task.id).await;
    assert_eq!(d.task.state, TaskState::Succeeded, "{:?}", d.task.error_message);
    assert_eq!(d.task.worker_id.as_ref().map(|w| w.as_str()), Some("w-later"));
    let again = env.store.get_worker(&id).await.unwrap().unwrap();
    assert_ne!(again.status, WorkerStatus::Unhealthy);
    assert_eq!(again.status_message, None);
    health
        .wait_for(|h| *h == WorkerHealth::Ready)
        .await
        .expect("the probe says ready again");
    let summary = w.stop().await;
    assert!(!summary.unhealthy);
    assert_eq!(
        (summary.succeeded, summary.failed, summary.handed_back),
        (1, 0, 1)
    );
}

/// Where `program` is on the PATH.
fn which(program: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on the PATH"))
}

/// A cause the worker's check cannot see — here the agent's CLI is installed (found and
/// executable, which is what the check asks) but its interpreter is not, so it cannot be
/// started — still hands tasks back, and turns the worker unhealthy after `unhealthy_after` of
/// them in a row, not at the first.
#[tokio::test]
async fn a_cause_the_check_cannot_see_takes_unhealthy_after_tasks_in_a_row() {
    let env = env().await;
    let api = api(&env.store, Duration::from_secs(30)).await;
    let bin = env.dir.path().join("bin");
    agentpool_testkit::process::script(&bin, "claude", "#!/no-such-dir/node\n");
    let mut w = config(&env, "w-node", TOKEN);
    w.agents = agentpool_agents::Registry::builtin(&agentpool_agents::AgentConfig {
        bin_dir: Some(bin),
        ..Default::default()
    });
    w.unhealthy_after = 2;
    // A key, so that the task gets as far as starting the CLI.
    w.pipeline.extra_env = [("ANTHROPIC_API_KEY".to_string(), "sk-ant-test".to_string())].into();
    let id = w.id.clone().unwrap();
    let w = start(w, api);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let spec =
            agentpool_core::TaskSpec::agent(&env.server.url("app"), "claude-code", &format!("task {i}"));
        tasks.push(env.store.enqueue(spec).await.unwrap().task.id);
    }
    let sick = until("the worker to report itself unhealthy", async || {
        let w = env.store.get_worker(&id).await.unwrap()?;
        (w.status == WorkerStatus::Unhealthy).then_some(w)
    })
    .await;
    let why = sick.status_message.unwrap_or_default();
    assert!(
        why.starts_with("git or an agent could not be started 2 times in a row; the last: "),
        "{why}"
    );
    let mut handed_back = 0;
    for t in tasks {
        let d = env.store.get_task(t).await.unwrap().unwrap();
        assert_eq!((d.task.state, d.task.attempts), (TaskState::Queued, 0));
        for a in &d.attempts_detail {
            assert_eq!(a.error_class, Some(ErrorClass::WorkerError));
            handed_back += 1;
        }
    }
    assert_eq!(handed_back, 2);
    let summary = w.stop().await;
    assert_eq!((summary.failed, summary.handed_back), (0, 2));
}

/// Holds the answer of a claim that hands over the task running `echo later` until the server
/// lists worker `w-sick` unhealthy: that task was granted before the worker turned unhealthy.
struct UnhealthyWhileClaiming {
    store: std::sync::Arc<dyn agentpool_store::Store>,
}

#[async_trait]
impl Hooks for UnhealthyWhileClaiming {
    async fn after_claim(&self, claimed: &[agentpool_runner::api::ClaimedWork]) {
        let later = |c: &agentpool_runner::api::ClaimedWork| {
            c.claimed.task.spec.command.as_deref() == Some("echo later")
        };
        if !claimed.iter().any(later) {
            return;
        }
        // Polled: the store offers no change feed for tests.
        let id = agentpool_core::WorkerId::parse("w-sick").unwrap();
        loop {
            let w = self.store.get_worker(&id).await.unwrap();
            if w.is_some_and(|w| w.status == WorkerStatus::Unhealthy) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A task the server grants to the claim under way as the worker turns unhealthy goes back to
/// the queue at once, unstarted and with no attempt used: the claim's answer is awaited, not
/// dropped (which left the task leased to a worker that would never run it, here for an hour).
#[tokio::test]
async fn a_task_granted_as_the_worker_turns_unhealthy_is_handed_back_at_once() {
    let env = env().await;
    let hooks = UnhealthyWhileClaiming {
        store: env.store.clone(),
    };
    let api = hooked(&env.store, Duration::from_secs(3600), hooks).await;
    // Its agent cannot be started (a cause its own check does not see), so the first agent
    // task it runs turns it unhealthy; it has a second slot to claim with meanwhile.
    let bin = env.dir.path().join("bin");
    agentpool_testkit::process::script(&bin, "claude", "#!/no-such-dir/node\n");
    let mut w = config(&env, "w-sick", TOKEN);
    w.concurrency = 2;
    w.agents = agentpool_agents::Registry::builtin(&agentpool_agents::AgentConfig {
        bin_dir: Some(bin),
        ..Default::default()
    });
    w.unhealthy_after = 1;
    w.pipeline.extra_env = [("ANTHROPIC_API_KEY".to_string(), "sk-ant-test".to_string())].into();
    let w = start(w, api);
    // The agent task waits in its setup until the other task has been granted.
    let gate = env.dir.path().join("gate");
    let first = agentpool_core::TaskSpec {
        setup_command: Some(format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display())),
        ..agentpool_core::TaskSpec::agent(&env.server.url("app"), "claude-code", "p")
    };
    let first = env.store.enqueue(first).await.unwrap().task.id;
    let running = async |id| {
        env.store
            .get_task(id)
            .await
            .unwrap()
            .filter(|d| d.task.state == TaskState::Running)
    };
    until("the agent task to run", async || running(first).await).await;
    let later = enqueue_command(&env, "echo later").await.id;
    until("the other task to be granted", async || running(later).await).await;
    std::fs::write(&gate, "go").unwrap();

    let d = until("the granted task to be back in the queue", async || {
        env.store
            .get_task(later)
            .await
            .unwrap()
            .filter(|d| d.task.state == TaskState::Queued)
    })
    .await;
    assert_eq!(d.task.attempts, 0, "no attempt was used");
    let [a] = &d.attempts_detail[..] else {
        panic!("one hand-back: {:#?}", d.attempts_detail)
    };
    assert_eq!(a.error_class, Some(ErrorClass::WorkerError));
    let msg = a.error_message.as_deref().unwrap_or_default();
    assert!(
        msg.starts_with(
            "this worker turned unhealthy before it started the task (git or an agent could not be started"
        ),
        "{msg}"
    );
    let summary = w.stop().await;
    assert!(summary.unhealthy);
    assert_eq!(
        (summary.succeeded, summary.failed, summary.handed_back),
        (0, 0, 1),
        "only the agent task ran, and was handed back"
    );
}
