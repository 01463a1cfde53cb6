//! Wire types of the bulk task actions: cancel or retry up to [`MAX_BULK_TASKS`] named tasks
//! in one request, carried out in one transaction. A task the action does not apply to (not
//! found, already finished, not failed) is passed over and said, not an error of the request.

use serde::{Deserialize, Serialize};

use crate::{Task, TaskId};

use super::{CancelRequest, Retried};

/// The most tasks one bulk request may name (as many as one batch submit enqueues).
pub const MAX_BULK_TASKS: usize = 1000;

/// `POST /v1/tasks/cancel`: cancel each of `ids` as `POST /v1/tasks/{id}/cancel` would, with
/// one reason for all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkCancel {
    /// 1 to 1000 task ids; one named twice is acted on once.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub ids: Vec<TaskId>,
    /// 1-500 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl BulkCancel {
    /// The reason as a single cancel checks it.
    pub fn checked_reason(&self) -> Result<Option<&str>, String> {
        match &self.reason {
            None => Ok(None),
            Some(r) => CancelRequest::checked(r),
        }
    }
}

/// `POST /v1/tasks/retry`: retry each of `ids` as `POST /v1/tasks/{id}/retry` would.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    /// 1 to 1000 task ids; one named twice is acted on once.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub ids: Vec<TaskId>,
}

/// The ids of a bulk request in the order named, each once, or why they cannot be acted on.
pub fn checked_ids(ids: &[TaskId]) -> Result<Vec<TaskId>, String> {
    if ids.is_empty() || ids.len() > MAX_BULK_TASKS {
        return Err(format!("give 1 to {MAX_BULK_TASKS} task ids"));
    }
    let mut seen = std::collections::HashSet::new();
    Ok(ids.iter().copied().filter(|id| seen.insert(*id)).collect())
}

/// A task a bulk action passed over, and why: `not_found`, or `conflict` (the action does not
/// apply to it as it is: a cancel of a finished task, a retry of one that did not fail, a
/// retry whose dependency failed and was not retried with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Skipped {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: TaskId,
    pub code: String,
    pub message: String,
}

/// The answer to `POST /v1/tasks/cancel`, in the order the tasks were named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkCanceled {
    /// Each task as the cancel left it: `canceled`, or still `running` with
    /// `cancel_requested` (its worker stops it now).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::TaskSchema>))]
    pub canceled: Vec<Task>,
    pub skipped: Vec<Skipped>,
}

/// The answer to `POST /v1/tasks/retry`, in the order the tasks were named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkRetried {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::RetriedSchema>))]
    pub retried: Vec<Retried>,
    pub skipped: Vec<Skipped>,
}
