//! The PostgreSQL store: claims with `FOR UPDATE SKIP LOCKED` in one statement for up to N
//! tasks, batched completions in one statement, and a LISTEN/NOTIFY work signal fanned out from
//! one listener connection per store. No transaction stays open while a task runs.
//!
//! Tasks that need a branch lock or project slots ("constrained") are claimed in a separate,
//! serialized step (a transaction-scoped advisory lock), because SKIP LOCKED alone cannot stop
//! two claimers from taking two different rows that share a branch. Unconstrained tasks — the
//! bulk — never touch that lock.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::{TaskId, WorkerId};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, PgConnection, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::common::{self, LifecycleLog, StoreRow};
use crate::{Result, Scope, Shape, StoreConfig, StoreError, WorkSignal};

mod enqueue;
mod queue;
mod reads;
mod sql;

use sql::{Sql, cols};

crate::shared::backend!(sqlx::Postgres, PgStore, pool, pool);

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

/// A condition true when task `t`'s labels include every pair of the JSON object bound at
/// `$n` (or that is NULL).
fn labels_include(n: usize) -> String {
    format!("(${n}::jsonb IS NULL OR t.labels @> ${n}::jsonb)")
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

/// Run `op` again (up to three more times) when it failed with a deadlock or serialization
/// failure: the transaction was rolled back and may be retried.
async fn retry_transient<T, F: Future<Output = Result<T>>>(mut op: impl FnMut() -> F) -> Result<T> {
    let mut tries = 0;
    loop {
        match op().await {
            Err(StoreError::Database(sqlx::Error::Database(d)))
                if tries < 3 && d.code().is_some_and(|c| c == "40P01" || c == "40001") =>
            {
                tries += 1
            }
            r => return r,
        }
    }
}

/// The payload of a work NOTIFY: which store sent it (a store ignores its own: it woke its
/// claimers in process already), how many tasks, and their shapes (absent: any). An empty or
/// unreadable payload means one task of any shape. With `w`, it rings that worker's bell
/// instead (and `n` is 0, so a replica that predates bells wakes nobody).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Note {
    o: u64,
    n: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<Vec<Shape>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<WorkerId>,
}

/// What a received NOTIFY asks of this store.
#[derive(Debug, PartialEq)]
enum Heard {
    Work(Scope, u32),
    Bell(WorkerId),
}

/// NOTIFY payloads are limited to 8000 bytes; beyond this many shapes, say "any".
const NOTE_MAX_SHAPES: usize = 20;

impl Note {
    fn encode(origin: u64, scope: &Scope, n: u32) -> String {
        let s = match scope {
            Scope::Shapes(v) if v.len() <= NOTE_MAX_SHAPES => Some(v.clone()),
            _ => None,
        };
        let note = Note {
            o: origin,
            n,
            s,
            w: None,
        };
        let text = serde_json::to_string(&note).unwrap_or_default();
        if text.len() < 7900 {
            text
        } else {
            format!("{{\"o\":{origin},\"n\":{n}}}")
        }
    }

    fn bell(origin: u64, worker: &WorkerId) -> String {
        let note = Note {
            o: origin,
            n: 0,
            s: None,
            w: Some(worker.clone()),
        };
        serde_json::to_string(&note).unwrap_or_default()
    }

    /// What a received payload asks this store (`me`) to do, if anything.
    fn decode(payload: &str, me: u64) -> Option<Heard> {
        match serde_json::from_str::<Note>(payload) {
            Ok(n) if n.o == me => None,
            Ok(Note { w: Some(w), .. }) => Some(Heard::Bell(w)),
            Ok(n) => Some(Heard::Work(n.s.map_or(Scope::Any, Scope::Shapes), n.n)),
            Err(_) => Some(Heard::Work(Scope::Any, 1)),
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

/// The PostgreSQL implementation of [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The connections of the worker hot path (claim, completion, heartbeat, event append),
    /// which plan their statements once per connection (`plan_cache_mode =
    /// force_generic_plan`). Left to itself PostgreSQL re-plans these statements on every call
    /// (their custom plans look cheaper than the generic one), which costs about a fifth of
    /// what executing a 100-task claim does; their best plan does not depend on the values
    /// bound. The other statements keep per-call plans: some have optional filters
    /// (`$1 IS NULL OR …`) whose index use depends on the values.
    hot: PgPool,
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

    /// Apply the migrations the database at `url` lacks, with nothing else of a store opened
    /// (no listener, no pool of its own): what `agentpool migrate` does.
    pub(crate) async fn migrate(url: &str) -> Result<crate::schema::Applied> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        let applied = crate::schema::apply(&crate::schema::POSTGRES, &pool).await;
        pool.close().await;
        applied
    }

    pub async fn open_with(url: &str, config: StoreConfig) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(config.max_connections.unwrap_or(16))
                // While the database is down, a call waits this long (sqlx retries the
                // connection meanwhile) before it is answered 503: within the time a worker
                // waits for a heartbeat's answer, so it hears "retry" instead of nothing.
                .acquire_timeout(Duration::from_secs(5))
                // sqlx pings every connection it hands out by default: a round trip per query.
                // A broken connection shows up as an error on use and is dropped by the pool.
                .test_before_acquire(false)
        };
        let hot = pool_options()
            .connect_lazy_with(opts.clone().options([("plan_cache_mode", "force_generic_plan")]));
        let pool = pool_options().connect_with(opts).await?;
        crate::schema::apply(&crate::schema::POSTGRES, &pool).await?;
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
            let mut lost = false;
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        lost = false;
                        match Note::decode(n.payload(), origin) {
                            Some(Heard::Work(scope, count)) => sig.notify_n(&scope, count),
                            Some(Heard::Bell(w)) => sig.bells.ring(&w),
                            None => {}
                        }
                    }
                    Err(e) => {
                        // Notifications sent while disconnected are lost: wake everyone so
                        // they look for themselves, then let recv() reconnect. Said once, not
                        // at each reconnection attempt while the database is down (the server
                        // says that once itself).
                        if !lost {
                            tracing::warn!(error = %e, "work-signal listener lost its connection; reconnecting");
                        }
                        lost = true;
                        sig.notify_n(&Scope::Any, u32::MAX);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self {
            pool,
            hot,
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

    /// Tell the other replicas that `count` tasks of any shape may have become claimable;
    /// through a transaction, the NOTIFY is delivered when it commits.
    async fn announce<'c>(&self, conn: impl Executor<'c, Database = Postgres>, count: u32) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.sql.channel)
            .bind(self.note(&Scope::Any, count))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Nothing to wait for: PostgreSQL ends a connection's session when the process exits,
    /// and the work-signal listener holds one of the pool's connections for as long as the
    /// store lives, which closing the pool would wait for.
    async fn close_connections(&self) {}

    /// Ring `worker`'s bell on the other replicas. Best effort: a ring that does not arrive
    /// only leaves the worker to hear the news at its next heartbeat.
    async fn ring_others(&self, worker: &WorkerId) {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.sql.channel)
            .bind(Note::bell(self.origin, worker))
            .execute(&self.pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, worker = %worker, "could not ring the worker on other replicas");
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
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
