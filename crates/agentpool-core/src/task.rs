//! The task record, its attempts and result, and the state machine that governs them.
//!
//! Stores persist what these functions decide; they never invent transitions of their own.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::{RetryDecision, RetryPolicy};
use crate::{ErrorClass, FileChange, LeaseToken, TaskId, TaskKind, TaskSpec, Timestamp, WorkerId};

/// Where a task is in its life. `Blocked` is not stored: a queued task whose dependencies,
/// branch lock or project slots hold it back is reported as waiting with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

crate::enum_names!(TaskState, UnknownState("task state") {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Canceled => "canceled",
});

impl TaskState {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// A transition that the state machine refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a task that {}", where_it_is(*.from))]
pub struct InvalidTransition {
    pub from: TaskState,
    pub action: &'static str,
}

/// "is running", "already succeeded", "was already canceled": where a task is, in the words
/// of the refusal (a task does not cancel itself, so that one is passive).
fn where_it_is(state: TaskState) -> String {
    match state {
        TaskState::Canceled => format!("was already {state}"),
        _ if state.is_finished() => format!("already {state}"),
        _ => format!("is {state}"),
    }
}

/// What a transition decided, for the store to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Back to `queued`, runnable after the delay.
    Requeue { delay: Duration },
    /// To a finished state.
    Finish {
        state: TaskState,
        class: Option<ErrorClass>,
    },
    /// Running: a cancel request is recorded for the worker to act on.
    CancelRequested,
}

/// How many times a task may be handed back without the attempt counting, by a broken worker
/// (`WORKER_ERROR`), by infrastructure that went away under it (`INFRA_ERROR`: a worker or
/// pod stopped or evicted), or by a worker that died or lost its node (`LEASE_EXPIRED`: it
/// stopped heartbeating) — none the task's fault. Bounded, all three together, so that a task
/// that breaks or kills every worker, or is evicted every time, still ends.
pub const MAX_WORKER_RELEASES: u32 = 3;

/// Whether a failure of `class` releases the task without using an attempt, given how many
/// such releases (of any of these classes) it already had.
pub fn releases_free(class: ErrorClass, prior_releases: u32) -> bool {
    is_release(class) && prior_releases < MAX_WORKER_RELEASES
}

/// The classes that may hand a task back without using an attempt ([`releases_free`]).
pub fn is_release(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::WorkerError | ErrorClass::InfraError | ErrorClass::LeaseExpired
    )
}

/// `queued → running`.
pub fn claim(from: TaskState) -> Result<TaskState, InvalidTransition> {
    match from {
        TaskState::Queued => Ok(TaskState::Running),
        _ => Err(InvalidTransition {
            from,
            action: "claim",
        }),
    }
}

/// `running → succeeded`.
pub fn complete(from: TaskState) -> Result<Transition, InvalidTransition> {
    match from {
        TaskState::Running => Ok(Transition::Finish {
            state: TaskState::Succeeded,
            class: None,
        }),
        _ => Err(InvalidTransition {
            from,
            action: "complete",
        }),
    }
}

/// `running → queued` (retry with backoff) or `running → failed|canceled`.
pub fn fail(
    from: TaskState,
    class: ErrorClass,
    attempt: u32,
    max_attempts: u32,
    retry_after: Option<Duration>,
    policy: &RetryPolicy,
    u: f64,
) -> Result<Transition, InvalidTransition> {
    if from != TaskState::Running {
        return Err(InvalidTransition { from, action: "fail" });
    }
    if class == ErrorClass::Canceled {
        return Ok(Transition::Finish {
            state: TaskState::Canceled,
            class: Some(class),
        });
    }
    Ok(
        match policy.decide(class, attempt, max_attempts, retry_after, u) {
            RetryDecision::RetryAfter(delay) => Transition::Requeue { delay },
            RetryDecision::GiveUp => Transition::Finish {
                state: TaskState::Failed,
                class: Some(class),
            },
        },
    )
}

/// Cancel: a queued task ends at once; a running one is flagged for its worker.
pub fn cancel(from: TaskState) -> Result<Transition, InvalidTransition> {
    match from {
        TaskState::Queued => Ok(Transition::Finish {
            state: TaskState::Canceled,
            class: Some(ErrorClass::Canceled),
        }),
        TaskState::Running => Ok(Transition::CancelRequested),
        _ => Err(InvalidTransition {
            from,
            action: "cancel",
        }),
    }
}

/// Retry a finished task that did not succeed: back to `queued` with a fresh attempt budget
/// (the store numbers the new attempts on from the old ones).
pub fn retry(from: TaskState) -> Result<TaskState, InvalidTransition> {
    match from {
        TaskState::Failed | TaskState::Canceled => Ok(TaskState::Queued),
        _ => Err(InvalidTransition {
            from,
            action: "retry",
        }),
    }
}

/// Token counts as agents report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
    }
}

/// What a successful (or finally failed) run produced. A field left out is its default
/// (absent, empty, zero).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskResult {
    /// The agent that ran, for an agent task: the one it named, or the worker's default when
    /// it named none (which may differ between workers).
    pub agent: Option<String>,
    pub commit_sha: Option<String>,
    /// The work branch, set only when the remote has it (pushed now, or there before).
    pub branch: Option<String>,
    pub files: Vec<FileChange>,
    /// Whether the work branch reached the remote.
    pub pushed: bool,
    pub push_result: Option<String>,
    pub pr_url: Option<String>,
    /// The pull request opened (or reused) for the pushed branch, recorded by the server.
    pub pull_request: Option<crate::github::PullRequestRef>,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    pub session_id: Option<String>,
    pub num_turns: Option<u32>,
    pub final_text: Option<String>,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// Rounds of agent run + checks (absent when the task has no checks).
    pub rounds: Option<u32>,
    /// Whether every check passed in the last round; `false` marks a work branch pushed with
    /// failing checks (`push_on_checks_failed`).
    pub checks_passed: Option<bool>,
    /// Every check of every round, in the order they ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::CheckRun>,
}

impl TaskResult {
    /// What a worker may not report, with fields named under `field`: a cost below zero would
    /// lower the spend its project's daily budget counts.
    pub fn validate(&self, field: &str) -> Vec<crate::ValidationError> {
        match self.cost_usd {
            Some(c) if !(c.is_finite() && c >= 0.0) => vec![crate::ValidationError::new(
                format!("{field}.cost_usd"),
                "must be a number of US dollars, 0 or more",
            )],
            _ => Vec::new(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Running,
    Succeeded,
    Failed,
    Canceled,
    /// The lease ran out before the worker reported; the task was rescued.
    Expired,
}

crate::enum_names!(AttemptOutcome, UnknownOutcome("attempt outcome") {
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Canceled => "canceled",
    Expired => "expired",
});

/// One execution of a task by one worker.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub task_id: TaskId,
    /// 1-based attempt number.
    pub number: u32,
    pub worker_id: WorkerId,
    pub lease_token: LeaseToken,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub outcome: AttemptOutcome,
    pub error_class: Option<ErrorClass>,
    pub error_message: Option<String>,
    /// What the attempt reported costing (its result's `cost_usd`), when it reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// The cost of all of a task's attempts that reported one: `None` when none did. What its
/// project's daily budget counted for it (each attempt's, not only the last result's).
pub fn total_cost(attempts: &[Attempt]) -> Option<f64> {
    attempts.iter().filter_map(|a| a.cost_usd).reduce(|a, b| a + b)
}

/// How each of a task's `attempts` (in order) ended, for people: its outcome, or `given back`
/// for one that failed on the worker or the infrastructure and was handed back without using
/// its number (the next attempt has the same one; for the last, the task's count of attempts
/// `started` is below it) — three `failed` #1 before a `succeeded` #1 would read as a
/// contradiction.
pub fn attempt_endings(attempts: &[Attempt], started: u32) -> Vec<&'static str> {
    let mut releases = 0;
    attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let release = a.error_class.is_some_and(is_release);
            let number_kept = match attempts.get(i + 1) {
                Some(next) => next.number == a.number,
                None => started < a.number,
            };
            let given_back = release && releases < MAX_WORKER_RELEASES && number_kept;
            releases += u32::from(release);
            if given_back {
                "given back"
            } else {
                a.outcome.as_str()
            }
        })
        .collect()
}

/// A task as the queue holds it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub state: TaskState,
    /// Attempts started so far (since the last manual retry).
    pub attempts: u32,
    pub max_attempts: u32,
    pub priority: i32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub run_after: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Worker holding the current lease, while running.
    pub worker_id: Option<WorkerId>,
    /// The current (or last) lease token.
    pub lease_token: Option<LeaseToken>,
    pub lease_expires_at: Option<Timestamp>,
    /// A cancel was requested while running; the worker is told on its next heartbeat.
    #[serde(default)]
    pub cancel_requested: bool,
    pub error_class: Option<ErrorClass>,
    pub error_message: Option<String>,
    pub result: Option<TaskResult>,
}

impl Task {
    /// Task `id` of `spec` as it enters the queue at `now`: queued, due at once, no attempt
    /// started yet.
    pub fn queued(id: TaskId, spec: TaskSpec, max_attempts: u32, now: Timestamp) -> Task {
        Task {
            id,
            state: TaskState::Queued,
            attempts: 0,
            max_attempts,
            priority: spec.priority,
            created_at: now,
            updated_at: now,
            run_after: now,
            started_at: None,
            finished_at: None,
            worker_id: None,
            lease_token: None,
            lease_expires_at: None,
            cancel_requested: false,
            error_class: None,
            error_message: None,
            result: None,
            spec,
        }
    }

    /// The agent of an agent task, in words: the one it names, else the one its last run ended
    /// with, marked as the worker's default; empty for a command task, and for one that names
    /// none and has not run.
    pub fn agent_words(&self) -> String {
        if self.spec.kind == TaskKind::Command {
            return String::new();
        }
        match (
            &self.spec.agent,
            self.result.as_ref().and_then(|r| r.agent.as_deref()),
        ) {
            (Some(named), _) => named.clone(),
            (None, Some(ran)) => format!("{ran} (the worker's default)"),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tasks_total_cost_adds_every_attempt_that_reported_one() {
        let at = |cost_usd| Attempt {
            task_id: TaskId::new(),
            number: 1,
            worker_id: WorkerId::parse("w").unwrap(),
            lease_token: LeaseToken(1),
            started_at: chrono::Utc::now(),
            ended_at: None,
            outcome: AttemptOutcome::Failed,
            error_class: None,
            error_message: None,
            cost_usd,
        };
        assert_eq!(total_cost(&[]), None);
        assert_eq!(total_cost(&[at(None), at(None)]), None);
        assert_eq!(total_cost(&[at(Some(0.5)), at(None), at(Some(0.25))]), Some(0.75));
    }

    #[test]
    fn attempts_handed_back_read_given_back_and_others_their_outcome() {
        let at = |number, class: Option<ErrorClass>, outcome| Attempt {
            task_id: TaskId::new(),
            number,
            worker_id: WorkerId::parse("w").unwrap(),
            lease_token: LeaseToken(1),
            started_at: chrono::Utc::now(),
            ended_at: None,
            outcome,
            error_class: class,
            error_message: None,
            cost_usd: None,
        };
        let worker = Some(ErrorClass::WorkerError);
        let agent = Some(ErrorClass::AgentError);
        let f = AttemptOutcome::Failed;
        let attempts = [
            at(1, worker, f),
            at(1, Some(ErrorClass::LeaseExpired), AttemptOutcome::Expired),
            at(1, agent, f),
            at(2, worker, f),
            // The fourth release uses its number: the bound is three.
            at(2, worker, f),
            at(3, None, AttemptOutcome::Succeeded),
        ];
        assert_eq!(
            attempt_endings(&attempts, 3),
            [
                "given back",
                "given back",
                "failed",
                "given back",
                "failed",
                "succeeded"
            ]
        );
        // The last attempt: handed back while the task has not counted it, else not.
        assert_eq!(attempt_endings(&attempts[..1], 0), ["given back"]);
        assert_eq!(attempt_endings(&attempts[..1], 1), ["failed"]);
    }
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Claim,
        Complete,
        Fail(usize),
        Cancel,
        Retry,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Claim),
            Just(Op::Complete),
            (0usize..ErrorClass::ALL.len()).prop_map(Op::Fail),
            Just(Op::Cancel),
            Just(Op::Retry),
        ]
    }

    #[test]
    fn a_refused_transition_says_where_the_task_is() {
        assert_eq!(
            cancel(TaskState::Succeeded).unwrap_err().to_string(),
            "cannot cancel a task that already succeeded"
        );
        assert_eq!(
            retry(TaskState::Running).unwrap_err().to_string(),
            "cannot retry a task that is running"
        );
        assert_eq!(
            "bogus".parse::<TaskState>().unwrap_err().to_string(),
            "unknown task state \"bogus\": use queued, running, succeeded, failed or canceled"
        );
        assert_eq!(
            cancel(TaskState::Canceled).unwrap_err().to_string(),
            "cannot cancel a task that was already canceled"
        );
    }

    proptest! {
        /// Drive a task through random operations. Whatever happens: attempts never exceed the
        /// maximum, finished states only leave through `retry`, and `succeeded` is final.
        #[test]
        fn state_machine_invariants(ops in proptest::collection::vec(op(), 0..60), max in 1u32..5) {
            let policy = RetryPolicy::default();
            let mut state = TaskState::Queued;
            let mut attempts = 0u32;
            for op in ops {
                let before = state;
                match op {
                    Op::Claim => if let Ok(s) = claim(state) {
                        prop_assert!(attempts < max, "claimed past max attempts");
                        attempts += 1;
                        state = s;
                    },
                    Op::Complete => if let Ok(Transition::Finish { state: s, .. }) = complete(state) {
                        state = s;
                    },
                    Op::Fail(i) => match fail(state, ErrorClass::ALL[i], attempts, max, None, &policy, 0.5) {
                        Ok(Transition::Requeue { delay }) => {
                            prop_assert!(ErrorClass::ALL[i].is_retryable());
                            prop_assert!(delay <= policy.cap);
                            state = TaskState::Queued;
                        }
                        Ok(Transition::Finish { state: s, .. }) => state = s,
                        Ok(Transition::CancelRequested) => prop_assert!(false, "fail never requests cancel"),
                        Err(e) => prop_assert_eq!(e.from, before),
                    },
                    Op::Cancel => match cancel(state) {
                        Ok(Transition::Finish { state: s, .. }) => {
                            prop_assert_eq!(before, TaskState::Queued);
                            state = s;
                        }
                        Ok(Transition::CancelRequested) => prop_assert_eq!(before, TaskState::Running),
                        Ok(Transition::Requeue { .. }) => prop_assert!(false),
                        Err(_) => prop_assert!(before.is_finished()),
                    },
                    Op::Retry => if let Ok(s) = retry(state) {
                        prop_assert!(matches!(before, TaskState::Failed | TaskState::Canceled));
                        attempts = 0;
                        state = s;
                    },
                }
                if before == TaskState::Succeeded {
                    prop_assert_eq!(state, TaskState::Succeeded, "succeeded is final");
                }
                if before.is_finished() && !state.is_finished() {
                    prop_assert!(matches!(op, Op::Retry));
                }
            }
        }
    }

    #[test]
    fn a_result_leaves_out_what_is_absent_and_reads_back_the_same() {
        let empty = serde_json::json!({
            "files": [], "pushed": false, "duration_ms": 0,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0}
        });
        let full = serde_json::json!({
            "commit_sha": "0123", "branch": "b",
            "files": [{"path": "a", "added": 1, "removed": null}],
            "pushed": true, "push_result": "ok", "pr_url": "https://h/pr/1",
            "pull_request": {"number": 1, "url": "https://h/pr/1", "state": "open"},
            "usage": {"input_tokens": 1, "output_tokens": 2, "cache_read_tokens": 3, "cache_write_tokens": 4},
            "cost_usd": 0.5, "session_id": "s", "num_turns": 3, "final_text": "done", "exit_code": 0,
            "duration_ms": 9, "rounds": 2, "checks_passed": false,
            "checks": [{"round": 1, "name": "t", "passed": false, "exit_code": 1, "duration_ms": 3,
                        "output_tail": "x", "failed_tests": ["a::b"]}]
        });
        crate::wire_test::assert_wire_form::<TaskResult>(empty, full);
    }

    #[test]
    fn explicit_transitions() {
        assert_eq!(claim(TaskState::Queued), Ok(TaskState::Running));
        assert!(claim(TaskState::Running).is_err());
        assert!(complete(TaskState::Queued).is_err());
        assert_eq!(cancel(TaskState::Running), Ok(Transition::CancelRequested));
        assert!(cancel(TaskState::Succeeded).is_err());
        assert!(retry(TaskState::Succeeded).is_err());
        let p = RetryPolicy::default();
        assert_eq!(
            fail(TaskState::Running, ErrorClass::AuthFailed, 1, 3, None, &p, 0.0),
            Ok(Transition::Finish {
                state: TaskState::Failed,
                class: Some(ErrorClass::AuthFailed)
            })
        );
        assert_eq!(
            fail(TaskState::Running, ErrorClass::Canceled, 1, 3, None, &p, 0.0),
            Ok(Transition::Finish {
                state: TaskState::Canceled,
                class: Some(ErrorClass::Canceled)
            })
        );
    }
}
