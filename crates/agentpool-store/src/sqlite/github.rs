//! GitHub bookkeeping on SQLite (the shared SQL of `shared::github`).

crate::shared::github::github_store!(sqlx::Sqlite, super::SqliteStore, writer, reader);
