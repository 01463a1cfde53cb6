//! What a user submits: the task spec, and the newtypes that validate its fields once, at the
//! edge ("parse, don't validate").

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::check::{self, CheckSpec};
use crate::{TaskId, Timestamp};

/// Labels: `key=value` pairs. On a task they are both metadata (for filtering) and its worker
/// selector: a worker may claim the task only if it carries every label the task names.
pub type Labels = BTreeMap<String, String>;

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

/// A repository URL that is safe to hand to git.
///
/// Allowed: `https://`, `http://`, `ssh://`, scp-like `user@host:path`, and — only when the
/// operator allows local repositories — `file://` URLs and absolute paths. Refused: `ext::` and
/// other remote-helper transports, values that look like options (`-…`), control characters,
/// and credentials embedded in the URL (they would end up in logs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoUrl(String);

impl RepoUrl {
    pub fn parse(s: &str, allow_local: bool) -> Result<Self, ValidationError> {
        let err = |m: &str| Err(ValidationError::new("repo", m));
        let s = s.trim();
        if s.is_empty() {
            return err("is required");
        }
        if s.len() > 2048 {
            return err("is longer than 2048 characters");
        }
        if s.starts_with('-') {
            return err("must not start with '-'");
        }
        if s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || is_invisible(c))
        {
            return err("must not contain whitespace, control or invisible (bidi, zero-width) characters");
        }
        if s.contains("::") {
            return err("remote-helper transports (such as ext::) are not allowed");
        }
        let lower = s.to_ascii_lowercase();
        if let Some(rest) = ["https://", "http://", "ssh://"]
            .iter()
            .find_map(|p| lower.strip_prefix(p))
        {
            let authority = rest.split('/').next().unwrap_or("");
            if authority.is_empty() {
                return err("has no host");
            }
            // ssh reads a host or user that starts with '-' as an option
            // (`ssh://-oProxyCommand=…`, `ssh://git@-oProxyCommand=…`).
            let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
            if host.is_empty() || host.starts_with('-') || user.starts_with('-') {
                return err("host and user must not be empty or start with '-'");
            }
            if authority.contains('@') && !lower.starts_with("ssh://") {
                return err("must not embed credentials; use a project credential instead");
            }
            return Ok(Self(s.to_string()));
        }
        if lower.starts_with("file://") || s.starts_with('/') {
            if !allow_local {
                return err("local repositories (file:// or a path) are not enabled on this server");
            }
            return Ok(Self(s.to_string()));
        }
        if lower.contains("://") {
            return err("scheme not allowed: use https, ssh, or (when enabled) file");
        }
        // scp-like syntax: user@host:path
        if let Some((userhost, path)) = s.split_once(':')
            && !userhost.is_empty()
            && !path.is_empty()
            && !userhost.contains('/')
        {
            let (user, host) = userhost.rsplit_once('@').unwrap_or(("", userhost));
            if host.is_empty() || host.starts_with('-') || user.starts_with('-') {
                return err("host and user must not be empty or start with '-'");
            }
            return Ok(Self(s.to_string()));
        }
        err("is not a URL git can use: give https://…, ssh://…, user@host:path, or a local path")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a local repository (path or file://).
    pub fn is_local(&self) -> bool {
        self.0.starts_with('/') || self.0.to_ascii_lowercase().starts_with("file://")
    }

    /// A key that identifies the repository for branch locks, ignoring a trailing `.git` or `/`.
    pub fn lock_key(&self) -> String {
        let s = self.0.trim_end_matches('/');
        s.strip_suffix(".git").unwrap_or(s).to_string()
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A branch name that git accepts (the rules of `git check-ref-format --branch`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BranchName(String);

impl BranchName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::check(s)
            .map(|()| Self(s.to_string()))
            .map_err(|m| ValidationError::new("branch", m))
    }

    fn check(s: &str) -> Result<(), String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 255 {
            return Err("is longer than 255 characters".into());
        }
        if s.starts_with('-') {
            return Err("must not start with '-'".into());
        }
        // A full ref would be pushed as refs/heads/refs/heads/…; the name is what is asked.
        if s.starts_with("refs/") {
            return Err(
                "give the branch name without refs/ (e.g. feature/x, not refs/heads/feature/x)".into(),
            );
        }
        if s == "@" || s == "HEAD" {
            return Err(format!("{s:?} is not a branch name"));
        }
        if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
            return Err("must not start or end with '/' or contain '//'".into());
        }
        if s.ends_with('.') {
            return Err("must not end with '.'".into());
        }
        if s.contains("..") || s.contains("@{") {
            return Err("must not contain '..' or '@{'".into());
        }
        for c in s.chars() {
            if c.is_control()
                || is_invisible(c)
                || c == ' '
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\' | '\u{7f}')
            {
                return Err(format!("must not contain {c:?}"));
            }
        }
        for part in s.split('/') {
            if part.starts_with('.') {
                return Err("no path component may start with '.'".into());
            }
            if part.ends_with(".lock") {
                return Err("no path component may end with '.lock'".into());
            }
        }
        Ok(())
    }

    /// The default work branch of a task.
    pub fn for_task(id: TaskId) -> Self {
        Self(format!("agentpool/{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Default per-task timeout (docs/guarantees.md).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;
/// Upper bound on a per-task timeout unless the operator raises it.
pub const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const MAX_PRIORITY: i32 = 1000;

/// A task as submitted: everything needed to run it. Stored as JSON next to the columns the
/// queue filters on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    #[serde(default)]
    pub kind: TaskKind,
    /// Repository to clone. Optional when `project` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Project this task belongs to (slots, credentials, defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Ref to start from; the remote's default branch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ref: Option<String>,
    /// Work branch; `agentpool/<task-id>` when absent. Also the branch lock key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Agent name (`claude-code`, `codex`, …); the worker's default agent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Stop the agent and fail the task `BUDGET_EXCEEDED` once the cost it reports passes this
    /// (USD). Only agents that report cost can be held to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_after: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Continue an earlier task: same work branch, agent session resumed where supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up_of: Option<TaskId>,
    /// Shell command run in the workspace before the agent (install deps, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_command: Option<String>,
    /// Commit what changed (default true).
    #[serde(default = "yes")]
    pub commit: bool,
    /// Push the work branch (default true).
    #[serde(default = "yes")]
    pub push: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_message: Option<String>,
    /// Names of stored credentials this task needs (API keys, git token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
    /// Commands run after the agent (or command), before commit; failures are fed back to
    /// the agent (docs/checks.md). Absent: the project's checks; `[]`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckSpec>>,
    /// The most rounds of agent run + checks (agent tasks); 3 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
    /// When checks still fail after the last round, still commit and push the work branch
    /// (the result is marked `checks_passed: false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub push_on_checks_failed: bool,
    /// A stored agent profile (settings, MCP servers) to run with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The settings of `profile` as the server resolved them at submit (what the task runs
    /// with, whatever later happens to the profile); a client's value is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_settings: Option<crate::AgentProfile>,
}

fn yes() -> bool {
    true
}

/// What a cost limit or budget in USD must be.
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

    /// The agent the queue matches workers against: [`COMMAND_AGENT`] for command tasks.
    pub fn required_agent(&self) -> Option<&str> {
        match self.kind {
            TaskKind::Command => Some("command"),
            TaskKind::Agent => self.agent.as_deref(),
        }
    }

    /// Check every field; returns all problems, not just the first.
    pub fn validate(&self, limits: &SpecLimits) -> Result<(), Vec<ValidationError>> {
        let mut errs = Vec::new();
        match (&self.repo, &self.project) {
            (None, None) => errs.push(ValidationError::new("repo", "is required (or give a project)")),
            (Some(r), _) => {
                if let Err(e) = RepoUrl::parse(r, limits.allow_local_repos) {
                    errs.push(e);
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(p) = &self.project
            && (p.is_empty() || p.len() > 100)
        {
            errs.push(ValidationError::new("project", "must be 1-100 characters"));
        }
        if let Some(b) = &self.branch
            && let Err(e) = BranchName::parse(b)
        {
            errs.push(e);
        }
        if let Some(b) = &self.base_ref
            && (b.is_empty()
                || b.starts_with('-')
                || b.len() > 255
                || b.chars().any(|c| c.is_control() || is_invisible(c) || c == ' '))
        {
            errs.push(ValidationError::new("base_ref", "is not a valid git ref"));
        }
        match self.kind {
            TaskKind::Agent => {
                if self.prompt.as_deref().is_none_or(|p| p.trim().is_empty()) {
                    errs.push(ValidationError::new("prompt", "is required for an agent task"));
                }
                if self.command.is_some() {
                    errs.push(ValidationError::new(
                        "command",
                        "is only allowed on a command task",
                    ));
                }
                if let Some(a) = &self.agent
                    && (a.is_empty()
                        || a.len() > 64
                        || !a
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
                {
                    errs.push(ValidationError::new(
                        "agent",
                        "must be an agent name like claude-code",
                    ));
                }
                // A shell command runs one way: as a command task, whose process group the
                // worker tracks so that a crash leaves nothing running.
                if self.agent.as_deref() == Some(COMMAND_AGENT) {
                    errs.push(ValidationError::new(
                        "agent",
                        "command is not an agent: submit a command task (kind: command)",
                    ));
                }
            }
            TaskKind::Command => {
                if self.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    errs.push(ValidationError::new("command", "is required for a command task"));
                }
                if self.prompt.is_some() {
                    errs.push(ValidationError::new("prompt", "is only allowed on an agent task"));
                }
                if self.agent.as_deref().is_some_and(|a| a != "command") {
                    errs.push(ValidationError::new("agent", "a command task runs no agent"));
                }
            }
        }
        if let Some(p) = &self.prompt
            && p.len() > 1_000_000
        {
            errs.push(ValidationError::new("prompt", "is longer than 1 MB"));
        }
        // A NUL cannot reach a shell or a commit message intact (nor a PostgreSQL text
        // column): refuse it at submit rather than fail at run time.
        for (field, value) in [
            ("command", &self.command),
            ("setup_command", &self.setup_command),
            ("commit_message", &self.commit_message),
            ("prompt", &self.prompt),
            ("model", &self.model),
            ("idempotency_key", &self.idempotency_key),
        ] {
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                errs.push(ValidationError::new(field, "must not contain NUL characters"));
            }
        }
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&self.priority) {
            errs.push(ValidationError::new(
                "priority",
                format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY}"),
            ));
        }
        if let Some(t) = self.timeout_secs
            && (t == 0 || t > limits.max_timeout_secs)
        {
            errs.push(ValidationError::new(
                "timeout_secs",
                format!("must be between 1 and {} seconds", limits.max_timeout_secs),
            ));
        }
        if let Some(m) = self.max_attempts
            && !(1..=100).contains(&m)
        {
            errs.push(ValidationError::new("max_attempts", "must be between 1 and 100"));
        }
        if let Some(m) = self.max_turns
            && !(1..=10_000).contains(&m)
        {
            errs.push(ValidationError::new("max_turns", "must be between 1 and 10000"));
        }
        if let Some(c) = self.max_cost_usd
            && !valid_usd(c)
        {
            errs.push(ValidationError::new("max_cost_usd", USD_RULE));
        }
        if self.labels.len() > MAX_LABELS {
            errs.push(ValidationError::new(
                "labels",
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        for (k, v) in self.labels.iter().take(MAX_LABELS + 1) {
            if !valid_label_part(k, 63) || !valid_label_part(v, 255) && !v.is_empty() {
                errs.push(ValidationError::new(
                    format!("labels.{k}"),
                    "keys and values use [A-Za-z0-9._/-], keys up to 63 and values up to 255 characters",
                ));
            }
        }
        if self.depends_on.len() > 100 {
            errs.push(ValidationError::new("depends_on", "at most 100 dependencies"));
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > 255)
        {
            errs.push(ValidationError::new(
                "idempotency_key",
                "must be 1-255 characters",
            ));
        }
        if self.credentials.len() > MAX_CREDENTIALS {
            errs.push(ValidationError::new(
                "credentials",
                format!("at most {MAX_CREDENTIALS} credentials"),
            ));
        }
        for c in self.credentials.iter().take(MAX_CREDENTIALS + 1) {
            if !valid_label_part(c, 100) {
                errs.push(ValidationError::new(
                    "credentials",
                    format!("{c:?} is not a credential name"),
                ));
            }
        }
        errs.extend(check::validate_checks(
            self.checks.as_deref().unwrap_or_default(),
            "checks",
            limits.max_timeout_secs,
        ));
        errs.extend(check::validate_max_rounds(self.max_rounds, "max_rounds"));
        if self.kind == TaskKind::Command && self.max_rounds.is_some_and(|m| m > 1) {
            errs.push(ValidationError::new(
                "max_rounds",
                "a command task cannot take feedback: its checks run once",
            ));
        }
        if let Some(p) = &self.profile
            && !crate::profile::valid_name(p)
        {
            errs.push(ValidationError::new(
                "profile",
                format!("{p:?} is not a profile name"),
            ));
        }
        if let Some(settings) = &self.profile_settings
            && let Err(e) = settings.validate()
        {
            errs.extend(
                e.into_iter()
                    .map(|e| ValidationError::new(format!("profile_settings.{}", e.field), e.message)),
            );
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
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

/// Characters that change how text is displayed without being visible: bidirectional
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C), zero-width
/// characters and the byte-order mark. In a URL or branch name they make what a reviewer reads
/// differ from what git uses.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// The most labels a task (or worker) may carry.
pub const MAX_LABELS: usize = 64;
/// The most credentials a task may name.
pub const MAX_CREDENTIALS: usize = 64;

fn valid_label_part(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

/// Parse `k=v` (as given on a command line) into a label pair.
pub fn parse_label(s: &str) -> Result<(String, String), ValidationError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| ValidationError::new("labels", format!("{s:?} is not key=value")))?;
    if !valid_label_part(k, 63) || !(v.is_empty() || valid_label_part(v, 255)) {
        return Err(ValidationError::new(
            "labels",
            format!("{s:?}: keys and values use [A-Za-z0-9._/-]"),
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_agent_task_cannot_name_command_as_its_agent() {
        let mut spec = TaskSpec::command("https://h/a", "true");
        assert!(spec.validate(&SpecLimits::default()).is_ok());
        spec.kind = TaskKind::Agent;
        spec.command = None;
        spec.prompt = Some("do it".into());
        spec.agent = Some(COMMAND_AGENT.into());
        let errs = spec.validate(&SpecLimits::default()).unwrap_err();
        assert!(errs.iter().any(|e| e.field == "agent"), "{errs:?}");
    }

    #[test]
    fn repo_urls() {
        assert!(RepoUrl::parse("https://github.com/a/b.git", false).is_ok());
        assert!(RepoUrl::parse("ssh://git@host:22/a/b", false).is_ok());
        assert!(RepoUrl::parse("git@github.com:a/b.git", false).is_ok());
        assert!(RepoUrl::parse("ext::sh -c touch% /tmp/pwned", true).is_err());
        assert!(RepoUrl::parse("ext::sh", true).is_err());
        assert!(RepoUrl::parse("--upload-pack=touch /tmp/x", true).is_err());
        assert!(RepoUrl::parse("-u", true).is_err());
        assert!(RepoUrl::parse("file:///tmp/repo", false).is_err());
        assert!(RepoUrl::parse("/tmp/repo", false).is_err());
        assert!(RepoUrl::parse("file:///tmp/repo", true).is_ok());
        assert!(RepoUrl::parse("/tmp/repo", true).is_ok());
        assert!(RepoUrl::parse("https://user:secret@github.com/a/b", false).is_err());
        assert!(RepoUrl::parse("ftp://host/x", true).is_err());
        assert!(RepoUrl::parse("https://", false).is_err());
        assert!(RepoUrl::parse("https://h/a\nb", false).is_err());
        assert!(RepoUrl::parse("", false).is_err());
        assert_eq!(
            RepoUrl::parse("https://h/a.git/", false).unwrap().lock_key(),
            "https://h/a"
        );
    }

    #[test]
    fn branch_names_follow_git_rules() {
        for ok in ["main", "agentpool/0190", "feature/x-1", "v1.2"] {
            assert!(BranchName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "/a",
            "a/",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a@{1}",
            "@",
            "HEAD",
            "a\u{7f}",
        ] {
            assert!(BranchName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn validation_reports_every_field() {
        let spec = TaskSpec {
            kind: TaskKind::Agent,
            repo: Some("ext::sh".into()),
            priority: 5000,
            timeout_secs: Some(0),
            ..TaskSpec::default()
        };
        let errs = spec.validate(&SpecLimits::default()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["repo", "prompt", "priority", "timeout_secs"]);
    }

    #[test]
    fn ssh_options_smuggled_as_host_or_user_are_refused() {
        for url in [
            "ssh://-oProxyCommand=touch%20/tmp/x/r",
            "ssh://git@-oProxyCommand=touch%20/tmp/x/r",
            "ssh://-git@host/r",
            "git@-oProxyCommand=x:r",
            "https://-host/r",
            "ssh://git@/r",
        ] {
            assert!(RepoUrl::parse(url, false).is_err(), "{url}");
        }
        assert!(RepoUrl::parse("ssh://git@example.com/o/r.git", false).is_ok());
        assert!(RepoUrl::parse("git@example.com:o/r.git", false).is_ok());
    }

    #[test]
    fn bidi_and_zero_width_characters_are_refused_in_urls_and_branches() {
        for c in ['\u{202E}', '\u{2066}', '\u{200B}', '\u{FEFF}', '\u{200F}'] {
            assert!(RepoUrl::parse(&format!("https://example.com/o/r{c}.git"), false).is_err());
            assert!(BranchName::parse(&format!("feature{c}x")).is_err());
            let spec = TaskSpec {
                base_ref: Some(format!("main{c}")),
                ..TaskSpec::command("https://example.com/o/r.git", "true")
            };
            assert!(spec.validate(&SpecLimits::default()).is_err());
        }
        assert!(BranchName::parse("fonctionnalité/été").is_ok());
    }

    #[test]
    fn a_full_ref_is_not_a_branch_name() {
        let err = BranchName::parse("refs/heads/x").unwrap_err();
        assert!(err.message.contains("without refs/"), "{err}");
        assert!(BranchName::parse("refs").is_ok());
    }

    #[test]
    fn nul_characters_and_too_many_labels_are_refused_at_submit() {
        let mut spec = TaskSpec::command("https://example.com/o/r.git", "echo a\0b");
        spec.setup_command = Some("\0".into());
        spec.commit_message = Some("x\0".into());
        let errs = spec.validate(&SpecLimits::default()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["command", "setup_command", "commit_message"]);

        let mut spec = TaskSpec::command("https://example.com/o/r.git", "true");
        spec.labels = (0..10_000).map(|i| (format!("k{i}"), "v".to_string())).collect();
        let errs = spec.validate(&SpecLimits::default()).unwrap_err();
        assert!(errs.iter().any(|e| e.field == "labels"), "{errs:?}");
        assert!(errs.len() < 100, "the error list stays short: {}", errs.len());
        spec.labels = (0..MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(spec.validate(&SpecLimits::default()).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<TaskSpec, _> =
            serde_json::from_str(r#"{"repo":"https://h/r","prompt":"x","promtp":"y"}"#);
        assert!(r.is_err());
        let s: TaskSpec = serde_json::from_str(r#"{"repo":"https://h/r","prompt":"x"}"#).unwrap();
        assert!(s.commit && s.push);
        assert!(s.validate(&SpecLimits::default()).is_ok());
    }

    #[test]
    fn labels_parse() {
        assert_eq!(parse_label("gpu=yes").unwrap(), ("gpu".into(), "yes".into()));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("a b=c").is_err());
    }

    proptest! {
        #[test]
        fn repo_parse_never_panics_and_refuses_options(s in ".{0,80}") {
            if let Ok(u) = RepoUrl::parse(&s, true) {
                prop_assert!(!u.as_str().starts_with('-'));
                prop_assert!(!u.as_str().contains("::"));
            }
        }

        #[test]
        fn accepted_branches_have_no_forbidden_sequences(s in "[a-z./~^:@{ -]{0,20}") {
            if let Ok(b) = BranchName::parse(&s) {
                let b = b.as_str();
                let ok = !b.contains("..") && !b.contains("@{") && !b.starts_with('-');
                prop_assert!(ok, "accepted {:?}", b);
                prop_assert!(!b.ends_with('/') && !b.ends_with('.') && !b.contains(' '));
            }
        }
    }
}
