//! Validation of a submitted task spec: every field checked, every problem reported, and the
//! label rules shared with workers.

use super::*;

impl TaskSpec {
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
                    && !super::valid_agent_name(a)
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
        if let Some(m) = &self.model
            && !m.contains('\0')
            && !crate::profile::valid_model(m)
        {
            errs.push(ValidationError::new("model", crate::profile::MODEL_RULE));
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
        errs.extend(validate_labels(&self.labels));
        if self.depends_on.len() > MAX_DEPENDENCIES {
            errs.push(ValidationError::new(
                "depends_on",
                format!("at most {MAX_DEPENDENCIES} dependencies"),
            ));
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
}

impl TaskSpec {
    /// The refusal of an idempotency key of the form agentpool gives the tasks it submits
    /// itself: `schedule:…` (a schedule's run, [`crate::schedule::key_prefix`]) and
    /// `PROJECT/github:…` (a GitHub event). A caller naming one could take the run's or the
    /// event's task over: the key would find the caller's task, and the schedule or the webhook
    /// would take it for its own and submit nothing. `None` for any other key, or none.
    /// Not part of [`TaskSpec::validate`]: the scheduler and the webhook route submit these
    /// keys through the same checks as everyone else; the API's submit routes call this.
    pub fn reserved_key_problem(&self) -> Option<ValidationError> {
        let key = self.idempotency_key.as_deref()?;
        let (prefix, whose) = reserved_key_prefix(key)?;
        Some(ValidationError::new(
            "idempotency_key",
            format!("the prefix {prefix:?} is agentpool's own (the keys of {whose}); choose another key"),
        ))
    }
}

/// The prefix agentpool keeps for itself that `key` starts with, and whose keys have it.
fn reserved_key_prefix(key: &str) -> Option<(&str, &'static str)> {
    const SCHEDULE: &str = "schedule:";
    const GITHUB: &str = "github:";
    if key.starts_with(SCHEDULE) {
        return Some((SCHEDULE, "the tasks schedules submit"));
    }
    // `PROJECT/github:…`: a project's name holds no `/`, so the first one ends it.
    let (project, rest) = key.split_once('/')?;
    (crate::project::valid_name(project) && rest.starts_with(GITHUB)).then(|| {
        (
            &key[..project.len() + 1 + GITHUB.len()],
            "the tasks GitHub events start",
        )
    })
}

/// The most labels a task (or worker) may carry.
pub const MAX_LABELS: usize = 64;

/// What is wrong with `labels` (a task's, or a filter of them), each problem named by its
/// field (`labels`, `labels.KEY`).
pub fn validate_labels(labels: &Labels) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    if labels.len() > MAX_LABELS {
        errs.push(ValidationError::new(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    errs.extend(
        labels
            .iter()
            .take(MAX_LABELS + 1)
            .filter_map(|(k, v)| label_problem(k, v)),
    );
    errs
}

/// What is wrong with label `k=v`, if anything (a task's, a worker's or a selector's).
pub fn label_problem(k: &str, v: &str) -> Option<ValidationError> {
    (!valid_label_part(k, 63) || !valid_label_part(v, 255) && !v.is_empty()).then(|| {
        ValidationError::new(
            format!("labels.{k}"),
            "keys and values use [A-Za-z0-9._/-], keys up to 63 and values up to 255 characters",
        )
    })
}
/// The most tasks a task may depend on.
pub const MAX_DEPENDENCIES: usize = 100;
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
