//! Example values of the domain and wire types, every optional field set, from which the
//! schemas of the types without an OpenAPI derive are inferred.

use serde::Serialize;
use serde_json::Value;

use crate::event::NewEvent;
use crate::project::ProjectSpec;
use crate::protocol::{
    AppendEventsRequest, ClaimRequest, CompleteRequest, Enqueued, FailOutcome, FailRequest, HeartbeatReply,
    HeartbeatRequest, Retried, TaskDetail, WaitReason,
};
use crate::worker::WorkerRegistration;
use crate::{
    AgentInfo, Attempt, AttemptOutcome, CheckRun, CheckSpec, ErrorClass, Event, EventPayload, FileChange,
    Lease, LeaseToken, Project, Task, TaskId, TaskKind, TaskResult, TaskSpec, TaskState, Usage, Worker,
    WorkerId, WorkerStatus,
};

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

pub(super) fn task_spec() -> TaskSpec {
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

pub(super) fn task_result() -> TaskResult {
    TaskResult {
        agent: Some("claude-code".into()),
        commit_sha: Some("0123abcd".into()),
        branch: Some("agentpool/fix".into()),
        files: vec![FileChange {
            path: "src/lib.rs".into(),
            added: Some(1),
            removed: Some(2),
            status: Some(crate::FileStatus::Modified),
            mode_change: Some("100644 -> 100755".into()),
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

pub(super) fn task() -> Task {
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

pub(super) fn task_detail() -> Value {
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
            cost_usd: Some(0.42),
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

pub(super) fn retried() -> Value {
    v(Retried {
        task: task(),
        requeued_dependents: vec![TaskId::new()],
    })
}

pub(super) fn enqueued() -> Value {
    v(Enqueued {
        task: task(),
        created: true,
    })
}

pub(super) fn event() -> Value {
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
        projects: vec!["web".into()],
        fresh_start: true,
    }
}

pub(super) fn worker_registration() -> Value {
    v(registration())
}

pub(super) fn worker() -> Value {
    v(Worker {
        status: WorkerStatus::Unhealthy,
        status_message: Some(UNHEALTHY.into()),
        cache: Some(cache_stats()),
        ..Worker::registered(registration(), worker_id(), now())
    })
}

/// What an unhealthy worker says about itself.
const UNHEALTHY: &str = "git or an agent could not be started 3 times in a row; the last: \
                         agent claude-code could not be started: No such file or directory";

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
        // A project has one forge; the example shows both so the schema has both.
        forgejo: Some(crate::forgejo::ForgejoSettings {
            repository: "acme/web".into(),
            url: "https://codeberg.org".into(),
            token: "forgejo-token".into(),
            pull_requests: true,
            draft: true,
        }),
    }
}

pub(super) fn project_spec() -> Value {
    v(project_spec_value())
}

pub(super) fn project() -> Value {
    v(Project {
        spec: project_spec_value(),
        created_at: now(),
        updated_at: now(),
        spent_today_usd: Some(12.5),
    })
}

pub(super) fn heartbeat_request() -> Value {
    v(HeartbeatRequest {
        leases: vec![lease()],
        status: Some(WorkerStatus::Unhealthy),
        status_message: Some(UNHEALTHY.into()),
        cache: Some(cache_stats()),
    })
}

pub(super) fn heartbeat_reply() -> Value {
    v(HeartbeatReply {
        cancel: vec![TaskId::new()],
        lost: vec![TaskId::new()],
        drain: false,
    })
}

pub(super) fn complete_request() -> Value {
    v(CompleteRequest {
        lease_token: LeaseToken(7),
        result: task_result(),
    })
}

pub(super) fn fail_request() -> Value {
    v(FailRequest {
        lease_token: LeaseToken(7),
        class: ErrorClass::RateLimited,
        message: "rate limited".into(),
        retry_after_secs: Some(30),
        result: Some(task_result()),
    })
}

pub(super) fn fail_outcomes() -> Vec<Value> {
    vec![
        v(FailOutcome::Retrying {
            run_after: now(),
            attempt: 2,
            given_back: false,
        }),
        v(FailOutcome::Finished {
            state: TaskState::Failed,
        }),
    ]
}

pub(super) fn append_events_request() -> Value {
    v(AppendEventsRequest {
        lease_token: LeaseToken(7),
        events: vec![NewEvent {
            at: Some(now()),
            payload: EventPayload::AssistantMessage { text: "hi".into() },
        }],
    })
}

pub(super) fn claim_request() -> Value {
    v(ClaimRequest {
        max: 1,
        wait_secs: 30,
    })
}

pub(super) fn task_value() -> Value {
    v(task())
}

pub(super) fn task_spec_value() -> Value {
    v(task_spec())
}

pub(super) fn task_result_value() -> Value {
    v(task_result())
}
