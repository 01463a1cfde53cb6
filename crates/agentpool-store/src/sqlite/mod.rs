//! The SQLite store: one file in WAL mode (or memory for tests), one writer connection so that
//! writes never fight over the database lock inside the process, readers alongside. Claims run
//! in `BEGIN IMMEDIATE` transactions; the work signal is in-process.
//!
//! What only SQLite does is in [`queue`] (enqueue, claim, heartbeat, complete, events, purge)
//! and [`reads`] (task lists, the queued tasks queue statistics count);
//! everything else is the shared code of [`crate::shared`], instantiated in [`registry`],
//! [`tasks`] and [`store`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::TaskId;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow, SqliteSynchronous};
use sqlx::{Executor, Row, Sqlite, SqliteConnection, Transaction};

use crate::common::{self, LifecycleLog, StoreRow, corrupt, json};
use crate::{Result, StoreConfig, WorkSignal};

mod file;
mod pool;
mod queue;
mod reads;

crate::shared::backend!(sqlx::Sqlite, SqliteStore, writer, reader);

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

/// A condition true when task `t`'s labels include every pair of the JSON object bound at
/// `$n` (or that is NULL).
fn labels_include(n: usize) -> String {
    format!(
        "(${n} IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(${n}) w WHERE NOT EXISTS \
         (SELECT 1 FROM json_each(t.labels) l WHERE l.key = w.key AND l.value = w.value)))"
    )
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

/// How the database file at `url` is opened, made if missing.
fn file_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .pragma("temp_store", "memory"))
}

/// An exclusive advisory lock (flock) on the directory of the database file at `path`, held
/// while the returned descriptor is open (taken off the async threads: it waits for another
/// opener's migrations).
///
/// The directory, not the file: closing any descriptor of a file drops every POSIX lock the
/// process holds on it, SQLite's included (those of another store of this process on the same
/// file too). A store whose connections had lost their lock looks unused to another process,
/// which on closing its last connection takes the database as its alone, checkpoints and
/// deletes the write-ahead log; from then on the store writes into a log nothing will read, and
/// every change it makes is lost.
async fn opening_lock(path: &std::path::Path) -> Result<std::fs::File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&dir)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?;
    Ok(locked.map_err(sqlx::Error::Io)?)
}

/// The SQLite implementation of [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The only connection that writes (see [`pool`]).
    writer: SqlitePool,
    reader: SqlitePool,
    config: StoreConfig,
    signal: WorkSignal,
    /// The database file, checked before each write transaction (none in memory).
    file: Option<Arc<file::FileWatch>>,
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
        let opts = file_options(url)?;
        let writer = {
            // Opening a database takes a lock SQLite cannot wait for: the first connection to a
            // new file turns it to WAL mode, and another connecting meanwhile fails at once with
            // "database is locked". And SQLite's migrations take no lock of their own: two
            // processes opening a new database at once (two transient `agentpool run`s on a
            // fresh data dir) would both apply the first one, and the second fail on "table
            // tasks already exists". An advisory lock taken before connecting makes the second
            // wait, then find the file in WAL mode and the schema in place.
            let _opening = opening_lock(opts.get_filename()).await?;
            let writer = pool::writer(opts.clone()).await?;
            crate::schema::apply(&crate::schema::SQLITE, &writer).await?;
            writer
        };
        let file = file::FileWatch::new(opts.get_filename()).map_err(sqlx::Error::Io)?;
        let reader = pool::readers(opts).await?;
        Ok(Self {
            writer,
            reader,
            config,
            signal: WorkSignal::new(),
            file: Some(Arc::new(file)),
        })
    }

    /// Apply the migrations the database file at `url` (made if missing) lacks, with nothing
    /// else of a store opened: what `agentpool migrate` does.
    pub(crate) async fn migrate(url: &str) -> Result<crate::schema::Applied> {
        let opts = file_options(url)?;
        let _opening = opening_lock(opts.get_filename()).await?;
        let writer = pool::writer(opts).await?;
        let applied = crate::schema::apply(&crate::schema::SQLITE, &writer).await;
        writer.close().await;
        applied
    }

    /// A private in-memory database (tests). One connection serves reads and writes, since each
    /// connection to `:memory:` would see its own empty database.
    pub async fn memory() -> Result<Self> {
        Self::memory_with(StoreConfig::default()).await
    }

    pub async fn memory_with(config: StoreConfig) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = pool::memory(opts).await?;
        crate::schema::apply(&crate::schema::SQLITE, &pool).await?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            config,
            signal: WorkSignal::new(),
            file: None,
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn now(&self) -> i64 {
        self.config.clock.now_ms()
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        if let Some(file) = &self.file {
            file.check()?;
        }
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Nothing to tell: there are no other replicas, and claimers in this process are woken
    /// through the work signal.
    async fn announce<'c>(&self, _conn: impl Executor<'c, Database = Sqlite>, _count: u32) -> Result<()> {
        Ok(())
    }

    /// Close the readers, then the writer, and wait until they are closed: the last connection
    /// to close (of all processes) checkpoints the write-ahead log into the database file, when
    /// it is one that may write.
    async fn close_connections(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Nothing to do: there are no other replicas.
    async fn ring_others(&self, _worker: &agentpool_core::WorkerId) {}

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
