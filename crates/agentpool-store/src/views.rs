//! What the store's reads take and give beyond the core types: the filters of task lists,
//! the queued tasks as pools are matched on them, the tasks that ended per interval.

use agentpool_core::{ErrorClass, Labels, TaskId, TaskState, Timestamp, WorkerId};

/// A queued task as [`crate::Store::queued_shapes`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedShape {
    pub id: TaskId,
    pub labels: Labels,
    /// The agent it needs (`command` for a command task); none when any will do.
    pub agent: Option<String>,
    pub project: Option<String>,
    /// When it may run.
    pub run_after: Timestamp,
}

/// Filters for listing tasks, newest first, paged by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub project: Option<String>,
    /// Only tasks of one of these projects (a project token's reach); `None`: any task.
    pub projects: Option<Vec<String>>,
    pub label: Option<(String, String)>,
    pub worker: Option<WorkerId>,
    /// Only tasks that need this agent (`command`: command tasks). An agent task that names
    /// none (any worker's default) matches no agent.
    pub agent: Option<String>,
    /// Only tasks whose last attempt ended with this class.
    pub error_class: Option<ErrorClass>,
    /// Only tasks whose idempotency key starts with this (a schedule's tasks:
    /// `agentpool_core::schedule::key_prefix`).
    pub key_prefix: Option<String>,
    /// Return tasks older than this id (the previous page's last id).
    pub before: Option<TaskId>,
    pub limit: u32,
}

/// How many tasks ended in `state` in one interval of [`crate::Store::count_finished`]: the
/// `interval`-th from its `since` (0 is the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedCount {
    pub interval: u32,
    pub state: TaskState,
    pub tasks: u64,
}
