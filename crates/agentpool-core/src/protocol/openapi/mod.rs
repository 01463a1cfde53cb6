//! OpenAPI schemas of the domain types (feature `openapi`, enabled by the server): the domain
//! types themselves carry no OpenAPI derives, so each schema is derived from the serde form of
//! a fully populated example value — property names and JSON types follow the real types as
//! they change. The examples are built in [`examples`], with every optional field set. The wire
//! types of [`crate::protocol`] derive their schemas and point at these for the domain types
//! they hold.

mod examples;

use serde_json::Value;
use std::borrow::Cow;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};

use examples::*;

/// A JSON schema describing the shape of `v` (types and properties, recursively).
pub fn infer(v: &Value) -> RefOr<Schema> {
    match v {
        Value::Null => ObjectBuilder::new().schema_type(Type::Null).into(),
        Value::Bool(_) => ObjectBuilder::new().schema_type(Type::Boolean).into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            ObjectBuilder::new().schema_type(Type::Integer).into()
        }
        Value::Number(_) => ObjectBuilder::new().schema_type(Type::Number).into(),
        Value::String(s) => {
            let b = ObjectBuilder::new().schema_type(Type::String);
            if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
                b.format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .into()
            } else {
                b.into()
            }
        }
        Value::Array(items) => match items.first() {
            Some(first) => ArrayBuilder::new().items(infer(first)).into(),
            None => ArrayBuilder::new().into(),
        },
        Value::Object(map) => {
            let mut b = ObjectBuilder::new();
            for (k, v) in map {
                b = b.property(k.clone(), infer(v));
            }
            b.into()
        }
    }
}

/// The schema of one or several example values (several: `oneOf`, e.g. for tagged enums).
pub fn from_examples(description: &str, examples: Vec<Value>) -> RefOr<Schema> {
    match examples.as_slice() {
        [one] => with_description(infer(one), description),
        many => {
            let mut b = OneOfBuilder::new().description(Some(description));
            for e in many {
                b = b.item(infer(e));
            }
            b.into()
        }
    }
}

/// Mark `fields` of an object schema as required (an example shows a field, not whether it
/// may be left out).
pub fn require(s: RefOr<Schema>, fields: &[&str]) -> RefOr<Schema> {
    match s {
        RefOr::T(Schema::Object(mut o)) => {
            o.required = fields.iter().map(|f| f.to_string()).collect();
            RefOr::T(Schema::Object(o))
        }
        other => other,
    }
}

fn with_description(s: RefOr<Schema>, d: &str) -> RefOr<Schema> {
    match s {
        RefOr::T(Schema::Object(mut o)) => {
            o.description = Some(d.to_string());
            RefOr::T(Schema::Object(o))
        }
        other => other,
    }
}

// Named schemas for the domain types, referenced by the wire types and the server's paths.

/// A named schema for a domain type that carries no OpenAPI derive: described from example
/// values, with a pointer to the Rust type that defines it.
macro_rules! core_schema {
    ($marker:ident, $name:literal, $doc:literal, $examples:expr, required = [$($req:literal),* $(,)?]) => {
        #[doc = $doc]
        pub struct $marker;
        impl utoipa::PartialSchema for $marker {
            fn schema() -> RefOr<Schema> {
                require(from_examples($doc, $examples), &[$($req),*])
            }
        }
        impl ToSchema for $marker {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
    ($marker:ident, $name:literal, $doc:literal, $examples:expr) => {
        core_schema!($marker, $name, $doc, $examples, required = []);
    };
}

core_schema!(
    TaskSchema,
    "Task",
    "A task as the queue holds it (agentpool_core::Task): id, spec, state, attempts, timings, lease, result.",
    vec![task_value()]
);
core_schema!(
    TaskSpecSchema,
    "TaskSpec",
    "A task as submitted (agentpool_core::TaskSpec). Unknown fields are refused.",
    vec![task_spec_value()]
);
core_schema!(
    TaskDetailSchema,
    "TaskDetail",
    "A task with `attempts_detail` and, while queued, `waiting` reasons (agentpool_core::protocol::TaskDetail).",
    vec![task_detail()]
);
core_schema!(
    RetriedSchema,
    "Retried",
    "The task queued again (the fields of a Task) and `requeued_dependents`: the ids of the dependents that had failed because of it and are queued again with it.",
    vec![retried()]
);
core_schema!(
    EnqueuedSchema,
    "Enqueued",
    "`{ task, created }`: created is false when an idempotency key matched an earlier task.",
    vec![enqueued()]
);
core_schema!(
    EventSchema,
    "Event",
    "A stored task event: task_id, seq, at, kind, data (agentpool_core::Event).",
    vec![event()]
);
core_schema!(
    WorkerSchema,
    "Worker",
    "A worker: id, hostname, version, agents, labels, slots, status (with `status_message`: why, while it is unhealthy; which agent it no longer runs and why, while it claims), running, timestamps, and its mirror cache (`cache`: hits, misses, bytes, mirrors) when it reported one.",
    vec![worker()]
);
core_schema!(
    WorkerRegistrationSchema,
    "WorkerRegistration",
    "What a worker sends to register: hostname, version, agents and slots, and optionally id, labels, projects (only their tasks) and fresh_start (release what this id held before).",
    vec![worker_registration()],
    required = ["hostname", "version", "agents", "slots"]
);
core_schema!(
    ProjectSchema,
    "Project",
    "A project: its spec plus created_at, updated_at and spent_today_usd (what its tasks' attempts reported costing since midnight UTC, which its daily budget counts; absent when none did).",
    vec![project()]
);
core_schema!(
    ProjectSpecSchema,
    "ProjectSpec",
    "A project: name, repo, default_base, slots, default_agent, default_model, allowed_agents, credentials (names), checks, max_rounds.",
    vec![project_spec()]
);
core_schema!(
    HeartbeatRequestSchema,
    "HeartbeatRequest",
    "`{ leases: [{task_id, token}], status?, status_message?, cache? }`: the leases to extend, why the worker is unhealthy (with status `unhealthy`) or which agent it no longer runs (with `idle` or `busy`), and the mirror cache (hits, misses, bytes, mirrors) when it changed.",
    vec![heartbeat_request()]
);
core_schema!(
    HeartbeatReplySchema,
    "HeartbeatReply",
    "`{ cancel: [task ids], lost: [task ids], drain: bool }`.",
    vec![heartbeat_reply()]
);
core_schema!(
    CompleteRequestSchema,
    "CompleteRequest",
    "`{ lease_token, result }`.",
    vec![complete_request()]
);
core_schema!(
    FailRequestSchema,
    "FailRequest",
    "`{ lease_token, class, message, retry_after_secs?, result? }`.",
    vec![fail_request()]
);
core_schema!(
    FailOutcomeSchema,
    "FailOutcome",
    "`{ outcome: retrying, run_after, attempt, given_back }` (attempt: the one that failed; given_back: the next has the same number) or `{ outcome: finished, state }`.",
    fail_outcomes()
);
core_schema!(
    AppendEventsRequestSchema,
    "AppendEventsRequest",
    "`{ lease_token, events: [{kind, at?, data}] }`.",
    vec![append_events_request()]
);
core_schema!(
    ClaimRequestSchema,
    "ClaimRequest",
    "`{ max (default 1), wait_secs (default 0, up to 60) }`; query parameters `max` and `wait` are accepted too.",
    vec![claim_request()]
);
core_schema!(
    TaskResultSchema,
    "TaskResult",
    "What a run produced: the agent that ran, commit, files, push, PR, usage, cost, session id, check rounds.",
    vec![task_result_value()]
);
