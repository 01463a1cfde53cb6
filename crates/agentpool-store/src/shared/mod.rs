//! Queries both backends run with the same SQL, written once. Each file holds a macro that a
//! backend instantiates in its own module with its database type, so the code is compiled
//! against concrete sqlx types (no generic bounds over `sqlx::Database`). SQL here uses only
//! what SQLite and PostgreSQL both accept: `$N` placeholders, `TRUE`/`FALSE`, `CAST`.
//!
//! The instantiating module provides what differs in how task ids travel:
//! - `fn tid(TaskId) -> impl Encode` — one task id as bound (TEXT on SQLite, UUID on PostgreSQL),
//! - `fn in_ids(n: usize) -> String` — a subquery yielding the ids of a list bound at `$n`,
//! - `fn ids_param(&[TaskId]) -> impl Encode` — that list as bound,
//! - `const FOR_UPDATE: &str` and `FOR_UPDATE_SKIP_LOCKED` — the row-lock clauses (empty on
//!   SQLite, whose writes are serial),
//! - `async fn insert_lifecycle(&mut Connection, &LifecycleLog, now)` — the one statement that
//!   appends a batch of lifecycle events.

pub(crate) mod github;
pub(crate) mod registry;
pub(crate) mod store;
pub(crate) mod tasks;
