//! Task events: the append-only, ordered record of what happened to a task — lifecycle
//! transitions and the normalized agent events (docs/architecture.md).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::task::UnknownState;
use crate::{TaskId, Timestamp};

/// The kinds of events. Agent adapters map their CLI's output onto these; anything they do not
/// recognise is kept as `Raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A state change of the task (queued, claimed, retrying, succeeded, …).
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

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        Self::Lifecycle,
        Self::SessionStarted,
        Self::AssistantMessage,
        Self::ToolCall,
        Self::ToolResult,
        Self::Usage,
        Self::ApiRetry,
        Self::Log,
        Self::Result,
        Self::Raw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lifecycle => "lifecycle",
            Self::SessionStarted => "session_started",
            Self::AssistantMessage => "assistant_message",
            Self::ToolCall => "tool_call",
            Self::ToolResult => "tool_result",
            Self::Usage => "usage",
            Self::ApiRetry => "api_retry",
            Self::Log => "log",
            Self::Result => "result",
            Self::Raw => "raw",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// An event before it is stored (no sequence number yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub kind: EventKind,
    /// When it happened on the worker; the store's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    pub data: serde_json::Value,
}

impl NewEvent {
    pub fn new(kind: EventKind, data: serde_json::Value) -> Self {
        Self { kind, at: None, data }
    }

    pub fn lifecycle(state: &str, message: impl Into<String>) -> Self {
        Self::new(
            EventKind::Lifecycle,
            serde_json::json!({ "state": state, "message": message.into() }),
        )
    }

    pub fn log(stream: &str, line: impl Into<String>) -> Self {
        Self::new(
            EventKind::Log,
            serde_json::json!({ "stream": stream, "line": line.into() }),
        )
    }
}

/// A stored event. `seq` orders a task's events and is the cursor for paging and SSE resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub task_id: TaskId,
    pub seq: i64,
    pub at: Timestamp,
    pub kind: EventKind,
    pub data: serde_json::Value,
}
