//! The PostgreSQL store: claims with `FOR UPDATE SKIP LOCKED` in one statement for up to N
//! tasks, batched completions in one statement, and a LISTEN/NOTIFY work signal fanned out from
//! one listener connection per store. No transaction stays open while a task runs.
//!
//! Tasks that need a branch lock or project slots ("constrained") are claimed in a separate,
//! serialized step (a transaction-scoped advisory lock), because SKIP LOCKED alone cannot stop
//! two claimers from taking two different rows that share a branch. Unconstrained tasks — the
//! bulk — never touch that lock.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{ClaimedTask, FailOutcome, HeartbeatReply};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{
    Event, Lease, NewEvent, Project, Task, TaskId, TaskResult, TaskSpec, TaskState, Worker, WorkerId,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::common::{self, Ending, LifecycleLog, StoreRow, dur_ms, ts};
use crate::{
    ClaimFilter, ClaimWaiter, Enqueued, Failure, Result, Scope, Shape, Store, StoreConfig, StoreError,
    TaskDetail, TaskFilter, TokenRecord, WorkListener, WorkSignal,
};

mod enqueue;
mod github;
mod queue;
mod sql;

use sql::{Sql, cols};

/// Workers, projects, credentials and tokens.
mod registry {
    crate::shared::registry::registry_queries!(sqlx::Postgres);
}

/// Task queries shared with SQLite.
mod tasks {
    use super::{FOR_UPDATE, FOR_UPDATE_SKIP_LOCKED, ids_param, in_ids, insert_lifecycle, tid};
    crate::shared::tasks::task_queries!(sqlx::Postgres);
}

/// Row locks taken where an attempt ends or a task is canceled or retried. SKIP LOCKED in the
/// rescue: replicas running maintenance at once split the expired rows instead of waiting for
/// (or double-processing) each other's.
const FOR_UPDATE: &str = " FOR UPDATE";
const FOR_UPDATE_SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

fn tid(id: TaskId) -> Uuid {
    id.0
}

fn ids_param(ids: &[TaskId]) -> Result<Vec<Uuid>> {
    Ok(uuids(ids))
}

fn in_ids(n: usize) -> String {
    format!("SELECT unnest(${n}::uuid[])")
}

fn uuids(ids: &[TaskId]) -> Vec<Uuid> {
    ids.iter().map(|t| t.0).collect()
}

/// Append `log`'s lifecycle events with one statement, in order.
async fn insert_lifecycle(conn: &mut PgConnection, log: &LifecycleLog, now: i64) -> Result<()> {
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A deadlock or serialization failure: the transaction was rolled back and may be retried.
fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(d))
        if d.code().is_some_and(|c| c == "40P01" || c == "40001"))
}

async fn notify(tx: &mut Transaction<'static, Postgres>, channel: &str, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The payload of a work NOTIFY: which store sent it (a store ignores its own: it woke its
/// claimers in process already), how many tasks, and their shapes (absent: any). An empty or
/// unreadable payload means one task of any shape.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Note {
    o: u64,
    n: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<Vec<Shape>>,
}

/// NOTIFY payloads are limited to 8000 bytes; beyond this many shapes, say "any".
const NOTE_MAX_SHAPES: usize = 20;

impl Note {
    fn encode(origin: u64, scope: &Scope, n: u32) -> String {
        let s = match scope {
            Scope::Shapes(v) if v.len() <= NOTE_MAX_SHAPES => Some(v.clone()),
            _ => None,
        };
        let note = Note { o: origin, n, s };
        let text = serde_json::to_string(&note).unwrap_or_default();
        if text.len() < 7900 {
            text
        } else {
            format!("{{\"o\":{origin},\"n\":{n}}}")
        }
    }

    /// What a received payload asks this store (`me`) to wake, if anything.
    fn decode(payload: &str, me: u64) -> Option<(Scope, u32)> {
        match serde_json::from_str::<Note>(payload) {
            Ok(n) if n.o == me => None,
            Ok(n) => Some((n.s.map_or(Scope::Any, Scope::Shapes), n.n)),
            Err(_) => Some((Scope::Any, 1)),
        }
    }
}

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
    /// Random id of this store in its NOTIFY payloads.
    origin: u64,
    _listener: Arc<ListenerGuard>,
    /// Pre-built SQL (the column lists are assembled once, not per call).
    sql: Arc<Sql>,
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
        let origin: u64 = rand::random();
        let task = tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        if let Some((scope, count)) = Note::decode(n.payload(), origin) {
                            sig.notify_n(&scope, count);
                        }
                    }
                    Err(e) => {
                        // Notifications sent while disconnected are lost: wake everyone so
                        // they look for themselves, then let recv() reconnect.
                        tracing::warn!(error = %e, "work-signal listener lost its connection");
                        sig.notify_n(&Scope::Any, u32::MAX);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self {
            pool,
            config,
            signal,
            origin,
            _listener: Arc::new(ListenerGuard(task)),
            sql: Arc::new(sql),
        })
    }

    /// Wake claimers here and on every replica when these run_after times come due.
    fn wake_at(&self, run_after: impl IntoIterator<Item = i64>) {
        let pool = self.pool.clone();
        let channel = self.sql.channel.clone();
        let origin = self.origin;
        self.signal.notify_at(
            &self.config.clock,
            run_after,
            move |count| -> crate::futures_like::BoxFuture {
                let (pool, channel) = (pool.clone(), channel.clone());
                Box::pin(async move {
                    let _ = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(channel)
                        .bind(Note::encode(origin, &Scope::Any, count))
                        .execute(&pool)
                        .await;
                })
            },
        );
    }

    /// A NOTIFY payload from this store: `count` tasks of `scope`.
    fn note(&self, scope: &Scope, count: u32) -> String {
        Note::encode(self.origin, scope, count)
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

#[async_trait]
impl Store for PgStore {
    async fn enqueue(&self, spec: TaskSpec) -> Result<Enqueued> {
        let mut v = self.enqueue_batch(vec![spec]).await?;
        v.pop()
            .ok_or_else(|| StoreError::Corrupt("enqueue returned nothing".into()))
    }

    async fn enqueue_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        self.enqueue_many(specs).await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskDetail>> {
        tasks::get_task(&self.pool, id, self.now()).await
    }

    async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        self.list(f).await
    }

    async fn count_by_state(&self) -> Result<BTreeMap<TaskState, u64>> {
        tasks::count_by_state(&self.pool).await
    }

    async fn cancel(&self, id: TaskId) -> Result<Task> {
        let mut tx = self.pool.begin().await?;
        let t = tasks::cancel(&mut tx, id, self.now()).await?;
        tx.commit().await?;
        Ok(t)
    }

    async fn retry(&self, id: TaskId) -> Result<Task> {
        let mut tx = self.pool.begin().await?;
        let t = tasks::retry(&mut tx, id, self.now()).await?;
        notify(&mut tx, &self.sql.channel, &self.note(&Scope::Any, 1)).await?;
        tx.commit().await?;
        self.signal.notify();
        Ok(t)
    }

    async fn claim(&self, f: &ClaimFilter) -> Result<Vec<ClaimedTask>> {
        let mut claimed = self.claim_in_order(f).await?;
        tasks::resume_sessions(&self.pool, &mut claimed).await?;
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
        let mut tries = 0;
        loop {
            match self.complete_many(worker, &items).await {
                Err(e) if tries < 3 && is_transient(&e) => tries += 1,
                r => return r,
            }
        }
    }

    async fn fail(&self, worker: &WorkerId, lease: Lease, failure: Failure) -> Result<FailOutcome> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let f = tasks::fail(&mut tx, worker, lease, &failure, &self.config.retry, now).await?;
        if f.wake {
            notify(&mut tx, &self.sql.channel, &self.note(&Scope::Any, 1)).await?;
        }
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
        tasks::list_events(&self.pool, task, after, limit).await
    }

    async fn register_worker(&self, reg: WorkerRegistration) -> Result<Worker> {
        if let Some(id) = reg.id.as_ref().filter(|_| reg.fresh_start) {
            loop {
                let mut tx = self.pool.begin().await?;
                let (n, wake) =
                    tasks::rescue_batch(&mut tx, &self.config.retry, self.now(), Some(id)).await?;
                let count = u32::try_from(n).unwrap_or(u32::MAX);
                if wake {
                    notify(&mut tx, &self.sql.channel, &self.note(&Scope::Any, count)).await?;
                }
                tx.commit().await?;
                if wake {
                    self.signal.notify_n(&Scope::Any, count);
                }
                if (n as i64) < common::EXPIRE_BATCH {
                    break;
                }
            }
        }
        registry::register_worker(&self.pool, &self.pool, reg, self.now()).await
    }

    async fn get_worker(&self, id: &WorkerId) -> Result<Option<Worker>> {
        registry::get_worker(&self.pool, id).await
    }

    async fn list_workers(&self) -> Result<Vec<Worker>> {
        registry::list_workers(&self.pool).await
    }

    async fn drain_worker(&self, id: &WorkerId) -> Result<Worker> {
        registry::drain_worker(&self.pool, &self.pool, id).await
    }

    async fn report_worker_cache(&self, id: &WorkerId, cache: &agentpool_core::CacheStats) -> Result<()> {
        registry::report_worker_cache(&self.pool, id, cache).await
    }

    async fn mark_worker_unhealthy(&self, id: &WorkerId) -> Result<()> {
        registry::mark_worker_unhealthy(&self.pool, id).await
    }

    async fn deregister_worker(&self, id: &WorkerId) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        registry::deregister_worker(&mut tx, id, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_project(&self, spec: ProjectSpec) -> Result<Project> {
        let p = registry::put_project(&self.pool, spec, self.now()).await?;
        // More slots or budget may let queued tasks run, here and on other replicas.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.sql.channel)
            .bind(self.note(&Scope::Any, 1))
            .execute(&self.pool)
            .await?;
        self.signal.notify();
        Ok(p)
    }

    async fn get_project(&self, name: &str) -> Result<Option<Project>> {
        registry::get_project(&self.pool, name).await
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        registry::list_projects(&self.pool).await
    }

    async fn delete_project(&self, name: &str) -> Result<()> {
        registry::delete_project(&self.pool, name).await
    }

    async fn put_credential(&self, name: &str, ciphertext: Vec<u8>) -> Result<()> {
        registry::put_credential(&self.pool, name, ciphertext, self.now()).await
    }

    async fn get_credential(&self, name: &str) -> Result<Option<Vec<u8>>> {
        registry::get_credential(&self.pool, name).await
    }

    async fn list_credentials(&self) -> Result<Vec<String>> {
        registry::list_credentials(&self.pool).await
    }

    async fn delete_credential(&self, name: &str) -> Result<()> {
        registry::delete_credential(&self.pool, name).await
    }

    async fn put_profile(&self, p: &agentpool_core::Profile) -> Result<()> {
        registry::put_profile(&self.pool, p, self.now()).await
    }

    async fn get_profile(&self, name: &str) -> Result<Option<agentpool_core::Profile>> {
        registry::get_profile(&self.pool, name).await
    }

    async fn list_profiles(&self) -> Result<Vec<agentpool_core::Profile>> {
        registry::list_profiles(&self.pool).await
    }

    async fn delete_profile(&self, name: &str) -> Result<()> {
        registry::delete_profile(&self.pool, name).await
    }

    async fn create_token(&self, t: TokenRecord) -> Result<()> {
        registry::create_token(&self.pool, t).await
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        registry::find_token(&self.pool, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        registry::list_tokens(&self.pool).await
    }

    async fn revoke_token(&self, id: &str) -> Result<()> {
        registry::revoke_token(&self.pool, id).await
    }

    async fn mark_workers_offline(&self, threshold: Duration) -> Result<u64> {
        registry::mark_workers_offline(&self.pool, threshold, self.now()).await
    }

    async fn requeue_expired(&self) -> Result<u64> {
        let now = self.now();
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let (n, wake) = tasks::rescue_batch(&mut tx, &self.config.retry, now, None).await?;
            let count = u32::try_from(n).unwrap_or(u32::MAX);
            if wake {
                notify(&mut tx, &self.sql.channel, &self.note(&Scope::Any, count)).await?;
            }
            tx.commit().await?;
            if wake {
                self.signal.notify_n(&Scope::Any, count);
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
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
