//! The PostgreSQL store: claims with `FOR UPDATE SKIP LOCKED` in one statement for up to N
//! tasks, batched completions in one statement, and a LISTEN/NOTIFY work signal fanned out from
//! one listener connection per store. No transaction stays open while a task runs.
//!
//! Tasks that need a branch lock or project slots ("constrained") are claimed in a separate,
//! serialized step (a transaction-scoped advisory lock), because SKIP LOCKED alone cannot stop
//! two claimers from taking two different rows that share a branch. Unconstrained tasks — the
//! bulk — never touch that lock.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{ClaimedTask, FailOutcome, HeartbeatReply};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{
    Attempt, ErrorClass, Event, Lease, Lifecycle, NewEvent, Project, Task, TaskId, TaskResult, TaskSpec,
    TaskState, Worker, WorkerId,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::common::{
    self, Candidate, Ending, HELD_COLS, Held, LifecycleLog, NewTaskRow, StoreRow, dur_ms, held, json,
    project_row, task, token_row, ts, worker_row,
};
use crate::{
    ClaimFilter, Enqueued, Failure, Result, Store, StoreConfig, StoreError, TaskDetail, TaskFilter,
    TokenRecord, WaitReason, WorkListener, WorkSignal,
};

/// The NOTIFY channel that says "work may be available" (suffixed with the schema when it is
/// not `public`, so queues in different schemas of one database do not wake each other).
const CHANNEL_PREFIX: &str = "agentpool_work";
/// Advisory lock key serializing claims of constrained tasks (branch locks, project slots).
const CONSTRAINED_CLAIM_LOCK: i64 = 0x0061_7063_6c61_696d; // "apclaim"
const PURGE_BATCH: i64 = 5000;

fn cols(p: &str) -> String {
    [
        "id",
        "spec",
        "state",
        "attempts",
        "max_attempts",
        "priority",
        "created_at",
        "updated_at",
        "run_after",
        "started_at",
        "finished_at",
        "worker_id",
        "lease_token",
        "lease_expires_at",
        "cancel_requested",
        "error_class",
        "error_message",
        "result",
    ]
    .iter()
    .map(|c| format!("{p}{c}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The CTE of a claim statement (after `upd`, the claimed rows) that appends their `claimed`
/// lifecycle events; `$1` is now.
const CLAIMED_EVENTS: &str = "ev AS (INSERT INTO events (task_id, at, kind, data) \
    SELECT id, $1, 'lifecycle', \
      json_build_object('state', 'claimed', 'attempt', attempts, 'worker', worker_id)::text \
    FROM upd)";

/// Aborts the listener task when the last clone of the store goes away.
#[derive(Debug)]
struct ListenerGuard(tokio::task::JoinHandle<()>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    config: StoreConfig,
    signal: WorkSignal,
    _listener: Arc<ListenerGuard>,
    /// Pre-built SQL (the column lists are assembled once, not per call).
    sql: Arc<Sql>,
}

#[derive(Debug)]
struct Sql {
    channel: String,
    /// Advisory lock key for constrained claims, distinct per schema.
    claim_lock: i64,
    select_task: String,
    claim_hot: String,
    claim_update: String,
    enqueue: String,
    by_idempotency: String,
    retry: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let channel: String = if schema == "public" || schema.is_empty() {
            CHANNEL_PREFIX.to_string()
        } else {
            format!("{CHANNEL_PREFIX}_{schema}").chars().take(63).collect()
        };
        // FNV-1a: stable across processes and versions, unlike std's hasher.
        let hash = schema.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let claim_lock = CONSTRAINED_CLAIM_LOCK ^ (hash as i64);
        let lit = channel.replace('\'', "''");
        let c = cols("");
        let tc = cols("t.");
        Self {
            channel,
            claim_lock,
            select_task: format!("SELECT {c} FROM tasks WHERE id = $1"),
            // The claimed events are written by the claim statement itself: no extra round trip.
            claim_hot: format!(
                "WITH picked AS ( \
                   SELECT id FROM tasks \
                   WHERE state = 'queued' AND deps_pending = 0 AND NOT constrained \
                     AND run_after <= $1 \
                     AND (required_agent IS NULL OR required_agent = ANY($2::text[])) \
                     AND (labels IS NULL OR labels <@ $3::jsonb) \
                     AND EXISTS (SELECT 1 FROM workers WHERE id = $4 AND status <> 'draining') \
                   ORDER BY priority DESC, run_after, id \
                   LIMIT $5 \
                   FOR UPDATE SKIP LOCKED), \
                 upd AS ( \
                   UPDATE tasks t SET state = 'running', attempts = t.attempts + 1, \
                     lease_token = t.lease_token + 1, worker_id = $4, lease_expires_at = $6, \
                     started_at = $1, updated_at = $1, cancel_requested = false \
                   FROM picked WHERE t.id = picked.id \
                   RETURNING {tc}), \
                 {CLAIMED_EVENTS} \
                 SELECT {c} FROM upd"
            ),
            claim_update: format!(
                "WITH upd AS ( \
                   UPDATE tasks t SET state = 'running', attempts = t.attempts + 1, \
                     lease_token = t.lease_token + 1, worker_id = $2, lease_expires_at = $3, \
                     started_at = $1, updated_at = $1, cancel_requested = false \
                   WHERE t.id = ANY($4::uuid[]) AND t.state = 'queued' \
                   RETURNING {tc}), \
                 {CLAIMED_EVENTS} \
                 SELECT {c} FROM upd"
            ),
            enqueue: format!(
                "WITH ins AS ( \
                   INSERT INTO tasks (id, spec, state, priority, run_after, created_at, \
                     updated_at, max_attempts, required_agent, labels, project, lock_key, \
                     constrained, deps_pending, idempotency_key, error_class, error_message, \
                     finished_at) \
                   SELECT i.id, i.spec, i.state, i.priority, i.run_after, $1, $1, \
                     i.max_attempts, i.required_agent, i.labels::jsonb, i.project, i.lock_key, \
                     i.constrained, i.deps_pending, i.idem, i.error_class, i.error_message, \
                     i.finished_at \
                   FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[], \
                     $7::int[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bool[], \
                     $13::int[], $14::text[], $15::text[], $16::text[], $17::bigint[]) \
                     AS i(id, spec, state, priority, run_after, max_attempts, required_agent, \
                       labels, project, lock_key, constrained, deps_pending, idem, error_class, \
                       error_message, finished_at) \
                   ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
                   RETURNING id, state), \
                 ev AS (INSERT INTO events (task_id, at, kind, data) \
                   SELECT id, $1, 'lifecycle', CASE WHEN state = 'failed' THEN $18 ELSE $19 END \
                   FROM ins) \
                 SELECT ins.id, \
                   (SELECT count(*) FROM (SELECT pg_notify('{lit}', '')) AS n) AS notified \
                 FROM ins"
            ),
            by_idempotency: format!(
                "SELECT {c}, idempotency_key FROM tasks WHERE idempotency_key = ANY($1::text[])"
            ),
            retry: format!(
                "UPDATE tasks SET state = 'queued', attempts = 0, run_after = $1, \
                 updated_at = $1, finished_at = NULL, worker_id = NULL, \
                 lease_expires_at = NULL, cancel_requested = false, error_class = NULL, \
                 error_message = NULL, deps_pending = $2 WHERE id = $3 RETURNING {c}"
            ),
        }
    }
}

impl PgStore {
    /// Connect to `url`, apply migrations, and start the work-signal listener.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, StoreConfig::default()).await
    }

    pub async fn open_with(url: &str, config: StoreConfig) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.unwrap_or(16))
            .acquire_timeout(Duration::from_secs(30))
            // sqlx pings every connection it hands out by default: a round trip per query.
            // A broken connection shows up as an error on use and is dropped by the pool.
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        let sql = Sql::new(schema.as_deref().unwrap_or("public"));
        let signal = WorkSignal::new();
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(&sql.channel).await?;
        let sig = signal.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(_) => sig.notify(),
                    Err(e) => {
                        // Notifications sent while disconnected are lost: wake everyone so
                        // they look for themselves, then let recv() reconnect.
                        tracing::warn!(error = %e, "work-signal listener lost its connection");
                        sig.notify();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self {
            pool,
            config,
            signal,
            _listener: Arc::new(ListenerGuard(task)),
            sql: Arc::new(sql),
        })
    }

    /// Wake claimers here and on every replica when these run_after times come due.
    fn wake_at(&self, run_after: impl IntoIterator<Item = i64>) {
        let pool = self.pool.clone();
        let channel = self.sql.channel.clone();
        self.signal.notify_at(
            &self.config.clock,
            run_after,
            move || -> crate::futures_like::BoxFuture {
                let (pool, channel) = (pool.clone(), channel.clone());
                Box::pin(async move {
                    let _ = sqlx::query("SELECT pg_notify($1, '')")
                        .bind(channel)
                        .execute(&pool)
                        .await;
                })
            },
        );
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn now(&self) -> i64 {
        self.config.clock.now_ms()
    }
}

impl StoreRow for PgRow {
    fn task_id(&self, col: &str) -> Result<TaskId> {
        Ok(TaskId(self.try_get(col)?))
    }

    fn int(&self, col: &str) -> Result<i64> {
        Ok(i64::from(self.try_get::<i32, _>(col)?))
    }

    common::plain_row_reads!();
}

/// A deadlock or serialization failure: the transaction was rolled back and may be retried.
fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(d))
        if d.code().is_some_and(|c| c == "40P01" || c == "40001"))
}

fn uuids(ids: &[TaskId]) -> Vec<Uuid> {
    ids.iter().map(|t| t.0).collect()
}

async fn notify(tx: &mut Transaction<'static, Postgres>, channel: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_attempt(
    tx: &mut Transaction<'static, Postgres>,
    h: &Held,
    now: i64,
    outcome: agentpool_core::AttemptOutcome,
    class: Option<ErrorClass>,
    message: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO attempts (task_id, lease_token, number, worker_id, started_at, ended_at, \
         outcome, error_class, error_message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (task_id, lease_token) DO NOTHING",
    )
    .bind(h.id.0)
    .bind(h.token)
    .bind(i32::try_from(h.attempts).unwrap_or(i32::MAX))
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

/// Append `log`'s lifecycle events with one statement, in order.
async fn insert_lifecycle(
    tx: &mut Transaction<'static, Postgres>,
    log: &LifecycleLog,
    now: i64,
) -> Result<()> {
    if log.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO events (task_id, at, kind, data) \
         SELECT i.task_id, $1, 'lifecycle', i.data \
         FROM unnest($2::uuid[], $3::text[]) WITH ORDINALITY AS i(task_id, data, ord) \
         ORDER BY i.ord",
    )
    .bind(now)
    .bind(uuids(&log.tasks))
    .bind(&log.data)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Fail every queued dependent of `failed` (transitively) with `DEPENDENCY_FAILED`.
async fn cascade_failure(
    tx: &mut Transaction<'static, Postgres>,
    failed: Vec<TaskId>,
    now: i64,
    log: &mut LifecycleLog,
) -> Result<()> {
    let mut frontier = failed;
    while !frontier.is_empty() {
        let rows = sqlx::query(
            "UPDATE tasks SET state = 'failed', error_class = $1, error_message = $2, \
             finished_at = $3, updated_at = $3 \
             WHERE state = 'queued' AND id IN \
               (SELECT task_id FROM task_deps WHERE dep_id = ANY($4::uuid[])) \
             RETURNING id, has_dependents",
        )
        .bind(ErrorClass::DependencyFailed.as_str())
        .bind(common::DEPENDENCY_FAILED_MSG)
        .bind(now)
        .bind(uuids(&frontier))
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

/// Persist the end of a failed or expired attempt as `ending` says; its lifecycle events go to
/// `log`. Returns whether claimers should be woken (a lock or slot was freed, or the task is
/// runnable again at once).
#[allow(clippy::too_many_arguments)]
async fn end_attempt(
    tx: &mut Transaction<'static, Postgres>,
    h: &Held,
    now: i64,
    ending: &Ending,
    class: ErrorClass,
    message: &str,
    result: Option<&TaskResult>,
    log: &mut LifecycleLog,
) -> Result<bool> {
    log.push(
        h.id,
        common::ending_event(ending, h.attempts, now, class, message),
    )?;
    let result = result.map(json).transpose()?;
    let outcome = common::attempt_outcome(ending, class);
    let mut wake = h.constrained;
    match ending {
        Ending::Requeue { delay } => {
            sqlx::query(
                "UPDATE tasks SET state = 'queued', run_after = $1, updated_at = $2, \
                 worker_id = NULL, lease_expires_at = NULL, cancel_requested = false, \
                 error_class = $3, error_message = $4, result = COALESCE($5, result) \
                 WHERE id = $6 AND lease_token = $7",
            )
            .bind(now + dur_ms(*delay))
            .bind(now)
            .bind(class.as_str())
            .bind(message)
            .bind(result)
            .bind(h.id.0)
            .bind(h.token)
            .execute(&mut **tx)
            .await?;
            insert_attempt(tx, h, now, outcome, Some(class), Some(message)).await?;
            wake |= delay.is_zero();
        }
        Ending::Finish { state, class } => {
            sqlx::query(
                "UPDATE tasks SET state = $1, finished_at = $2, updated_at = $2, \
                 lease_expires_at = NULL, error_class = $3, error_message = $4, \
                 result = COALESCE($5, result) WHERE id = $6 AND lease_token = $7",
            )
            .bind(state.as_str())
            .bind(now)
            .bind(class.as_str())
            .bind(message)
            .bind(result)
            .bind(h.id.0)
            .bind(h.token)
            .execute(&mut **tx)
            .await?;
            insert_attempt(tx, h, now, outcome, Some(*class), Some(message)).await?;
            if h.has_dependents {
                cascade_failure(tx, vec![h.id], now, log).await?;
            }
        }
    }
    Ok(wake)
}

impl PgStore {
    async fn enqueue_batch_once(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let has_deps = specs.iter().any(|s| !s.depends_on.is_empty());
        let mut tx = if has_deps {
            Some(self.pool.begin().await?)
        } else {
            None
        };
        // Lock the dependencies (and mark them as having dependents) first, so a dependency
        // finishing concurrently waits for this insert and then sees its new dependents.
        let mut dep_state: HashMap<Uuid, TaskState> = HashMap::new();
        if let Some(tx) = tx.as_mut() {
            let mut all: Vec<Uuid> = specs
                .iter()
                .flat_map(|s| s.depends_on.iter().map(|d| d.0))
                .collect();
            all.sort();
            all.dedup();
            let rows = sqlx::query(
                "UPDATE tasks SET has_dependents = true WHERE id = ANY($1::uuid[]) \
                 RETURNING id, state",
            )
            .bind(&all)
            .fetch_all(&mut **tx)
            .await?;
            for r in rows {
                let s: String = r.try_get("state")?;
                dep_state.insert(r.try_get("id")?, common::parse_state(&s)?);
            }
            if let Some(missing) = all.iter().find(|d| !dep_state.contains_key(d)) {
                return Err(StoreError::Invalid(format!(
                    "depends_on: task {missing} does not exist"
                )));
            }
        }
        // Within one batch the first spec with a key wins; later ones return it.
        let mut first_with_key: HashMap<String, usize> = HashMap::new();
        let mut dup_of: Vec<Option<usize>> = Vec::with_capacity(specs.len());
        let mut rows_in = Vec::with_capacity(specs.len());
        let mut c = Columns::default();
        for (i, spec) in specs.into_iter().enumerate() {
            if let Some(k) = &spec.idempotency_key {
                if let Some(&j) = first_with_key.get(k) {
                    dup_of.push(Some(j));
                    rows_in.push(None);
                    continue;
                }
                first_with_key.insert(k.clone(), i);
            }
            dup_of.push(None);
            let mut pending = 0;
            let mut failed = false;
            for d in &spec.depends_on {
                match dep_state.get(&d.0) {
                    Some(TaskState::Succeeded) => {}
                    Some(TaskState::Failed | TaskState::Canceled) => failed = true,
                    _ => pending += 1,
                }
            }
            let row = NewTaskRow::new(spec, now, self.config.retry.max_attempts)?;
            c.id.push(row.id.0);
            c.spec.push(row.spec_json.clone());
            c.state.push(if failed { "failed" } else { "queued" });
            c.priority.push(row.priority);
            c.run_after.push(row.run_after);
            c.max_attempts.push(row.max_attempts);
            c.required_agent.push(row.required_agent.clone());
            c.labels.push(row.labels_json.clone());
            c.project.push(row.project.clone());
            c.lock_key.push(row.lock_key.clone());
            c.constrained.push(row.constrained);
            c.deps_pending.push(pending);
            c.idem.push(row.idempotency_key.clone());
            c.error_class
                .push(failed.then_some(ErrorClass::DependencyFailed.as_str()));
            c.error_message
                .push(failed.then_some(common::DEPENDENCY_FAILED_MSG));
            c.finished_at.push(failed.then_some(now));
            rows_in.push(Some(row));
        }
        let q = sqlx::query(&self.sql.enqueue)
            .bind(now)
            .bind(&c.id)
            .bind(&c.spec)
            .bind(&c.state)
            .bind(&c.priority)
            .bind(&c.run_after)
            .bind(&c.max_attempts)
            .bind(&c.required_agent)
            .bind(&c.labels)
            .bind(&c.project)
            .bind(&c.lock_key)
            .bind(&c.constrained)
            .bind(&c.deps_pending)
            .bind(&c.idem)
            .bind(&c.error_class)
            .bind(&c.error_message)
            .bind(&c.finished_at)
            .bind(common::event_data(&common::dependency_failed().into())?)
            .bind(common::event_data(&Lifecycle::Queued.into())?);
        let inserted = match tx.as_mut() {
            Some(tx) => q.fetch_all(&mut **tx).await?,
            None => q.fetch_all(&self.pool).await?,
        };
        let mut by_id: HashMap<Uuid, Task> = HashMap::with_capacity(inserted.len());
        let failed: std::collections::HashSet<Uuid> =
            c.id.iter()
                .zip(&c.state)
                .filter(|(_, s)| **s == "failed")
                .map(|(id, _)| *id)
                .collect();
        let mut created = std::collections::HashSet::with_capacity(inserted.len());
        for r in &inserted {
            created.insert(r.try_get::<Uuid, _>("id")?);
        }
        for r in rows_in.iter().flatten() {
            if created.contains(&r.id.0) {
                by_id.insert(r.id.0, common::new_task(r, now, failed.contains(&r.id.0)));
            }
        }
        // Keys that already existed before this batch.
        let lost_keys: Vec<String> = rows_in
            .iter()
            .flatten()
            .filter(|r| !by_id.contains_key(&r.id.0))
            .filter_map(|r| r.idempotency_key.clone())
            .collect();
        let mut existing: HashMap<String, Task> = HashMap::new();
        if !lost_keys.is_empty() {
            let q = sqlx::query(&self.sql.by_idempotency).bind(&lost_keys);
            let rows = match tx.as_mut() {
                Some(tx) => q.fetch_all(&mut **tx).await?,
                None => q.fetch_all(&self.pool).await?,
            };
            for r in &rows {
                let k: String = r.try_get("idempotency_key")?;
                existing.insert(k, task(r)?);
            }
        }
        if let Some(tx) = tx.as_mut() {
            let (mut tids, mut dids) = (Vec::new(), Vec::new());
            for r in rows_in.iter().flatten() {
                if by_id.contains_key(&r.id.0) {
                    for d in &r.spec.depends_on {
                        tids.push(r.id.0);
                        dids.push(d.0);
                    }
                }
            }
            sqlx::query(
                "INSERT INTO task_deps (task_id, dep_id) \
                 SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING",
            )
            .bind(&tids)
            .bind(&dids)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        let mut out: Vec<Enqueued> = Vec::with_capacity(rows_in.len());
        for (i, r) in rows_in.iter().enumerate() {
            let e = match (r, dup_of[i]) {
                (Some(r), _) => match by_id.remove(&r.id.0) {
                    Some(t) => Enqueued {
                        task: t,
                        created: true,
                    },
                    None => {
                        let key = r.idempotency_key.clone().unwrap_or_default();
                        let t = existing.get(&key).cloned().ok_or_else(|| {
                            StoreError::Conflict(format!(
                                "idempotency key {key:?} is being used concurrently; retry"
                            ))
                        })?;
                        Enqueued {
                            task: t,
                            created: false,
                        }
                    }
                },
                (None, Some(j)) => Enqueued {
                    task: out[j].task.clone(),
                    created: false,
                },
                (None, None) => return Err(StoreError::Corrupt("enqueue bookkeeping".into())),
            };
            out.push(e);
        }
        if out.iter().any(|e| e.created) {
            self.signal.notify();
            self.wake_at(
                out.iter()
                    .filter(|e| e.created)
                    .map(|e| common::ms(e.task.run_after)),
            );
        }
        Ok(out)
    }

    async fn complete_batch_once(
        &self,
        worker: &WorkerId,
        items: &[(Lease, TaskResult)],
    ) -> Result<Vec<Result<()>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let ids: Vec<Uuid> = items.iter().map(|(l, _)| l.task_id.0).collect();
        let tokens: Vec<i64> = items.iter().map(|(l, _)| l.token.0).collect();
        let results = items.iter().map(|(_, r)| json(r)).collect::<Result<Vec<_>>>()?;
        // A transaction only so that releasing dependents (rare) commits together with the
        // completion; the completion itself is one statement for the whole batch. The succeeded
        // attempt stays on the task row (see `common::current_attempt`).
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "WITH i AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[]) \
                        AS i(id, token, result)), \
             done AS ( \
               UPDATE tasks t SET state = 'succeeded', finished_at = $4, updated_at = $4, \
                 lease_expires_at = NULL, result = i.result, error_class = NULL, \
                 error_message = NULL \
               FROM i WHERE t.id = i.id AND t.lease_token = i.token AND t.worker_id = $5 \
                 AND t.state = 'running' \
               RETURNING t.id, t.has_dependents, t.constrained), \
             ev AS (INSERT INTO events (task_id, at, kind, data) \
               SELECT id, $4, 'lifecycle', $6 FROM done) \
             SELECT id, has_dependents, constrained FROM done",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(&results)
        .bind(now)
        .bind(worker.as_str())
        .bind(common::event_data(&Lifecycle::Succeeded.into())?)
        .fetch_all(&mut *tx)
        .await?;
        let mut ok = std::collections::HashSet::with_capacity(rows.len());
        let mut release = Vec::new();
        let mut wake = false;
        for r in &rows {
            let id: Uuid = r.try_get("id")?;
            if r.try_get::<bool, _>("has_dependents")? {
                release.push(id);
            }
            wake |= r.try_get::<bool, _>("constrained")?;
            ok.insert(id);
        }
        if !release.is_empty() {
            // A separate statement: it must see dependents committed after the statement
            // above took its snapshot (they locked these rows first, so they are committed).
            sqlx::query(
                "UPDATE tasks t SET deps_pending = t.deps_pending - d.n, updated_at = $1 \
                 FROM (SELECT task_id, count(*)::int AS n FROM task_deps \
                       WHERE dep_id = ANY($2::uuid[]) GROUP BY task_id) d \
                 WHERE t.id = d.task_id",
            )
            .bind(now)
            .bind(&release)
            .execute(&mut *tx)
            .await?;
            wake = true;
        }
        if wake {
            notify(&mut tx, &self.sql.channel).await?;
        }
        tx.commit().await?;
        if wake {
            self.signal.notify();
        }
        Ok(items
            .iter()
            .map(|(l, _)| {
                if ok.contains(&l.task_id.0) {
                    Ok(())
                } else {
                    Err(StoreError::StaleLease(l.task_id))
                }
            })
            .collect())
    }

    fn claimed(&self, rows: &[PgRow]) -> Result<Vec<ClaimedTask>> {
        rows.iter()
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
            .collect()
    }

    /// Claim constrained tasks (branch lock / project slots), serialized across all claimers
    /// and replicas by an advisory lock held only for this short transaction.
    async fn claim_constrained(&self, f: &ClaimFilter, max: i64, now: i64) -> Result<Vec<PgRow>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.sql.claim_lock)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT t.id, t.lock_key, t.project, \
               CASE WHEN t.project IS NULL THEN 0 ELSE \
                 (SELECT count(*) FROM tasks r WHERE r.state = 'running' AND r.project = t.project) \
               END AS project_running, \
               (SELECT p.slots FROM projects p WHERE p.name = t.project) AS project_slots \
             FROM tasks t \
             WHERE t.state = 'queued' AND t.deps_pending = 0 AND t.constrained \
               AND t.run_after <= $1 \
               AND (t.required_agent IS NULL OR t.required_agent = ANY($2::text[])) \
               AND (t.labels IS NULL OR t.labels <@ $3::jsonb) \
               AND (t.lock_key IS NULL OR NOT EXISTS (SELECT 1 FROM tasks r \
                    WHERE r.state = 'running' AND r.lock_key = t.lock_key)) \
               AND (t.project IS NULL OR NOT EXISTS (SELECT 1 FROM projects p \
                    WHERE p.name = t.project AND p.slots IS NOT NULL AND p.slots <= \
                      (SELECT count(*) FROM tasks r WHERE r.state = 'running' AND r.project = t.project))) \
               AND EXISTS (SELECT 1 FROM workers WHERE id = $4 AND status <> 'draining') \
             ORDER BY t.priority DESC, t.run_after, t.id \
             LIMIT $5",
        )
        .bind(now)
        .bind(&f.agents)
        .bind(json(&f.labels)?)
        .bind(f.worker_id.as_str())
        .bind(max.saturating_mul(2).saturating_add(8))
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
        let picked = common::pick_candidates(&cands, usize::try_from(max).unwrap_or(0));
        if picked.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&self.sql.claim_update)
            .bind(now)
            .bind(f.worker_id.as_str())
            .bind(now + dur_ms(f.lease_ttl))
            .bind(uuids(&picked))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn resume_sessions(&self, claimed: &mut [ClaimedTask]) -> Result<()> {
        for c in claimed.iter_mut() {
            if let Some(prev) = c.task.spec.follow_up_of {
                let result: Option<String> = sqlx::query_scalar("SELECT result FROM tasks WHERE id = $1")
                    .bind(prev.0)
                    .fetch_optional(&self.pool)
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
        if common::ms(t.run_after) > self.now() {
            out.push(WaitReason::Scheduled {
                run_after: t.run_after,
            });
        }
        let mut pending: Vec<TaskId> = sqlx::query_scalar(
            "SELECT d.dep_id FROM task_deps d JOIN tasks t ON t.id = d.dep_id \
             WHERE d.task_id = $1 AND t.state <> 'succeeded'",
        )
        .bind(t.id.0)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(TaskId)
        .collect();
        pending.sort();
        if !pending.is_empty() {
            out.push(WaitReason::Dependencies { pending });
        }
        let holder: Option<Uuid> = sqlx::query_scalar(
            "SELECT r.id FROM tasks t JOIN tasks r ON r.lock_key = t.lock_key \
             WHERE t.id = $1 AND r.state = 'running' LIMIT 1",
        )
        .bind(t.id.0)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(h) = holder {
            out.push(WaitReason::BranchLocked {
                branch: t.spec.branch.clone().unwrap_or_default(),
                held_by: TaskId(h),
            });
        }
        if let Some(p) = &t.spec.project {
            let r = sqlx::query(
                "SELECT p.slots, (SELECT count(*) FROM tasks WHERE state = 'running' \
                   AND project = p.name) AS running FROM projects p WHERE p.name = $1",
            )
            .bind(p)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(r) = r {
                let slots: Option<i64> = r.try_get("slots")?;
                let running: i64 = r.try_get("running")?;
                if let Some(slots) = slots
                    && running >= slots
                {
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

    async fn running_counts(&self, worker: Option<&WorkerId>) -> Result<HashMap<String, u32>> {
        let rows = sqlx::query(
            "SELECT worker_id, count(*) AS n FROM tasks WHERE state = 'running' \
             AND ($1::text IS NULL OR worker_id = $1) GROUP BY worker_id",
        )
        .bind(worker.map(|w| w.as_str()))
        .fetch_all(&self.pool)
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

/// Column arrays for one `unnest` insert of many tasks.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    spec: Vec<String>,
    state: Vec<&'static str>,
    priority: Vec<i32>,
    run_after: Vec<i64>,
    max_attempts: Vec<i32>,
    required_agent: Vec<Option<String>>,
    labels: Vec<Option<String>>,
    project: Vec<Option<String>>,
    lock_key: Vec<Option<String>>,
    constrained: Vec<bool>,
    deps_pending: Vec<i32>,
    idem: Vec<Option<String>>,
    error_class: Vec<Option<&'static str>>,
    error_message: Vec<Option<&'static str>>,
    finished_at: Vec<Option<i64>>,
}

#[async_trait]
impl Store for PgStore {
    async fn enqueue(&self, spec: TaskSpec) -> Result<Enqueued> {
        let mut v = self.enqueue_batch(vec![spec]).await?;
        v.pop()
            .ok_or_else(|| StoreError::Corrupt("enqueue returned nothing".into()))
    }

    async fn enqueue_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        // Only an enqueue with dependencies locks other rows (the dependencies), and only it
        // can deadlock with a concurrent completion of those rows; it is retried then.
        if specs.iter().all(|s| s.depends_on.is_empty()) {
            return self.enqueue_batch_once(specs).await;
        }
        let mut tries = 0;
        loop {
            match self.enqueue_batch_once(specs.clone()).await {
                Err(e) if tries < 3 && is_transient(&e) => tries += 1,
                r => return r,
            }
        }
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskDetail>> {
        let Some(r) = sqlx::query(&self.sql.select_task)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let t = task(&r)?;
        let rows = sqlx::query(
            "SELECT task_id, number, worker_id, lease_token, started_at, ended_at, outcome, \
             error_class, error_message FROM attempts WHERE task_id = $1 ORDER BY lease_token",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
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
        let sql = format!(
            "SELECT {} FROM tasks \
             WHERE ($1::text IS NULL OR state = $1) \
               AND ($2::text IS NULL OR project = $2) \
               AND ($3::jsonb IS NULL OR labels @> $3::jsonb) \
               AND ($4::text IS NULL OR worker_id = $4) \
               AND ($5::uuid IS NULL OR id < $5) \
             ORDER BY id DESC LIMIT $6",
            cols("")
        );
        let label = f
            .label
            .as_ref()
            .map(|(k, v)| json(&BTreeMap::from([(k.clone(), v.clone())])))
            .transpose()?;
        let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) };
        sqlx::query(&sql)
            .bind(f.state.map(|s| s.as_str()))
            .bind(f.project.as_deref())
            .bind(label)
            .bind(f.worker.as_ref().map(|w| w.as_str()))
            .bind(f.before.map(|b| b.0))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(task)
            .collect()
    }

    async fn count_by_state(&self) -> Result<BTreeMap<TaskState, u64>> {
        let rows = sqlx::query("SELECT state, count(*) AS n FROM tasks GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut m: BTreeMap<TaskState, u64> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            let s: String = r.try_get("state")?;
            let n: i64 = r.try_get("n")?;
            m.insert(common::parse_state(&s)?, u64::try_from(n).unwrap_or(0));
        }
        Ok(m)
    }

    async fn cancel(&self, id: TaskId) -> Result<Task> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT {}, has_dependents FROM tasks WHERE id = $1 FOR UPDATE",
            cols("")
        );
        let r = sqlx::query(&sql)
            .bind(id.0)
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
                    "UPDATE tasks SET state = $1, error_class = $2, error_message = 'canceled', \
                     finished_at = $3, updated_at = $3 WHERE id = $4",
                )
                .bind(state.as_str())
                .bind(class.map(|c| c.as_str()))
                .bind(now)
                .bind(id.0)
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
                    "UPDATE tasks SET cancel_requested = true, updated_at = $1 \
                     WHERE id = $2 AND NOT cancel_requested",
                )
                .bind(now)
                .bind(id.0)
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
        let t = task(
            &sqlx::query(&self.sql.select_task)
                .bind(id.0)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        tx.commit().await?;
        Ok(t)
    }

    async fn retry(&self, id: TaskId) -> Result<Task> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let state: String = sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "task",
                id: id.to_string(),
            })?;
        agentpool_core::task::retry(common::parse_state(&state)?)?;
        let deps = sqlx::query(
            "SELECT d.dep_id, t.state FROM task_deps d JOIN tasks t ON t.id = d.dep_id \
             WHERE d.task_id = $1",
        )
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await?;
        let mut pending = 0i32;
        for d in &deps {
            let s: String = d.try_get("state")?;
            match common::parse_state(&s)? {
                TaskState::Succeeded => {}
                TaskState::Failed | TaskState::Canceled => {
                    let dep: Uuid = d.try_get("dep_id")?;
                    return Err(StoreError::Conflict(format!(
                        "dependency {dep} did not succeed; retry it first"
                    )));
                }
                _ => pending += 1,
            }
        }
        let r = sqlx::query(&self.sql.retry)
            .bind(now)
            .bind(pending)
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
        let mut log = LifecycleLog::default();
        log.push(id, Lifecycle::Queued)?;
        insert_lifecycle(&mut tx, &log, now).await?;
        notify(&mut tx, &self.sql.channel).await?;
        tx.commit().await?;
        self.signal.notify();
        task(&r)
    }

    async fn claim(&self, f: &ClaimFilter) -> Result<Vec<ClaimedTask>> {
        if f.max == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let max = i64::from(f.max);
        let constrained_waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued' AND deps_pending = 0 \
             AND constrained AND run_after <= $1)",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let mut rows = if constrained_waiting {
            self.claim_constrained(f, max, now).await?
        } else {
            Vec::new()
        };
        let left = max - i64::try_from(rows.len()).unwrap_or(max);
        if left > 0 {
            let hot = sqlx::query(&self.sql.claim_hot)
                .bind(now)
                .bind(&f.agents)
                .bind(json(&f.labels)?)
                .bind(f.worker_id.as_str())
                .bind(left)
                .bind(now + dur_ms(f.lease_ttl))
                .fetch_all(&self.pool)
                .await?;
            rows.extend(hot);
        }
        if rows.is_empty() {
            let exists: Option<String> = sqlx::query_scalar("SELECT status FROM workers WHERE id = $1")
                .bind(f.worker_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound {
                    what: "worker",
                    id: f.worker_id.to_string(),
                });
            }
            return Ok(Vec::new());
        }
        let mut claimed = self.claimed(&rows)?;
        claimed.sort_by(|a, b| {
            b.task
                .priority
                .cmp(&a.task.priority)
                .then(a.task.run_after.cmp(&b.task.run_after))
                .then(a.task.id.cmp(&b.task.id))
        });
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
        let ids: Vec<Uuid> = leases.iter().map(|l| l.task_id.0).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token.0).collect();
        let r = sqlx::query(
            "WITH w AS ( \
               UPDATE workers SET last_heartbeat_at = $1, status = CASE \
                 WHEN status = 'draining' THEN 'draining' WHEN $2 THEN 'busy' ELSE 'idle' END \
               WHERE id = $3 RETURNING status), \
             l AS ( \
               UPDATE tasks t SET lease_expires_at = $4 \
               FROM unnest($5::uuid[], $6::bigint[]) AS i(id, token) \
               WHERE t.id = i.id AND t.lease_token = i.token AND t.worker_id = $3 \
                 AND t.state = 'running' \
               RETURNING t.id, t.cancel_requested) \
             SELECT (SELECT status FROM w) AS status, \
               (SELECT coalesce(array_agg(id), '{}') FROM l) AS held, \
               (SELECT coalesce(array_agg(id) FILTER (WHERE cancel_requested), '{}') FROM l) \
                 AS cancel",
        )
        .bind(now)
        .bind(!leases.is_empty())
        .bind(worker.as_str())
        .bind(now + dur_ms(lease_ttl))
        .bind(&ids)
        .bind(&tokens)
        .fetch_one(&self.pool)
        .await?;
        let status: Option<String> = r.try_get("status")?;
        let Some(status) = status else {
            return Err(StoreError::NotFound {
                what: "worker",
                id: worker.to_string(),
            });
        };
        let held: Vec<Uuid> = r.try_get("held")?;
        let cancel: Vec<Uuid> = r.try_get("cancel")?;
        Ok(HeartbeatReply {
            cancel: cancel.into_iter().map(TaskId).collect(),
            lost: ids
                .iter()
                .filter(|id| !held.contains(id))
                .map(|id| TaskId(*id))
                .collect(),
            drain: status == "draining",
        })
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
        let mut tries = 0;
        loop {
            match self.complete_batch_once(worker, &items).await {
                Err(e) if tries < 3 && is_transient(&e) => tries += 1,
                r => return r,
            }
        }
    }

    async fn fail(&self, worker: &WorkerId, lease: Lease, failure: Failure) -> Result<FailOutcome> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT {HELD_COLS} FROM tasks \
             WHERE id = $1 AND lease_token = $2 AND worker_id = $3 AND state = 'running' \
             FOR UPDATE"
        );
        let Some(r) = sqlx::query(&sql)
            .bind(lease.task_id.0)
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
        let wake = end_attempt(
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
        if wake {
            notify(&mut tx, &self.sql.channel).await?;
        }
        tx.commit().await?;
        if wake {
            self.signal.notify();
        }
        if let Ending::Requeue { delay } = &ending {
            self.wake_at([now + dur_ms(*delay)]);
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
        if let Some(l) = lease
            && l.task_id != task
        {
            return Err(StoreError::StaleLease(task));
        }
        let now = self.now();
        let token = lease.map(|l| l.token.0);
        let mut at = Vec::with_capacity(events.len());
        let mut kind = Vec::with_capacity(events.len());
        let mut data = Vec::with_capacity(events.len());
        for e in &events {
            at.push(e.at.map(common::ms).unwrap_or(now));
            kind.push(e.kind().as_str());
            data.push(common::event_data(&e.payload)?);
        }
        // One statement. The task row is locked while the events are numbered: a re-claim
        // waits for the append (or the append sees the new token and is refused), and two
        // appends to one task commit in the order of their sequence numbers, so a reader
        // following `seq > last` never skips an event that commits late.
        let n = sqlx::query(
            "WITH t AS (SELECT id FROM tasks WHERE id = $1 \
                 AND ($5::bigint IS NULL OR (lease_token = $5 AND state = 'running')) \
                 FOR NO KEY UPDATE) \
             INSERT INTO events (task_id, at, kind, data) \
             SELECT t.id, i.at, i.kind, i.data \
             FROM t, unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY \
               AS i(at, kind, data, ord) \
             ORDER BY i.ord",
        )
        .bind(task.0)
        .bind(&at)
        .bind(&kind)
        .bind(&data)
        .bind(token)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            let ok: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 \
                   AND ($2::bigint IS NULL OR (lease_token = $2 AND state = 'running')))",
            )
            .bind(task.0)
            .bind(token)
            .fetch_one(&self.pool)
            .await?;
            if !ok {
                return Err(match lease {
                    Some(_) => StoreError::StaleLease(task),
                    None => StoreError::NotFound {
                        what: "task",
                        id: task.to_string(),
                    },
                });
            }
        }
        Ok(())
    }

    async fn list_events(&self, task: TaskId, after: i64, limit: u32) -> Result<Vec<Event>> {
        let limit = if limit == 0 { 1000 } else { limit.min(10_000) };
        let rows = sqlx::query(
            "SELECT seq, at, kind, data FROM events WHERE task_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(task.0)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
             registered_at, last_heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, 'idle', $7, $7) \
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
        .fetch_one(&self.pool)
        .await?;
        let running = self.running_counts(Some(&id)).await?;
        worker_row(&r, running.get(id.as_str()).copied().unwrap_or(0))
    }

    async fn get_worker(&self, id: &WorkerId) -> Result<Option<Worker>> {
        let r = sqlx::query("SELECT * FROM workers WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        match r {
            None => Ok(None),
            Some(r) => {
                let running = self.running_counts(Some(id)).await?;
                Ok(Some(worker_row(
                    &r,
                    running.get(id.as_str()).copied().unwrap_or(0),
                )?))
            }
        }
    }

    async fn list_workers(&self) -> Result<Vec<Worker>> {
        let counts = self.running_counts(None).await?;
        sqlx::query("SELECT * FROM workers ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                worker_row(r, counts.get(&id).copied().unwrap_or(0))
            })
            .collect()
    }

    async fn drain_worker(&self, id: &WorkerId) -> Result<Worker> {
        let r = sqlx::query("UPDATE workers SET status = 'draining' WHERE id = $1 RETURNING *")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "worker",
                id: id.to_string(),
            })?;
        let running = self.running_counts(Some(id)).await?;
        worker_row(&r, running.get(id.as_str()).copied().unwrap_or(0))
    }

    async fn deregister_worker(&self, id: &WorkerId) -> Result<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE workers SET status = 'offline' WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        common::found(n, "worker", id.as_str())?;
        // Whatever it still held is rescued by the next maintenance pass instead of waiting
        // for the full lease.
        sqlx::query("UPDATE tasks SET lease_expires_at = $1 WHERE state = 'running' AND worker_id = $2")
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
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, \
             slots = excluded.slots, updated_at = excluded.updated_at RETURNING *",
        )
        .bind(&spec.name)
        .bind(json(&spec)?)
        .bind(spec.slots.map(i64::from))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        // More slots may make waiting tasks runnable.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&self.sql.channel)
            .execute(&self.pool)
            .await?;
        project_row(&r)
    }

    async fn get_project(&self, name: &str) -> Result<Option<Project>> {
        sqlx::query("SELECT * FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(project_row)
            .transpose()
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        sqlx::query("SELECT * FROM projects ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(project_row)
            .collect()
    }

    async fn delete_project(&self, name: &str) -> Result<()> {
        let n = sqlx::query("DELETE FROM projects WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        common::found(n, "project", name)
    }

    async fn put_credential(&self, name: &str, ciphertext: Vec<u8>) -> Result<()> {
        let now = self.now();
        sqlx::query(
            "INSERT INTO credentials (name, ciphertext, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET \
             ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(ciphertext)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_credential(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT ciphertext FROM credentials WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn list_credentials(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM credentials ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn delete_credential(&self, name: &str) -> Result<()> {
        let n = sqlx::query("DELETE FROM credentials WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        common::found(n, "credential", name)
    }

    async fn create_token(&self, t: TokenRecord) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO tokens (id, name, role, hash, created_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(common::ms(t.created_at))
        .bind(t.revoked)
        .execute(&self.pool)
        .await;
        common::token_created(r)
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        sqlx::query("SELECT * FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_row)
            .transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn revoke_token(&self, id: &str) -> Result<()> {
        let n = sqlx::query("UPDATE tokens SET revoked = true WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        common::found(n, "token", id)
    }

    async fn mark_workers_offline(&self, threshold: Duration) -> Result<u64> {
        let cutoff = self.now() - dur_ms(threshold);
        // A conditional update: replicas running this at once each mark a worker at most once.
        Ok(sqlx::query(
            "UPDATE workers SET status = 'offline' \
             WHERE status <> 'offline' AND last_heartbeat_at < $1",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn requeue_expired(&self) -> Result<u64> {
        let now = self.now();
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            // SKIP LOCKED: replicas running maintenance at once split the expired rows
            // instead of waiting for (or double-processing) each other's.
            let sql = format!(
                "SELECT {HELD_COLS} FROM tasks WHERE state = 'running' AND lease_expires_at < $1 \
                 ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
            );
            let rows = sqlx::query(&sql)
                .bind(now)
                .bind(common::EXPIRE_BATCH)
                .fetch_all(&mut *tx)
                .await?;
            let n = rows.len();
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
                wake |= end_attempt(
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
            }
            insert_lifecycle(&mut tx, &log, now).await?;
            if wake {
                notify(&mut tx, &self.sql.channel).await?;
            }
            tx.commit().await?;
            if wake {
                self.signal.notify();
            }
            total += n as u64;
            if (n as i64) < common::EXPIRE_BATCH {
                break;
            }
        }
        Ok(total)
    }

    async fn purge_finished(&self, retention: Duration) -> Result<u64> {
        let cutoff = self.now() - dur_ms(retention);
        let mut total = 0;
        loop {
            let n: i64 = sqlx::query_scalar(
                "WITH d AS ( \
                   DELETE FROM tasks WHERE id IN ( \
                     SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < $1 \
                       AND state IN ('succeeded', 'failed', 'canceled') \
                     LIMIT $2 FOR UPDATE SKIP LOCKED) \
                   RETURNING id), \
                 e AS (DELETE FROM events WHERE task_id IN (SELECT id FROM d)), \
                 a AS (DELETE FROM attempts WHERE task_id IN (SELECT id FROM d)), \
                 x AS (DELETE FROM task_deps WHERE task_id IN (SELECT id FROM d) \
                         OR dep_id IN (SELECT id FROM d)) \
                 SELECT count(*) FROM d",
            )
            .bind(cutoff)
            .bind(PURGE_BATCH)
            .fetch_one(&self.pool)
            .await?;
            total += u64::try_from(n).unwrap_or(0);
            if n < PURGE_BATCH {
                break;
            }
        }
        Ok(total)
    }

    fn work_listener(&self) -> WorkListener {
        self.signal.listener()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
