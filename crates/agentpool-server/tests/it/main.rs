//! Integration tests of agentpool-server: router-level (`oneshot`) and over a real socket, on
//! SQLite and PostgreSQL.

mod support;

mod alerts;
mod dashboard;
mod fleet;
mod flows;
mod github;
mod hostile;
mod lifecycle;
mod notifications;
mod openapi;
mod profiles;
mod queue_stats;
mod refusals;
mod replicas;
mod reserved_keys;
mod router;
mod schedules;
mod spend;
mod tokens;
mod worker_tokens;
