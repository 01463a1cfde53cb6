//! The wire types of the HTTP API and the worker protocol, each defined once here and used by
//! the server and by the client. With the `openapi` feature they also describe themselves for
//! the server's OpenAPI document.

mod bulk;
mod error;
#[cfg(feature = "openapi")]
pub mod openapi;
mod pools;
mod projects;
mod tasks;
mod tokens;
mod worker;

pub use bulk::{BulkCancel, BulkCanceled, BulkRetried, BulkRetry, MAX_BULK_TASKS, Skipped, checked_ids};
pub use error::{ErrorBody, ErrorDetail, Health};
pub use pools::{QueueStats, QueueStatsQuery, QueuedTask, WorkerCounts, parse_label_list};
pub use projects::{
    BuildRequest, CreateAndBuild, CreatedBuild, CredentialList, CredentialValue, ProjectList,
};
pub use tasks::{
    BatchSubmit, BatchSubmitted, CancelRequest, Enqueued, EventPage, EventsQuery, MAX_CANCEL_REASON_CHARS,
    Retried, TaskDetail, TaskListQuery, TaskPage, WaitReason,
};
pub use tokens::{CreatedToken, RotatedToken, TokenCreate, TokenInfo, TokenList, TokenRotate};
pub use worker::{
    AppendEventsRequest, ClaimQuery, ClaimRequest, ClaimResponse, ClaimedTask, ClaimedWork, CompleteBatch,
    CompleteBatchResponse, CompleteItem, CompleteItemResult, CompleteRequest, FailOutcome, FailRequest,
    HeartbeatQuery, HeartbeatReply, HeartbeatRequest, MAX_AGENT_VERSION, MAX_STATUS_MESSAGE, Secrets,
    WorkerList,
};
