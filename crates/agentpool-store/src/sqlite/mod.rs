//! The SQLite store: one file in WAL mode (or memory for tests), one writer connection so that
//! writes never fight over the database lock inside the process, readers alongside. Claims run
//! in `BEGIN IMMEDIATE` transactions; the work signal is in-process.
//!
//! What only SQLite does is in [`queue`] (enqueue, claim, heartbeat, complete, events, purge);
//! everything else is the shared SQL of [`crate::shared`], instantiated in [`registry`] and
//! [`tasks`].

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{ClaimedTask, FailOutcome, HeartbeatReply};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{
    Event, Lease, NewEvent, Project, Task, TaskId, TaskResult, TaskSpec, TaskState, Worker, WorkerId,
};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use crate::common::{self, Ending, LifecycleLog, StoreRow, corrupt, dur_ms, json, ts};
use crate::{
    ClaimFilter, ClaimWaiter, Enqueued, Failure, Result, Store, StoreConfig, StoreError, TaskDetail,
    TaskFilter, TokenRecord, WorkListener, WorkSignal,
};

mod github;
mod pool;
mod queue;

/// Workers, projects, credentials and tokens.
mod registry {
    crate::shared::registry::registry_queries!(sqlx::Sqlite);
}

/// Task queries shared with PostgreSQL.
mod tasks {
    use super::{FOR_UPDATE, FOR_UPDATE_SKIP_LOCKED, ids_param, in_ids, insert_lifecycle, tid};
    crate::shared::tasks::task_queries!(sqlx::Sqlite);
}

/// No row locks: every write runs in a `BEGIN IMMEDIATE` transaction on the one writer.
const FOR_UPDATE: &str = "";
const FOR_UPDATE_SKIP_LOCKED: &str = "";

/// A task id as SQLite stores it.
fn tid(id: TaskId) -> String {
    id.to_string()
}

/// A list of task ids, bound as one JSON array and read back with [`in_ids`].
fn ids_param(ids: &[TaskId]) -> Result<String> {
    json(&ids)
}

fn in_ids(n: usize) -> String {
    format!("SELECT value FROM json_each(${n})")
}

/// Append `log`'s lifecycle events with one statement (a JSON array of `[task, data]` pairs
/// unpacked by `json_each`, in order, so the batch size is not bounded by bind limits).
async fn insert_lifecycle(conn: &mut SqliteConnection, log: &LifecycleLog, now: i64) -> Result<()> {
    if log.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(String, &str)> = log
        .tasks
        .iter()
        .zip(&log.data)
        .map(|(t, d)| (t.to_string(), d.as_str()))
        .collect();
    sqlx::query(
        "INSERT INTO events (task_id, at, kind, data) \
         SELECT json_extract(value, '$[0]'), $1, 'lifecycle', json_extract(value, '$[1]') \
         FROM json_each($2) ORDER BY key",
    )
    .bind(now)
    .bind(json(&pairs)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The only connection that writes (see [`pool`]).
    writer: SqlitePool,
    reader: SqlitePool,
    config: StoreConfig,
    signal: WorkSignal,
}

impl SqliteStore {
    /// Open (creating if missing) the database at `url` (`sqlite:PATH`, `sqlite://PATH` or
    /// `sqlite::memory:`) and apply migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, StoreConfig::default()).await
    }

    pub async fn open_with(url: &str, config: StoreConfig) -> Result<Self> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Self::memory_with(config).await;
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        let writer = pool::writer(opts.clone()).await?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        let reader = pool::readers(opts).await?;
        Ok(Self {
            writer,
            reader,
            config,
            signal: WorkSignal::new(),
        })
    }

    /// A private in-memory database (tests). One connection serves reads and writes, since each
    /// connection to `:memory:` would see its own empty database.
    pub async fn memory() -> Result<Self> {
        Self::memory_with(StoreConfig::default()).await
    }

    pub async fn memory_with(config: StoreConfig) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = pool::memory(opts).await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            config,
            signal: WorkSignal::new(),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn now(&self) -> i64 {
        self.config.clock.now_ms()
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Wake claimers now, and again when these run_after times come due.
    fn wake_at(&self, run_after: impl IntoIterator<Item = i64>) {
        self.signal
            .notify_at(&self.config.clock, run_after, |_| crate::futures_like::ready());
    }
}

impl StoreRow for SqliteRow {
    fn task_id(&self, col: &str) -> Result<TaskId> {
        let s: String = self.try_get(col)?;
        s.parse().map_err(|e| corrupt("task id", e))
    }

    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }

    common::plain_row_reads!();
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(&self, spec: TaskSpec) -> Result<Enqueued> {
        let mut v = self.enqueue_batch(vec![spec]).await?;
        v.pop()
            .ok_or_else(|| StoreError::Corrupt("enqueue returned nothing".into()))
    }

    async fn enqueue_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        self.enqueue_many(specs).await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskDetail>> {
        tasks::get_task(&self.reader, id, self.now()).await
    }

    async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        self.list(f).await
    }

    async fn count_by_state(&self) -> Result<BTreeMap<TaskState, u64>> {
        tasks::count_by_state(&self.reader).await
    }

    async fn cancel(&self, id: TaskId) -> Result<Task> {
        let mut tx = self.begin().await?;
        let t = tasks::cancel(&mut tx, id, self.now()).await?;
        tx.commit().await?;
        Ok(t)
    }

    async fn retry(&self, id: TaskId) -> Result<Task> {
        let mut tx = self.begin().await?;
        let t = tasks::retry(&mut tx, id, self.now()).await?;
        tx.commit().await?;
        self.signal.notify();
        Ok(t)
    }

    async fn claim(&self, f: &ClaimFilter) -> Result<Vec<ClaimedTask>> {
        let mut claimed = self.claim_in_order(f).await?;
        tasks::resume_sessions(&self.reader, &mut claimed).await?;
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        worker: &WorkerId,
        leases: &[Lease],
        lease_ttl: Duration,
    ) -> Result<HeartbeatReply> {
        self.beat(worker, leases, lease_ttl).await
    }

    async fn complete(&self, worker: &WorkerId, lease: Lease, result: TaskResult) -> Result<()> {
        let mut v = self.complete_batch(worker, vec![(lease, result)]).await?;
        v.pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("complete returned nothing".into())))
    }

    async fn complete_batch(
        &self,
        worker: &WorkerId,
        items: Vec<(Lease, TaskResult)>,
    ) -> Result<Vec<Result<()>>> {
        self.complete_many(worker, items).await
    }

    async fn fail(&self, worker: &WorkerId, lease: Lease, failure: Failure) -> Result<FailOutcome> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let f = tasks::fail(&mut tx, worker, lease, &failure, &self.config.retry, now).await?;
        tx.commit().await?;
        if f.wake {
            self.signal.notify();
        }
        Ok(match f.ending {
            Ending::Requeue { delay, .. } => {
                let run_after = now + dur_ms(delay);
                self.wake_at([run_after]);
                FailOutcome::Retrying {
                    run_after: ts(run_after),
                    attempt: u32::try_from(f.attempt).unwrap_or(0),
                }
            }
            Ending::Finish { state, .. } => FailOutcome::Finished { state },
        })
    }

    async fn append_events(&self, task: TaskId, lease: Option<Lease>, events: Vec<NewEvent>) -> Result<()> {
        self.append(task, lease, events).await
    }

    async fn list_events(&self, task: TaskId, after: i64, limit: u32) -> Result<Vec<Event>> {
        tasks::list_events(&self.reader, task, after, limit).await
    }

    async fn register_worker(&self, reg: WorkerRegistration) -> Result<Worker> {
        if let Some(id) = reg.id.as_ref().filter(|_| reg.fresh_start) {
            loop {
                let mut tx = self.begin().await?;
                let (n, wake) =
                    tasks::rescue_batch(&mut tx, &self.config.retry, self.now(), Some(id)).await?;
                tx.commit().await?;
                if wake {
                    self.signal
                        .notify_n(&crate::Scope::Any, u32::try_from(n).unwrap_or(u32::MAX));
                }
                if (n as i64) < common::EXPIRE_BATCH {
                    break;
                }
            }
        }
        registry::register_worker(&self.writer, &self.reader, reg, self.now()).await
    }

    async fn get_worker(&self, id: &WorkerId) -> Result<Option<Worker>> {
        registry::get_worker(&self.reader, id).await
    }

    async fn list_workers(&self) -> Result<Vec<Worker>> {
        registry::list_workers(&self.reader).await
    }

    async fn drain_worker(&self, id: &WorkerId) -> Result<Worker> {
        registry::drain_worker(&self.writer, &self.reader, id).await
    }

    async fn report_worker_cache(&self, id: &WorkerId, cache: &agentpool_core::CacheStats) -> Result<()> {
        registry::report_worker_cache(&self.writer, id, cache).await
    }

    async fn mark_worker_unhealthy(&self, id: &WorkerId) -> Result<()> {
        registry::mark_worker_unhealthy(&self.writer, id).await
    }

    async fn deregister_worker(&self, id: &WorkerId) -> Result<()> {
        let mut tx = self.begin().await?;
        registry::deregister_worker(&mut tx, id, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_project(&self, spec: ProjectSpec) -> Result<Project> {
        let p = registry::put_project(&self.writer, spec, self.now()).await?;
        self.signal.notify();
        Ok(p)
    }

    async fn get_project(&self, name: &str) -> Result<Option<Project>> {
        registry::get_project(&self.reader, name).await
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        registry::list_projects(&self.reader).await
    }

    async fn delete_project(&self, name: &str) -> Result<()> {
        registry::delete_project(&self.writer, name).await
    }

    async fn put_credential(&self, name: &str, ciphertext: Vec<u8>) -> Result<()> {
        registry::put_credential(&self.writer, name, ciphertext, self.now()).await
    }

    async fn get_credential(&self, name: &str) -> Result<Option<Vec<u8>>> {
        registry::get_credential(&self.reader, name).await
    }

    async fn list_credentials(&self) -> Result<Vec<String>> {
        registry::list_credentials(&self.reader).await
    }

    async fn delete_credential(&self, name: &str) -> Result<()> {
        registry::delete_credential(&self.writer, name).await
    }

    async fn put_profile(&self, p: &agentpool_core::Profile) -> Result<()> {
        registry::put_profile(&self.writer, p, self.now()).await
    }

    async fn get_profile(&self, name: &str) -> Result<Option<agentpool_core::Profile>> {
        registry::get_profile(&self.reader, name).await
    }

    async fn list_profiles(&self) -> Result<Vec<agentpool_core::Profile>> {
        registry::list_profiles(&self.reader).await
    }

    async fn delete_profile(&self, name: &str) -> Result<()> {
        registry::delete_profile(&self.writer, name).await
    }

    async fn create_token(&self, t: TokenRecord) -> Result<()> {
        registry::create_token(&self.writer, t).await
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        registry::find_token(&self.reader, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        registry::list_tokens(&self.reader).await
    }

    async fn revoke_token(&self, id: &str) -> Result<()> {
        registry::revoke_token(&self.writer, id).await
    }

    async fn mark_workers_offline(&self, threshold: Duration) -> Result<u64> {
        registry::mark_workers_offline(&self.writer, threshold, self.now()).await
    }

    async fn requeue_expired(&self) -> Result<u64> {
        let now = self.now();
        let mut total = 0;
        // In batches, each its own short transaction, until none is left: one pass rescues
        // every expired lease without holding the writer for long.
        loop {
            let mut tx = self.begin().await?;
            let (n, wake) = tasks::rescue_batch(&mut tx, &self.config.retry, now, None).await?;
            tx.commit().await?;
            if wake {
                self.signal
                    .notify_n(&crate::Scope::Any, u32::try_from(n).unwrap_or(u32::MAX));
            }
            total += n as u64;
            if (n as i64) < common::EXPIRE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn purge_finished(&self, retention: Duration) -> Result<u64> {
        self.purge(retention).await
    }

    fn work_listener(&self) -> WorkListener {
        self.signal.listener()
    }

    fn claim_waiter(&self, filter: &ClaimFilter) -> ClaimWaiter {
        self.signal.waiter(filter)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
