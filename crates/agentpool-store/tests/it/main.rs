//! The store's shared test suite: every scenario runs against SQLite and PostgreSQL, each on a
//! fresh database (`both!` generates a `sqlite` and a `postgres` test per scenario).

mod harness;

mod budget;
mod cancel;
mod cancellation;
mod counts;
mod deps;
mod dispatch;
mod events;
mod follow_ups;
mod handover;
mod infra;
mod lease;
mod lifecycle;
mod locks;
mod maintenance;
mod notifications;
mod projects;
mod queue;
mod registry;
mod runnable;
mod schedules;
mod schema;
mod signal;
