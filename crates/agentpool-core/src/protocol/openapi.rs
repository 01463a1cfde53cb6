//! OpenAPI schemas of the domain types (feature `openapi`, enabled by the server): the domain
//! types themselves carry no OpenAPI derives, so each schema is derived from the serde form of
//! a fully populated example value — property names and JSON types follow the real types as
//! they change. The examples are built here, with every optional field set. The wire types of
//! [`crate::protocol`] derive their schemas and point at these for the domain types they hold.

use crate::event::NewEvent;
use crate::project::ProjectSpec;
use crate::protocol::{
    AppendEventsRequest, ClaimRequest, CompleteRequest, FailOutcome, FailRequest, HeartbeatReply,
    HeartbeatRequest,
};
use crate::protocol::{Enqueued, TaskDetail, WaitReason};
use crate::worker::WorkerRegistration;
use crate::{
    AgentInfo, Attempt, AttemptOutcome, CheckRun, CheckSpec, ErrorClass, Event, EventPayload, FileChange,
    Lease, LeaseToken, Project, Task, TaskId, TaskKind, TaskResult, TaskSpec, TaskState, Usage, Worker,
    WorkerId, WorkerStatus,
};
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};

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

fn v<T: Serialize>(x: T) -> Value {
    serde_json::to_value(x).unwrap_or(Value::Null)
}

fn now() -> crate::Timestamp {
    chrono::Utc::now()
}

fn worker_id() -> WorkerId {
    WorkerId::generate("host")
}

fn lease() -> Lease {
    Lease {
        task_id: TaskId::new(),
        token: LeaseToken(7),
    }
}

pub fn task_spec() -> TaskSpec {
    TaskSpec {
        kind: TaskKind::Agent,
        repo: Some("https://example.com/repo.git".into()),
        project: Some("demo".into()),
        base_ref: Some("main".into()),
        branch: Some("agentpool/fix".into()),
        prompt: Some("fix the bug".into()),
        command: Some("make test".into()),
        agent: Some("claude-code".into()),
        model: Some("sonnet".into()),
        max_turns: Some(10),
        max_cost_usd: Some(2.5),
        priority: 0,
        timeout_secs: Some(1800),
        max_attempts: Some(3),
        labels: [("team".to_string(), "a".to_string())].into(),
        depends_on: vec![TaskId::new()],
        run_after: Some(now()),
        idempotency_key: Some("key".into()),
        follow_up_of: Some(TaskId::new()),
        setup_command: Some("npm ci".into()),
        commit: true,
        push: true,
        commit_message: Some("message".into()),
        credentials: vec!["gh-token".into()],
        checks: Some(vec![check_spec()]),
        max_rounds: Some(3),
        push_on_checks_failed: true,
        profile: Some("eu-proxy".into()),
        profile_settings: Some(crate::AgentProfile {
            env: [(
                "ANTHROPIC_BASE_URL".to_string(),
                "https://proxy.example.com".to_string(),
            )]
            .into(),
            model: Some("sonnet".into()),
            max_turns: Some(10),
            allowed_tools: vec!["mcp__docs__search".into()],
            append_system_prompt: Some("Run the tests before finishing.".into()),
            mcp_servers: [(
                "docs".to_string(),
                crate::McpServer {
                    command: "node".into(),
                    args: vec!["docs-mcp.js".into()],
                    env: Default::default(),
                },
            )]
            .into(),
        }),
    }
}

fn check_spec() -> CheckSpec {
    CheckSpec {
        name: Some("tests".into()),
        command: "cargo test".into(),
        timeout_secs: Some(600),
        max_output_bytes: Some(1 << 20),
    }
}

fn check_run() -> CheckRun {
    CheckRun {
        round: 1,
        name: "tests".into(),
        passed: false,
        exit_code: Some(101),
        killed: Some("timeout".into()),
        duration_ms: 1200,
        output_tail: "test result: FAILED".into(),
        failed_tests: vec!["tests::it_works".into()],
    }
}

pub fn task_result() -> TaskResult {
    TaskResult {
        commit_sha: Some("0123abcd".into()),
        branch: Some("agentpool/fix".into()),
        files: vec![FileChange {
            path: "src/lib.rs".into(),
            added: Some(1),
            removed: Some(2),
        }],
        pushed: true,
        push_result: Some("ok".into()),
        pr_url: Some("https://example.com/pr/1".into()),
        pull_request: Some(crate::github::PullRequestRef {
            number: 1,
            url: "https://example.com/pr/1".into(),
            state: "open".into(),
        }),
        usage: Usage {
            input_tokens: 1,
            output_tokens: 1,
            cache_read_tokens: 1,
            cache_write_tokens: 1,
        },
        cost_usd: Some(0.5),
        session_id: Some("session".into()),
        num_turns: Some(3),
        final_text: Some("done".into()),
        exit_code: Some(0),
        duration_ms: 1,
        rounds: Some(2),
        checks_passed: Some(true),
        checks: vec![check_run()],
    }
}

pub fn task() -> Task {
    Task {
        id: TaskId::new(),
        spec: task_spec(),
        state: TaskState::Running,
        attempts: 1,
        max_attempts: 3,
        priority: 0,
        created_at: now(),
        updated_at: now(),
        run_after: now(),
        started_at: Some(now()),
        finished_at: Some(now()),
        worker_id: Some(worker_id()),
        lease_token: Some(LeaseToken(7)),
        lease_expires_at: Some(now()),
        cancel_requested: false,
        error_class: Some(ErrorClass::AgentError),
        error_message: Some("message".into()),
        result: Some(task_result()),
    }
}

pub fn task_detail() -> Value {
    v(TaskDetail {
        task: task(),
        attempts_detail: vec![Attempt {
            task_id: TaskId::new(),
            number: 1,
            worker_id: worker_id(),
            lease_token: LeaseToken(7),
            started_at: now(),
            ended_at: Some(now()),
            outcome: AttemptOutcome::Failed,
            error_class: Some(ErrorClass::Timeout),
            error_message: Some("message".into()),
        }],
        waiting: vec![
            WaitReason::Dependencies {
                pending: vec![TaskId::new()],
            },
            WaitReason::BudgetExhausted {
                project: "demo".into(),
                budget_usd: 50.0,
                spent_usd: 50.5,
                until: now(),
                message: "budget exhausted until 2026-01-02T00:00:00Z".into(),
            },
        ],
    })
}

pub fn enqueued() -> Value {
    v(Enqueued {
        task: task(),
        created: true,
    })
}

pub fn event() -> Value {
    v(Event {
        task_id: TaskId::new(),
        seq: 1,
        at: now(),
        payload: EventPayload::log("stdout", "hello"),
    })
}

fn registration() -> WorkerRegistration {
    WorkerRegistration {
        id: Some(worker_id()),
        hostname: "host".into(),
        version: "0.1.0".into(),
        agents: vec![AgentInfo {
            name: "claude-code".into(),
            version: Some("1.0".into()),
        }],
        labels: [("gpu".to_string(), "no".to_string())].into(),
        slots: 4,
        fresh_start: true,
    }
}

pub fn worker_registration() -> Value {
    v(registration())
}

pub fn worker() -> Value {
    let r = registration();
    v(Worker {
        id: worker_id(),
        hostname: r.hostname,
        version: r.version,
        agents: r.agents,
        labels: r.labels,
        slots: r.slots,
        status: WorkerStatus::Idle,
        running: 0,
        registered_at: now(),
        last_heartbeat_at: now(),
        cache: Some(cache_stats()),
    })
}

fn cache_stats() -> crate::CacheStats {
    crate::CacheStats {
        hits: 41,
        misses: 3,
        bytes: 734_003_200,
        mirrors: 3,
    }
}

fn project_spec_value() -> ProjectSpec {
    ProjectSpec {
        name: "demo".into(),
        repo: "https://example.com/repo.git".into(),
        default_base: Some("main".into()),
        slots: Some(2),
        default_agent: Some("claude-code".into()),
        default_model: Some("sonnet".into()),
        allowed_agents: vec!["claude-code".into()],
        credentials: vec!["gh-token".into()],
        checks: vec![check_spec()],
        max_rounds: Some(3),
        max_cost_usd: Some(2.5),
        daily_budget_usd: Some(50.0),
        default_profile: Some("anthropic-proxy".into()),
        github: Some(crate::github::GithubSettings {
            repository: "octo/hello".into(),
            api_url: Some("https://github.example.com/api/v3".into()),
            webhook_secret: "github-webhook-secret".into(),
            token: None,
            app: Some(crate::github::GithubApp {
                app_id: 123456,
                private_key: "github-app-key".into(),
                installation_id: None,
            }),
            label: Some("agentpool".into()),
            command: Some("/agentpool".into()),
            allowed_associations: vec!["OWNER".into()],
            pull_requests: true,
            draft: true,
            review_follow_ups: true,
            check_run_follow_ups: true,
            max_follow_ups: Some(3),
            prompt_template: Some("{{title}}\n\n{{body}}".into()),
            follow_up_template: Some("{{review}}{{check}}".into()),
        }),
    }
}

pub fn project_spec() -> Value {
    v(project_spec_value())
}

pub fn project() -> Value {
    v(Project {
        spec: project_spec_value(),
        created_at: now(),
        updated_at: now(),
    })
}

pub fn heartbeat_request() -> Value {
    v(HeartbeatRequest {
        leases: vec![lease()],
        status: Some(WorkerStatus::Busy),
        cache: Some(cache_stats()),
    })
}

pub fn heartbeat_reply() -> Value {
    v(HeartbeatReply {
        cancel: vec![TaskId::new()],
        lost: vec![TaskId::new()],
        drain: false,
    })
}

pub fn complete_request() -> Value {
    v(CompleteRequest {
        lease_token: LeaseToken(7),
        result: task_result(),
    })
}

pub fn fail_request() -> Value {
    v(FailRequest {
        lease_token: LeaseToken(7),
        class: ErrorClass::RateLimited,
        message: "rate limited".into(),
        retry_after_secs: Some(30),
        result: Some(task_result()),
    })
}

pub fn fail_outcomes() -> Vec<Value> {
    vec![
        v(FailOutcome::Retrying {
            run_after: now(),
            attempt: 2,
        }),
        v(FailOutcome::Finished {
            state: TaskState::Failed,
        }),
    ]
}

pub fn append_events_request() -> Value {
    v(AppendEventsRequest {
        lease_token: LeaseToken(7),
        events: vec![NewEvent {
            at: Some(now()),
            payload: EventPayload::AssistantMessage { text: "hi".into() },
        }],
    })
}

pub fn claim_request() -> Value {
    v(ClaimRequest {
        max: 1,
        wait_secs: 30,
    })
}

pub fn task_value() -> Value {
    v(task())
}

pub fn task_spec_value() -> Value {
    v(task_spec())
}

pub fn task_result_value() -> Value {
    v(task_result())
}

// ---------------------------------------------------------------------------------------------
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
        #[doc = $doc]
        pub struct $marker;
        impl utoipa::PartialSchema for $marker {
            fn schema() -> RefOr<Schema> {
                from_examples($doc, $examples)
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
    "A worker: id, hostname, version, agents, labels, slots, status, running, timestamps, and its mirror cache (`cache`: hits, misses, bytes, mirrors) when it reported one.",
    vec![worker()]
);
core_schema!(
    WorkerRegistrationSchema,
    "WorkerRegistration",
    "What a worker sends to register: hostname, version, agents and slots, and optionally id, labels and fresh_start (release what this id held before).",
    vec![worker_registration()],
    required = ["hostname", "version", "agents", "slots"]
);
core_schema!(
    ProjectSchema,
    "Project",
    "A project: its spec plus created_at and updated_at.",
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
    "`{ leases: [{task_id, token}], status?, cache? }`: the leases to extend, and the mirror cache (hits, misses, bytes, mirrors) when it changed.",
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
    "`{ outcome: retrying, run_after, attempt }` or `{ outcome: finished, state }`.",
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
    "What a run produced: commit, files, push, PR, usage, cost, session id, check rounds.",
    vec![task_result_value()]
);
