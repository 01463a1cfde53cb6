//! What a user submits: the task spec, and the newtypes that validate its fields once, at the
//! edge ("parse, don't validate").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::{self, CheckSpec};
use crate::{TaskId, Timestamp};

mod names;
#[cfg(test)]
mod tests;
mod validate;

pub use names::{BranchName, RepoUrl, is_invisible};
pub use validate::{
    MAX_CREDENTIALS, MAX_DEPENDENCIES, MAX_LABELS, label_problem, parse_label, validate_labels,
};

/// Labels: `key=value` pairs. On a task they are both metadata (for filtering) and its worker
/// selector: a worker may claim the task only if it carries every label the task names.
pub type Labels = BTreeMap<String, String>;

/// The label (value `true`) of a worker that reads repositories on its own disk (`agentpool
/// worker --allow-local-repos`), which a task on a local repository requires: a path names
/// a place on one machine, so only a worker that opted in may take it.
pub const LOCAL_REPOS_LABEL: &str = "agentpool/local-repos";

/// The label of a dedicated worker: one that has it takes only the tasks that carry it with
/// the same value (tasks need a worker's labels, a dedicated worker also needs its task's).
/// `agentpool run`'s transient pool is dedicated to its own task this way, so it runs no other
/// task queued in the same database.
pub const DEDICATED_LABEL: &str = "agentpool/dedicated";

/// A field that failed validation, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The name under which a worker advertises that it runs command tasks; no agent has it.
pub const COMMAND_AGENT: &str = "command";

/// Is the task an AI agent run or a plain shell command?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    #[default]
    Agent,
    Command,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Command => "command",
        }
    }
}

/// Default per-task timeout (docs/guarantees.md).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;
/// Upper bound on a per-task timeout unless the operator raises it.
pub const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const MAX_PRIORITY: i32 = 1000;

/// A task as submitted: everything needed to run it. Stored as JSON next to the columns the
/// queue filters on. A field left out takes its value from [`TaskSpec::default`].
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    pub kind: TaskKind,
    /// Repository to clone. Optional when `project` names one.
    pub repo: Option<String>,
    /// Project this task belongs to (slots, credentials, defaults).
    pub project: Option<String>,
    /// Ref a new work branch starts from; the remote's default branch when absent. A work
    /// branch the remote already has is continued instead.
    pub base_ref: Option<String>,
    /// Work branch; `agentpool/<task-id>` when absent. When the remote has it, the task builds
    /// on it. Also the branch lock key.
    pub branch: Option<String>,
    pub prompt: Option<String>,
    pub command: Option<String>,
    /// Agent name (`claude-code`, `codex`, …); the worker's default agent when absent.
    pub agent: Option<String>,
    pub model: Option<String>,
    /// The agent's turn limit (Claude Code's `--max-turns`); a run that uses every turn fails
    /// the task `MAX_TURNS`, not retried.
    pub max_turns: Option<u32>,
    /// Stop the agent and fail the task `BUDGET_EXCEEDED` once the cost it reports passes this
    /// (USD). Only agents that report cost can be held to it.
    pub max_cost_usd: Option<f64>,
    pub priority: i32,
    pub timeout_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    pub run_after: Option<Timestamp>,
    /// Names one submission within the task's project: a later submission with the same key
    /// in the same project (or, with no project, another of none) is answered with the first
    /// task, not queued again. Another project's task of the same key is another submission.
    pub idempotency_key: Option<String>,
    /// Continue an earlier task: same work branch, agent session resumed where supported.
    pub follow_up_of: Option<TaskId>,
    /// Shell command run in the workspace before the agent (install deps, …).
    pub setup_command: Option<String>,
    /// Commit what changed (default true).
    pub commit: bool,
    /// Push the work branch (default true).
    pub push: bool,
    pub commit_message: Option<String>,
    /// Names of stored credentials this task needs (API keys, git token).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
    /// Commands run after the agent (or command), before commit; failures are fed back to
    /// the agent (docs/checks.md). Absent: the project's checks; `[]`: none.
    pub checks: Option<Vec<CheckSpec>>,
    /// The most rounds of agent run + checks (agent tasks); 3 when absent.
    pub max_rounds: Option<u32>,
    /// When checks still fail after the last round, still commit and push the work branch
    /// (the result is marked `checks_passed: false`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub push_on_checks_failed: bool,
    /// A stored agent profile (settings, MCP servers) to run with.
    pub profile: Option<String>,
    /// The settings of `profile` as the server resolved them at submit (what the task runs
    /// with, whatever later happens to the profile); a client's value is replaced.
    pub profile_settings: Option<crate::AgentProfile>,
}

/// What a cost limit or budget in USD must be.
/// Whether `a` is an agent's name as a task may name it: 1-64 ASCII letters, digits, `-`, `_`.
pub fn valid_agent_name(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 64
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub const USD_RULE: &str = "must be a positive number of US dollars, at most 1000000";

/// Whether `v` is a usable cost limit or budget in USD.
pub fn valid_usd(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v <= 1_000_000.0
}

impl Default for TaskSpec {
    fn default() -> Self {
        Self {
            kind: TaskKind::Agent,
            repo: None,
            project: None,
            base_ref: None,
            branch: None,
            prompt: None,
            command: None,
            agent: None,
            model: None,
            max_turns: None,
            max_cost_usd: None,
            priority: 0,
            timeout_secs: None,
            max_attempts: None,
            labels: Labels::new(),
            depends_on: Vec::new(),
            run_after: None,
            idempotency_key: None,
            follow_up_of: None,
            setup_command: None,
            commit: true,
            push: true,
            commit_message: None,
            credentials: Vec::new(),
            checks: None,
            max_rounds: None,
            push_on_checks_failed: false,
            profile: None,
            profile_settings: None,
        }
    }
}

/// Server-side limits that validation checks against.
#[derive(Debug, Clone, Copy)]
pub struct SpecLimits {
    pub allow_local_repos: bool,
    pub max_timeout_secs: u64,
}

impl Default for SpecLimits {
    fn default() -> Self {
        Self {
            allow_local_repos: false,
            max_timeout_secs: MAX_TIMEOUT_SECS,
        }
    }
}

impl TaskSpec {
    /// A command task on `repo`.
    pub fn command(repo: &str, command: &str) -> Self {
        Self {
            kind: TaskKind::Command,
            repo: Some(repo.to_string()),
            command: Some(command.to_string()),
            ..Self::default()
        }
    }

    /// An agent task on `repo`.
    pub fn agent(repo: &str, agent: &str, prompt: &str) -> Self {
        Self {
            kind: TaskKind::Agent,
            repo: Some(repo.to_string()),
            agent: Some(agent.to_string()),
            prompt: Some(prompt.to_string()),
            ..Self::default()
        }
    }

    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS)
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }

    /// Add the labels the task's own fields ask of its worker: [`LOCAL_REPOS_LABEL`] when its
    /// repository is a local one. The queue matches them like any label, so such a task waits
    /// for a worker that reads local repositories instead of being claimed by one that must
    /// fail it.
    pub fn add_required_labels(&mut self) {
        if self.repo.as_deref().is_some_and(RepoUrl::names_local) {
            self.labels.insert(LOCAL_REPOS_LABEL.into(), "true".into());
        }
    }

    /// The agent the queue matches workers against: [`COMMAND_AGENT`] for command tasks.
    pub fn required_agent(&self) -> Option<&str> {
        match self.kind {
            TaskKind::Command => Some("command"),
            TaskKind::Agent => self.agent.as_deref(),
        }
    }

    /// The checks this task runs (none when it names none).
    pub fn checks(&self) -> &[CheckSpec] {
        self.checks.as_deref().unwrap_or_default()
    }

    /// The most rounds of agent run + checks: 1 for command tasks.
    pub fn max_rounds(&self) -> u32 {
        match self.kind {
            TaskKind::Command => 1,
            TaskKind::Agent => self.max_rounds.unwrap_or(check::DEFAULT_MAX_ROUNDS),
        }
    }
}
