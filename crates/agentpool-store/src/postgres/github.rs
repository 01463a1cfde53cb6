//! GitHub bookkeeping on PostgreSQL (the shared SQL of `shared::github`).

crate::shared::github::github_store!(sqlx::Postgres, super::PgStore, pool, pool);
