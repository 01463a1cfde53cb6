//! A worker cut off from the server: its lease is taken over and its late report refused.

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

#[tokio::test]
async fn a_partitioned_worker_whose_lease_was_taken_has_its_late_report_refused() {
    let env = env().await;
    let gate = env.dir.path().join("gate");
    let cmd = format!(
        "echo ready; while [ ! -e '{}' ]; do sleep 0.02; done; echo \"$AGENTPOOL_ATTEMPT\" >> attempts.txt",
        gate.display()
    );
    let mut spec = command(&env, &cmd);
    spec.branch = Some("agentpool/partition".into());
    let task = env.store.enqueue(spec).await.unwrap().task;
    let lease_ttl = Duration::from_secs(1);
    let partition = hooked(
        &env.store,
        lease_ttl,
        Partition {
            down: AtomicBool::new(false),
        },
    )
    .await;
    let a = start(config(&env, "worker-a", TOKEN), partition.clone());
    wait_log(&env.store, task.id, "ready").await;

    // Cut A off; its lease runs out and maintenance re-queues the task.
    partition.hooks.down.store(true, Ordering::SeqCst);
    until("the lease to expire and the task to be re-queued", async || {
        (env.store.requeue_expired().await.unwrap() > 0).then_some(())
    })
    .await;
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
