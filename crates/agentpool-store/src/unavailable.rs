//! Which database errors mean "the database cannot be reached right now" (a restart, a
//! failover, a dropped connection) rather than a fault in a statement: the server answers
//! those with 503 and `Retry-After`, so clients and workers retry instead of giving up.

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
        E::Database(db) => db.code().is_some_and(|c| unavailable_sqlstate(&c)),
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs of an unavailable server: class 08 (connection exception), 57P01
/// `admin_shutdown` (fast/immediate shutdown, `pg_terminate_backend`), 57P02
/// `crash_shutdown`, 57P03 `cannot_connect_now` (starting up or shutting down) and 53300
/// `too_many_connections`. Serialization failures and deadlocks are not here: they are the
/// statement's own conflicts, which the store retries itself.
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
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

    #[test]
    fn a_statement_fault_is_not_unavailable() {
        for code in ["23505", "22021", "40001", "42P01"] {
            assert!(!db(code).is_unavailable(), "{code}");
        }
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::Corrupt("x".into()).is_unavailable());
    }
}
