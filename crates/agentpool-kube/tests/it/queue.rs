//! An in-memory queue behind the worker protocol: hands out scripted claims and records every
//! call, so launcher tests can assert what was reported without a server.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use agentpool_core::protocol::{
    AppendEventsRequest, ClaimedTask, CompleteRequest, FailOutcome, FailRequest, HeartbeatReply,
    HeartbeatRequest, Secrets,
};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{
    ErrorClass, EventPayload, Lease, LeaseToken, NewEvent, Task, TaskId, TaskKind, TaskSpec, TaskState,
    Worker, WorkerId, WorkerStatus,
};
use agentpool_runner::{ApiError, ClaimedWork, WorkerApi};
use async_trait::async_trait;

/// The credential value every scripted claim carries.
pub const SECRET: &str = "ghp_attempt_secret_value";

#[derive(Default)]
pub struct Queue {
    pub to_claim: Mutex<VecDeque<ClaimedWork>>,
    pub fails: Mutex<Vec<(TaskId, ErrorClass, String)>>,
    /// Every event appended, with its task and the lease token it came under.
    pub events: Mutex<Vec<(TaskId, LeaseToken, NewEvent)>>,
    pub heartbeats: Mutex<Vec<Vec<Lease>>>,
    /// The status each heartbeat reported, with its message.
    pub statuses: Mutex<Vec<(Option<WorkerStatus>, Option<String>)>>,
    /// Tasks the next heartbeat reply names as canceled / lost.
    pub cancel: Mutex<Vec<TaskId>>,
    pub lost: Mutex<Vec<TaskId>>,
    /// Rung after a push to `cancel`: answers a heartbeat waiting for news, as the server's
    /// worker bell does.
    pub bell: tokio::sync::Notify,
    /// Once set, claims and heartbeats are refused as the server refuses a revoked token.
    pub revoked: std::sync::atomic::AtomicBool,
    /// How many times the launcher registered.
    pub registrations: std::sync::atomic::AtomicU32,
    /// What it registered with, last.
    pub registered: Mutex<Option<WorkerRegistration>>,
}

/// A claimed command task, attempt `attempt`, lease token 7.
pub fn work(attempt: u32) -> ClaimedWork {
    let now = chrono::Utc::now();
    let id = TaskId::new();
    let spec = TaskSpec {
        kind: TaskKind::Command,
        repo: Some("https://git.example/app.git".into()),
        command: Some("make test".into()),
        timeout_secs: Some(900),
        ..TaskSpec::default()
    };
    let task = Task {
        state: TaskState::Running,
        attempts: attempt,
        started_at: Some(now),
        lease_token: Some(LeaseToken(7)),
        // The server's default lease: 60 s from the claim.
        lease_expires_at: Some(now + chrono::Duration::seconds(60)),
        ..Task::queued(id, spec, 3, now)
    };
    let credentials = Secrets([("git-token".to_string(), SECRET.to_string())].into());
    ClaimedWork {
        claimed: ClaimedTask {
            task,
            lease: Lease {
                task_id: id,
                token: LeaseToken(7),
            },
            attempt,
            resume_session: None,
        },
        credentials,
        revoke_git_token_at: None,
    }
}

impl Queue {
    pub fn with(works: Vec<ClaimedWork>) -> Self {
        let q = Self::default();
        q.to_claim.lock().unwrap().extend(works);
        q
    }

    pub fn fails(&self) -> Vec<(TaskId, ErrorClass, String)> {
        self.fails.lock().unwrap().clone()
    }

    /// The log lines task `id` was told, in order, each checked to have come under lease
    /// token 7 (the one [`work`] claims with).
    pub fn lines(&self, id: TaskId) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|(t, _, _)| *t == id)
            .map(|(_, token, e)| {
                assert_eq!(*token, LeaseToken(7));
                match &e.payload {
                    EventPayload::Log { stream, line } if stream == "agentpool" => line.clone(),
                    other => panic!("not an agentpool log line: {other:?}"),
                }
            })
            .collect()
    }

    /// The server's answer to a revoked token, once [`Queue::revoked`] is set.
    fn refusal(&self) -> Result<(), ApiError> {
        if self.revoked.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ApiError::Rejected {
                status: 401,
                code: "unauthorized".into(),
                message: "unknown or revoked token".into(),
                fields: Vec::new(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl WorkerApi for Queue {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError> {
        self.registrations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.registered.lock().unwrap() = Some(reg.clone());
        let id = reg.id.clone().unwrap_or_else(|| WorkerId::parse("w").unwrap());
        Ok(Worker::registered(reg, id, chrono::Utc::now()))
    }

    async fn heartbeat(&self, _w: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError> {
        self.refusal()?;
        self.heartbeats.lock().unwrap().push(req.leases);
        self.statuses
            .lock()
            .unwrap()
            .push((req.status, req.status_message));
        Ok(HeartbeatReply {
            cancel: std::mem::take(&mut *self.cancel.lock().unwrap()),
            lost: std::mem::take(&mut *self.lost.lock().unwrap()),
            drain: false,
        })
    }

    async fn heartbeat_waiting(
        &self,
        w: &WorkerId,
        req: HeartbeatRequest,
        wait: Duration,
    ) -> Result<HeartbeatReply, ApiError> {
        let rung = self.bell.notified();
        if self.cancel.lock().unwrap().is_empty() {
            let _ = tokio::time::timeout(wait, rung).await;
        }
        self.heartbeat(w, req).await
    }

    async fn claim(&self, _w: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        self.refusal()?;
        let out: Vec<ClaimedWork> = {
            let mut q = self.to_claim.lock().unwrap();
            let n = (max as usize).min(q.len());
            q.drain(..n).collect()
        };
        if out.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
        }
        Ok(out)
    }

    async fn append_events(&self, _w: &WorkerId, t: TaskId, r: AppendEventsRequest) -> Result<(), ApiError> {
        let mut events = self.events.lock().unwrap();
        events.extend(r.events.into_iter().map(|e| (t, r.lease_token, e)));
        Ok(())
    }

    async fn complete(&self, _w: &WorkerId, _t: TaskId, _r: CompleteRequest) -> Result<(), ApiError> {
        Ok(())
    }

    async fn fail(&self, _w: &WorkerId, task: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError> {
        self.fails.lock().unwrap().push((task, req.class, req.message));
        Ok(FailOutcome::Finished {
            state: TaskState::Failed,
        })
    }

    async fn drain(&self, _w: &WorkerId) -> Result<(), ApiError> {
        Ok(())
    }

    async fn deregister(&self, _w: &WorkerId) -> Result<(), ApiError> {
        Ok(())
    }
}
