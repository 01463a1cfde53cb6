//! The [`crate::Store`] implementation both backends share: each method either runs the
//! shared SQL of [`super::registry`] and [`super::tasks`] or calls the backend's own
//! method of the same purpose. What a backend does differently is confined to a few inherent
//! methods it defines next to its instantiation:
//! - `begin()` — a write transaction (`BEGIN IMMEDIATE` on SQLite),
//! - `announce(executor, count)` — tell other replicas that `count` tasks of any shape may be
//!   claimable (a NOTIFY on PostgreSQL, delivered when the executor's transaction commits;
//!   nothing on SQLite, whose signal is in process),
//! - `wake_at(run_after)` — wake claimers when delayed tasks come due,
//! - `ring_others(worker)` — ring a worker's bell on the other replicas (best effort),
//! - the hot path: `enqueue_many`, `list`, `claim_in_order`, `beat`, `complete_many`,
//!   `append`, and `purge_batch` (with its `PURGE_BATCH`).

/// Implement [`crate::Store`] for `$store`, writing through the pool `self.$w` and reading
/// through `self.$r`. The invoking module has `registry` and `tasks` (the instantiated shared
/// queries) in scope.
macro_rules! store_impl {
    ($store:ty, $w:ident, $r:ident) => {
        use std::collections::BTreeMap;
        use std::time::Duration;

        use agentpool_core::project::ProjectSpec;
        use agentpool_core::protocol::{ClaimedTask, FailOutcome, HeartbeatReply};
        use agentpool_core::worker::WorkerRegistration;
        use agentpool_core::{
            CacheStats, Event, Lease, NewEvent, Profile, Project, Task, TaskId, TaskResult, TaskSpec,
            TaskState, Timestamp, Worker, WorkerId,
        };
        use async_trait::async_trait;

        use $crate::common::{self, Ending, dur_ms, ts};
        use $crate::{
            ClaimFilter, ClaimWaiter, Enqueued, Failure, Result, Scope, Store, StoreError, TaskDetail,
            TaskFilter, TokenRecord, WorkListener,
        };

        impl $store {
            /// After an enqueue committed: wake claimers for `count` tasks of `scope` claimable
            /// now, and set timers for the delayed ones — when it created any task.
            pub(super) fn wake_enqueued(&self, out: &[Enqueued], scope: &Scope, count: u32) {
                if out.iter().any(|e| e.created) {
                    self.signal.notify_n(scope, count);
                    self.wake_at(
                        out.iter()
                            .filter(|e| e.created)
                            .map(|e| common::ms(e.task.run_after)),
                    );
                }
            }

            /// Ring `worker`'s bell here and on the other replicas, after the change committed.
            async fn ring(&self, worker: &WorkerId) {
                self.signal.bells.ring(worker);
                self.ring_others(worker).await;
            }

            /// Rescue expired leases — or, with `of_worker`, every lease that worker holds — in
            /// batches, each its own short transaction, until none is left: one pass rescues
            /// them all without holding locks (or SQLite's writer) for long. Returns how many.
            async fn rescue_all(&self, of_worker: Option<&WorkerId>) -> Result<u64> {
                let now = self.now();
                let mut total = 0;
                loop {
                    let mut tx = self.begin().await?;
                    let (rescued, wake) = tasks::rescue_batch(&mut tx, &self.config.retry, now, of_worker).await?;
                    let n = rescued.len();
                    let mut count = u32::try_from(n).unwrap_or(u32::MAX);
                    if of_worker.is_none() {
                        // As for a task given back (see `fail`): the worker that let a lease
                        // expire passes the task over, so its own waiter's wake-up is not one.
                        count = count.saturating_mul(2);
                    }
                    if wake {
                        self.announce(&mut *tx, count).await?;
                    }
                    tx.commit().await?;
                    // Named one by one: "rescued 6 tasks" alone does not say whose worker died;
                    // and only once committed, so that a rescue the database did not take (a
                    // full disk, an outage) is not reported as done.
                    for h in &rescued {
                        if of_worker.is_none() {
                            tracing::warn!(task = %h.id, worker = %h.worker_id, attempt = h.attempts, "lease expired: the worker stopped heartbeating; the task is rescued");
                        } else {
                            tracing::warn!(task = %h.id, worker = %h.worker_id, attempt = h.attempts, "the worker started again under its id: the attempt it ran is ended and the task given back");
                        }
                    }
                    if wake {
                        self.signal.notify_n(&Scope::Any, count);
                        if of_worker.is_none() {
                            // The workers that let them expire may take them again later.
                            self.wake_at([now + common::GIVEN_BACK_GRACE_MS]);
                        }
                    }
                    total += n as u64;
                    if (n as i64) < common::EXPIRE_BATCH {
                        if let Some(w) = of_worker {
                            // Restarted, it starts afresh: what it gave back before is its
                            // to take again at once.
                            tasks::forget_given_back(&self.$w, w).await?;
                        }
                        return Ok(total);
                    }
                }
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn enqueue(&self, spec: TaskSpec) -> Result<Enqueued> {
                let mut v = self.enqueue_batch(vec![spec]).await?;
                v.pop()
                    .ok_or_else(|| StoreError::Corrupt("enqueue returned nothing".into()))
            }

            async fn enqueue_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
                self.enqueue_many(specs).await
            }

            async fn find_task(&self, id: TaskId) -> Result<Option<Task>> {
                tasks::find_task(&self.$r, id).await
            }

            async fn get_task(&self, id: TaskId) -> Result<Option<TaskDetail>> {
                let Some(mut d) = tasks::get_task(&self.$r, id, self.now()).await? else {
                    return Ok(None);
                };
                // Nothing holds it back but the workers: say so when none could run it at all
                // (a mistyped agent, a label no worker carries), not only that none is free.
                if let Some(last) = d.waiting.last_mut()
                    && *last == $crate::WaitReason::NoWorker
                {
                    let shape = $crate::Shape::of(&d.task.spec);
                    let can = registry::workers_that_can_run(&self.$r, &shape).await?;
                    if !can.any {
                        *last = $crate::WaitReason::NoWorkerCanRun {
                            agent: shape.agent,
                            labels: shape.labels,
                            other_projects: can.other_projects,
                            project: shape.project.filter(|_| can.other_projects),
                            unhealthy: can.unhealthy,
                            local_repos_not_read: can.local_repos_not_read,
                        };
                    }
                }
                Ok(Some(d))
            }

            async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
                self.list(f).await
            }

            /// In two reads, each on the partial index its claims use: the unconstrained tasks
            /// (no branch, no project: each due one is runnable), then the constrained ones,
            /// checked as a claim checks them.
            async fn runnable_now(&self, projects: Option<&[String]>, limit: u32) -> Result<Vec<TaskId>> {
                use $crate::common::StoreRow;
                let now = self.now();
                let mut out = Vec::new();
                if projects.is_none() {
                    let rows = sqlx::query(
                        "SELECT id FROM tasks WHERE state = 'queued' AND deps_pending = 0 \
                         AND NOT constrained AND run_after <= $1 \
                         ORDER BY priority DESC, run_after, id LIMIT $2",
                    )
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.$r)
                    .await?;
                    for r in &rows {
                        out.push(r.task_id("id")?);
                    }
                }
                let left = u32::try_from(out.len()).map_or(0, |n| limit.saturating_sub(n));
                if left > 0 {
                    let rows = self.runnable_candidates(projects, left, now).await?;
                    out.extend(common::pick_candidate_rows(
                        &rows,
                        usize::try_from(left).unwrap_or(usize::MAX),
                    )?);
                }
                Ok(out)
            }

            async fn queued_shapes(
                &self,
                projects: Option<&[String]>,
                limit: u32,
            ) -> Result<Vec<$crate::QueuedShape>> {
                use $crate::common::StoreRow;
                let rows = self.queued_rows(projects, limit).await?;
                rows.iter()
                    .map(|r| {
                        let labels = match r.opt_text("labels")? {
                            Some(j) => {
                                serde_json::from_str(&j).map_err(|e| common::corrupt("task labels", e))?
                            }
                            None => agentpool_core::Labels::new(),
                        };
                        Ok($crate::QueuedShape {
                            id: r.task_id("id")?,
                            labels,
                            agent: r.opt_text("required_agent")?,
                            project: r.opt_text("project")?,
                            run_after: common::ts(r.big("run_after")?),
                        })
                    })
                    .collect()
            }

            async fn count_by_state(&self) -> Result<BTreeMap<TaskState, u64>> {
                counts::count_by_state(&self.$r).await
            }

            async fn count_by_state_of(&self, projects: &[String]) -> Result<BTreeMap<TaskState, u64>> {
                counts::count_by_state_of(&self.$r, projects).await
            }

            async fn count_finished(
                &self,
                since: Timestamp,
                step: Duration,
                projects: Option<&[String]>,
            ) -> Result<Vec<$crate::FinishedCount>> {
                let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
                counts::count_finished(&self.$r, since, step_ms, projects).await
            }

            async fn cancel_many(
                &self,
                ids: &[TaskId],
                by: Option<&str>,
                reason: Option<&str>,
            ) -> Result<Vec<Result<Task>>> {
                let mut tx = self.begin().await?;
                let out = manual::cancel_each(&mut tx, ids, self.now(), by, reason).await?;
                tx.commit().await?;
                let mut rung = std::collections::HashSet::new();
                for t in out.iter().flatten().filter(|t| t.cancel_requested) {
                    if let Some(w) = &t.worker_id
                        && rung.insert(w.clone())
                    {
                        self.ring(w).await;
                    }
                }
                Ok(out)
            }

            async fn retry_many(&self, ids: &[TaskId]) -> Result<Vec<Result<(Task, Vec<TaskId>)>>> {
                let mut tx = self.begin().await?;
                let out =
                    manual::retry_each(&mut tx, ids, self.now(), self.config.retry.max_attempts).await?;
                let queued: usize = out.iter().flatten().map(|(_, d)| 1 + d.len()).sum();
                let queued = u32::try_from(queued).unwrap_or(u32::MAX);
                if queued > 0 {
                    self.announce(&mut *tx, queued).await?;
                }
                tx.commit().await?;
                if queued > 0 {
                    self.signal.notify_n(&Scope::Any, queued);
                }
                Ok(out)
            }

            async fn claim(&self, f: &ClaimFilter) -> Result<Vec<ClaimedTask>> {
                let mut claimed = self.claim_in_order(f).await?;
                tasks::resume_sessions(&self.$r, &mut claimed).await?;
                Ok(claimed)
            }

            async fn heartbeat(
                &self,
                worker: &WorkerId,
                leases: &[Lease],
                lease_ttl: Duration,
            ) -> Result<HeartbeatReply> {
                self.beat(worker, leases, lease_ttl).await
            }

            async fn complete(&self, worker: &WorkerId, lease: Lease, result: TaskResult) -> Result<()> {
                let mut v = self.complete_batch(worker, vec![(lease, result)]).await?;
                v.pop()
                    .unwrap_or_else(|| Err(StoreError::Corrupt("complete returned nothing".into())))
            }

            async fn complete_batch(
                &self,
                worker: &WorkerId,
                items: Vec<(Lease, TaskResult)>,
            ) -> Result<Vec<Result<()>>> {
                self.complete_many(worker, items).await
            }

            async fn fail(&self, worker: &WorkerId, lease: Lease, failure: Failure) -> Result<FailOutcome> {
                let now = self.now();
                let mut tx = self.begin().await?;
                let f = tasks::fail(&mut tx, worker, lease, &failure, &self.config.retry, now).await?;
                // A task given back is passed over by its worker's claims: should that worker's
                // own waiter be the one woken, a second wake-up reaches another.
                let wakes = if matches!(f.ending, Ending::Requeue { refund: true, .. }) {
                    2
                } else {
                    1
                };
                if f.wake {
                    self.announce(&mut *tx, wakes).await?;
                }
                tx.commit().await?;
                if f.wake {
                    self.signal.notify_n(&Scope::Any, wakes);
                }
                Ok(match f.ending {
                    Ending::Requeue { delay, refund } => {
                        let run_after = now + dur_ms(delay);
                        self.wake_at([run_after]);
                        if refund {
                            // Its worker may take it again once the others had their turn.
                            self.wake_at([run_after + common::GIVEN_BACK_GRACE_MS]);
                        }
                        FailOutcome::Retrying {
                            run_after: ts(run_after),
                            attempt: u32::try_from(f.attempt).unwrap_or(0),
                            given_back: refund,
                        }
                    }
                    Ending::Finish { state, .. } => FailOutcome::Finished { state },
                })
            }

            async fn append_events(
                &self,
                task: TaskId,
                lease: Option<Lease>,
                events: Vec<NewEvent>,
            ) -> Result<()> {
                if lease.is_some_and(|l| l.task_id != task) {
                    return Err(StoreError::StaleLease(task));
                }
                self.append(task, lease, events).await
            }

            async fn list_events(&self, task: TaskId, after: i64, limit: u32) -> Result<Vec<Event>> {
                tasks::list_events(&self.$r, task, after, limit).await
            }

            async fn register_worker(&self, reg: WorkerRegistration) -> Result<Worker> {
                if let Some(id) = reg.id.as_ref().filter(|_| reg.fresh_start) {
                    self.rescue_all(Some(id)).await?;
                }
                registry::register_worker(&self.$w, &self.$r, reg, self.now()).await
            }

            async fn get_worker(&self, id: &WorkerId) -> Result<Option<Worker>> {
                registry::get_worker(&self.$r, id).await
            }

            async fn list_workers(&self) -> Result<Vec<Worker>> {
                registry::list_workers(&self.$r).await
            }

            async fn drain_worker(&self, id: &WorkerId) -> Result<Worker> {
                let w = registry::drain_worker(&self.$w, &self.$r, id).await?;
                self.ring(id).await;
                Ok(w)
            }

            async fn report_worker_cache(&self, id: &WorkerId, cache: &CacheStats) -> Result<()> {
                registry::report_worker_cache(&self.$w, id, cache).await
            }

            async fn mark_worker_unhealthy(&self, id: &WorkerId, message: Option<&str>) -> Result<()> {
                if registry::mark_worker_unhealthy(&self.$w, id, message).await? {
                    // Its waiting claim ends at once: an unhealthy worker takes nothing, and
                    // hands back what a claim granted meanwhile.
                    self.ring(id).await;
                }
                Ok(())
            }

            async fn note_worker(&self, id: &WorkerId, message: &str) -> Result<()> {
                registry::note_worker(&self.$w, id, message).await
            }

            async fn deregister_worker(&self, id: &WorkerId) -> Result<()> {
                let mut tx = self.begin().await?;
                registry::deregister_worker(&mut tx, id, self.now()).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn put_project(&self, spec: ProjectSpec) -> Result<Project> {
                let now = self.now();
                let mut p = registry::put_project(&self.$w, spec, now).await?;
                // More slots or budget may let queued tasks run, here and on other replicas.
                self.announce(&self.$w, 1).await?;
                self.signal.notify();
                p.spent_today_usd = spend::spent_today(&self.$w, &p.spec.name, now).await?;
                Ok(p)
            }

            async fn get_project(&self, name: &str) -> Result<Option<Project>> {
                let Some(mut p) = registry::get_project(&self.$r, name).await? else {
                    return Ok(None);
                };
                p.spent_today_usd = spend::spent_today(&self.$r, name, self.now()).await?;
                Ok(Some(p))
            }

            async fn list_projects(&self) -> Result<Vec<Project>> {
                let mut projects = registry::list_projects(&self.$r).await?;
                let spent = spend::spent_today_by_project(&self.$r, self.now()).await?;
                for p in &mut projects {
                    p.spent_today_usd = spent.get(&p.spec.name).copied();
                }
                Ok(projects)
            }

            async fn delete_project(&self, name: &str) -> Result<()> {
                registry::delete_project(&self.$w, name).await
            }

            async fn put_credential(&self, name: &str, ciphertext: Vec<u8>) -> Result<()> {
                registry::put_credential(&self.$w, name, ciphertext, self.now()).await
            }

            async fn get_credential(&self, name: &str) -> Result<Option<Vec<u8>>> {
                registry::get_credential(&self.$r, name).await
            }

            async fn list_credentials(&self) -> Result<Vec<String>> {
                registry::list_credentials(&self.$r).await
            }

            async fn delete_credential(&self, name: &str) -> Result<()> {
                registry::delete_credential(&self.$w, name).await
            }

            async fn put_profile(&self, p: &Profile) -> Result<()> {
                registry::put_profile(&self.$w, p, self.now()).await
            }

            async fn get_profile(&self, name: &str) -> Result<Option<Profile>> {
                registry::get_profile(&self.$r, name).await
            }

            async fn list_profiles(&self) -> Result<Vec<Profile>> {
                registry::list_profiles(&self.$r).await
            }

            async fn delete_profile(&self, name: &str) -> Result<()> {
                registry::delete_profile(&self.$w, name).await
            }

            async fn create_token(&self, t: TokenRecord) -> Result<()> {
                registry::create_token(&self.$w, t).await
            }

            async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
                registry::find_token(&self.$r, hash).await
            }

            async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
                registry::list_tokens(&self.$r).await
            }

            async fn expire_token(&self, id: &str, at: agentpool_core::Timestamp) -> Result<()> {
                registry::expire_token(&self.$w, id, at).await
            }

            async fn touch_token(
                &self,
                id: &str,
                at: agentpool_core::Timestamp,
                since: agentpool_core::Timestamp,
            ) -> Result<()> {
                registry::touch_token(&self.$w, id, at, since).await
            }

            async fn revoke_token(&self, id: &str) -> Result<()> {
                registry::revoke_token(&self.$w, id).await
            }

            async fn mark_workers_offline(&self, threshold: Duration) -> Result<u64> {
                registry::mark_workers_offline(&self.$w, threshold, self.now()).await
            }

            async fn forget_offline_workers(&self, after: Duration) -> Result<u64> {
                registry::forget_offline_workers(&self.$w, after, self.now()).await
            }

            async fn requeue_expired(&self) -> Result<u64> {
                self.rescue_all(None).await
            }

            /// In batches (each the backend's `purge_batch`) until a batch comes back short;
            /// then the projects' spend of the days before the cutoff's.
            async fn purge_finished(&self, retention: Duration) -> Result<u64> {
                let cutoff = self.now() - dur_ms(retention);
                let mut total = 0;
                loop {
                    let n = self.purge_batch(cutoff).await?;
                    total += n;
                    if n < Self::PURGE_BATCH as u64 {
                        break;
                    }
                }
                spend::purge_spend(&self.$w, cutoff).await?;
                Ok(total)
            }

            fn work_listener(&self) -> WorkListener {
                self.signal.listener()
            }

            fn claim_waiter(&self, filter: &ClaimFilter) -> ClaimWaiter {
                self.signal.waiter(
                    filter,
                    $crate::dispatch::Returner(std::sync::Arc::new(self.clone())),
                )
            }

            fn worker_bell(&self) -> $crate::WorkerBell {
                self.signal.bells.subscribe()
            }

            fn parked_claimers(&self) -> usize {
                self.signal.parked()
            }

            fn time(&self) -> agentpool_core::Timestamp {
                $crate::common::ts(self.now())
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.$r).await?;
                Ok(())
            }

            async fn close(&self) {
                self.close_connections().await;
            }
        }
    };
}
pub(crate) use store_impl;
