//! The worker protocol: register, heartbeat, long-poll claim, events, complete (one or a
//! batch), fail, deregister.

use std::time::Duration;

use agentpool_core::protocol::{
    AppendEventsRequest, ClaimResponse, ClaimedWork, CompleteBatch, CompleteBatchResponse, CompleteItem,
    CompleteItemResult, CompleteRequest, FailOutcome, FailRequest, HeartbeatReply, HeartbeatRequest,
};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{LeaseToken, NewEvent, TaskId, TaskResult, Worker, WorkerId};
use reqwest::Method;

use crate::{Client, Result, is_no_content};

/// The longest a claim (or a heartbeat) may wait; the server caps it there too.
const MAX_CLAIM_WAIT_SECS: u64 = 60;

impl Client {
    pub async fn register(&self, reg: &WorkerRegistration) -> Result<Worker> {
        self.call(Method::POST, "/v1/workers/register", reg).await
    }

    /// Extend the leases in `req`; the answer says which tasks to cancel or have been lost.
    pub async fn heartbeat(&self, worker: &WorkerId, req: &HeartbeatRequest) -> Result<HeartbeatReply> {
        self.call(Method::POST, &format!("/v1/workers/{worker}/heartbeat"), req)
            .await
    }

    /// A heartbeat whose answer may wait up to `wait` (at most a minute) while there is
    /// nothing to tell, and comes at once when one of the worker's tasks is canceled or the
    /// worker is asked to drain. The leases are extended when the beat arrives.
    pub async fn heartbeat_waiting(
        &self,
        worker: &WorkerId,
        req: &HeartbeatRequest,
        wait: Duration,
    ) -> Result<HeartbeatReply> {
        let secs = wait.as_secs().min(MAX_CLAIM_WAIT_SECS);
        let r = self
            .req(Method::POST, &format!("/v1/workers/{worker}/heartbeat"))
            .query(&[("wait", secs.to_string())])
            .json(req);
        let limit = self.limit(Some(Duration::from_secs(secs)));
        let resp = self.send(r, limit).await?;
        self.read_json(resp, limit).await
    }

    /// Claim up to `max` tasks, waiting up to `wait` (at most a minute) for work: a long poll.
    /// Empty when nothing came in time.
    pub async fn claim(&self, worker: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>> {
        let secs = wait.as_secs().min(MAX_CLAIM_WAIT_SECS);
        let r = self
            .req(Method::POST, &format!("/v1/workers/{worker}/claim"))
            .query(&[("max", max.to_string()), ("wait", secs.to_string())]);
        let limit = self.limit(Some(Duration::from_secs(secs)));
        let resp = self.send(r, limit).await?;
        if is_no_content(&resp) {
            return Ok(Vec::new());
        }
        let body: ClaimResponse = self.read_json(resp, limit).await?;
        Ok(body.tasks)
    }

    /// Add events to a task the worker holds with `lease_token`.
    pub async fn append_events(
        &self,
        worker: &WorkerId,
        task: TaskId,
        lease_token: LeaseToken,
        events: Vec<NewEvent>,
    ) -> Result<()> {
        let body = AppendEventsRequest { lease_token, events };
        self.call_empty(
            Method::POST,
            &format!("/v1/workers/{worker}/tasks/{task}/events"),
            Some(&body),
        )
        .await
    }

    /// Report the attempt held with `lease_token` as succeeded with `result`.
    pub async fn complete(
        &self,
        worker: &WorkerId,
        task: TaskId,
        lease_token: LeaseToken,
        result: TaskResult,
    ) -> Result<()> {
        let body = CompleteRequest { lease_token, result };
        self.call_empty(
            Method::POST,
            &format!("/v1/workers/{worker}/complete/{task}"),
            Some(&body),
        )
        .await
    }

    /// Complete several attempts in one call; one result per item, in order.
    pub async fn complete_batch(
        &self,
        worker: &WorkerId,
        items: Vec<CompleteItem>,
    ) -> Result<Vec<CompleteItemResult>> {
        let out: CompleteBatchResponse = self
            .call(
                Method::POST,
                &format!("/v1/workers/{worker}/complete"),
                &CompleteBatch { items },
            )
            .await?;
        Ok(out.results)
    }

    pub async fn fail(&self, worker: &WorkerId, task: TaskId, req: &FailRequest) -> Result<FailOutcome> {
        self.call(Method::POST, &format!("/v1/workers/{worker}/fail/{task}"), req)
            .await
    }

    pub async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        self.delete(&format!("/v1/workers/{worker}")).await
    }
}
