//! Exit codes and how errors map onto them, so scripts can tell a failed task from a canceled
//! one, a usage mistake, and a server that could not be reached.

use std::fmt;

use agentpool_client::Error as ApiError;
use reqwest::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    Failed = 1,
    Usage = 2,
    Canceled = 3,
    Connection = 4,
    /// A follower (`run` on a server, `submit --wait`, `tasks logs -f`) was interrupted
    /// (Ctrl-C, SIGTERM): it stopped following, the task goes on. 128 + SIGINT, as a shell
    /// reports a command that Ctrl-C ended.
    Interrupted = 130,
    /// `run-task` only: the server refused the pod's token (its launcher reads this exit code
    /// as the Job's set-up failing, not the attempt).
    TokenRefused = agentpool_kube::job::EXIT_TOKEN_REFUSED as isize,
}

/// An error that carries the exit code it should produce.
#[derive(Debug)]
pub struct Exit {
    pub code: ExitCode,
    pub message: String,
}

impl Exit {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error that reached `main`.
pub fn code_of(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Exit>() {
            return e.code;
        }
        if let Some(e) = cause.downcast_ref::<ApiError>() {
            return api_exit_code(e);
        }
    }
    ExitCode::Failed
}

/// The exit code for a failed call: a usage mistake (a refused request or bad URL), a task
/// operation that failed (not found, conflict), or a server that could not be reached.
fn api_exit_code(e: &ApiError) -> ExitCode {
    match e {
        ApiError::Config(_) => ExitCode::Usage,
        ApiError::NotFound(_) | ApiError::StaleLease(_) => ExitCode::Failed,
        ApiError::Rejected { status, .. } => match status {
            400 | 413 | 422 => ExitCode::Usage,
            409 => ExitCode::Failed,
            _ => ExitCode::Connection,
        },
        ApiError::Unavailable { .. } | ApiError::Decode(_) => ExitCode::Connection,
    }
}

/// What to add to the server's message, if anything.
fn api_hint(e: &ApiError) -> Option<&'static str> {
    match e.status() {
        Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Some("check --token / AGENTPOOL_TOKEN"),
        _ => None,
    }
}

/// The one line printed on stderr: the whole chain of causes, without repeating a cause that
/// the outer message already contains.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let mut s = cause.to_string();
        if let Some(h) = cause.downcast_ref::<ApiError>().and_then(api_hint) {
            s = format!("{s} ({h})");
        }
        if s.is_empty() || line.contains(&s) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&s);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn error_chains_become_one_line_without_repetition() {
        let e = anyhow::anyhow!("connection refused\nsecond line").context("cannot reach http://x");
        assert_eq!(
            one_line(&e),
            "cannot reach http://x: connection refused second line"
        );
        let e: anyhow::Error = Err::<(), _>(Exit::new(ExitCode::Canceled, "canceled"))
            .context("task t")
            .unwrap_err();
        assert_eq!(code_of(&e), ExitCode::Canceled);
    }
}
