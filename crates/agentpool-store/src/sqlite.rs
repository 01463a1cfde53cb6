//! The SQLite store: one file in WAL mode (or memory for tests), one writer connection so that
//! writes never fight over the database lock inside the process, readers alongside. Claims run
//! in `BEGIN IMMEDIATE` transactions; the work signal is in-process.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{ClaimedTask, FailOutcome, HeartbeatReply};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{
    Attempt, ErrorClass, Event, Lease, Lifecycle, NewEvent, Project, Task, TaskId, TaskResult, TaskSpec,
    TaskState, Worker, WorkerId,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::common::{
    self, Candidate, Ending, HELD_COLS, Held, LifecycleLog, NewTaskRow, StoreRow, corrupt, dur_ms, held,
    json, project_row, task, token_row, ts, worker_row,
};
use crate::{
    ClaimFilter, Enqueued, Failure, Result, Store, StoreConfig, StoreError, TaskDetail, TaskFilter,
    TokenRecord, WaitReason, WorkListener, WorkSignal,
};

const TASK_COLS: &str = "id, spec, state, attempts, max_attempts, priority, created_at, \
    updated_at, run_after, started_at, finished_at, worker_id, lease_token, lease_expires_at, \
    cancel_requested, error_class, error_message, result";

/// How many finished tasks one purge statement deletes, so a large purge does not hold the
/// writer for long.
const PURGE_BATCH: i64 = 2000;

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The only connection that writes: SQLite allows one writer at a time, and queuing in the
    /// pool is cheaper and fairer than retrying on SQLITE_BUSY.
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(60))
            .test_before_acquire(false)
            .connect_with(opts.read_only(true))
            .await?;
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
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(60))
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
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

/// What ending an attempt changed that the caller must act on after commit.
#[derive(Default)]
struct Ended {
    /// A branch lock or project slot was freed, or a dependency succeeded: wake claimers.
    wake: bool,
}

async fn insert_attempt(
    tx: &mut Transaction<'static, Sqlite>,
    h: &Held,
    now: i64,
    outcome: agentpool_core::AttemptOutcome,
    class: Option<ErrorClass>,
    message: Option<&str>,
) -> Result<()> {
    // The first recorded end of an attempt wins, as on PostgreSQL.
    sqlx::query(
        "INSERT INTO attempts (task_id, lease_token, number, worker_id, started_at, \
         ended_at, outcome, error_class, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (task_id, lease_token) DO NOTHING",
    )
    .bind(h.id.to_string())
    .bind(h.token)
    .bind(h.attempts)
    .bind(&h.worker_id)
    .bind(h.started_at)
    .bind(now)
    .bind(outcome.as_str())
    .bind(class.map(|c| c.as_str()))
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Append `log`'s lifecycle events with one statement (a JSON array of `[task, data]` pairs
/// unpacked by `json_each`, in order, so the batch size is not bounded by bind limits).
async fn insert_lifecycle(tx: &mut Transaction<'static, Sqlite>, log: &LifecycleLog, now: i64) -> Result<()> {
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
         SELECT json_extract(value, '$[0]'), ?, 'lifecycle', json_extract(value, '$[1]') \
         FROM json_each(?) ORDER BY key",
    )
    .bind(now)
    .bind(json(&pairs)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Fail every queued dependent of `failed` (transitively) with `DEPENDENCY_FAILED`.
async fn cascade_failure(
    tx: &mut Transaction<'static, Sqlite>,
    failed: Vec<TaskId>,
    now: i64,
    log: &mut LifecycleLog,
) -> Result<()> {
    let mut frontier = failed;
    while !frontier.is_empty() {
        let ids = json(&frontier)?;
        let rows = sqlx::query(
            "UPDATE tasks SET state = 'failed', error_class = ?, error_message = ?, \
             finished_at = ?, updated_at = ? \
             WHERE state = 'queued' AND id IN \
               (SELECT task_id FROM task_deps WHERE dep_id IN (SELECT value FROM json_each(?))) \
             RETURNING id, has_dependents",
        )
        .bind(ErrorClass::DependencyFailed.as_str())
        .bind(common::DEPENDENCY_FAILED_MSG)
        .bind(now)
        .bind(now)
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?;
        frontier = Vec::new();
        for r in rows {
            let id = r.task_id("id")?;
            log.push(id, common::dependency_failed())?;
            if r.try_get::<bool, _>("has_dependents")? {
                frontier.push(id);
            }
        }
    }
    Ok(())
}

/// One fewer pending dependency for every dependent of the tasks that just succeeded.
async fn release_dependents(
    tx: &mut Transaction<'static, Sqlite>,
    succeeded: &[TaskId],
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET deps_pending = tasks.deps_pending - d.n, updated_at = ? \
         FROM (SELECT task_id, count(*) AS n FROM task_deps \
               WHERE dep_id IN (SELECT value FROM json_each(?)) GROUP BY task_id) AS d \
         WHERE tasks.id = d.task_id",
    )
    .bind(now)
    .bind(json(&succeeded)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Persist the end of a failed or expired attempt as `ending` says; its lifecycle events go to
/// `log`.
#[allow(clippy::too_many_arguments)]
async fn end_attempt(
    tx: &mut Transaction<'static, Sqlite>,
    h: &Held,
    now: i64,
    ending: &Ending,
    class: ErrorClass,
    message: &str,
    result: Option<&TaskResult>,
    log: &mut LifecycleLog,
) -> Result<Ended> {
    log.push(
        h.id,
        common::ending_event(ending, h.attempts, now, class, message),
    )?;
    let result = result.map(json).transpose()?;
    let outcome = common::attempt_outcome(ending, class);
    let mut ended = Ended { wake: h.constrained };
    match ending {
        Ending::Requeue { delay } => {
            sqlx::query(
                "UPDATE tasks SET state = 'queued', run_after = ?, updated_at = ?, \
                 worker_id = NULL, lease_expires_at = NULL, cancel_requested = 0, \
                 error_class = ?, error_message = ?, result = COALESCE(?, result) \
                 WHERE id = ? AND lease_token = ?",
            )
            .bind(now + dur_ms(*delay))
            .bind(now)
            .bind(class.as_str())
            .bind(message)
            .bind(result)
            .bind(h.id.to_string())
            .bind(h.token)
            .execute(&mut **tx)
            .await?;
            insert_attempt(tx, h, now, outcome, Some(class), Some(message)).await?;
        }
        Ending::Finish { state, class } => {
            sqlx::query(
                "UPDATE tasks SET state = ?, finished_at = ?, updated_at = ?, \
                 lease_expires_at = NULL, error_class = ?, error_message = ?, \
                 result = COALESCE(?, result) WHERE id = ? AND lease_token = ?",
            )
            .bind(state.as_str())
            .bind(now)
            .bind(now)
            .bind(class.as_str())
            .bind(message)
            .bind(result)
            .bind(h.id.to_string())
            .bind(h.token)
            .execute(&mut **tx)
            .await?;
            insert_attempt(tx, h, now, outcome, Some(*class), Some(message)).await?;
            if h.has_dependents {
                cascade_failure(tx, vec![h.id], now, log).await?;
            }
        }
    }
    if matches!(ending, Ending::Requeue { delay } if delay.is_zero()) {
        ended.wake = true;
    }
    Ok(ended)
}

impl SqliteStore {
    async fn enqueue_in(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        spec: TaskSpec,
        now: i64,
        log: &mut LifecycleLog,
    ) -> Result<Enqueued> {
        if let Some(key) = &spec.idempotency_key {
            let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE idempotency_key = ?");
            if let Some(r) = sqlx::query(&sql).bind(key).fetch_optional(&mut **tx).await? {
                return Ok(Enqueued {
                    task: task(&r)?,
                    created: false,
                });
            }
        }
        let mut pending = 0i64;
        let mut dep_failed = false;
        for dep in &spec.depends_on {
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?")
                .bind(dep.to_string())
                .fetch_optional(&mut **tx)
                .await?;
            match state.as_deref().map(common::parse_state).transpose()? {
                None => {
                    return Err(StoreError::Invalid(format!(
                        "depends_on: task {dep} does not exist"
                    )));
                }
                Some(TaskState::Succeeded) => {}
                Some(TaskState::Failed | TaskState::Canceled) => dep_failed = true,
                Some(_) => pending += 1,
            }
        }
        let row = NewTaskRow::new(spec, now, self.config.retry.max_attempts)?;
        let (state, class, message, finished) = if dep_failed {
            (
                TaskState::Failed,
                Some(ErrorClass::DependencyFailed.as_str()),
                Some(common::DEPENDENCY_FAILED_MSG),
                Some(now),
            )
        } else {
            (TaskState::Queued, None, None, None)
        };
        sqlx::query(
            "INSERT INTO tasks (id, spec, state, priority, run_after, created_at, updated_at, \
             max_attempts, required_agent, labels, project, lock_key, constrained, deps_pending, \
             idempotency_key, error_class, error_message, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(row.id.to_string())
        .bind(&row.spec_json)
        .bind(state.as_str())
        .bind(row.priority)
        .bind(row.run_after)
        .bind(now)
        .bind(now)
        .bind(row.max_attempts)
        .bind(&row.required_agent)
        .bind(&row.labels_json)
        .bind(&row.project)
        .bind(&row.lock_key)
        .bind(row.constrained)
        .bind(pending)
        .bind(&row.idempotency_key)
        .bind(class)
        .bind(message)
        .bind(finished)
        .execute(&mut **tx)
        .await?;
        for dep in &row.spec.depends_on {
            sqlx::query("INSERT OR IGNORE INTO task_deps (task_id, dep_id) VALUES (?, ?)")
                .bind(row.id.to_string())
                .bind(dep.to_string())
                .execute(&mut **tx)
                .await?;
            sqlx::query("UPDATE tasks SET has_dependents = 1 WHERE id = ?")
                .bind(dep.to_string())
                .execute(&mut **tx)
                .await?;
        }
        log.push(
            row.id,
            if dep_failed {
                common::dependency_failed()
            } else {
                Lifecycle::Queued
            },
        )?;
        Ok(Enqueued {
            task: common::new_task(&row, now, dep_failed),
            created: true,
        })
    }

    async fn resume_sessions(&self, claimed: &mut [ClaimedTask]) -> Result<()> {
        for c in claimed.iter_mut() {
            if let Some(prev) = c.task.spec.follow_up_of {
                let result: Option<String> = sqlx::query_scalar("SELECT result FROM tasks WHERE id = ?")
                    .bind(prev.to_string())
                    .fetch_optional(&self.reader)
                    .await?
                    .flatten();
                c.resume_session = result
                    .and_then(|r| serde_json::from_str::<TaskResult>(&r).ok())
                    .and_then(|r| r.session_id);
            }
        }
        Ok(())
    }

    async fn waiting(&self, t: &Task) -> Result<Vec<WaitReason>> {
        let mut out = Vec::new();
        if t.state != TaskState::Queued {
            return Ok(out);
        }
        let now = self.now();
        if common::ms(t.run_after) > now {
            out.push(WaitReason::Scheduled {
                run_after: t.run_after,
            });
        }
        let id = t.id.to_string();
        let pending = sqlx::query(
            "SELECT d.dep_id FROM task_deps d JOIN tasks t ON t.id = d.dep_id \
             WHERE d.task_id = ? AND t.state <> 'succeeded' ORDER BY d.dep_id",
        )
        .bind(&id)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|r| r.task_id("dep_id"))
        .collect::<Result<Vec<_>>>()?;
        if !pending.is_empty() {
            out.push(WaitReason::Dependencies { pending });
        }
        let lock: Option<String> = sqlx::query_scalar("SELECT lock_key FROM tasks WHERE id = ?")
            .bind(&id)
            .fetch_optional(&self.reader)
            .await?
            .flatten();
        if let Some(key) = lock {
            let holder: Option<String> =
                sqlx::query_scalar("SELECT id FROM tasks WHERE state = 'running' AND lock_key = ? LIMIT 1")
                    .bind(&key)
                    .fetch_optional(&self.reader)
                    .await?;
            if let Some(h) = holder {
                out.push(WaitReason::BranchLocked {
                    branch: t.spec.branch.clone().unwrap_or_default(),
                    held_by: h.parse().map_err(|e| corrupt("task id", e))?,
                });
            }
        }
        if let Some(p) = &t.spec.project {
            let slots: Option<i64> = sqlx::query_scalar("SELECT slots FROM projects WHERE name = ?")
                .bind(p)
                .fetch_optional(&self.reader)
                .await?
                .flatten();
            if let Some(slots) = slots {
                let running: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state = 'running' AND project = ?")
                        .bind(p)
                        .fetch_one(&self.reader)
                        .await?;
                if running >= slots {
                    out.push(WaitReason::ProjectSlotsFull {
                        project: p.clone(),
                        slots: u32::try_from(slots).unwrap_or(0),
                    });
                }
            }
        }
        if out.is_empty() {
            out.push(WaitReason::NoWorker);
        }
        Ok(out)
    }

    async fn running_counts(&self) -> Result<HashMap<String, u32>> {
        let rows = sqlx::query(
            "SELECT worker_id, count(*) AS n FROM tasks WHERE state = 'running' GROUP BY worker_id",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut m = HashMap::new();
        for r in rows {
            let w: Option<String> = r.try_get("worker_id")?;
            let n: i64 = r.try_get("n")?;
            if let Some(w) = w {
                m.insert(w, u32::try_from(n).unwrap_or(0));
            }
        }
        Ok(m)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(&self, spec: TaskSpec) -> Result<Enqueued> {
        let mut v = self.enqueue_batch(vec![spec]).await?;
        v.pop()
            .ok_or_else(|| StoreError::Corrupt("enqueue returned nothing".into()))
    }

    async fn enqueue_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(specs.len());
        let mut log = LifecycleLog::default();
        for spec in specs {
            out.push(self.enqueue_in(&mut tx, spec, now, &mut log).await?);
        }
        insert_lifecycle(&mut tx, &log, now).await?;
        tx.commit().await?;
        if out.iter().any(|e| e.created) {
            self.signal.notify();
            self.signal.notify_at(
                &self.config.clock,
                out.iter()
                    .filter(|e| e.created)
                    .map(|e| common::ms(e.task.run_after)),
                crate::futures_like::ready,
            );
        }
        Ok(out)
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskDetail>> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?");
        let Some(r) = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?
        else {
            return Ok(None);
        };
        let t = task(&r)?;
        let rows = sqlx::query(
            "SELECT task_id, number, worker_id, lease_token, started_at, ended_at, outcome, \
             error_class, error_message FROM attempts WHERE task_id = ? ORDER BY lease_token",
        )
        .bind(id.to_string())
        .fetch_all(&self.reader)
        .await?;
        let mut attempts: Vec<Attempt> = rows.iter().map(common::attempt_row).collect::<Result<_>>()?;
        attempts.extend(common::current_attempt(&t));
        let waiting = self.waiting(&t).await?;
        Ok(Some(TaskDetail {
            task: t,
            attempts_detail: attempts,
            waiting,
        }))
    }

    async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        let mut sql = format!("SELECT {TASK_COLS} FROM tasks t WHERE 1 = 1");
        if f.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if f.project.is_some() {
            sql.push_str(" AND project = ?");
        }
        if f.label.is_some() {
            sql.push_str(" AND EXISTS (SELECT 1 FROM json_each(t.labels) l WHERE l.key = ? AND l.value = ?)");
        }
        if f.worker.is_some() {
            sql.push_str(" AND worker_id = ?");
        }
        if f.before.is_some() {
            sql.push_str(" AND id < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let mut q = sqlx::query(&sql);
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(p) = &f.project {
            q = q.bind(p.clone());
        }
        if let Some((k, v)) = &f.label {
            q = q.bind(k.clone()).bind(v.clone());
        }
        if let Some(w) = &f.worker {
            q = q.bind(w.as_str().to_string());
        }
        if let Some(b) = f.before {
            q = q.bind(b.to_string());
        }
        let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) };
        q = q.bind(i64::from(limit));
        q.fetch_all(&self.reader).await?.iter().map(task).collect()
    }

    async fn count_by_state(&self) -> Result<BTreeMap<TaskState, u64>> {
        let rows = sqlx::query("SELECT state, count(*) AS n FROM tasks GROUP BY state")
            .fetch_all(&self.reader)
            .await?;
        let mut m = BTreeMap::new();
        for s in TaskState::ALL {
            m.insert(s, 0);
        }
        for r in rows {
            let s: String = r.try_get("state")?;
            let n: i64 = r.try_get("n")?;
            m.insert(common::parse_state(&s)?, u64::try_from(n).unwrap_or(0));
        }
        Ok(m)
    }

    async fn cancel(&self, id: TaskId) -> Result<Task> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let sql = format!("SELECT {TASK_COLS}, has_dependents FROM tasks WHERE id = ?");
        let r = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "task",
                id: id.to_string(),
            })?;
        let t = task(&r)?;
        let has_dependents: bool = r.try_get("has_dependents")?;
        let mut log = LifecycleLog::default();
        match agentpool_core::task::cancel(t.state)? {
            agentpool_core::Transition::Finish { state, class } => {
                sqlx::query(
                    "UPDATE tasks SET state = ?, error_class = ?, error_message = 'canceled', \
                     finished_at = ?, updated_at = ? WHERE id = ?",
                )
                .bind(state.as_str())
                .bind(class.map(|c| c.as_str()))
                .bind(now)
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                log.push(
                    id,
                    Lifecycle::Canceled {
                        message: "canceled".into(),
                    },
                )?;
                if has_dependents {
                    cascade_failure(&mut tx, vec![id], now, &mut log).await?;
                }
            }
            agentpool_core::Transition::CancelRequested => {
                let first = sqlx::query(
                    "UPDATE tasks SET cancel_requested = 1, updated_at = ? \
                     WHERE id = ? AND NOT cancel_requested",
                )
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if first > 0 {
                    log.push(id, Lifecycle::CancelRequested)?;
                }
            }
            agentpool_core::Transition::Requeue { .. } => {
                return Err(StoreError::Corrupt("cancel() asked to requeue".into()));
            }
        }
        insert_lifecycle(&mut tx, &log, now).await?;
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?");
        let t = task(&sqlx::query(&sql).bind(id.to_string()).fetch_one(&mut *tx).await?)?;
        tx.commit().await?;
        Ok(t)
    }

    async fn retry(&self, id: TaskId) -> Result<Task> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let state: String = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "task",
                id: id.to_string(),
            })?;
        agentpool_core::task::retry(common::parse_state(&state)?)?;
        let deps = sqlx::query(
            "SELECT d.dep_id, t.state FROM task_deps d JOIN tasks t ON t.id = d.dep_id \
             WHERE d.task_id = ?",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let mut pending = 0i64;
        for d in &deps {
            let s: String = d.try_get("state")?;
            match common::parse_state(&s)? {
                TaskState::Succeeded => {}
                TaskState::Failed | TaskState::Canceled => {
                    let dep: String = d.try_get("dep_id")?;
                    return Err(StoreError::Conflict(format!(
                        "dependency {dep} did not succeed; retry it first"
                    )));
                }
                _ => pending += 1,
            }
        }
        let sql = format!(
            "UPDATE tasks SET state = 'queued', attempts = 0, run_after = ?, updated_at = ?, \
             finished_at = NULL, worker_id = NULL, lease_expires_at = NULL, \
             cancel_requested = 0, error_class = NULL, error_message = NULL, deps_pending = ? \
             WHERE id = ? RETURNING {TASK_COLS}"
        );
        let r = sqlx::query(&sql)
            .bind(now)
            .bind(now)
            .bind(pending)
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let mut log = LifecycleLog::default();
        log.push(id, Lifecycle::Queued)?;
        insert_lifecycle(&mut tx, &log, now).await?;
        tx.commit().await?;
        self.signal.notify();
        task(&r)
    }

    async fn claim(&self, f: &ClaimFilter) -> Result<Vec<ClaimedTask>> {
        if f.max == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut tx = self.begin().await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM workers WHERE id = ?")
            .bind(f.worker_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match status.as_deref() {
            None => {
                return Err(StoreError::NotFound {
                    what: "worker",
                    id: f.worker_id.to_string(),
                });
            }
            Some("draining") => return Ok(Vec::new()),
            Some(_) => {}
        }
        let max = usize::try_from(f.max).unwrap_or(usize::MAX);
        let window = i64::from(f.max).saturating_mul(2).saturating_add(8);
        let rows = sqlx::query(
            "SELECT t.id, t.lock_key, t.project, \
               CASE WHEN t.project IS NULL THEN 0 ELSE \
                 (SELECT count(*) FROM tasks r WHERE r.state = 'running' AND r.project = t.project) \
               END AS project_running, \
               (SELECT p.slots FROM projects p WHERE p.name = t.project) AS project_slots \
             FROM tasks t \
             WHERE t.state = 'queued' AND t.deps_pending = 0 AND t.run_after <= ?1 \
               AND (t.required_agent IS NULL OR t.required_agent IN (SELECT value FROM json_each(?2))) \
               AND (t.labels IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(t.labels) l \
                    WHERE NOT EXISTS (SELECT 1 FROM json_each(?3) w \
                                      WHERE w.key = l.key AND w.value = l.value))) \
               AND (t.lock_key IS NULL OR NOT EXISTS (SELECT 1 FROM tasks r \
                    WHERE r.state = 'running' AND r.lock_key = t.lock_key)) \
               AND (t.project IS NULL OR NOT EXISTS (SELECT 1 FROM projects p \
                    WHERE p.name = t.project AND p.slots IS NOT NULL AND p.slots <= \
                      (SELECT count(*) FROM tasks r WHERE r.state = 'running' AND r.project = t.project))) \
             ORDER BY t.priority DESC, t.run_after, t.id \
             LIMIT ?4",
        )
        .bind(now)
        .bind(json(&f.agents)?)
        .bind(json(&f.labels)?)
        .bind(window)
        .fetch_all(&mut *tx)
        .await?;
        let cands = rows
            .iter()
            .map(|r| {
                Ok(Candidate {
                    id: r.task_id("id")?,
                    lock_key: r.try_get("lock_key")?,
                    project: r.try_get("project")?,
                    project_running: r.try_get("project_running")?,
                    project_slots: r.try_get("project_slots")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let picked = common::pick_candidates(&cands, max);
        if picked.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE tasks SET state = 'running', attempts = attempts + 1, \
             lease_token = lease_token + 1, worker_id = ?, lease_expires_at = ?, started_at = ?, \
             updated_at = ?, cancel_requested = 0 \
             WHERE id IN (SELECT value FROM json_each(?)) AND state = 'queued' \
             RETURNING {TASK_COLS}"
        );
        let rows = sqlx::query(&sql)
            .bind(f.worker_id.as_str())
            .bind(now + dur_ms(f.lease_ttl))
            .bind(now)
            .bind(now)
            .bind(json(&picked)?)
            .fetch_all(&mut *tx)
            .await?;
        let mut log = LifecycleLog::default();
        for r in &rows {
            log.push(
                r.task_id("id")?,
                Lifecycle::Claimed {
                    attempt: u32::try_from(r.int("attempts")?).unwrap_or(0),
                    worker: f.worker_id.clone(),
                },
            )?;
        }
        insert_lifecycle(&mut tx, &log, now).await?;
        tx.commit().await?;
        let order: HashMap<TaskId, usize> = picked.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut claimed = rows
            .iter()
            .map(|r| {
                let t = task(r)?;
                let token = t
                    .lease_token
                    .ok_or_else(|| StoreError::Corrupt("claimed task without token".into()))?;
                Ok(ClaimedTask {
                    lease: Lease { task_id: t.id, token },
                    attempt: t.attempts,
                    resume_session: None,
                    task: t,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|c| order.get(&c.task.id).copied().unwrap_or(usize::MAX));
        self.resume_sessions(&mut claimed).await?;
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        worker: &WorkerId,
        leases: &[Lease],
        lease_ttl: Duration,
    ) -> Result<HeartbeatReply> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE workers SET last_heartbeat_at = ?, \
             status = CASE WHEN status = 'draining' THEN 'draining' WHEN ? THEN 'busy' ELSE 'idle' END \
             WHERE id = ? RETURNING status",
        )
        .bind(now)
        .bind(!leases.is_empty())
        .bind(worker.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(status) = status else {
            return Err(StoreError::NotFound {
                what: "worker",
                id: worker.to_string(),
            });
        };
        let mut reply = HeartbeatReply {
            drain: status == "draining",
            ..HeartbeatReply::default()
        };
        for l in leases {
            let cancel: Option<bool> = sqlx::query_scalar(
                "UPDATE tasks SET lease_expires_at = ? \
                 WHERE id = ? AND lease_token = ? AND worker_id = ? AND state = 'running' \
                 RETURNING cancel_requested",
            )
            .bind(now + dur_ms(lease_ttl))
            .bind(l.task_id.to_string())
            .bind(l.token.0)
            .bind(worker.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            match cancel {
                None => reply.lost.push(l.task_id),
                Some(true) => reply.cancel.push(l.task_id),
                Some(false) => {}
            }
        }
        tx.commit().await?;
        Ok(reply)
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
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(items.len());
        let mut succeeded = Vec::new();
        let mut wake = false;
        let mut log = LifecycleLog::default();
        let sql = format!(
            "UPDATE tasks SET state = 'succeeded', finished_at = ?, updated_at = ?, \
             lease_expires_at = NULL, result = ?, error_class = NULL, error_message = NULL \
             WHERE id = ? AND lease_token = ? AND worker_id = ? AND state = 'running' \
             RETURNING {HELD_COLS}"
        );
        for (lease, result) in items {
            let r = sqlx::query(&sql)
                .bind(now)
                .bind(now)
                .bind(json(&result)?)
                .bind(lease.task_id.to_string())
                .bind(lease.token.0)
                .bind(worker.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(r) = r else {
                out.push(Err(StoreError::StaleLease(lease.task_id)));
                continue;
            };
            // The succeeded attempt stays on the task row (see `common::current_attempt`).
            let h = held(&r)?;
            log.push(h.id, Lifecycle::Succeeded)?;
            wake |= h.constrained;
            if h.has_dependents {
                succeeded.push(h.id);
            }
            out.push(Ok(()));
        }
        if !succeeded.is_empty() {
            release_dependents(&mut tx, &succeeded, now).await?;
            wake = true;
        }
        insert_lifecycle(&mut tx, &log, now).await?;
        tx.commit().await?;
        if wake {
            self.signal.notify();
        }
        Ok(out)
    }

    async fn fail(&self, worker: &WorkerId, lease: Lease, failure: Failure) -> Result<FailOutcome> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT {HELD_COLS} FROM tasks \
             WHERE id = ? AND lease_token = ? AND worker_id = ? AND state = 'running'"
        );
        let Some(r) = sqlx::query(&sql)
            .bind(lease.task_id.to_string())
            .bind(lease.token.0)
            .bind(worker.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Err(StoreError::StaleLease(lease.task_id));
        };
        let h = held(&r)?;
        let ending = common::decide_failure(
            h.cancel_requested,
            failure.class,
            h.attempts,
            h.max_attempts,
            failure.retry_after,
            &self.config.retry,
        )?;
        let mut log = LifecycleLog::default();
        let ended = end_attempt(
            &mut tx,
            &h,
            now,
            &ending,
            failure.class,
            &failure.message,
            failure.result.as_ref(),
            &mut log,
        )
        .await?;
        insert_lifecycle(&mut tx, &log, now).await?;
        tx.commit().await?;
        if ended.wake {
            self.signal.notify();
        }
        if let Ending::Requeue { delay } = &ending {
            self.signal.notify_at(
                &self.config.clock,
                [now + dur_ms(*delay)],
                crate::futures_like::ready,
            );
        }
        Ok(match ending {
            Ending::Requeue { delay } => FailOutcome::Retrying {
                run_after: ts(now + dur_ms(delay)),
                attempt: u32::try_from(h.attempts).unwrap_or(0),
            },
            Ending::Finish { state, .. } => FailOutcome::Finished { state },
        })
    }

    async fn append_events(&self, task: TaskId, lease: Option<Lease>, events: Vec<NewEvent>) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let ok: Option<i64> = match lease {
            Some(l) => {
                if l.task_id != task {
                    return Err(StoreError::StaleLease(task));
                }
                sqlx::query_scalar(
                    "SELECT 1 FROM tasks WHERE id = ? AND lease_token = ? AND state = 'running'",
                )
                .bind(task.to_string())
                .bind(l.token.0)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => {
                sqlx::query_scalar("SELECT 1 FROM tasks WHERE id = ?")
                    .bind(task.to_string())
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        if ok.is_none() {
            return Err(match lease {
                Some(_) => StoreError::StaleLease(task),
                None => StoreError::NotFound {
                    what: "task",
                    id: task.to_string(),
                },
            });
        }
        for e in events {
            sqlx::query("INSERT INTO events (task_id, at, kind, data) VALUES (?, ?, ?, ?)")
                .bind(task.to_string())
                .bind(e.at.map(common::ms).unwrap_or(now))
                .bind(e.kind().as_str())
                .bind(common::event_data(&e.payload)?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_events(&self, task: TaskId, after: i64, limit: u32) -> Result<Vec<Event>> {
        let limit = if limit == 0 { 1000 } else { limit.min(10_000) };
        let rows = sqlx::query(
            "SELECT seq, at, kind, data FROM events WHERE task_id = ? AND seq > ? \
             ORDER BY seq LIMIT ?",
        )
        .bind(task.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| common::event_row(task, r)).collect()
    }

    async fn register_worker(&self, reg: WorkerRegistration) -> Result<Worker> {
        let now = self.now();
        let id = reg
            .id
            .clone()
            .unwrap_or_else(|| WorkerId::generate(&reg.hostname));
        let r = sqlx::query(
            "INSERT INTO workers (id, hostname, version, agents, labels, slots, status, \
             registered_at, last_heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, 'idle', ?, ?) \
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, \
               version = excluded.version, agents = excluded.agents, labels = excluded.labels, \
               slots = excluded.slots, status = 'idle', registered_at = excluded.registered_at, \
               last_heartbeat_at = excluded.last_heartbeat_at \
             RETURNING *",
        )
        .bind(id.as_str())
        .bind(&reg.hostname)
        .bind(&reg.version)
        .bind(json(&reg.agents)?)
        .bind(json(&reg.labels)?)
        .bind(i64::from(reg.slots))
        .bind(now)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        let running = self.running_counts().await?.get(id.as_str()).copied();
        worker_row(&r, running.unwrap_or(0))
    }

    async fn get_worker(&self, id: &WorkerId) -> Result<Option<Worker>> {
        let r = sqlx::query("SELECT * FROM workers WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        match r {
            None => Ok(None),
            Some(r) => {
                let running = self.running_counts().await?.get(id.as_str()).copied();
                Ok(Some(worker_row(&r, running.unwrap_or(0))?))
            }
        }
    }

    async fn list_workers(&self) -> Result<Vec<Worker>> {
        let counts = self.running_counts().await?;
        sqlx::query("SELECT * FROM workers ORDER BY id")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                worker_row(r, counts.get(&id).copied().unwrap_or(0))
            })
            .collect()
    }

    async fn drain_worker(&self, id: &WorkerId) -> Result<Worker> {
        let r = sqlx::query("UPDATE workers SET status = 'draining' WHERE id = ? RETURNING *")
            .bind(id.as_str())
            .fetch_optional(&self.writer)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "worker",
                id: id.to_string(),
            })?;
        let running = self.running_counts().await?.get(id.as_str()).copied();
        worker_row(&r, running.unwrap_or(0))
    }

    async fn deregister_worker(&self, id: &WorkerId) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE workers SET status = 'offline' WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        common::found(n, "worker", id.as_str())?;
        // Whatever it still held is rescued by the next maintenance pass instead of waiting
        // for the full lease.
        sqlx::query("UPDATE tasks SET lease_expires_at = ? WHERE state = 'running' AND worker_id = ?")
            .bind(now - 1)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_project(&self, spec: ProjectSpec) -> Result<Project> {
        let now = self.now();
        let r = sqlx::query(
            "INSERT INTO projects (name, spec, slots, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, \
             slots = excluded.slots, updated_at = excluded.updated_at RETURNING *",
        )
        .bind(&spec.name)
        .bind(json(&spec)?)
        .bind(spec.slots.map(i64::from))
        .bind(now)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        self.signal.notify();
        project_row(&r)
    }

    async fn get_project(&self, name: &str) -> Result<Option<Project>> {
        sqlx::query("SELECT * FROM projects WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(project_row)
            .transpose()
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        sqlx::query("SELECT * FROM projects ORDER BY name")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(project_row)
            .collect()
    }

    async fn delete_project(&self, name: &str) -> Result<()> {
        let n = sqlx::query("DELETE FROM projects WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await?
            .rows_affected();
        common::found(n, "project", name)
    }

    async fn put_credential(&self, name: &str, ciphertext: Vec<u8>) -> Result<()> {
        let now = self.now();
        sqlx::query(
            "INSERT INTO credentials (name, ciphertext, created_at, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET ciphertext = excluded.ciphertext, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(ciphertext)
        .bind(now)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn get_credential(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT ciphertext FROM credentials WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn list_credentials(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM credentials ORDER BY name")
            .fetch_all(&self.reader)
            .await?)
    }

    async fn delete_credential(&self, name: &str) -> Result<()> {
        let n = sqlx::query("DELETE FROM credentials WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await?
            .rows_affected();
        common::found(n, "credential", name)
    }

    async fn create_token(&self, t: TokenRecord) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO tokens (id, name, role, hash, created_at, revoked) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(common::ms(t.created_at))
        .bind(t.revoked)
        .execute(&self.writer)
        .await;
        common::token_created(r)
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        sqlx::query("SELECT * FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(token_row)
            .transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn revoke_token(&self, id: &str) -> Result<()> {
        let n = sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        common::found(n, "token", id)
    }

    async fn mark_workers_offline(&self, threshold: Duration) -> Result<u64> {
        let cutoff = self.now() - dur_ms(threshold);
        Ok(sqlx::query(
            "UPDATE workers SET status = 'offline' \
             WHERE status <> 'offline' AND last_heartbeat_at < ?",
        )
        .bind(cutoff)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    async fn requeue_expired(&self) -> Result<u64> {
        let now = self.now();
        let mut total = 0;
        // In batches, each its own short transaction, until none is left: one pass rescues
        // every expired lease without holding the writer for long.
        loop {
            let mut tx = self.begin().await?;
            let sql = format!(
                "SELECT {HELD_COLS} FROM tasks WHERE state = 'running' AND lease_expires_at < ? \
                 ORDER BY lease_expires_at LIMIT ?"
            );
            let rows = sqlx::query(&sql)
                .bind(now)
                .bind(common::EXPIRE_BATCH)
                .fetch_all(&mut *tx)
                .await?;
            let mut wake = false;
            let mut log = LifecycleLog::default();
            for r in &rows {
                let h = held(r)?;
                common::log_expiry(&mut log, &h)?;
                let ending = common::decide_failure(
                    h.cancel_requested,
                    ErrorClass::LeaseExpired,
                    h.attempts,
                    h.max_attempts,
                    None,
                    &self.config.retry,
                )?;
                let ended = end_attempt(
                    &mut tx,
                    &h,
                    now,
                    &ending,
                    ErrorClass::LeaseExpired,
                    common::LEASE_EXPIRED_MSG,
                    None,
                    &mut log,
                )
                .await?;
                wake |= ended.wake;
            }
            insert_lifecycle(&mut tx, &log, now).await?;
            tx.commit().await?;
            if wake {
                self.signal.notify();
            }
            total += rows.len() as u64;
            if (rows.len() as i64) < common::EXPIRE_BATCH {
                break;
            }
        }
        Ok(total)
    }

    async fn purge_finished(&self, retention: Duration) -> Result<u64> {
        let cutoff = self.now() - dur_ms(retention);
        let mut total = 0;
        loop {
            let mut tx = self.begin().await?;
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ? \
                 AND state IN ('succeeded', 'failed', 'canceled') LIMIT ?",
            )
            .bind(cutoff)
            .bind(PURGE_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                tx.commit().await?;
                break;
            }
            let ids_json = json(&ids)?;
            for sql in [
                "DELETE FROM events WHERE task_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM attempts WHERE task_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM task_deps WHERE task_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM task_deps WHERE dep_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
            ] {
                sqlx::query(sql).bind(&ids_json).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            total += ids.len() as u64;
            if (ids.len() as i64) < PURGE_BATCH {
                break;
            }
        }
        Ok(total)
    }

    fn work_listener(&self) -> WorkListener {
        self.signal.listener()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
