//! Queries both backends run with the same SQL, written once. Each file but [`claim`] (SQL
//! text that the backends complete and run themselves) holds a macro that a backend
//! instantiates in its own module with its database type, so the code is compiled against
//! concrete sqlx types (no generic bounds over `sqlx::Database`). SQL here uses only what
//! SQLite and PostgreSQL both accept: `$N` placeholders, `TRUE`/`FALSE`, `CAST`.
//!
//! The instantiating module provides what differs in how task ids travel:
//! - `fn tid(TaskId) -> impl Encode` — one task id as bound (TEXT on SQLite, UUID on PostgreSQL),
//! - `fn in_ids(n: usize) -> String` — a subquery yielding the ids of a list bound at `$n`,
//! - `fn ids_param(&[TaskId]) -> impl Encode` — that list as bound,
//! - `fn labels_include(n: usize) -> String` — a condition on task `t` whose labels include the
//!   JSON object bound at `$n`,
//! - `const FOR_UPDATE: &str` and `FOR_UPDATE_SKIP_LOCKED` — the row-lock clauses (empty on
//!   SQLite, whose writes are serial),
//! - `async fn insert_lifecycle(&mut Connection, &LifecycleLog, now)` — the one statement that
//!   appends a batch of lifecycle events,
//! - the store's own methods [`store`] lists.
//!
//! [`backend`] instantiates all of it in one go.

pub(crate) mod claim;
pub(crate) mod counts;
pub(crate) mod github;
pub(crate) mod handover;
pub(crate) mod manual;
pub(crate) mod notifications;
pub(crate) mod registry;
pub(crate) mod schedules;
pub(crate) mod spend;
pub(crate) mod store;
pub(crate) mod tasks;

/// Instantiate the shared code for store `$store` on database `$db`, writing through the pool
/// `self.$w` and reading through `self.$r`: the modules `registry`, `spend`, `counts`, `tasks`
/// and `manual` (queries), `store` (the [`crate::Store`] implementation), `handover` (new tasks
/// handed to parked claimers), `github` (the GitHub bookkeeping), `schedules` and
/// `notifications`.
macro_rules! backend {
    ($db:ty, $store:ident, $w:ident, $r:ident) => {
        /// Workers, projects, credentials and tokens.
        mod registry {
            $crate::shared::registry::registry_queries!($db);
        }

        /// Each project's reported spend per UTC day.
        mod spend {
            $crate::shared::spend::spend_queries!($db);
        }

        /// Counts of tasks by state and of the tasks that ended lately.
        mod counts {
            $crate::shared::counts::count_queries!($db);
        }

        /// Task queries shared by both backends.
        mod tasks {
            use super::{
                FOR_UPDATE, FOR_UPDATE_SKIP_LOCKED, ids_param, in_ids, insert_lifecycle, spend, tid,
            };
            $crate::shared::tasks::task_queries!($db);
        }

        /// Cancel and retry, shared by both backends.
        mod manual {
            use super::tasks::cascade_failure;
            use super::{FOR_UPDATE, insert_lifecycle, tid};
            $crate::shared::manual::manual_queries!($db);
        }

        /// The [`Store`](crate::Store) implementation shared by both backends.
        mod store {
            use super::{counts, manual, registry, spend, tasks};
            $crate::shared::store::store_impl!(super::$store, $w, $r);
        }

        /// Hand-over of new tasks to parked claimers.
        mod handover {
            $crate::shared::handover::handover_impl!($db, super::$store, $w);
        }

        /// GitHub bookkeeping (the shared SQL of `shared::github`).
        mod github {
            use super::{ids_param, in_ids};
            $crate::shared::github::github_store!($db, super::$store, $w, $r);
        }

        /// Schedules (the shared SQL of `shared::schedules`).
        mod schedules {
            $crate::shared::schedules::schedule_store!($db, super::$store, $w, $r);
        }

        /// Notifications and their deliveries (the shared SQL of `shared::notifications`).
        mod notifications {
            use super::labels_include;
            $crate::shared::notifications::notification_store!($db, super::$store, $w, $r);
        }
    };
}
pub(crate) use backend;
