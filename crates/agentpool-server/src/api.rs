//! Wire types of the HTTP API that are not in `agentpool_core::protocol`: list pages, batch
//! submit and completion, claims with credentials, builds, credentials. Shared by the server
//! and [`crate::client`].

use std::borrow::Cow;

use agentpool_core::protocol::ClaimedTask;
use agentpool_core::{Event, LeaseToken, Project, Task, TaskId, TaskResult, Worker};
use agentpool_store::Enqueued;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, ToSchema};

use crate::crypto::Secrets;
use crate::error::ErrorDetail;
use crate::schemas as S;

/// Schemas for domain types that live in `agentpool_core` (which stays free of OpenAPI
/// dependencies): described as JSON objects with a pointer to the Rust type that defines them.
macro_rules! core_schema {
    ($marker:ident, $name:literal, $doc:literal, $examples:expr) => {
        #[doc = $doc]
        pub struct $marker;
        impl utoipa::PartialSchema for $marker {
            fn schema() -> RefOr<Schema> {
                crate::schemas::from_examples($doc, $examples)
            }
        }
        impl ToSchema for $marker {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

core_schema!(
    TaskSchema,
    "Task",
    "A task as the queue holds it (agentpool_core::Task): id, spec, state, attempts, timings, lease, result.",
    vec![S::task_value()]
);
core_schema!(
    TaskSpecSchema,
    "TaskSpec",
    "A task as submitted (agentpool_core::TaskSpec). Unknown fields are refused.",
    vec![S::task_spec_value()]
);
core_schema!(
    TaskDetailSchema,
    "TaskDetail",
    "A task with `attempts_detail` and, while queued, `waiting` reasons (agentpool_store::TaskDetail).",
    vec![S::task_detail()]
);
core_schema!(
    EnqueuedSchema,
    "Enqueued",
    "`{ task, created }`: created is false when an idempotency key matched an earlier task.",
    vec![S::enqueued()]
);
core_schema!(
    EventSchema,
    "Event",
    "A stored task event: task_id, seq, at, kind, data (agentpool_core::Event).",
    vec![S::event()]
);
core_schema!(
    WorkerSchema,
    "Worker",
    "A worker: id, hostname, version, agents, labels, slots, status, running, timestamps.",
    vec![S::worker()]
);
core_schema!(
    WorkerRegistrationSchema,
    "WorkerRegistration",
    "What a worker sends to register: id (optional), hostname, version, agents, labels, slots.",
    vec![S::worker_registration()]
);
core_schema!(
    ProjectSchema,
    "Project",
    "A project: its spec plus created_at and updated_at.",
    vec![S::project()]
);
core_schema!(
    ProjectSpecSchema,
    "ProjectSpec",
    "A project: name, repo, default_base, slots, default_agent, default_model, allowed_agents, credentials (names).",
    vec![S::project_spec()]
);
core_schema!(
    HeartbeatRequestSchema,
    "HeartbeatRequest",
    "`{ leases: [{task_id, token}], status? }`: the leases to extend.",
    vec![S::heartbeat_request()]
);
core_schema!(
    HeartbeatReplySchema,
    "HeartbeatReply",
    "`{ cancel: [task ids], lost: [task ids], drain: bool }`.",
    vec![S::heartbeat_reply()]
);
core_schema!(
    CompleteRequestSchema,
    "CompleteRequest",
    "`{ lease_token, result }`.",
    vec![S::complete_request()]
);
core_schema!(
    FailRequestSchema,
    "FailRequest",
    "`{ lease_token, class, message, retry_after_secs?, result? }`.",
    vec![S::fail_request()]
);
core_schema!(
    FailOutcomeSchema,
    "FailOutcome",
    "`{ outcome: retrying, run_after, attempt }` or `{ outcome: finished, state }`.",
    S::fail_outcomes()
);
core_schema!(
    AppendEventsRequestSchema,
    "AppendEventsRequest",
    "`{ lease_token, events: [{kind, at?, data}] }`.",
    vec![S::append_events_request()]
);
core_schema!(
    ClaimRequestSchema,
    "ClaimRequest",
    "`{ max (default 1), wait_secs (default 0, up to 60) }`; query parameters `max` and `wait` are accepted too.",
    vec![S::claim_request()]
);
core_schema!(
    TaskResultSchema,
    "TaskResult",
    "What a run produced: commit, files, push, PR, usage, cost, session id.",
    vec![S::task_result_value()]
);

/// `POST /v1/tasks` with several tasks: all are enqueued in one transaction, or none.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmit {
    #[schema(value_type = Vec<TaskSpecSchema>)]
    pub tasks: Vec<agentpool_core::TaskSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchSubmitted {
    #[schema(value_type = Vec<EnqueuedSchema>)]
    pub tasks: Vec<Enqueued>,
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    #[schema(value_type = Vec<TaskSchema>)]
    pub tasks: Vec<Task>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub next_cursor: Option<TaskId>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskListQuery {
    /// queued, running, succeeded, failed or canceled.
    pub state: Option<String>,
    pub project: Option<String>,
    /// `key=value`.
    pub label: Option<String>,
    pub worker: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1-500, default 50.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Return events with `seq` greater than this (default 0).
    pub after: Option<i64>,
    /// 1-1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<EventSchema>)]
    pub events: Vec<Event>,
    /// Pass as `after` for the next page (the last `seq` returned, or the `after` given).
    pub next_after: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClaimQuery {
    /// Seconds to wait for work (long poll), up to 60.
    pub wait: Option<u32>,
    /// How many tasks to claim at most, 1-1000.
    pub max: Option<u32>,
}

/// A claimed task as a worker receives it: the task, its lease, and the decrypted credentials
/// it needs. This response is the only place credential values ever leave the server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimedWork {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub claimed: ClaimedTask,
    /// Credential name → value, for the names the task and its project list.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    #[schema(value_type = Object)]
    pub credentials: Secrets,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    pub tasks: Vec<ClaimedWork>,
}

/// One completion in a batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteItem {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    #[schema(value_type = i64)]
    pub lease_token: LeaseToken,
    #[serde(default)]
    #[schema(value_type = TaskResultSchema)]
    pub result: TaskResult,
}

/// `POST /v1/workers/{id}/complete`: complete many attempts in one statement.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBatch {
    pub items: Vec<CompleteItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompleteItemResult {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    pub ok: bool,
    /// Why this item was refused (e.g. `stale_lease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompleteBatchResponse {
    pub results: Vec<CompleteItemResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    #[schema(value_type = Vec<WorkerSchema>)]
    pub workers: Vec<Worker>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectList {
    #[schema(value_type = Vec<ProjectSchema>)]
    pub projects: Vec<Project>,
}

/// `POST /v1/projects/{name}/builds`: an agent task on the project's repository, with the
/// project's defaults for what is left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `PUT /v1/credentials/{name}`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialValue {
    pub value: String,
}

impl std::fmt::Debug for CredentialValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialValue(<redacted>)")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialList {
    /// Names only: values are never returned.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}
