//! Applying the schema migrations, and saying in an operator's words why they cannot be.

use sqlx::migrate::{MigrateError, Migrator};

use crate::StoreError;

/// The PostgreSQL migrations this build carries.
pub(crate) static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");
/// The SQLite migrations this build carries.
pub(crate) static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");

/// Apply the migrations `migrator` carries that the database behind `pool` lacks, and log
/// each one applied (at start-up of `serve` and `up`, and as what `agentpool migrate` did). A
/// replica starting at the same moment may log the same ones: both saw them missing.
pub(crate) async fn apply<DB>(migrator: &'static Migrator, pool: &sqlx::Pool<DB>) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate;
    let before: Vec<i64> = {
        let mut conn = pool.acquire().await?;
        conn.ensure_migrations_table()
            .await
            .map_err(|e| error(migrator, e))?;
        let applied = conn
            .list_applied_migrations()
            .await
            .map_err(|e| error(migrator, e))?;
        applied.into_iter().map(|m| m.version).collect()
    };
    migrator.run(pool).await.map_err(|e| error(migrator, e))?;
    for m in migrator.iter().filter(|m| !before.contains(&m.version)) {
        tracing::info!(version = m.version, description = %m.description, "database migration applied");
    }
    Ok(())
}

/// What a failed migration run means for the person starting agentpool. sqlx's own words
/// ("migration 9 was previously applied but is missing in the resolved migrations") describe
/// its bookkeeping; the usual cause is a database a newer agentpool has already migrated, as
/// in a rolling upgrade where an old replica restarts after a new one.
pub(crate) fn error(migrator: &Migrator, e: MigrateError) -> StoreError {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let message = match &e {
        MigrateError::VersionMissing(v) if *v > known => format!(
            "the database was migrated by a newer agentpool (it has migration {v}; this one knows \
             migrations up to {known}): run that version or a newer one"
        ),
        MigrateError::VersionMissing(v) => format!(
            "the database has migration {v}, which this agentpool does not carry: it was migrated \
             by a different build"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "migration {v} in the database differs from this agentpool's: it was migrated by a \
             different build"
        ),
        MigrateError::Dirty(v) => format!(
            "migration {v} failed part-way in an earlier run: restore the database from a backup, \
             or finish that migration by hand, before starting agentpool"
        ),
        _ => return StoreError::Migrate(e),
    };
    StoreError::Schema(message)
}
