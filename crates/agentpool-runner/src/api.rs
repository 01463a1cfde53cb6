//! The worker protocol as the worker loop sees it: one [`WorkerApi`] trait, implemented by
//! the HTTP client (`agentpool_client::Client`) — the one path every deployment takes, embedded
//! mode included — and by test doubles that inject faults; and the heartbeat call workers and
//! launchers share.

use std::time::Duration;

use agentpool_client::Client;
use agentpool_core::protocol::{
    AppendEventsRequest, CompleteRequest, FailOutcome, FailRequest, HeartbeatReply, HeartbeatRequest,
};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{TaskId, Worker, WorkerId};
use async_trait::async_trait;

/// What a call to the queue can end in (stale lease, not found, unavailable, rejected).
pub use agentpool_client::Error as ApiError;
/// A claimed task with the credentials the server hands to the worker for it.
pub use agentpool_core::protocol::ClaimedWork;

/// The worker protocol.
#[async_trait]
pub trait WorkerApi: Send + Sync + 'static {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError>;
    async fn heartbeat(&self, worker: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError>;
    /// A heartbeat whose answer may wait up to `wait` until there is something to tell (a
    /// cancel, a drain). The default answers at once, as an older server does: callers pace
    /// their beats themselves.
    async fn heartbeat_waiting(
        &self,
        worker: &WorkerId,
        req: HeartbeatRequest,
        _wait: Duration,
    ) -> Result<HeartbeatReply, ApiError> {
        self.heartbeat(worker, req).await
    }
    /// Claim up to `max` tasks, waiting up to `wait` for one to come (long poll).
    async fn claim(&self, worker: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError>;
    async fn append_events(
        &self,
        worker: &WorkerId,
        task: TaskId,
        req: AppendEventsRequest,
    ) -> Result<(), ApiError>;
    async fn complete(&self, worker: &WorkerId, task: TaskId, req: CompleteRequest) -> Result<(), ApiError>;
    async fn fail(&self, worker: &WorkerId, task: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError>;
    /// The worker has begun to drain: it takes no new tasks and finishes what it runs.
    async fn drain(&self, worker: &WorkerId) -> Result<(), ApiError>;
    async fn deregister(&self, worker: &WorkerId) -> Result<(), ApiError>;
}

#[async_trait]
impl WorkerApi for Client {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError> {
        Client::register(self, &reg).await
    }

    async fn heartbeat(&self, worker: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError> {
        Client::heartbeat(self, worker, &req).await
    }

    async fn heartbeat_waiting(
        &self,
        worker: &WorkerId,
        req: HeartbeatRequest,
        wait: Duration,
    ) -> Result<HeartbeatReply, ApiError> {
        Client::heartbeat_waiting(self, worker, &req, wait).await
    }

    async fn claim(&self, worker: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        Client::claim(self, worker, max, wait).await
    }

    async fn append_events(
        &self,
        worker: &WorkerId,
        task: TaskId,
        req: AppendEventsRequest,
    ) -> Result<(), ApiError> {
        Client::append_events(self, worker, task, req.lease_token, req.events).await
    }

    async fn complete(&self, worker: &WorkerId, task: TaskId, req: CompleteRequest) -> Result<(), ApiError> {
        Client::complete(self, worker, task, req.lease_token, req.result).await
    }

    async fn fail(&self, worker: &WorkerId, task: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError> {
        Client::fail(self, worker, task, &req).await
    }

    async fn drain(&self, worker: &WorkerId) -> Result<(), ApiError> {
        Client::drain_worker(self, worker).await.map(|_| ())
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<(), ApiError> {
        Client::deregister(self, worker).await
    }
}

/// The heartbeat interval that holds the lease of `task` (claimed just now): `configured`, or a
/// third of the server's lease length when that is shorter — a lease shorter than a few beats
/// would expire between two of them while the worker lives and the task runs, and the task
/// would go round and round. The lease length is read from the claim: both timestamps are the
/// server's, so the clocks need not agree.
pub fn beats_for_lease(configured: Duration, task: &agentpool_core::Task) -> Duration {
    let (Some(start), Some(until)) = (task.started_at, task.lease_expires_at) else {
        return configured;
    };
    match (until - start).to_std() {
        // Whole milliseconds: the interval is logged.
        Ok(ttl) => {
            let third = u64::try_from(ttl.as_millis() / 3).unwrap_or(u64::MAX);
            configured.min(Duration::from_millis(third.max(100)))
        }
        Err(_) => configured,
    }
}

/// The server refused the caller's token itself (401: unknown or revoked) or its role (403):
/// no retry of the same call will do, so a worker or launcher stops instead of retrying.
pub fn is_refusal(e: &ApiError) -> bool {
    e.status().is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403)
}

/// [`beats_for_lease`], when that is shorter than `configured`, having said so in the log: the
/// operator set the two lengths apart and should hear which one to change.
pub fn shorter_beats_for_lease(configured: Duration, task: &agentpool_core::Task) -> Option<Duration> {
    let fit = beats_for_lease(configured, task);
    (fit < configured).then(|| {
        tracing::warn!(
            "the server's leases are shorter than three heartbeats of {configured:?}: beating every {fit:?} \
             instead (raise the server's --lease-ttl-secs or lower --heartbeat-secs)"
        );
        fit
    })
}

/// Send a heartbeat whose answer may wait up to `wait` (see
/// [`WorkerApi::heartbeat_waiting`]), with the cache's figures when they changed. The fields
/// newer than the first servers (the cache's figures, the status message) are sent again
/// without them when the server refuses the beat: an older server refuses unknown fields, and
/// a beat it refuses would leave the worker's leases to expire.
pub async fn heartbeat(
    api: &dyn WorkerApi,
    id: &WorkerId,
    mut req: HeartbeatRequest,
    cache: Option<&crate::cache_stats::CacheMonitor>,
    wait: Duration,
) -> Result<HeartbeatReply, ApiError> {
    if let Some(m) = cache {
        req.cache = m.to_send_soon().await;
    }
    let sent = req.cache;
    let newer_fields = sent.is_some() || req.status_message.is_some();
    let reply = match api.heartbeat_waiting(id, req.clone(), wait).await {
        Err(
            e @ ApiError::Rejected {
                status: 400 | 422, ..
            },
        ) if newer_fields => {
            req.cache = None;
            req.status_message = None;
            let r = api.heartbeat_waiting(id, req, wait).await;
            if r.is_ok() {
                tracing::info!(
                    "the server refused this worker's newer heartbeat fields ({e}); sent without them"
                );
                if let Some(m) = cache.filter(|_| sent.is_some()) {
                    m.unsupported();
                }
            }
            return r;
        }
        r => r,
    };
    if let Some(m) = cache {
        match (&reply, sent) {
            (Ok(_), Some(s)) => m.sent(s),
            (Err(ApiError::NotFound(_)), _) => m.resend(),
            _ => {}
        }
    }
    reply
}
