//! A worker cut off from the server: its lease is taken over, its late report refused, and its
//! log says (once) what the dropped attempt did.

use super::*;

/// A connection to the queue that can be cut: while `down`, every call fails as an
/// unreachable server would (the real store behind it keeps working for others).
pub struct Partition {
    pub down: AtomicBool,
}

impl Hooks for Partition {
    fn before(&self) -> Result<(), ApiError> {
        if self.down.load(Ordering::SeqCst) {
            Err(ApiError::Unavailable {
                status: None,
                message: "connection refused (partition)".into(),
            })
        } else {
            Ok(())
        }
    }
}

/// A connection to the queue through a [`Partition`], up for now.
async fn partitionable(env: &Env) -> Arc<Hooked<Partition>> {
    hooked(
        &env.store,
        LEASE_TTL,
        Partition {
            down: AtomicBool::new(false),
        },
    )
    .await
}

/// Cut `partition` off; once the lease of its worker's task has run out, maintenance queues
/// the task again.
async fn cut_until_requeued(env: &Env, partition: &Hooked<Partition>) {
    partition.hooks.down.store(true, Ordering::SeqCst);
    until("the lease to expire and the task to be re-queued", async || {
        (env.store.requeue_expired().await.unwrap() > 0).then_some(())
    })
    .await;
}

/// Worker A running a task on branch `agentpool/partition` that waits for `gate`, cut off from
/// the server until the test restores `partition`; its lease has expired and the task is queued
/// again.
struct CutOff {
    task: Task,
    partition: Arc<Hooked<Partition>>,
    a: RunningWorker,
    gate: std::path::PathBuf,
}

const LEASE_TTL: Duration = Duration::from_secs(1);
const BRANCH: &str = "agentpool/partition";

async fn cut_off(env: &Env) -> CutOff {
    let gate = env.dir.path().join("gate");
    let cmd = format!(
        "echo ready; while [ ! -e '{}' ]; do sleep 0.02; done; echo \"$AGENTPOOL_ATTEMPT\" >> attempts.txt",
        gate.display()
    );
    let mut spec = command(env, &cmd);
    spec.branch = Some(BRANCH.into());
    let task = env.store.enqueue(spec).await.unwrap().task;
    let partition = partitionable(env).await;
    let a = start(config(env, "worker-a", TOKEN), partition.clone());
    wait_log(&env.store, task.id, "ready").await;

    // Cut A off; its lease runs out and maintenance re-queues the task.
    cut_until_requeued(env, &partition).await;
    CutOff {
        task,
        partition,
        a,
        gate,
    }
}

#[tokio::test]
async fn a_partitioned_worker_whose_lease_was_taken_has_its_late_report_refused() {
    let env = env().await;
    let CutOff {
        task,
        partition,
        a,
        gate,
    } = cut_off(&env).await;
    let lease_ttl = LEASE_TTL;
    std::fs::write(&gate, "go").unwrap();

    // B runs the task to success while A is still cut off and retrying its report.
    let b = start(config(&env, "worker-b", TOKEN), api(&env.store, lease_ttl).await);
    let done = finished(&env.store, task.id).await;
    assert_eq!(done.task.state, TaskState::Succeeded);
    let b_summary = b.stop().await;

    // A comes back: its late report is refused and changes nothing.
    partition.hooks.down.store(false, Ordering::SeqCst);
    let a_summary = a.stop().await;
    assert_eq!(a_summary.succeeded, 0);
    assert_eq!(a_summary.lost, 1, "{a_summary:?}");
    assert_eq!(b_summary.succeeded, 1);

    let after = env.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(after.task.state, TaskState::Succeeded);
    let outcomes: Vec<_> = after.attempts_detail.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == agentpool_core::AttemptOutcome::Succeeded)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        after.task.result, done.task.result,
        "the late report changed the result"
    );
}

/// The cut-off worker finishes and pushes, but its lease was taken meanwhile: nothing reaches
/// the server, so its log is the only record of the commit it pushed — and says so once, with
/// the commit, the branch and the push. While the server is out of reach it says that it is
/// retrying (once here: at most once a minute).
#[tokio::test(flavor = "current_thread")]
async fn a_partitioned_worker_logs_the_commit_it_pushed_when_its_report_is_dropped() {
    let (logs, _guard) = LogCapture::start();
    let env = env().await;
    let cut = cut_off(&env).await;
    std::fs::write(&cut.gate, "go").unwrap();
    // A pushes (the git server is not cut off), then retries its report.
    let pushed = until("A to push", async || env.server.branch_sha("app", BRANCH)).await;
    let b = start(config(&env, "worker-b", TOKEN), api(&env.store, LEASE_TTL).await);
    assert_eq!(
        finished(&env.store, cut.task.id).await.task.state,
        TaskState::Succeeded
    );
    b.stop().await;
    cut.partition.hooks.down.store(false, Ordering::SeqCst);
    let a = cut.a.stop().await;
    assert_eq!(a.lost, 1, "{a:?}");
    assert!(a.abandoned <= 1, "{a:?}");

    let dropped = logs.lines_with("lease lost: the attempt ends unreported");
    let [line] = &dropped[..] else {
        panic!("one line for the dropped attempt: {dropped:#?}")
    };
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("it pushed commit {pushed} to branch {BRANCH}")),
        "{line}"
    );
    let abandoning = logs.lines_with("lease lost; abandoning the task");
    assert!(abandoning.len() <= 1, "{abandoning:#?}");
    let retrying = logs.lines_with("server unavailable; retrying the report of task");
    let [first] = &retrying[..] else {
        panic!("the first failure is logged, and no more within a minute: {retrying:#?}")
    };
    assert!(first.contains(&cut.task.id.to_string()), "{first}");
    assert!(first.contains("1 try"), "{first}");
    assert!(!logs.text().contains(TOKEN));
}

/// A lease lost while the task still winds down (it ignores SIGTERM until the kill grace is
/// over) is said lost by every beat meanwhile: the worker abandons the task, and says so, once.
#[tokio::test(flavor = "current_thread")]
async fn a_lease_lost_while_the_task_winds_down_is_abandoned_once() {
    let (logs, _guard) = LogCapture::start();
    let env = env().await;
    let task = enqueue_command(&env, "trap '' TERM; echo ready; while true; do sleep 0.05; done").await;
    let partition = partitionable(&env).await;
    let mut cfg = config(&env, "worker-a", TOKEN);
    // Several beats fall within the grace.
    cfg.pipeline.kill_grace = Duration::from_secs(1);
    let a = start(cfg, partition.clone());
    wait_log(&env.store, task.id, "ready").await;
    cut_until_requeued(&env, &partition).await;
    partition.hooks.down.store(false, Ordering::SeqCst);
    until("the worker to drop the task", async || {
        let dropped = logs.lines_with("lease lost: the attempt ends unreported");
        (!dropped.is_empty()).then_some(())
    })
    .await;
    let summary = a.stop().await;
    assert_eq!(summary.abandoned, 1, "{summary:?}");
    let abandoning = logs.lines_with("lease lost; abandoning the task");
    assert_eq!(abandoning.len(), 1, "{abandoning:#?}");
    let dropped = logs.lines_with("lease lost: the attempt ends unreported");
    assert_eq!(dropped.len(), 1, "{dropped:#?}");
    assert!(dropped[0].contains("it made no commit"), "{dropped:#?}");
}
