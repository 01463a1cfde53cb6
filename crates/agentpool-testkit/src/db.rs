//! Fresh databases for tests: a SQLite file in a temporary directory, or a fresh schema on the
//! test PostgreSQL (`AGENTPOOL_TEST_PG_URL`, a superuser URL) that is dropped afterwards.
//!
//! On PostgreSQL each test gets its own schema in one shared database (`agentpool_test`), with
//! `search_path` set through the URL, rather than its own database: `DROP DATABASE` forces a
//! checkpoint, and many tests doing that at once make every commit on the machine slow. Schemas
//! isolate tables completely; what they share is harmless for tests (NOTIFY channels give at
//! most a spurious wake-up, advisory locks only serialize).
//!
//! These helpers hand out URLs, not stores, so that this crate does not depend on
//! `agentpool-store` (a dependency cycle would give tests two copies of its types). Open a store
//! with `agentpool_store::open_store(db.url())`.
//!
//! ```ignore
//! let Some(db) = TestDb::new(Backend::Postgres).await else { return }; // skipped: no PG
//! let store = agentpool_store::open_store(db.url()).await?;
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The environment variable holding the test PostgreSQL superuser URL.
pub const PG_URL_VAR: &str = "AGENTPOOL_TEST_PG_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database. Dropping it removes the SQLite file or drops the PostgreSQL
/// database.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    backend: Backend,
    /// Keeps the SQLite file's directory alive.
    _dir: Option<tempfile::TempDir>,
    /// (URL of the shared test database, schema name) to drop on drop.
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database of `backend`. `None` when PostgreSQL is asked for but
    /// `AGENTPOOL_TEST_PG_URL` is not set and services are not required (the caller skips);
    /// panics when they are required ([`crate::services_required`]) or creation fails.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A SQLite database file in a new temporary directory (WAL mode needs a real file).
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory for SQLite");
        let path = dir.path().join("agentpool.db");
        TestDb {
            url: format!("sqlite://{}", path.display()),
            backend: Backend::Sqlite,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A new schema on the test PostgreSQL; see [`TestDb::new`] for when it is `None`.
    pub async fn postgres() -> Option<TestDb> {
        let Some(admin) = pg_admin_url() else {
            assert!(
                !crate::services_required(),
                "{PG_URL_VAR} is not set but services are required (source scripts/services.sh)"
            );
            eprintln!("skipping: {PG_URL_VAR} not set");
            return None;
        };
        let shared = ensure_shared_database(&admin).await;
        let name = fresh_name();
        let mut conn = PgConnection::connect(&shared)
            .await
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL at {PG_URL_VAR}: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create test schema {name}: {e}"));
        let _ = conn.close().await;
        let sep = if shared.contains('?') { '&' } else { '?' };
        Some(TestDb {
            url: format!("{shared}{sep}options=-csearch_path%3D{name}"),
            backend: Backend::Postgres,
            _dir: None,
            pg: Some((shared, name)),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((shared, name)) = self.pg.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which must not be blocked on; a short-lived
        // thread with its own runtime does the (best-effort) cleanup.
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&shared).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut c)
                        .await;
                    let _ = c.close().await;
                }
            });
        });
        let _ = t.join();
    }
}

/// The test PostgreSQL superuser URL, if configured.
pub fn pg_admin_url() -> Option<String> {
    std::env::var(PG_URL_VAR).ok().filter(|s| !s.is_empty())
}

/// The name of the database all test schemas live in.
pub const SHARED_DB: &str = "agentpool_test";

/// Create the shared test database once (concurrent test processes may race to do it).
async fn ensure_shared_database(admin: &str) -> String {
    let mut conn = PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL at {PG_URL_VAR}: {e}"));
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(SHARED_DB)
        .fetch_optional(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("look for the test database: {e}"));
    if exists.is_none()
        && let Err(e) = sqlx::query(&format!("CREATE DATABASE {SHARED_DB}"))
            .execute(&mut conn)
            .await
    {
        // Lost the race to another test process: fine, it exists now.
        let raced = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "42P04" || c == "23505");
        assert!(raced, "create the shared test database: {e}");
    }
    let _ = conn.close().await;
    replace_db_name(admin, SHARED_DB)
}

/// A schema name unique across concurrently running test binaries and tests.
fn fresh_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let u = uuid::Uuid::now_v7().simple().to_string();
    format!("ap_test_{}_{}_{n}", std::process::id(), &u[u.len() - 10..])
}

/// `postgres://u@h:p/olddb?x` → `postgres://u@h:p/newdb?x`.
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            replace_db_name("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_db_name("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(replace_db_name("postgres://h", "z"), "postgres://h/z");
    }
}
