//! Wire types of the worker protocol: register, claim, heartbeat, events, complete, fail.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ErrorDetail;
use crate::{
    CacheStats, ErrorClass, Lease, LeaseToken, NewEvent, Task, TaskId, TaskResult, Worker, WorkerStatus,
};

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_session: Option<String>,
}

/// The longest [`HeartbeatRequest::status_message`] the server takes, in characters.
pub const MAX_STATUS_MESSAGE: usize = 1000;

/// The longest agent version a worker may register (`agents[].version`), in characters: what
/// a CLI's `--version` says fits, and a page listing workers stays readable.
pub const MAX_AGENT_VERSION: usize = 200;

/// `POST /v1/workers/{id}/heartbeat`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The leases the worker holds; their expiry is extended.
    #[serde(default)]
    pub leases: Vec<Lease>,
    pub status: Option<WorkerStatus>,
    /// Why the worker is unhealthy, in its own words (at most 1000 characters); kept with the
    /// worker while it stays unhealthy. From an idle or busy worker: which agent it no longer
    /// runs, and why (kept until it registers again).
    pub status_message: Option<String>,
    /// The worker's mirror cache, sent when it changed since the last beat; the server keeps
    /// the last one it was sent.
    pub cache: Option<CacheStats>,
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
    pub lease_token: LeaseToken,
    #[serde(default)]
    pub result: TaskResult,
}

/// `POST /v1/workers/{id}/fail/{task}`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub lease_token: LeaseToken,
    pub class: ErrorClass,
    pub message: String,
    /// The agent's retry-after hint, for rate limits.
    pub retry_after_secs: Option<u64>,
    /// What the run produced before it failed (usage, partial commit…).
    pub result: Option<TaskResult>,
}

/// `POST /v1/workers/{id}/tasks/{task}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendEventsRequest {
    pub lease_token: LeaseToken,
    pub events: Vec<NewEvent>,
}

/// Where a failed attempt left the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FailOutcome {
    /// Queued again; runnable after `run_after`.
    Retrying {
        run_after: crate::Timestamp,
        /// The number of the attempt that failed.
        attempt: u32,
        /// The attempt was given back (the worker's or the infrastructure's fault, within the
        /// task's bound): the next attempt has the same number. Otherwise the next is
        /// `attempt + 1`.
        #[serde(default)]
        given_back: bool,
    },
    /// Finished as failed (or canceled).
    Finished { state: crate::TaskState },
}

/// Query parameters of `POST /v1/workers/{id}/heartbeat`. A query parameter rather than a
/// body field so that a newer worker's beat still passes on an older server, which refuses
/// unknown body fields and ignores the query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatQuery {
    /// Seconds the answer may wait, up to 60, when there is nothing to tell yet: it comes as
    /// soon as one of the worker's tasks is canceled or the worker is asked to drain. The
    /// leases are extended when the beat arrives, whatever the wait.
    pub wait: Option<u32>,
}

/// Query parameters of `POST /v1/workers/{id}/claim` (the body's fields work too).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ClaimQuery {
    /// Seconds to wait for work (long poll), up to 60.
    pub wait: Option<u32>,
    /// How many tasks to claim at most, 1-1000.
    pub max: Option<u32>,
}

/// Credential values handed to a worker with a claimed task: name → value. Serialized as a
/// plain JSON object on the wire (the claim response only); Debug shows names, never values.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Name and value of each credential, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// A claimed task as a worker receives it: the task, its lease, and the decrypted credentials
/// it needs. This response is the only place credential values ever leave the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedWork {
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub claimed: ClaimedTask,
    /// Credential name → value, for the names the task and its project list.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub credentials: Secrets,
    /// Set when the `git-token` credential is a GitHub App installation token minted for this
    /// claim: the GitHub API base it was minted on. The worker revokes the token there when
    /// the attempt ends, so it ends with the attempt even when the server that minted it has
    /// restarted meanwhile and forgotten it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_git_token_at: Option<String>,
}

/// The body of a claim that got work (no work: 204 without a body).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    pub tasks: Vec<ClaimedWork>,
}

/// One completion in a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteItem {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task_id: TaskId,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub lease_token: LeaseToken,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::protocol::openapi::TaskResultSchema))]
    pub result: TaskResult,
}

impl CompleteItem {
    /// A successful completion of a claimed attempt, with an empty result.
    pub fn success(c: &ClaimedTask) -> Self {
        Self {
            task_id: c.task.id,
            lease_token: c.lease.token,
            result: TaskResult::default(),
        }
    }
}

/// `POST /v1/workers/{id}/complete`: complete many attempts in one statement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteBatch {
    pub items: Vec<CompleteItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteItemResult {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task_id: TaskId,
    pub ok: bool,
    /// Why this item was refused (e.g. `stale_lease`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteBatchResponse {
    pub results: Vec<CompleteItemResult>,
}

/// `GET /v1/workers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerList {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::WorkerSchema>))]
    pub workers: Vec<Worker>,
}
