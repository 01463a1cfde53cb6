//! Error classes (docs/guarantees.md): what went wrong with an attempt, and whether trying again can help.

use serde::{Deserialize, Serialize};

/// Why an attempt failed. The class decides whether the task is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorClass {
    /// HTTP 429, "rate limit", "quota exceeded", overloaded. Retried with backoff, honouring a
    /// retry-after hint when the agent gives one.
    RateLimited,
    /// HTTP 401/403, invalid API key. Never retried: the same key fails the same way.
    AuthFailed,
    /// The task's timeout was hit. Retried.
    Timeout,
    /// The agent exited non-zero or reported an error result. Retried.
    AgentError,
    /// Clone, fetch or push failed for a reason other than authentication. Retried.
    GitError,
    /// Git refused our credentials. Not retried.
    GitAuthFailed,
    /// The spec cannot run (unknown agent, bad ref). Not retried.
    InvalidTask,
    /// A user canceled the task. Not retried.
    Canceled,
    /// The worker lost its lease (died, lost its node, or was partitioned) and the attempt was
    /// rescued. Not the task's fault: re-queued without using an attempt, within the bound
    /// [`crate::task::MAX_WORKER_RELEASES`] it shares with `WorkerError` and `InfraError`.
    LeaseExpired,
    /// A dependency failed or was canceled, so this task cannot run.
    DependencyFailed,
    /// The infrastructure running the attempt failed it (worker stopped past its drain grace,
    /// pod evicted or deleted, node lost, quota refused the Job). Not the task's fault: it is
    /// handed back without using an attempt, like [`Self::WorkerError`] and within the same
    /// bound; after that retried like any other failure.
    InfraError,
    /// The infrastructure cannot run the attempt as configured (image cannot be pulled,
    /// container config refused, admission refused, memory limit hit). Not retried.
    InfraConfigError,
    /// The task's checks still failed after its last feedback round. Not retried: another
    /// attempt would most likely end the same way (docs/checks.md).
    ChecksFailed,
    /// The worker could not start git or the agent (binary missing or not executable): the
    /// worker's fault, not the task's. The task is released to another worker without using
    /// an attempt, up to [`crate::task::MAX_WORKER_RELEASES`] times; after that it is retried
    /// like any other failure.
    WorkerError,
    /// The agent's reported cost passed the task's `max_cost_usd`; it was stopped. Not retried.
    BudgetExceeded,
    /// The agent used every turn the task's `max_turns` allows and stopped short of an answer.
    /// Not retried: a fresh attempt under the same limit would most likely stop the same way,
    /// at the same cost.
    MaxTurns,
}

crate::enum_names!(ErrorClass, UnknownErrorClass("error class") {
    RateLimited => "RATE_LIMITED",
    AuthFailed => "AUTH_FAILED",
    Timeout => "TIMEOUT",
    AgentError => "AGENT_ERROR",
    GitError => "GIT_ERROR",
    GitAuthFailed => "GIT_AUTH_FAILED",
    InvalidTask => "INVALID_TASK",
    Canceled => "CANCELED",
    LeaseExpired => "LEASE_EXPIRED",
    DependencyFailed => "DEPENDENCY_FAILED",
    InfraError => "INFRA_ERROR",
    InfraConfigError => "INFRA_CONFIG_ERROR",
    ChecksFailed => "CHECKS_FAILED",
    WorkerError => "WORKER_ERROR",
    BudgetExceeded => "BUDGET_EXCEEDED",
    MaxTurns => "MAX_TURNS",
});

impl ErrorClass {
    /// Whether an attempt failing with this class may be followed by another attempt.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Timeout
                | Self::AgentError
                | Self::GitError
                | Self::LeaseExpired
                | Self::InfraError
                | Self::WorkerError
        )
    }

    /// Classify free text (an error message, an agent's stderr) by the signals docs/guarantees.md lists.
    /// Used as the last resort when an agent gave no structured status.
    pub fn from_message(text: &str) -> Option<ErrorClass> {
        let t = text.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
        if has(&[
            "429",
            "rate limit",
            "rate_limit",
            "quota exceeded",
            "overloaded",
            "too many requests",
        ]) {
            Some(Self::RateLimited)
        } else if has(&[
            "401",
            "403",
            "invalid api key",
            "invalid x-api-key",
            "unauthorized",
            "authentication_error",
            "authentication failed",
            "forbidden",
            // Claude Code without a key or login.
            "not logged in",
            "please run /login",
        ]) {
            Some(Self::AuthFailed)
        } else if has(&["context deadline exceeded", "timed out", "timeout"]) {
            Some(Self::Timeout)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_strings() {
        for c in ErrorClass::ALL {
            assert_eq!(c.as_str().parse::<ErrorClass>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn retryability_follows_the_documented_table() {
        assert!(ErrorClass::RateLimited.is_retryable());
        assert!(ErrorClass::Timeout.is_retryable());
        assert!(ErrorClass::AgentError.is_retryable());
        assert!(ErrorClass::GitError.is_retryable());
        assert!(ErrorClass::WorkerError.is_retryable());
        assert!(!ErrorClass::AuthFailed.is_retryable());
        assert!(!ErrorClass::GitAuthFailed.is_retryable());
        assert!(!ErrorClass::InvalidTask.is_retryable());
        assert!(!ErrorClass::Canceled.is_retryable());
        assert!(ErrorClass::InfraError.is_retryable());
        assert!(!ErrorClass::InfraConfigError.is_retryable());
        assert!(!ErrorClass::ChecksFailed.is_retryable());
        assert!(!ErrorClass::BudgetExceeded.is_retryable());
        assert!(!ErrorClass::MaxTurns.is_retryable());
    }

    #[test]
    fn classifies_messages() {
        for (message, class) in [
            (
                "exceeded retry limit, last status: 429 Too Many Requests",
                Some(ErrorClass::RateLimited),
            ),
            ("unexpected status 401 Unauthorized", Some(ErrorClass::AuthFailed)),
            ("context deadline exceeded", Some(ErrorClass::Timeout)),
            ("Not logged in · Please run /login", Some(ErrorClass::AuthFailed)),
            ("segfault", None),
        ] {
            assert_eq!(ErrorClass::from_message(message), class, "{message}");
        }
    }
}
