//! A worker cut off from the server: its lease is taken over and its late report refused.

use super::*;

/// A WorkerApi whose connection to the queue can be cut: while `down`, every call fails as
/// an unreachable server would (the real store behind it keeps working for others).
pub struct Partition {
    pub inner: Arc<dyn WorkerApi>,
    pub down: AtomicBool,
}

impl Partition {
    fn check(&self) -> Result<(), ApiError> {
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

#[async_trait]
impl WorkerApi for Partition {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError> {
        self.check()?;
        self.inner.register(reg).await
    }
    async fn heartbeat(&self, w: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError> {
        self.check()?;
        self.inner.heartbeat(w, req).await
    }
    async fn claim(&self, w: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        self.check()?;
        self.inner.claim(w, max, wait).await
    }
    async fn append_events(&self, w: &WorkerId, t: TaskId, req: AppendEventsRequest) -> Result<(), ApiError> {
        self.check()?;
        self.inner.append_events(w, t, req).await
    }
    async fn complete(&self, w: &WorkerId, t: TaskId, req: CompleteRequest) -> Result<(), ApiError> {
        self.check()?;
        self.inner.complete(w, t, req).await
    }
    async fn fail(&self, w: &WorkerId, t: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError> {
        self.check()?;
        self.inner.fail(w, t, req).await
    }
    async fn drain(&self, w: &WorkerId) -> Result<(), ApiError> {
        self.check()?;
        self.inner.drain(w).await
    }
    async fn deregister(&self, w: &WorkerId) -> Result<(), ApiError> {
        self.check()?;
        self.inner.deregister(w).await
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
    let partition = Arc::new(Partition {
        inner: api(&env.store, lease_ttl).await,
        down: AtomicBool::new(false),
    });
    let a = start(config(&env, "worker-a", TOKEN), partition.clone());
    wait_log(&env.store, task.id, "ready").await;

    // Cut A off; its lease runs out and maintenance re-queues the task.
    partition.down.store(true, Ordering::SeqCst);
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
    partition.down.store(false, Ordering::SeqCst);
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
