//! Applying the schema migrations, and saying in an operator's words why they cannot be.

use sqlx::migrate::{MigrateError, Migrator};

use crate::StoreError;

/// The PostgreSQL migrations this build carries.
pub(crate) static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");
/// The SQLite migrations this build carries.
pub(crate) static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");

/// What [`apply`] did to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// It was new: every migration was applied, up to `version`.
    Created { version: i64, migrations: usize },
    /// It had a schema: these migrations (version, description) were applied, perhaps none.
    Migrated(Vec<(i64, String)>),
}

/// What `agentpool migrate` did ([`crate::migrate`]), and the schema version the database is
/// at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub change: Applied,
    pub version: i64,
}

/// Apply the migrations `migrator` carries that the database behind `pool` lacks, and log
/// what was done (at start-up of `serve` and `up`, and as what `agentpool migrate` did): one
/// line for a new database, not one a migration, and each migration applied to an existing
/// one. A replica starting at the same moment may log the same ones: both saw them missing.
pub(crate) async fn apply<DB>(migrator: &Migrator, pool: &sqlx::Pool<DB>) -> Result<Applied, StoreError>
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
    let applied: Vec<(i64, String)> = migrator
        .iter()
        .filter(|m| !before.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    let done = match applied.last() {
        Some(&(version, _)) if before.is_empty() => Applied::Created {
            version,
            migrations: applied.len(),
        },
        _ => Applied::Migrated(applied),
    };
    match &done {
        Applied::Created { version, migrations } => {
            tracing::info!(version, migrations, "database schema created")
        }
        Applied::Migrated(applied) => {
            for (version, description) in applied {
                tracing::info!(version, %description, "database migration applied");
            }
        }
    }
    Ok(done)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrator of the SQL files `files` (name, text) in `dir`.
    async fn migrator(dir: &std::path::Path, files: &[(&str, &str)]) -> Migrator {
        for (name, sql) in files {
            std::fs::write(dir.join(name), sql).unwrap();
        }
        Migrator::new(dir).await.unwrap()
    }

    #[tokio::test]
    async fn a_new_database_is_created_in_one_step_and_an_old_one_migrated_step_by_step() {
        let dir = tempfile::tempdir().unwrap();
        // One connection: each connection to `:memory:` has a database of its own.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let first = [
            ("1_init.sql", "CREATE TABLE a (x INTEGER);"),
            ("2_more.sql", "CREATE TABLE b (x INTEGER);"),
        ];
        let m = migrator(dir.path(), &first).await;
        assert_eq!(
            apply(&m, &pool).await.unwrap(),
            Applied::Created {
                version: 2,
                migrations: 2
            }
        );
        assert_eq!(apply(&m, &pool).await.unwrap(), Applied::Migrated(Vec::new()));
        let m = migrator(
            dir.path(),
            &[("3_column.sql", "ALTER TABLE b ADD COLUMN y TEXT;")],
        )
        .await;
        assert_eq!(
            apply(&m, &pool).await.unwrap(),
            Applied::Migrated(vec![(3, "column".to_string())])
        );
        sqlx::query("INSERT INTO b (x, y) VALUES (1, 'y')")
            .execute(&pool)
            .await
            .unwrap();
    }
}
