//! agentpool's domain model, free of I/O: ids, task specs and their validation, the task state
//! machine, leases, error classes, the retry policy, workers, projects, events, and the wire
//! types of the HTTP API and the worker protocol shared by the server and its client, and the one
//! secret redactor.

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod check;
mod enum_names;
pub mod error_class;
pub mod event;
pub mod file_change;
pub mod forgejo;
pub mod github;
pub mod ids;
pub mod notification;
pub mod profile;
pub mod project;
pub mod protocol;
pub mod redact;
pub mod render;
pub mod retry;
pub mod schedule;
pub mod spec;
pub mod task;
#[cfg(test)]
mod wire_test;
pub mod worker;

pub use check::{CheckRun, CheckSpec};
pub use error_class::ErrorClass;
pub use event::{Event, EventKind, EventPayload, Lifecycle, NewEvent, PreparePhases};
pub use file_change::{FileChange, FileStatus};
pub use ids::{InvalidTaskId, Lease, LeaseToken, TaskId, WorkerId};
pub use profile::{AgentProfile, McpServer, Profile};
pub use project::Project;
pub use redact::Redactor;
pub use retry::RetryPolicy;
pub use spec::{BranchName, Labels, RepoUrl, TaskKind, TaskSpec, ValidationError};
pub use task::{Attempt, AttemptOutcome, Task, TaskResult, TaskState, Transition, Usage};
pub use worker::{AgentInfo, CacheStats, Worker, WorkerStatus};

/// Timestamps everywhere in agentpool are UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
