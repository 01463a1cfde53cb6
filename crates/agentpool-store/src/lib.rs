//! The durable queue: one [`Store`] trait with a SQLite and a PostgreSQL implementation that
//! behave the same and pass the same test suite.
//!
//! Every state change goes through the pure transition functions of `agentpool_core::task`; the
//! store only persists what they decide, atomically, guarded by the lease token.
//!
//! Open one with [`open_store`] (`sqlite:PATH`, `sqlite::memory:` or `postgres://…`); migrations
//! from `migrations/{sqlite,postgres}/` are applied on open. Shape of the data, shared by both
//! backends:
//! - one `tasks` row per task, carrying the current attempt (worker, lease token, expiry) and
//!   the columns claims filter on (required agent, labels, project, branch lock key, number of
//!   unfinished dependencies). Claims walk partial indexes over queued rows only, so finished
//!   history does not slow them.
//! - `attempts` keeps attempts that ended other than in success (failed, expired, canceled);
//!   the running and the succeeded attempt are read from the task row. The hot path — claim
//!   and complete — therefore writes no row per task besides the task itself.
//! - tasks with a branch lock or a project ("constrained") are claimed in a serialized step;
//!   all others by one `UPDATE … SKIP LOCKED` statement (PostgreSQL) or inside one `BEGIN
//!   IMMEDIATE` transaction (SQLite).
//! - every state change appends its lifecycle event (`agentpool_core::Lifecycle`) to `events`
//!   in the same transaction, with one statement per batch; a task's record therefore ends
//!   with exactly one terminal event (succeeded, failed or canceled).
//! - backends share their SQL where it is the same (`shared/`); `sqlite/` and `postgres/`
//!   keep only what differs (enqueue, claim, heartbeat, complete, appends, listing, purge).
//! - timestamps are unix milliseconds from [`StoreConfig::clock`], never the database's clock.

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{ClaimedTask, FailOutcome, HeartbeatReply};
// Wire types the store returns; defined with the rest of the protocol in core.
pub use agentpool_core::protocol::{Enqueued, TaskDetail, WaitReason};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{
    ErrorClass, Event, Labels, Lease, NewEvent, Project, RetryPolicy, Task, TaskId, TaskResult, TaskSpec,
    TaskState, Timestamp, Worker, WorkerId,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

mod bell;
mod common;
mod dispatch;
pub mod github;
pub mod notifications;
pub mod postgres;
mod rows;
pub mod schedules;
mod schema;
mod shared;
pub mod sqlite;
mod unavailable;
mod views;

pub use bell::WorkerBell;
pub use dispatch::{ClaimWaiter, Wake};
pub(crate) use dispatch::{HandOff, Reservation, Scope, Shape};
pub use postgres::PgStore;
pub use schema::{Applied as SchemaChange, Migrated};
pub use sqlite::SqliteStore;
pub use views::{FinishedCount, QueuedShape, TaskFilter};

/// Errors a store returns. `StaleLease` is distinct because callers map it to HTTP 409 and
/// workers react to it by abandoning the task.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lease is stale: task {0} is no longer held with this token")]
    StaleLease(TaskId),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error(transparent)]
    Transition(#[from] agentpool_core::task::InvalidTransition),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database's schema is not one this build can migrate (newer, or from another build).
    #[error("{0}")]
    Schema(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// `what` (a kind of record: "task", "worker", …) named `id` does not exist.
    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The one outcome of a bulk action ([`Store::cancel_many`], [`Store::retry_many`]) on one
/// task: a single cancel or retry is that, so both take the same path.
pub fn only<T>(mut out: Vec<Result<T>>) -> Result<T> {
    out.pop().unwrap_or_else(|| {
        Err(StoreError::Corrupt(
            "a bulk action on one task gave no outcome".into(),
        ))
    })
}

/// What a worker asks for when it claims.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimFilter {
    pub worker_id: WorkerId,
    /// Agent names the worker can run (`command` included when it runs command tasks).
    pub agents: Vec<String>,
    /// The worker's labels; a task's labels must all be among them.
    pub labels: Labels,
    /// The projects the worker is limited to: only their tasks (empty: any task).
    pub projects: Vec<String>,
    pub max: u32,
    pub lease_ttl: Duration,
}

/// A failed attempt as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub result: Option<TaskResult>,
}

/// How long a task a worker gave back (an attempt that failed with `WORKER_ERROR` or
/// `INFRA_ERROR` and was handed back, or a lease it let expire) is left to the other workers
/// before that worker may claim it again: a cause its self-check cannot see would otherwise
/// fail the task on the same worker, which is also the one most likely to claim it first.
pub const GIVEN_BACK_GRACE: Duration = Duration::from_millis(common::GIVEN_BACK_GRACE_MS as u64);

/// A bearer token as stored: only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    /// SHA-256 of the token, hex.
    #[serde(skip_serializing)]
    pub hash: String,
    pub created_at: Timestamp,
    pub revoked: bool,
    /// The projects it is limited to; empty: every project.
    pub projects: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

/// A token as listed: all but its hash.
impl From<TokenRecord> for agentpool_core::protocol::TokenInfo {
    fn from(t: TokenRecord) -> Self {
        Self {
            id: t.id,
            name: t.name,
            role: t.role,
            created_at: t.created_at,
            revoked: t.revoked,
            projects: t.projects,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// Queue-wide settings a store is opened with.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub retry: RetryPolicy,
    /// Where the store reads "now" from. Every timestamp the store writes or compares comes from
    /// here (never from the database's clock), so tests can move time forward instead of sleeping.
    pub clock: Clock,
    /// PostgreSQL pool size (default 16), for each of the store's two pools: the worker hot
    /// path (claims, completions, heartbeats, event appends) and everything else. Connections
    /// open on demand. One more connection is held by the work-signal listener. SQLite ignores
    /// it (one writer, four readers).
    pub max_connections: Option<u32>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            clock: Clock::system(),
            max_connections: None,
        }
    }
}

/// The store's clock: the system clock plus an offset that only tests move (to expire leases or
/// pass a retention period without waiting).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// Now, in unix milliseconds (the unit every timestamp column uses).
    pub fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn now(&self) -> Timestamp {
        common::ts(self.now_ms())
    }

    /// Move this clock (and every store sharing it) forward.
    pub fn advance(&self, d: Duration) {
        self.offset_ms.fetch_add(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4),
            Ordering::Relaxed,
        );
    }
}

/// A subscription to the "work may be available" signal. Take it *before* claiming: a signal
/// sent between an empty claim and [`WorkListener::wait`] is then not lost.
#[derive(Debug)]
pub struct WorkListener {
    rx: watch::Receiver<u64>,
}

impl WorkListener {
    /// Resolve when work was signalled since this listener was created (or since the last
    /// `wait` returned), or after `timeout`. Returns whether a signal arrived.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.rx.changed()).await, Ok(Ok(())))
    }
}

/// The sending side of the work signal, shared by a store and its background listener: a
/// broadcast to observers ([`WorkListener`]) and wake-ups for waiting claimers, one per new
/// task and class of claimers that could run it ([`ClaimWaiter`]).
#[derive(Debug, Clone)]
pub(crate) struct WorkSignal {
    tx: Arc<watch::Sender<u64>>,
    dispatch: dispatch::Dispatch,
    /// Rung when a worker has something to be told (see [`WorkerBell`]).
    pub(crate) bells: bell::Bells,
}

impl WorkSignal {
    pub(crate) fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(0).0),
            dispatch: dispatch::Dispatch::default(),
            bells: bell::Bells::default(),
        }
    }

    /// Work of unknown shape may be available (re-queued, unblocked, released): one wake-up
    /// per class of waiting claimers; a claim that comes back full passes it on.
    pub(crate) fn notify(&self) {
        self.notify_n(&Scope::Any, 1);
    }

    /// `count` tasks of `scope`'s shapes became claimable.
    pub(crate) fn notify_n(&self, scope: &Scope, count: u32) {
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
        self.dispatch.wake(scope, count);
    }

    /// Signal again when each of `run_after` (unix ms, store clock) comes due, so a delayed
    /// task or a retry after backoff wakes waiting claimers instead of waiting for their next
    /// poll. `also` runs at that moment too, with the number of tasks due (PostgreSQL uses it
    /// to NOTIFY other replicas).
    pub(crate) fn notify_at(
        &self,
        clock: &Clock,
        run_after: impl IntoIterator<Item = i64>,
        also: impl Fn(u32) -> futures_like::BoxFuture + Send + Sync + 'static,
    ) {
        let now = clock.now_ms();
        let mut due: BTreeMap<i64, u32> = BTreeMap::new();
        for t in run_after.into_iter().filter(|t| *t > now) {
            *due.entry(t).or_default() += 1;
        }
        if due.is_empty() {
            return;
        }
        let also = Arc::new(also);
        // Bound the timers one call can start; the last one wakes for all later tasks too
        // (claims that come back full pass the wake-ups on).
        let n = due.len();
        let mut timers: Vec<(i64, u32)> = due.into_iter().collect();
        if n > 16 {
            let rest: u32 = timers[15..].iter().map(|(_, c)| *c).sum();
            timers.truncate(16);
            timers[15].1 = rest;
        }
        for (t, count) in timers {
            let me = self.clone();
            let also = also.clone();
            let wait = Duration::from_millis(u64::try_from(t - now).unwrap_or(0));
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                me.notify_n(&Scope::Any, count);
                also(count).await;
            });
        }
    }

    pub(crate) fn listener(&self) -> WorkListener {
        WorkListener {
            rx: self.tx.subscribe(),
        }
    }

    /// A waiter for claimer `f`; tasks handed to it and never taken go back through
    /// `returner` (its store).
    pub(crate) fn waiter(&self, f: &ClaimFilter, returner: dispatch::Returner) -> ClaimWaiter {
        let to = HandOff {
            worker: f.worker_id.clone(),
            lease_ttl: f.lease_ttl,
        };
        self.dispatch
            .waiter(&f.agents, &f.labels, &f.projects, to, returner)
    }

    pub(crate) fn parked(&self) -> usize {
        self.dispatch.parked()
    }

    /// The hand-over registry (see [`dispatch`]).
    pub(crate) fn dispatch(&self) -> &dispatch::Dispatch {
        &self.dispatch
    }
}

/// The scope of a wake-up for newly enqueued queued tasks (spec, `run_after` in unix ms):
/// their shapes, de-duplicated, and how many of them may be claimable now (not delayed; one
/// whose dependencies are not done yet costs a spurious wake-up, cheaper than finding out).
pub(crate) fn enqueued_scope<'a>(
    queued: impl IntoIterator<Item = (&'a TaskSpec, i64)>,
    now_ms: i64,
) -> (Scope, u32) {
    let mut shapes: Vec<Shape> = Vec::new();
    let mut n = 0u32;
    for (spec, run_after) in queued {
        if run_after > now_ms {
            continue;
        }
        n = n.saturating_add(1);
        let s = Shape::of(spec);
        if !shapes.contains(&s) {
            shapes.push(s);
        }
    }
    (Scope::Shapes(shapes), n)
}

/// A boxed future without pulling in the `futures` crate for one type.
pub(crate) mod futures_like {
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

    pub fn ready() -> BoxFuture {
        Box::pin(async {})
    }
}

/// Open a store from a URL: `sqlite:PATH`, `sqlite://PATH`, `sqlite::memory:`, or
/// `postgres://…` / `postgresql://…`. Migrations are applied.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>> {
    open_store_with(url, StoreConfig::default()).await
}

/// Apply the schema migrations the database at `url` lacks (creating the schema of a new
/// one), and say what was done; nothing else of a store is opened.
pub async fn migrate(url: &str) -> Result<Migrated> {
    let (change, migrator) = if is_postgres_url(url) {
        (PgStore::migrate(url).await?, &schema::POSTGRES)
    } else if url.starts_with("sqlite:") {
        (SqliteStore::migrate(url).await?, &schema::SQLITE)
    } else {
        return Err(StoreError::Invalid(
            "database URL must start with sqlite: or postgres://".into(),
        ));
    };
    Ok(Migrated {
        change,
        version: migrator.iter().map(|m| m.version).max().unwrap_or(0),
    })
}

/// Whether `url` is of a kind [`open_store`] opens (`sqlite:…`, `postgres://…`), before
/// anything is connected to.
pub fn is_database_url(url: &str) -> bool {
    is_postgres_url(url) || url.starts_with("sqlite:")
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// [`open_store`] with explicit settings.
pub async fn open_store_with(url: &str, config: StoreConfig) -> Result<Arc<dyn Store>> {
    if is_postgres_url(url) {
        Ok(Arc::new(PgStore::open_with(url, config).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open_with(url, config).await?))
    } else {
        Err(StoreError::Invalid(
            "database URL must start with sqlite: or postgres://".into(),
        ))
    }
}

/// The durable queue. Implementations: [`sqlite::SqliteStore`], [`postgres::PgStore`].
#[async_trait]
pub trait Store:
    github::GithubStore + schedules::ScheduleStore + notifications::NotificationStore + Send + Sync + 'static
{
    // ---- tasks ----
    /// Enqueue one task. Dependencies must exist (so cycles cannot be formed); an idempotency
    /// key already used in the task's project (or, for a task of no project, by another task of
    /// none) returns the earlier task with `created: false`.
    async fn enqueue(&self, spec: TaskSpec) -> Result<Enqueued>;
    /// Enqueue many tasks in one transaction: all or none.
    async fn enqueue_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>>;
    /// The task with its attempts and, while queued, why it waits.
    async fn get_task(&self, id: TaskId) -> Result<Option<TaskDetail>>;
    /// The task's row alone: one indexed read, for callers that need neither its attempts nor
    /// why it waits (does it exist, has it finished, what did it ask for).
    async fn find_task(&self, id: TaskId) -> Result<Option<Task>>;
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>>;
    /// The queued tasks a worker offering every agent and label could claim now, at most
    /// `limit` (those without a branch or project first, each kind in claim order): due, no
    /// dependency pending, their branch free and their project's slots and daily budget not
    /// used up — each branch and each free slot counted once, as one claim would take them.
    /// Of the projects `projects` only, when given. What an autoscaler sizes a pool from: a
    /// task held back gains nothing from another worker.
    async fn runnable_now(&self, projects: Option<&[String]>, limit: u32) -> Result<Vec<TaskId>>;
    /// The queued tasks, at most `limit` of them in no set order, with only what a pool is
    /// matched on (labels, agent, project, when due): what queue statistics count, read without the
    /// tasks' specs or the finished history. Of the projects `projects` only, when given.
    async fn queued_shapes(&self, projects: Option<&[String]>, limit: u32) -> Result<Vec<QueuedShape>>;
    async fn count_by_state(&self) -> Result<BTreeMap<TaskState, u64>>;
    /// [`Store::count_by_state`] of the tasks of these projects only.
    async fn count_by_state_of(&self, projects: &[String]) -> Result<BTreeMap<TaskState, u64>>;
    /// The tasks that ended at or after `since`, counted by state in intervals of `step` from
    /// it (what a throughput chart draws), exactly, on the index of end times. Of the projects
    /// `projects` only, when given.
    async fn count_finished(
        &self,
        since: Timestamp,
        step: Duration,
        projects: Option<&[String]>,
    ) -> Result<Vec<FinishedCount>>;
    /// Cancel: a queued task is canceled at once; a running one is flagged and its worker's
    /// bell rung (see [`Store::worker_bell`]).
    async fn cancel(&self, id: TaskId) -> Result<Task> {
        self.cancel_by(id, None, None).await
    }
    /// [`Store::cancel`] for `by` (who asks, in words) and, when given, `reason` (why), which
    /// the task's message and events record.
    async fn cancel_by(&self, id: TaskId, by: Option<&str>, reason: Option<&str>) -> Result<Task> {
        only(self.cancel_many(&[id], by, reason).await?)
    }
    /// Re-queue a failed or canceled task with a fresh attempt budget, and with it the
    /// dependents that failed only because it did (`DEPENDENCY_FAILED`), transitively.
    async fn retry(&self, id: TaskId) -> Result<Task> {
        Ok(self.retry_with_dependents(id).await?.0)
    }
    /// [`Store::retry`], also returning the dependents it re-queued (in the order it did).
    async fn retry_with_dependents(&self, id: TaskId) -> Result<(Task, Vec<TaskId>)> {
        only(self.retry_many(&[id]).await?)
    }
    /// [`Store::cancel_by`] on each of `ids`, in one transaction (rows locked in id order, so
    /// two bulk actions never wait on each other in a cycle). Per id, in the order given: the
    /// task as the cancel left it, or why it was passed over (`NotFound`, `Conflict`,
    /// `Transition`). Any other error undoes them all.
    async fn cancel_many(
        &self,
        ids: &[TaskId],
        by: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Vec<Result<Task>>>;
    /// [`Store::retry_with_dependents`] on each of `ids`, as [`Store::cancel_many`] cancels.
    async fn retry_many(&self, ids: &[TaskId]) -> Result<Vec<Result<(Task, Vec<TaskId>)>>>;

    // ---- worker protocol ----
    /// Claim up to `filter.max` runnable tasks atomically (priority, then FIFO).
    async fn claim(&self, filter: &ClaimFilter) -> Result<Vec<ClaimedTask>>;
    /// Extend the worker's leases; reports cancel requests and leases it no longer holds.
    async fn heartbeat(
        &self,
        worker: &WorkerId,
        leases: &[Lease],
        lease_ttl: Duration,
    ) -> Result<HeartbeatReply>;
    /// Mark the attempt succeeded. `StaleLease` if the token is not the task's current one.
    async fn complete(&self, worker: &WorkerId, lease: Lease, result: TaskResult) -> Result<()>;
    /// Complete many attempts in one statement; one result per input, in order.
    async fn complete_batch(
        &self,
        worker: &WorkerId,
        items: Vec<(Lease, TaskResult)>,
    ) -> Result<Vec<Result<()>>>;
    /// Record a failed attempt: retried with backoff or finished, per the error class.
    async fn fail(&self, worker: &WorkerId, lease: Lease, failure: Failure) -> Result<FailOutcome>;

    // ---- events ----
    /// Append events; with a lease, refused (`StaleLease`) unless it is current.
    async fn append_events(&self, task: TaskId, lease: Option<Lease>, events: Vec<NewEvent>) -> Result<()>;
    /// Events with `seq > after`, in order.
    async fn list_events(&self, task: TaskId, after: i64, limit: u32) -> Result<Vec<Event>>;

    // ---- workers ----
    async fn register_worker(&self, reg: WorkerRegistration) -> Result<Worker>;
    async fn get_worker(&self, id: &WorkerId) -> Result<Option<Worker>>;
    async fn list_workers(&self) -> Result<Vec<Worker>>;
    async fn drain_worker(&self, id: &WorkerId) -> Result<Worker>;
    /// The worker says it cannot start git or its agents: it claims nothing until it
    /// registers again. A draining worker stays draining. `message` (why) is kept until then;
    /// without one, the one it gave before stays.
    async fn mark_worker_unhealthy(&self, id: &WorkerId, message: Option<&str>) -> Result<()>;
    /// What an idle or busy worker says of itself: which agent it no longer runs, and why.
    /// Kept until it registers again; a worker in another state keeps what it said before.
    async fn note_worker(&self, id: &WorkerId, message: &str) -> Result<()>;
    /// Keep the worker's latest mirror-cache report (it sends one when the cache changed).
    async fn report_worker_cache(&self, id: &WorkerId, cache: &agentpool_core::CacheStats) -> Result<()>;
    async fn deregister_worker(&self, id: &WorkerId) -> Result<()>;

    // ---- projects, credentials, tokens ----
    async fn put_project(&self, spec: ProjectSpec) -> Result<Project>;
    async fn get_project(&self, name: &str) -> Result<Option<Project>>;
    async fn list_projects(&self) -> Result<Vec<Project>>;
    async fn delete_project(&self, name: &str) -> Result<()>;
    /// Store an encrypted credential (the store never sees plaintext).
    async fn put_credential(&self, name: &str, ciphertext: Vec<u8>) -> Result<()>;
    async fn get_credential(&self, name: &str) -> Result<Option<Vec<u8>>>;
    async fn list_credentials(&self) -> Result<Vec<String>>;
    async fn delete_credential(&self, name: &str) -> Result<()>;
    /// Create or replace an agent profile (validated by the caller).
    async fn put_profile(&self, profile: &agentpool_core::Profile) -> Result<()>;
    async fn get_profile(&self, name: &str) -> Result<Option<agentpool_core::Profile>>;
    async fn list_profiles(&self) -> Result<Vec<agentpool_core::Profile>>;
    async fn delete_profile(&self, name: &str) -> Result<()>;
    async fn create_token(&self, token: TokenRecord) -> Result<()>;
    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Make a token stop working at `at`, unless it stops earlier already.
    async fn expire_token(&self, id: &str, at: Timestamp) -> Result<()>;
    /// Note that a token was used `at`, unless a use since `since` is noted already.
    async fn touch_token(&self, id: &str, at: Timestamp, since: Timestamp) -> Result<()>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn revoke_token(&self, id: &str) -> Result<()>;

    // ---- maintenance ----
    /// Workers whose last heartbeat is older than `threshold` go offline.
    async fn mark_workers_offline(&self, threshold: Duration) -> Result<u64>;
    /// Delete the workers offline for longer than `after` (their last heartbeat is older) that
    /// hold no running task. Workers that come and go under new ids (autoscaled hosts, `up`
    /// restarts) would otherwise fill the worker list forever; one that returns under its old
    /// id is told it is unknown and registers again.
    async fn forget_offline_workers(&self, after: Duration) -> Result<u64>;
    /// Every attempt whose lease expired is closed as `expired` and its task re-queued (or
    /// failed when out of attempts), in batches of short transactions until none is left.
    /// Writes `lease_expired` then `retry_scheduled` or `failed` for each.
    async fn requeue_expired(&self) -> Result<u64>;
    /// Delete finished tasks (and their attempts and events) finished before `now - retention`.
    async fn purge_finished(&self, retention: Duration) -> Result<u64>;

    // ---- signal ----
    /// Resolve when work may have become available (a task enqueued, re-queued or unblocked),
    /// or after `timeout`. Spurious wake-ups are allowed; callers claim and wait again.
    /// Prefer [`Store::work_listener`] taken before the claim, which cannot miss a signal.
    async fn wait_for_work(&self, timeout: Duration) {
        self.work_listener().wait(timeout).await;
    }

    /// Subscribe to the work signal (see [`WorkListener`]): every signal reaches every
    /// listener. For observers (live views); claimers wait with [`Store::claim_waiter`].
    fn work_listener(&self) -> WorkListener;

    /// Register a claimer that waits for work it can run (see [`ClaimWaiter`]): a new task
    /// wakes one waiting claimer per class of claimers (same agents and labels) that could
    /// run it, not all of them. Create it *before* the claim that came back empty.
    fn claim_waiter(&self, filter: &ClaimFilter) -> ClaimWaiter;

    /// Subscribe to the worker bell: rung after a cancel of a task a worker runs, or a drain
    /// asked of a worker, is committed — here or on another replica. A waiting heartbeat uses
    /// it to answer at once.
    fn worker_bell(&self) -> WorkerBell;

    /// How many claimers of this store wait parked right now, ready to be handed a new task
    /// (see [`ClaimWaiter::wait`]).
    fn parked_claimers(&self) -> usize;

    /// Now, by the store's clock: the time every timestamp it writes is taken from, which
    /// tests move forward (see [`Clock`]).
    fn time(&self) -> Timestamp;

    /// Can the database be reached?
    async fn ping(&self) -> Result<()>;

    /// Close the store's SQLite connections and wait until they are closed, so that the last
    /// one closed checkpoints the write-ahead log into the database file (dropping a store
    /// closes them in the background, which a process that exits next does not wait for).
    /// Nothing to do on PostgreSQL. The store takes no more calls after it.
    async fn close(&self);
}
