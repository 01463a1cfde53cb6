//! Wire types of the worker protocol (docs/architecture.md), shared by the server, the HTTP worker client
//! and the in-process worker so that both paths speak the same language.

use serde::{Deserialize, Serialize};

use crate::{ErrorClass, Lease, NewEvent, Task, TaskId, TaskResult, WorkerStatus};

/// `POST /v1/workers/{id}/claim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// How many tasks to take at most.
    #[serde(default = "one")]
    pub max: u32,
    /// Seconds to wait for work before answering with nothing (long poll), up to 60.
    #[serde(default)]
    pub wait_secs: u32,
}

fn one() -> u32 {
    1
}

/// A claimed task with the lease the worker must present for everything it does with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedTask {
    pub task: Task,
    pub lease: Lease,
    /// 1-based attempt number of this claim.
    pub attempt: u32,
    /// Session id of the task this one follows up, when it has one (to resume the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session: Option<String>,
}

/// `POST /v1/workers/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The leases the worker holds; their expiry is extended.
    #[serde(default)]
    pub leases: Vec<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkerStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Tasks the worker must cancel now.
    pub cancel: Vec<TaskId>,
    /// Leases that are no longer the worker's (expired and re-claimed, or the task finished):
    /// stop working on them; any report will be refused.
    pub lost: Vec<TaskId>,
    /// The server asks the worker to drain.
    pub drain: bool,
}

/// `POST /v1/workers/{id}/complete/{task}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease_token: crate::LeaseToken,
    #[serde(default)]
    pub result: TaskResult,
}

/// `POST /v1/workers/{id}/fail/{task}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub lease_token: crate::LeaseToken,
    pub class: ErrorClass,
    pub message: String,
    /// The agent's retry-after hint, for rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// What the run produced before it failed (usage, partial commit…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
}

/// `POST /v1/workers/{id}/tasks/{task}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendEventsRequest {
    pub lease_token: crate::LeaseToken,
    pub events: Vec<NewEvent>,
}

/// Where a failed attempt left the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FailOutcome {
    /// Queued again; runnable after `run_after`.
    Retrying {
        run_after: crate::Timestamp,
        attempt: u32,
    },
    /// Finished as failed (or canceled).
    Finished { state: crate::TaskState },
}
