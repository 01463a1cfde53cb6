//! Which database errors mean "the database cannot be reached right now" (a restart, a
//! failover, a dropped connection, a full disk) rather than a fault in a statement: the server
//! answers those with 503 and `Retry-After`, so clients and workers retry instead of giving
//! up, and lease rescue waits until the database has answered again for a while.

use crate::StoreError;

impl StoreError {
    /// Whether retrying the same call later may succeed because the database, not the call,
    /// failed: no connection could be had, the connection broke, or the server is shutting
    /// down, starting up or out of connection slots.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => sqlx_unavailable(e),
            _ => false,
        }
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match e {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
        // A connection cut mid-message (the server went away while we read).
        E::Protocol(_) => true,
        E::Database(db) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            db.code().is_some_and(|c| unavailable_sqlite(&c))
        }
        E::Database(db) => db.code().is_some_and(|c| unavailable_sqlstate(&c)),
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs of an unavailable server: class 08 (connection exception), 57P01
/// `admin_shutdown` (fast/immediate shutdown, `pg_terminate_backend`), 57P02
/// `crash_shutdown`, 57P03 `cannot_connect_now` (starting up or shutting down), 53300
/// `too_many_connections` and 53100 `disk_full`. Serialization failures and deadlocks are not
/// here: they are the statement's own conflicts, which the store retries itself.
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "53100")
}

/// SQLite result codes (extended; the primary code is the low byte) of a database the disk
/// cannot serve now: `SQLITE_IOERR` (10, any kind), `SQLITE_FULL` (13: the disk or the
/// database's size limit is full), `SQLITE_CANTOPEN` (14: a new connection cannot open the
/// file) and `SQLITE_READONLY_DBMOVED` (1032: the file was deleted or replaced under us).
/// A constraint, a misuse or a corrupt file is not here: retrying would not help.
fn unavailable_sqlite(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|n| matches!(n & 0xff, 10 | 13 | 14) || n == 1032)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// A database error as a driver reports it, with just a SQLSTATE.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "terminating connection due to administrator command"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> StoreError {
        StoreError::Database(sqlx::Error::Database(Box::new(Coded(code))))
    }

    #[test]
    fn restarts_shutdowns_and_broken_connections_are_unavailable() {
        for code in ["57P01", "57P02", "57P03", "08006", "08003", "08001", "53300"] {
            assert!(db(code).is_unavailable(), "{code}");
        }
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(StoreError::Database(sqlx::Error::Io(reset)).is_unavailable());
        assert!(StoreError::Database(sqlx::Error::Protocol("unexpected eof".into())).is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
    }

    /// A real SQLite database that has reached its size limit answers `SQLITE_FULL`, as one
    /// on a full disk does; a constraint it breaks is the statement's fault.
    #[tokio::test]
    async fn a_full_sqlite_database_is_unavailable_and_a_broken_constraint_is_not() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("PRAGMA max_page_count = 8")
            .execute(&pool)
            .await
            .unwrap();
        let mut full = None;
        for _ in 0..64 {
            if let Err(e) = sqlx::query("INSERT INTO t (v) VALUES (zeroblob(4096))")
                .execute(&pool)
                .await
            {
                full = Some(StoreError::Database(e));
                break;
            }
        }
        let full = full.expect("the database fills up");
        assert!(full.to_string().contains("full"), "{full}");
        assert!(full.is_unavailable(), "{full}");
        let dup = sqlx::query("INSERT INTO t (k) VALUES (1), (1)")
            .execute(&pool)
            .await
            .expect_err("a duplicate key");
        assert!(!StoreError::Database(dup).is_unavailable());
        assert!(unavailable_sqlite("1032") && unavailable_sqlite("266") && !unavailable_sqlite("19"));
    }

    #[test]
    fn a_statement_fault_is_not_unavailable() {
        for code in ["23505", "22021", "40001", "42P01"] {
            assert!(!db(code).is_unavailable(), "{code}");
        }
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::Corrupt("x".into()).is_unavailable());
    }
}
