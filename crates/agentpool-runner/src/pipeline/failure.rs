//! How a step's failure becomes the task's error class: git errors, and a command's or agent's
//! process outcome (timeout, cancel, output limit, exit code, signal).

use std::time::Duration;

use agentpool_core::ErrorClass;

use crate::git::GitError;
use crate::process::{KillReason, ProcessOutcome};
use crate::workspace::FinishFault;

pub(super) struct Failed {
    pub(super) class: ErrorClass,
    pub(super) message: String,
    pub(super) retry_after: Option<Duration>,
    /// The worker's own fault, whatever the class says (see [`crate::Report`]).
    pub(super) worker_fault: bool,
}

pub(super) fn failed(class: ErrorClass, message: impl Into<String>) -> Failed {
    Failed {
        class,
        message: message.into(),
        retry_after: None,
        worker_fault: false,
    }
}

/// The message of a task that ran out of time, with the timeout it had, so that "hit during
/// the command" can be weighed against what the task was given: "… (timeout 1h30m)".
pub(super) fn with_timeout(message: &str, secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut spoken = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            spoken.push_str(&format!("{n}{unit}"));
        }
    }
    if spoken.is_empty() {
        spoken.push_str("0s");
    }
    format!("{message} (timeout {spoken})")
}

pub(super) fn git_failure(e: GitError) -> Failed {
    match e {
        GitError::Auth { .. } => failed(ErrorClass::GitAuthFailed, e.to_string()),
        // The task names a repository that is not there: no later attempt will find it.
        GitError::NotFound { .. } => failed(ErrorClass::InvalidTask, e.to_string()),
        GitError::Canceled { .. } => failed(ErrorClass::Canceled, e.to_string()),
        GitError::Io(ref io) if agentpool_agents::is_spawn_failure(io) => {
            failed(ErrorClass::WorkerError, e.to_string())
        }
        other => failed(ErrorClass::GitError, other.to_string()),
    }
}

/// A failure of the steps after the run: git's, or the run's own when it left the repository
/// so that nothing can be committed from it (its `.git` removed, a merge half done) — that
/// is the command's or agent's fault like a non-zero exit, not the worker's: no given-back
/// attempt, no strike against the worker's health.
pub(super) fn finish_failure(e: FinishFault) -> Failed {
    match e {
        FinishFault::Git(g) => git_failure(g),
        FinishFault::Run(message) => failed(ErrorClass::AgentError, message),
    }
}

/// How much of the process's last stderr line a failure message quotes.
const QUOTED_BYTES: usize = 300;

/// `out` as a failure of the `what` (command, setup command); `said`, the last line it wrote to
/// stderr, is quoted when it ended by itself with an error; `max_output`, the output limit it
/// ran under, is named when it was stopped at it.
pub(super) fn process_failure(
    out: &ProcessOutcome,
    what: &str,
    said: Option<&str>,
    max_output: u64,
) -> Failed {
    let quote = said.map_or(String::new(), |l| {
        format!(": {}", agentpool_agents::events::truncate(l, QUOTED_BYTES))
    });
    match out.killed {
        Some(KillReason::Timeout) => failed(
            ErrorClass::Timeout,
            format!("the task's timeout was hit during the {what}"),
        ),
        Some(KillReason::Canceled) => failed(ErrorClass::Canceled, "canceled"),
        Some(KillReason::OutputLimit) => failed(
            ErrorClass::AgentError,
            format!(
                "the {what}'s output passed its limit of {}; it was stopped",
                crate::log_limit::size(max_output)
            ),
        ),
        None => match (out.exit_code, out.signal) {
            (Some(code), _) => failed(
                ErrorClass::AgentError,
                format!("the {what} exited with code {code}{quote}"),
            ),
            (None, Some(sig)) => failed(
                ErrorClass::AgentError,
                format!("the {what} was killed by signal {sig}{quote}"),
            ),
            _ => failed(ErrorClass::AgentError, format!("the {what} failed")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_stopped_at_its_output_limit_is_told_the_limit() {
        let out = ProcessOutcome {
            exit_code: None,
            signal: Some(9),
            killed: Some(KillReason::OutputLimit),
            pgid: 1,
            output_bytes: 80_000_000,
            duration: std::time::Duration::from_secs(1),
        };
        let f = process_failure(&out, "command", None, 64 * 1024 * 1024);
        assert_eq!(f.class, ErrorClass::AgentError);
        assert_eq!(
            f.message,
            "the command's output passed its limit of 64 MiB; it was stopped"
        );
    }

    #[test]
    fn a_timeout_is_said_in_the_units_it_was_given_in() {
        let said = |secs| with_timeout("the task's timeout was hit", secs);
        assert_eq!(said(2), "the task's timeout was hit (timeout 2s)");
        assert_eq!(said(600), "the task's timeout was hit (timeout 10m)");
        assert_eq!(said(5400), "the task's timeout was hit (timeout 1h30m)");
        assert_eq!(said(3661), "the task's timeout was hit (timeout 1h1m1s)");
    }
}
