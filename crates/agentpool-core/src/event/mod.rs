//! Task events: the append-only, ordered record of what happened to a task — the lifecycle
//! transitions the store writes with each state change and the pipeline's progress steps
//! ([`Lifecycle`]), and the normalized agent events ([`EventPayload`]'s other variants).
//!
//! Wire shape (stable): `{"kind": "<kind>", "data": {…}}`; lifecycle events carry their step in
//! `data.state`, e.g. `{"kind":"lifecycle","data":{"state":"claimed","attempt":1,"worker":"w"}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{CheckRun, ErrorClass, TaskId, TaskState, Timestamp, WorkerId};

/// The kinds of events: the `kind` tag of [`EventPayload`], stored in its own column so
/// listings can filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A state change of the task or a step of its run (see [`Lifecycle`]).
    Lifecycle,
    SessionStarted,
    AssistantMessage,
    ToolCall,
    ToolResult,
    Usage,
    ApiRetry,
    /// A line of stderr/stdout or a pipeline step's output.
    Log,
    Result,
    /// A line the parser did not understand, kept verbatim.
    Raw,
}

crate::enum_names!(EventKind, UnknownEventKind("event kind") {
    Lifecycle => "lifecycle",
    SessionStarted => "session_started",
    AssistantMessage => "assistant_message",
    ToolCall => "tool_call",
    ToolResult => "tool_result",
    Usage => "usage",
    ApiRetry => "api_retry",
    Log => "log",
    Result => "result",
    Raw => "raw",
});

/// Where the preparation of a workspace spent its time (milliseconds). On the warm path the
/// mirror's fetch runs alongside the clone from the mirror, so the phases overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparePhases {
    /// Bringing the mirror up to date with the remote (creating it on a miss).
    pub fetch_ms: u64,
    /// The task's own clone (from the mirror, or from the remote without one).
    pub clone_ms: u64,
    /// Resolving the start commit and checking out the work branch.
    pub checkout_ms: u64,
    /// git processes the worker started for it.
    pub git_processes: u32,
}

/// How a cancel reads: `what` ("canceled", "cancel requested"), then who asked and why, when
/// known ("canceled by ci (submitter): superseded by #42").
pub fn cancel_words(what: &str, by: Option<&str>, reason: Option<&str>) -> String {
    let mut s = what.to_string();
    if let Some(b) = by {
        s.push_str(" by ");
        s.push_str(b);
    }
    if let Some(r) = reason {
        s.push_str(": ");
        s.push_str(r);
    }
    s
}

/// A step in a task's life. The store writes the state changes (queued … canceled) in the
/// same transaction as the change itself; the worker's pipeline reports its own steps
/// (workspace ready … pushed) while the task runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Enqueued (or re-queued by a manual retry).
    Queued,
    Claimed {
        attempt: u32,
        worker: WorkerId,
    },
    /// A cancel was requested while the task runs; its worker hears of it through the heartbeat
    /// it keeps waiting on the server, and stops it.
    CancelRequested {
        /// Who asked (the token's name and role, the dashboard, a GitHub event), when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why, when the one who asked said so (`tasks cancel --reason`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    WorkspaceReady {
        branch: String,
        base_sha: String,
        /// Whether a cached clone was reused.
        warm: bool,
        prepare_ms: u64,
        /// Where `prepare_ms` went.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phases: Option<PreparePhases>,
    },
    /// The setup command started.
    SetupStarted,
    /// The agent (or, for command tasks, the command — `agent: "command"`) started.
    AgentStarted {
        agent: String,
    },
    /// The checks of round `round` started (after the agent's run in that round).
    ChecksStarted {
        round: u32,
        checks: usize,
    },
    /// One check of a round ended (docs/checks.md).
    CheckFinished(CheckRun),
    /// Every check of round `round` passed but they changed these files (a formatter, a
    /// `--fix`): the checks run again on the changed work, so that what is committed is what
    /// they passed on.
    ChecksChangedFiles {
        round: u32,
        files: Vec<String>,
    },
    /// Checks failed and the agent runs again with their output: round `round` starts,
    /// resuming the agent's session when `resumed`.
    FeedbackRound {
        round: u32,
        failing: Vec<String>,
        resumed: bool,
    },
    Committed {
        sha: String,
        files: usize,
    },
    Pushed {
        branch: String,
        sha: String,
    },
    Succeeded,
    Failed {
        class: ErrorClass,
        message: String,
    },
    /// The attempt failed and the task waits for `run_after` before attempt `attempt + 1` —
    /// or, when it was `given_back` (the worker's or the infrastructure's fault, not the
    /// task's), runs again at once as attempt `attempt`.
    RetryScheduled {
        attempt: u32,
        run_after: Timestamp,
        class: ErrorClass,
        message: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        given_back: bool,
    },
    Canceled {
        message: String,
    },
    /// The holder of attempt `attempt` stopped heartbeating and maintenance took the task back;
    /// a `retry_scheduled` or `failed` event follows.
    LeaseExpired {
        attempt: u32,
        worker: WorkerId,
    },
}

impl Lifecycle {
    /// The wire name (`data.state`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Claimed { .. } => "claimed",
            Self::CancelRequested { .. } => "cancel_requested",
            Self::WorkspaceReady { .. } => "workspace_ready",
            Self::SetupStarted => "setup_started",
            Self::AgentStarted { .. } => "agent_started",
            Self::ChecksStarted { .. } => "checks_started",
            Self::CheckFinished(_) => "check_finished",
            Self::ChecksChangedFiles { .. } => "checks_changed_files",
            Self::FeedbackRound { .. } => "feedback_round",
            Self::Committed { .. } => "committed",
            Self::Pushed { .. } => "pushed",
            Self::Succeeded => "succeeded",
            Self::Failed { .. } => "failed",
            Self::RetryScheduled { .. } => "retry_scheduled",
            Self::Canceled { .. } => "canceled",
            Self::LeaseExpired { .. } => "lease_expired",
        }
    }

    /// The finished state this event records, if it ends the task.
    pub fn terminal_state(&self) -> Option<TaskState> {
        match self {
            Self::Succeeded => Some(TaskState::Succeeded),
            Self::Failed { .. } => Some(TaskState::Failed),
            Self::Canceled { .. } => Some(TaskState::Canceled),
            _ => None,
        }
    }

    /// A one-line description for people (the state name is shown separately).
    pub fn message(&self) -> String {
        match self {
            Self::Claimed { attempt, worker } => format!("attempt {attempt} on worker {worker}"),
            Self::WorkspaceReady { branch, base_sha, .. } => format!("work branch {branch} at {base_sha}"),
            Self::AgentStarted { agent } => format!("running {agent}"),
            Self::ChecksStarted { round, checks } => {
                format!(
                    "round {round}: {}",
                    crate::render::count(*checks, "check", "checks")
                )
            }
            Self::CheckFinished(run) => run.summary(),
            Self::ChecksChangedFiles { round, files } => {
                format!(
                    "round {round}: the checks changed {}; they run again on what they changed",
                    files.join(", ")
                )
            }
            Self::FeedbackRound { round, failing, .. } => {
                format!(
                    "round {round}: the agent gets the output of {}",
                    failing.join(", ")
                )
            }
            Self::Committed { sha, files } => {
                format!("{sha} ({})", crate::render::count(*files, "file", "files"))
            }
            Self::Pushed { branch, sha } => format!("{sha} to {branch}"),
            Self::Failed { class, message } => format!("{class}: {message}"),
            Self::RetryScheduled {
                attempt,
                class,
                message,
                given_back: true,
                ..
            } => format!("attempt {attempt} given back ({class}: {message}); it runs again at once"),
            Self::RetryScheduled {
                attempt,
                run_after,
                class,
                message,
                ..
            } => format!(
                "attempt {attempt} failed ({class}: {message}); next at {}",
                run_after.format("%H:%M:%S")
            ),
            Self::Canceled { message } => message.clone(),
            Self::LeaseExpired { attempt, worker } => {
                format!("attempt {attempt} on worker {worker} stopped reporting")
            }
            Self::CancelRequested { by, reason } => {
                cancel_words("cancel requested", by.as_deref(), reason.as_deref())
            }
            Self::Queued | Self::SetupStarted | Self::Succeeded => String::new(),
        }
    }
}

/// What an event says. Agent adapters map their CLI's output onto these variants; a line they
/// do not recognise is kept as [`EventPayload::Raw`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum EventPayload {
    Lifecycle(Lifecycle),
    SessionStarted {
        session_id: String,
        model: Option<String>,
    },
    AssistantMessage {
        text: String,
    },
    ToolCall {
        id: Option<String>,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        id: Option<String>,
        ok: bool,
        #[serde(default)]
        output: String,
    },
    Usage {
        #[serde(default)]
        input_tokens: u64,
        #[serde(default)]
        output_tokens: u64,
        #[serde(default)]
        cache_read_tokens: u64,
        #[serde(default)]
        cache_write_tokens: u64,
        cost_usd: Option<f64>,
    },
    ApiRetry {
        attempt: Option<u64>,
        max_retries: Option<u64>,
        delay_ms: Option<u64>,
        status: Option<u64>,
        error: Option<String>,
    },
    Log {
        stream: String,
        line: String,
    },
    Result {
        text: Option<String>,
        #[serde(default)]
        is_error: bool,
        subtype: Option<String>,
    },
    Raw {
        line: String,
        /// The `type` of a JSON line the parser understood but does not map.
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
}

impl EventPayload {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Lifecycle(_) => EventKind::Lifecycle,
            Self::SessionStarted { .. } => EventKind::SessionStarted,
            Self::AssistantMessage { .. } => EventKind::AssistantMessage,
            Self::ToolCall { .. } => EventKind::ToolCall,
            Self::ToolResult { .. } => EventKind::ToolResult,
            Self::Usage { .. } => EventKind::Usage,
            Self::ApiRetry { .. } => EventKind::ApiRetry,
            Self::Log { .. } => EventKind::Log,
            Self::Result { .. } => EventKind::Result,
            Self::Raw { .. } => EventKind::Raw,
        }
    }

    pub fn log(stream: &str, line: impl Into<String>) -> Self {
        Self::Log {
            stream: stream.to_string(),
            line: line.into(),
        }
    }

    pub fn lifecycle(&self) -> Option<&Lifecycle> {
        match self {
            Self::Lifecycle(l) => Some(l),
            _ => None,
        }
    }

    /// Whether this event ends the task's record: nothing but late agent output follows it.
    pub fn is_terminal(&self) -> bool {
        self.lifecycle().is_some_and(|l| l.terminal_state().is_some())
    }

    /// The `data` object as stored in the `data` column.
    pub fn data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut o)) => o.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Rebuild from the stored kind and `data`. Data this version cannot read (written by
    /// another version, say) is kept as `raw` rather than failing a whole listing.
    pub fn from_parts(kind: EventKind, data: Value) -> Self {
        let v = serde_json::json!({ "kind": kind.as_str(), "data": data });
        serde_json::from_value(v).unwrap_or_else(|_| Self::Raw {
            line: data.to_string(),
            hint: Some(kind.as_str().to_string()),
        })
    }

    /// Apply `f` to every free-text field (to redact secrets before an event leaves the worker).
    pub fn map_text(&mut self, f: &mut dyn FnMut(&mut String)) {
        fn in_value(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
            match v {
                Value::String(s) => f(s),
                Value::Array(a) => a.iter_mut().for_each(|x| in_value(x, f)),
                Value::Object(o) => o.values_mut().for_each(|x| in_value(x, f)),
                _ => {}
            }
        }
        match self {
            Self::Lifecycle(l) => match l {
                Lifecycle::Failed { message, .. }
                | Lifecycle::RetryScheduled { message, .. }
                | Lifecycle::Canceled { message } => f(message),
                Lifecycle::CheckFinished(run) => {
                    f(&mut run.name);
                    f(&mut run.output_tail);
                    run.failed_tests.iter_mut().for_each(&mut *f);
                }
                Lifecycle::FeedbackRound { failing, .. } => failing.iter_mut().for_each(&mut *f),
                _ => {}
            },
            Self::SessionStarted { .. } | Self::Usage { .. } => {}
            Self::AssistantMessage { text } => f(text),
            Self::ToolCall { input, .. } => in_value(input, f),
            Self::ToolResult { output, .. } => f(output),
            Self::ApiRetry { error, .. } => {
                if let Some(e) = error {
                    f(e)
                }
            }
            Self::Log { line, .. } | Self::Raw { line, .. } => f(line),
            Self::Result { text, .. } => {
                if let Some(t) = text {
                    f(t)
                }
            }
        }
    }
}

impl From<Lifecycle> for EventPayload {
    fn from(l: Lifecycle) -> Self {
        Self::Lifecycle(l)
    }
}

/// An event before it is stored (no sequence number yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When it happened on the worker; the store's clock when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    #[serde(flatten)]
    pub payload: EventPayload,
}

impl NewEvent {
    pub fn new(payload: impl Into<EventPayload>) -> Self {
        Self {
            at: None,
            payload: payload.into(),
        }
    }

    pub fn log(stream: &str, line: impl Into<String>) -> Self {
        Self::new(EventPayload::log(stream, line))
    }

    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }

    pub fn data(&self) -> Value {
        self.payload.data()
    }
}

impl From<EventPayload> for NewEvent {
    fn from(payload: EventPayload) -> Self {
        Self::new(payload)
    }
}

impl From<Lifecycle> for NewEvent {
    fn from(l: Lifecycle) -> Self {
        Self::new(l)
    }
}

/// A stored event. `seq` orders a task's events and is the cursor for paging and SSE resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub task_id: TaskId,
    pub seq: i64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub payload: EventPayload,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }

    pub fn data(&self) -> Value {
        self.payload.data()
    }

    pub fn is_terminal(&self) -> bool {
        self.payload.is_terminal()
    }
}

#[cfg(test)]
mod tests;
