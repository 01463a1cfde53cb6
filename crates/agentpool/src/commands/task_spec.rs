//! The task flags of `submit` and `run`: the spec they make, and a refusal of that spec told
//! in the flags' names (`--timeout`, not the API's `timeout_secs`).

use std::path::Path;

use agentpool_core::{TaskKind, TaskSpec};
use anyhow::Context;

use crate::cli::TaskArgs;
use crate::exit::{Exit, ExitCode};

/// Turn the flags into a spec. A local repository path is made absolute, because the server
/// (and its workers) do not share our working directory.
pub fn spec_from(args: &TaskArgs) -> anyhow::Result<TaskSpec> {
    let prompt = args.prompt.clone().or(args.positional_prompt.clone());
    let kind = if args.command.is_some() {
        TaskKind::Command
    } else {
        TaskKind::Agent
    };
    if kind == TaskKind::Agent && prompt.is_none() {
        return Err(Exit::new(
            ExitCode::Usage,
            "give a prompt (as an argument or --prompt) or a --command to run",
        )
        .into());
    }
    let repo = match (&args.repo, &args.project) {
        (Some(r), _) => Some(local_repo_absolute(r)?),
        (None, Some(_)) => None,
        // The server takes the earlier task's repository (and work branch).
        (None, None) if args.follow_up.is_some() => None,
        (None, None) if Path::new(".git").exists() => Some(local_repo_absolute(".")?),
        (None, None) => {
            return Err(Exit::new(
                ExitCode::Usage,
                "give --repo (or --project): the current directory is not a git repository",
            )
            .into());
        }
    };
    // A local repository's task starts from the branch checked out there, said in the spec:
    // a worker's mirror of it keeps the branch it first saw, so "its current branch" must not
    // be left for the worker to find.
    let base_ref = args.base.clone().or_else(|| {
        let path = repo.as_deref()?;
        let path = path.strip_prefix("file://").unwrap_or(path);
        path.starts_with('/').then(|| current_branch(path)).flatten()
    });
    let run_after = args
        .delay
        .map(|d| {
            i64::try_from(d)
                .ok()
                .and_then(chrono::TimeDelta::try_seconds)
                .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                .ok_or_else(|| Exit::new(ExitCode::Usage, "--delay: too far in the future"))
        })
        .transpose()?;
    Ok(TaskSpec {
        kind,
        repo,
        project: args.project.clone(),
        base_ref,
        branch: args.branch.clone(),
        prompt: if kind == TaskKind::Agent { prompt } else { None },
        command: args.command.clone(),
        agent: args.agent.clone(),
        model: args.model.clone(),
        priority: args.priority,
        timeout_secs: args.timeout,
        max_attempts: args.max_attempts,
        labels: args.labels.iter().cloned().collect(),
        depends_on: args.depends_on.clone(),
        idempotency_key: args.idempotency_key.clone(),
        push: !args.no_push && !args.no_commit,
        commit_message: args.message.clone(),
        credentials: args.credentials.clone(),
        profile: args.profile.clone(),
        profile_settings: None,
        follow_up_of: args.follow_up,
        max_turns: args.max_turns,
        max_cost_usd: args.max_cost_usd,
        setup_command: args.setup.clone(),
        run_after,
        commit: !args.no_commit,
        // No --check: the project's checks, if any.
        checks: (!args.checks.is_empty()).then(|| {
            args.checks
                .iter()
                .map(agentpool_core::CheckSpec::command)
                .collect()
        }),
        max_rounds: args.max_rounds,
        push_on_checks_failed: args.push_on_checks_failed,
    })
}

/// The branch checked out in the local repository at `path`; `None` when HEAD is detached or
/// git cannot say (the task then starts from the repository's HEAD, as a worker sees it).
fn current_branch(path: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["-C", path, "symbolic-ref", "--quiet", "--short", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let branch = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!branch.is_empty()).then_some(branch)
}

/// Warn on stderr when the task's repository is a local work tree with uncommitted changes:
/// the task's workspace is cloned from its commits, so an agent told to fix what is being
/// edited would otherwise work on the last commit without a word. Quiet when git cannot say.
pub fn note_uncommitted(spec: &TaskSpec) {
    let Some(repo) = spec.repo.as_deref() else {
        return;
    };
    let path = repo.strip_prefix("file://").unwrap_or(repo);
    if !path.starts_with('/') {
        return;
    }
    let out = std::process::Command::new("git")
        .args(["-C", path, "status", "--porcelain=v1", "--untracked-files=normal"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let Some(status) = out.ok().filter(|o| o.status.success()) else {
        return;
    };
    let text = String::from_utf8_lossy(&status.stdout);
    // `XY path`: the path starts at the fourth character.
    let changed: Vec<&str> = text.lines().filter_map(|l| l.get(3..)).collect();
    if changed.is_empty() {
        return;
    }
    let mut named = changed.iter().take(3).copied().collect::<Vec<_>>().join(", ");
    if changed.len() > 3 {
        named.push_str(", …");
    }
    eprintln!(
        "{}",
        crate::output::Style::stderr().yellow(&format!(
            "note: {path} has uncommitted changes ({}: {named}), which the task does not see: \
             it starts from the last commit. Commit them first to include them.",
            agentpool_core::render::count(changed.len(), "file", "files")
        ))
    );
}

/// `.` or `../repo` → `/abs/path/repo`; URLs, scp-like addresses and absolute paths unchanged.
fn local_repo_absolute(repo: &str) -> anyhow::Result<String> {
    let looks_remote = repo.contains("://")
        || repo
            .split_once(':')
            .is_some_and(|(host, _)| !host.contains('/') && !host.is_empty());
    if looks_remote || repo.starts_with('/') {
        return Ok(repo.to_string());
    }
    let p = Path::new(repo);
    if !p.exists() {
        return Err(Exit::new(
            ExitCode::Usage,
            format!("repository {repo:?} is neither a URL nor an existing directory"),
        )
        .into());
    }
    let abs = std::fs::canonicalize(p).with_context(|| format!("cannot resolve {repo}"))?;
    Ok(abs.display().to_string())
}

/// Which flag sets which field of a request: `(field, flag)`.
pub type Flags = &'static [(&'static str, &'static str)];

/// The flags of `submit` and `run`, by the spec field each sets.
const TASK_FLAGS: Flags = &[
    ("repo", "--repo"),
    ("project", "--project"),
    ("base_ref", "--base"),
    ("branch", "--branch"),
    ("prompt", "--prompt"),
    ("command", "--command"),
    ("agent", "--agent"),
    ("model", "--model"),
    ("priority", "--priority"),
    ("timeout_secs", "--timeout"),
    ("max_attempts", "--max-attempts"),
    ("labels", "--label"),
    ("depends_on", "--depends-on"),
    ("idempotency_key", "--idempotency-key"),
    ("commit_message", "--message"),
    ("credentials", "--credential"),
    ("profile", "--profile"),
    ("follow_up_of", "--follow-up"),
    ("max_turns", "--max-turns"),
    ("max_cost_usd", "--max-cost-usd"),
    ("setup_command", "--setup"),
    ("run_after", "--delay"),
    ("checks", "--check"),
    ("max_rounds", "--max-rounds"),
];

/// The flags of `schedules put` for the schedule's own fields; its task's are [`TASK_FLAGS`].
const SCHEDULE_FLAGS: Flags = &[
    ("name", "NAME"),
    ("cron", "--cron"),
    ("time_zone", "--time-zone"),
    ("overlap", "--overlap"),
];

/// A schedule the server refused, in the words of `schedules put`: its own flags (`--cron`)
/// and, for its task's fields (`task.timeout_secs`), the task flags (`--timeout`).
pub fn refused_schedule(e: agentpool_client::Error) -> anyhow::Error {
    let flag = |field: &str| match field.strip_prefix("task.") {
        Some(task_field) => flag_of(TASK_FLAGS, task_field),
        None => flag_of(SCHEDULE_FLAGS, field),
    };
    refused_as(e, "schedule", flag)
}

/// The flag in `flags` that sets `field` (a path such as `labels.team` or `depends_on[0]`).
fn flag_of(flags: Flags, field: &str) -> Option<&'static str> {
    let top = field.split(['.', '[']).next().unwrap_or(field);
    let of = |name: &str| flags.iter().find(|(f, _)| *f == name).map(|(_, flag)| *flag);
    // A nested field with a flag of its own (`forgejo.url`), else the flag of its top field
    // (`checks[1].command` is `--check`).
    of(field).or_else(|| of(top))
}

/// A submit the server refused, in the words of the submit's flags ([`refused_by_flag`]).
pub fn refused(e: agentpool_client::Error) -> anyhow::Error {
    refused_by_flag(e, "submit", TASK_FLAGS)
}

/// A request (`what`: "submit") the server refused: when it refused fields that `flags` set,
/// say so by flag, one `--flag: why` per field, as a usage error; anything else as the server
/// said it.
pub fn refused_by_flag(e: agentpool_client::Error, what: &str, flags: Flags) -> anyhow::Error {
    refused_as(e, what, |field| flag_of(flags, field))
}

/// [`refused_by_flag`], with `flag` telling which flag sets a field.
fn refused_as(
    e: agentpool_client::Error,
    what: &str,
    flag: impl Fn(&str) -> Option<&'static str>,
) -> anyhow::Error {
    if let agentpool_client::Error::Rejected { fields, .. } = &e
        && !fields.is_empty()
        && let Some(said) = fields
            .iter()
            .map(|f| flag(&f.field).map(|flag| format!("{flag}: {}", f.message)))
            .collect::<Option<Vec<_>>>()
    {
        return Exit::new(ExitCode::Usage, format!("{what} refused: {}", said.join("; "))).into();
    }
    anyhow::Error::from(e).context(format!("{what} refused"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TaskArgs {
        TaskArgs {
            repo: Some("https://example.com/r.git".into()),
            project: None,
            base: None,
            branch: None,
            prompt: None,
            command: None,
            positional_prompt: None,
            agent: None,
            model: None,
            priority: 0,
            depends_on: vec![],
            labels: vec![],
            timeout: None,
            max_attempts: None,
            message: None,
            no_push: false,
            idempotency_key: None,
            credentials: vec![],
            profile: None,
            follow_up: None,
            max_turns: None,
            max_cost_usd: None,
            setup: None,
            delay: None,
            no_commit: false,
            checks: vec![],
            max_rounds: None,
            push_on_checks_failed: false,
        }
    }

    #[test]
    fn a_command_makes_a_command_task() {
        let mut a = args();
        a.command = Some("make test".into());
        let s = spec_from(&a).unwrap();
        assert_eq!(s.kind, TaskKind::Command);
        assert_eq!(s.command.as_deref(), Some("make test"));
        assert!(s.prompt.is_none());
    }

    #[test]
    fn a_task_without_prompt_or_command_is_a_usage_error() {
        let err = spec_from(&args()).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), ExitCode::Usage);
    }

    #[test]
    fn a_refused_field_is_named_by_its_flag() {
        let rejected = |fields: Vec<agentpool_core::ValidationError>| agentpool_client::Error::Rejected {
            status: 422,
            code: "validation_failed".into(),
            message: "2 invalid fields".into(),
            fields,
        };
        let e = refused(rejected(vec![
            agentpool_core::ValidationError::new("timeout_secs", "must be between 1 and 86400 seconds"),
            agentpool_core::ValidationError::new("labels.team", "is too long"),
        ]));
        assert_eq!(crate::exit::code_of(&e), ExitCode::Usage);
        assert_eq!(
            crate::exit::one_line(&e),
            "submit refused: --timeout: must be between 1 and 86400 seconds; --label: is too long"
        );
        // A field no flag sets (a project's default, say): the server's words.
        let e = refused(rejected(vec![agentpool_core::ValidationError::new(
            "profile_settings.env",
            "is refused",
        )]));
        assert!(crate::exit::one_line(&e).starts_with("submit refused: 2 invalid fields"));
    }

    #[test]
    fn relative_local_repos_become_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args();
        a.positional_prompt = Some("hi".into());
        a.repo = Some(dir.path().display().to_string());
        assert_eq!(spec_from(&a).unwrap().repo, a.repo);
        assert_eq!(local_repo_absolute("git@host:a/b").unwrap(), "git@host:a/b");
        assert!(local_repo_absolute("does/not/exist").is_err());
        let abs = local_repo_absolute(".").unwrap();
        assert!(abs.starts_with('/'));
    }
}
