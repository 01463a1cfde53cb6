//! What the server owes GitHub, kept durably so a restart loses nothing: webhook deliveries
//! already handled (redeliveries create nothing), and one link per task that came from GitHub
//! or opens a pull request — the issue or pull request it reports to, its status comment, the
//! pull request it opened, and when to try GitHub again. The server's GitHub loop works
//! through the links; this module only stores them.

use agentpool_core::TaskId;
use agentpool_core::github::PullRequestRef;
use async_trait::async_trait;

use crate::Result;

/// One task's GitHub bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubLink {
    pub task_id: TaskId,
    pub project: String,
    /// `owner/name`.
    pub repository: String,
    /// The issue or pull request the status comment goes on; `None` for tasks that only
    /// open a pull request (project builds).
    pub number: Option<u64>,
    /// What started it (`label`, `command`, `review`, `review_comment`, `check_run`, `build`).
    pub kind: String,
    pub comment_id: Option<u64>,
    /// The task state the status comment last showed.
    pub reported_state: Option<String>,
    pub pr_number: Option<u64>,
    pub pr_url: Option<String>,
    pub pr_state: Option<String>,
    /// The work branch (for follow-ups: the pull request's head).
    pub branch: Option<String>,
    /// Nothing more to tell GitHub.
    pub done: bool,
    /// GitHub calls that failed in a row (backoff, and a give-up limit).
    pub failures: u32,
    /// Unix ms: not looked at before this (also a lease while one replica works on it).
    pub next_try_at: i64,
    pub created_at: i64,
}

/// The latest task on a pull request agentpool opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrTasks {
    pub branch: String,
    pub last_task: TaskId,
    /// Tasks on it started automatically (by reviews and failed check runs; not by explicit
    /// commands).
    pub automatic: u32,
    /// Closed or merged, and not reopened since ([`GithubStore::github_set_pr_closed`]).
    pub closed: bool,
}

#[async_trait]
pub trait GithubStore {
    /// Whether this `X-GitHub-Delivery` was already handled.
    async fn github_delivery_seen(&self, delivery: &str) -> Result<bool>;
    /// Remember a handled delivery; false when it was already known.
    async fn github_record_delivery(&self, delivery: &str, event: &str) -> Result<bool>;
    /// Forget deliveries received more than `retention` ago (GitHub redelivers only recent
    /// ones); returns how many.
    async fn github_purge_deliveries(&self, retention: std::time::Duration) -> Result<u64>;
    /// Insert a link unless the task has one (due at once: `next_try_at` and `created_at` are
    /// the store's now); returns whether it was inserted.
    async fn github_insert_link(&self, link: &GithubLink) -> Result<bool>;
    /// Replace a link's mutable fields.
    async fn github_update_link(&self, link: &GithubLink) -> Result<()>;
    async fn github_link(&self, task: TaskId) -> Result<Option<GithubLink>>;
    /// Links with work left whose time has come, oldest first; each returned link is leased
    /// to the caller for `lease_ms` (its `next_try_at` moved), so replicas do not both act.
    async fn github_take_due(&self, limit: u32, lease_ms: i64) -> Result<Vec<GithubLink>>;
    /// The pull request `number` of `repository`, if a task of agentpool's opened it or
    /// worked on it.
    async fn github_pr_tasks(&self, repository: &str, number: u64) -> Result<Option<PrTasks>>;
    /// The tasks started from issue or pull request `number` of `repository` (or working on
    /// that pull request) that are still queued or running and not being canceled, oldest
    /// first: what closing it stops.
    async fn github_unfinished_tasks(&self, repository: &str, number: u64) -> Result<Vec<TaskId>>;
    /// The status comment an earlier task made on issue or pull request `number`, to update
    /// instead of adding another.
    async fn github_comment_for(&self, repository: &str, number: u64) -> Result<Option<u64>>;
    /// Record that pull request `number` of `repository` was closed (or reopened), on every
    /// link of it; a link's later update keeps `closed` until a reopen. Returns how many
    /// links it changed.
    async fn github_set_pr_closed(&self, repository: &str, number: u64, closed: bool) -> Result<u64>;
    /// Record the pull request in the task's result (`pull_request`, `pr_url`).
    async fn github_set_pull_request(&self, task: TaskId, pr: &PullRequestRef) -> Result<()>;
}
