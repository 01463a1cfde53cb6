//! The SQLite store's connection pools, and the rule that a connection goes back to its pool
//! with no transaction open.
//!
//! Why the rule needs enforcing: sqlx starts a `BEGIN IMMEDIATE` transaction in two awaited
//! steps (run the statement, then check that the connection is in a transaction). A call
//! dropped between the two — a long-poll claim whose HTTP client went away, a `select!` that
//! took another branch — has begun the transaction but never built the `Transaction` that
//! would roll it back, so the connection returns to the pool mid-transaction. On the one writer
//! connection that is fatal: it keeps the database's write lock, and every later write fails
//! with "attempted to call begin_with at non-zero transaction depth". The pool therefore rolls
//! back whatever a released connection still has open before anyone else gets it.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, SqliteConnection, TransactionManager};

type TxManager = <Sqlite as sqlx::Database>::TransactionManager;

/// Roll back a transaction left open on `conn`. `Ok(true)`: the connection is clean and can be
/// reused. An error makes the pool close the connection instead (SQLite rolls back on close).
async fn release_clean(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    if TxManager::get_transaction_depth(conn) > 0 {
        tracing::debug!("rolling back a transaction left open by a cancelled store call");
        // Queued behind any rollback a dropped `Transaction` already sent: that one runs
        // first, and this one then finds nothing open.
        TxManager::rollback(conn).await?;
    }
    Ok(true)
}

/// Options shared by every pool of the store.
fn options(max: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .test_before_acquire(false)
        .after_release(|conn, _| Box::pin(release_clean(conn)))
}

/// The one writer connection: SQLite allows one writer at a time, and queuing in the pool is
/// cheaper and fairer than retrying on SQLITE_BUSY.
pub(super) async fn writer(opts: SqliteConnectOptions) -> sqlx::Result<SqlitePool> {
    options(1).min_connections(1).connect_with(opts).await
}

/// Read-only connections alongside the writer.
pub(super) async fn readers(opts: SqliteConnectOptions) -> sqlx::Result<SqlitePool> {
    options(4).connect_with(opts.read_only(true)).await
}

/// One connection for reads and writes, never closed: each connection to `:memory:` would
/// see its own empty database.
pub(super) async fn memory(opts: SqliteConnectOptions) -> sqlx::Result<SqlitePool> {
    options(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(opts)
        .await
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// What a `begin` dropped between its two steps leaves behind, made deterministically: a
    /// transaction begun on the writer with no `Transaction` to end it.
    #[tokio::test]
    async fn a_connection_released_mid_transaction_is_rolled_back_before_reuse() {
        let dir = std::env::temp_dir().join(format!("agentpool-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}/t.db", dir.display()))
            .unwrap()
            .create_if_missing(true);
        let pool = writer(opts).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        {
            let mut conn = pool.acquire().await.unwrap();
            TxManager::begin(&mut conn, Some("BEGIN IMMEDIATE".into()))
                .await
                .unwrap();
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut *conn)
                .await
                .unwrap();
            // Dropped here, still inside the transaction.
        }
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("begin after the leak");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 0, "the abandoned insert was rolled back");
        tx.commit().await.unwrap();
        pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
