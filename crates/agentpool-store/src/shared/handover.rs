//! Hand-over of new tasks to parked claimers, the same on both backends (the protocol is in
//! [`crate::dispatch`]): an enqueue reserves waiters for its claimable tasks before it
//! writes, claims those tasks for the waiters' workers in its own transaction, and delivers
//! them after the commit; a task whose waiter left before taking it goes back to the queue.

use agentpool_core::TaskId;

use crate::dispatch::Dispatch;
use crate::{Reservation, Shape};

/// Waiters reserved for some tasks of one enqueue. A reservation still here when the
/// plan is dropped — after the commit, so that the task it was for is visible — is
/// released: its waiter claims for itself.
pub(crate) struct Plan {
    pub(crate) dispatch: Dispatch,
    pub(crate) by_task: Vec<(TaskId, Shape, Reservation)>,
}

impl Drop for Plan {
    fn drop(&mut self) {
        for (_, _, r) in self.by_task.drain(..) {
            self.dispatch.release(r.member);
        }
    }
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }

    /// Whether task `id` has a waiter reserved (and so needs no wake-up).
    pub(crate) fn has(&self, id: TaskId) -> bool {
        self.handoff(id).is_some()
    }

    /// Whose claim task `id` becomes, if a waiter is reserved for it.
    pub(crate) fn handoff(&self, id: TaskId) -> Option<&crate::HandOff> {
        self.by_task
            .iter()
            .find(|(t, _, _)| *t == id)
            .map(|(_, _, r)| &r.to)
    }

    /// The tasks with a waiter reserved, each with whose claim it becomes.
    pub(crate) fn handoffs(&self) -> Vec<(TaskId, crate::HandOff)> {
        self.by_task.iter().map(|(t, _, r)| (*t, r.to.clone())).collect()
    }

    /// Task `id` was claimed for its reserved waiter: that reservation, to deliver it.
    pub(crate) fn take(&mut self, id: TaskId) -> Option<Reservation> {
        let i = self.by_task.iter().position(|(t, _, _)| *t == id)?;
        Some(self.by_task.swap_remove(i).2)
    }
}

/// Implement the hand-over methods for `$store` on database `$db` (how a backend writes a
/// handed task already claimed is its own: see its enqueue); the invoking module has
/// `tid` and `insert_lifecycle` in scope, and the store has
/// `begin`, `announce`, `now`, `signal` and its writer pool `$w`.
macro_rules! handover_impl {
    ($db:ty, $store:ty, $w:ident) => {
        use agentpool_core::protocol::ClaimedTask;
        use agentpool_core::{Lease, Lifecycle, TaskId, TaskSpec, WorkerId};

        use super::{insert_lifecycle, tid};
        use $crate::common::LifecycleLog;
        use $crate::shared::handover::Plan;
        use $crate::{Result, Scope, Shape};

        /// At most this many tasks of one enqueue are handed over (a big batch is claimed
        /// faster by waiters taking it in batches); the rest wake waiters.
        const HANDOVER_MAX: usize = 8;

        /// Tasks claimed for reserved waiters, delivered after the commit.
        pub(crate) type Handed = Vec<(u64, ClaimedTask)>;

        impl $store {
            /// Reserve a parked waiter for each task that a claim could take at once
            /// (`tasks`: id, spec, run_after in unix ms, whether it is constrained), while
            /// there are any.
            pub(crate) fn plan_handover<'a>(
                &self,
                tasks: impl IntoIterator<Item = (TaskId, &'a TaskSpec, i64, bool)>,
                now: i64,
            ) -> Plan {
                let dispatch = self.signal.dispatch().clone();
                let mut by_task = Vec::new();
                let mut none_for: Vec<Shape> = Vec::new();
                for (id, spec, run_after, constrained) in tasks {
                    if by_task.len() >= HANDOVER_MAX {
                        break;
                    }
                    // Constrained tasks and tasks with dependencies need the claim's checks; a
                    // follow-up needs the session it resumes looked up, which a claim does.
                    if constrained
                        || !spec.depends_on.is_empty()
                        || spec.follow_up_of.is_some()
                        || run_after > now
                    {
                        continue;
                    }
                    let shape = Shape::of(spec);
                    if none_for.contains(&shape) {
                        continue;
                    }
                    match dispatch.reserve(&shape) {
                        Some(r) => by_task.push((id, shape, r)),
                        None => none_for.push(shape),
                    }
                }
                Plan { dispatch, by_task }
            }

            /// After the commit: put each handed task in its waiter's mailbox, give back the
            /// tasks whose waiter left meanwhile, and release the reservations that came to
            /// nothing, waking claimers here and on other replicas for their tasks (the
            /// enqueue's wake-ups left them out; one whose insert lost to an existing
            /// idempotency key costs a spurious wake-up). The enqueue has committed: a failure
            /// here is logged, not returned (a lease not given back expires and maintenance
            /// re-queues its task).
            pub(crate) async fn deliver(&self, plan: Plan, handed: Handed) {
                if plan.is_empty() && handed.is_empty() {
                    return;
                }
                let dispatch = self.signal.dispatch().clone();
                let mut gone = Vec::new();
                for (member, c) in handed {
                    let (worker, lease) = (c.task.worker_id.clone(), c.lease);
                    if !dispatch.deliver(member, c)
                        && let Some(w) = worker
                    {
                        gone.push((w, lease));
                    }
                }
                let shapes: Vec<Shape> = plan.by_task.iter().map(|(_, s, _)| s.clone()).collect();
                // Released after the commit, so that a released waiter's claim sees the task.
                drop(plan);
                if !shapes.is_empty() {
                    let n = u32::try_from(shapes.len()).unwrap_or(u32::MAX);
                    self.signal.notify_n(&Scope::Shapes(shapes), n);
                    if let Err(e) = self.announce(&self.$w, n).await {
                        tracing::warn!(error = %e, "could not tell other replicas about new tasks");
                    }
                }
                self.give_back_or_log(gone).await;
            }

            /// [`Self::give_back`], for callers with nobody to return an error to: a failure
            /// is logged, and the leases handed over expire instead (maintenance re-queues
            /// their tasks).
            async fn give_back_or_log(&self, items: Vec<(WorkerId, Lease)>) {
                if let Err(e) = self.give_back(items).await {
                    tracing::warn!(error = %e, "could not give back a task whose claimer left; its lease will expire");
                }
            }

            /// Return tasks handed to waiters that never took them to the queue, as if never
            /// claimed (their attempt count goes back; the lease token does not, so the lease
            /// handed over stays fenced off), and wake claimers for them.
            pub(crate) async fn give_back(&self, items: Vec<(WorkerId, Lease)>) -> Result<()> {
                if items.is_empty() {
                    return Ok(());
                }
                let now = self.now();
                let mut tx = self.begin().await?;
                let mut log = LifecycleLog::default();
                for (w, l) in &items {
                    // A cancel requested meanwhile stays with the lease: maintenance ends it.
                    let back: Option<String> = sqlx::query_scalar(
                        "UPDATE tasks SET state = 'queued', worker_id = NULL, \
                           lease_expires_at = NULL, started_at = NULL, \
                           attempts = attempts - 1, updated_at = $1 \
                         WHERE id = $2 AND lease_token = $3 AND worker_id = $4 \
                           AND state = 'running' AND NOT cancel_requested \
                         RETURNING state",
                    )
                    .bind(now)
                    .bind(tid(l.task_id))
                    .bind(l.token.0)
                    .bind(w.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if back.is_some() {
                        log.push(l.task_id, Lifecycle::Queued)?;
                    }
                }
                let n = u32::try_from(log.tasks.len()).unwrap_or(u32::MAX);
                insert_lifecycle(&mut tx, &log, now).await?;
                if n > 0 {
                    self.announce(&mut *tx, n).await?;
                }
                tx.commit().await?;
                if n > 0 {
                    self.signal.notify_n(&Scope::Any, n);
                }
                Ok(())
            }
        }

        impl $crate::dispatch::GiveBack for $store {
            fn give_back_later(&self, items: Vec<(WorkerId, Lease)>) -> $crate::futures_like::BoxFuture {
                let store = self.clone();
                Box::pin(async move { store.give_back_or_log(items).await })
            }
        }
    };
}
pub(crate) use handover_impl;
