//! Task queries that read or end attempts outside the hot path — attempts history, the end of
//! a failed or expired attempt, dependency cascades, the task detail with its waiting reasons,
//! events paging — the same on both backends.

/// Instantiate the task queries for database `$db` (see the [module docs](super)).
macro_rules! task_queries {
    ($db:ty) => {
        use std::collections::BTreeMap;

        use agentpool_core::protocol::ClaimedTask;
        use agentpool_core::{
            Attempt, AttemptOutcome, ErrorClass, Event, Lease, RetryPolicy, Task, TaskId, TaskResult,
            TaskState, WorkerId,
        };
        use sqlx::Pool;

        use $crate::common::{
            self, Ending, HELD_COLS, Held, LifecycleLog, StoreRow, TASK_COLS, dur_ms, held, json, task,
        };
        use $crate::{Failure, Result, StoreError, TaskDetail, WaitReason};

        type Db = $db;
        type Conn = <Db as sqlx::Database>::Connection;

        /// How many times each of `ids` was already handed back without using an attempt, by
        /// class (see [`agentpool_core::task::MAX_WORKER_RELEASES`]); absent: never. One
        /// statement for the whole batch.
        async fn prior_releases(conn: &mut Conn, ids: &[TaskId]) -> Result<BTreeMap<TaskId, u32>> {
            if ids.is_empty() {
                return Ok(BTreeMap::new());
            }
            let sql = format!(
                "SELECT task_id, COUNT(*) AS n FROM attempts WHERE task_id IN ({}) \
                 AND error_class IN ('WORKER_ERROR', 'INFRA_ERROR', 'LEASE_EXPIRED') GROUP BY task_id",
                in_ids(1)
            );
            let rows = sqlx::query(&sql).bind(ids_param(ids)?).fetch_all(&mut *conn).await?;
            rows.iter()
                .map(|r| Ok((r.task_id("task_id")?, u32::try_from(r.big("n")?).unwrap_or(u32::MAX))))
                .collect()
        }

        /// How an attempt of `h` that failed with `class` ends: handed back at once without
        /// using the attempt when the class is the worker's or the infrastructure's and the
        /// task has releases left, else as the retry policy decides.
        fn ending_of(
            h: &Held,
            class: ErrorClass,
            prior_releases: u32,
            retry_after: Option<std::time::Duration>,
            policy: &RetryPolicy,
        ) -> Result<Ending> {
            if !h.cancel_requested && agentpool_core::task::releases_free(class, prior_releases) {
                return Ok(Ending::Requeue {
                    delay: std::time::Duration::ZERO,
                    refund: true,
                });
            }
            common::decide_failure(h.cancel_requested, class, h.attempts, h.max_attempts, retry_after, policy)
        }

        /// Record an attempt that ended other than in success. The first recorded end of an
        /// attempt wins.
        async fn insert_attempt(
            conn: &mut Conn,
            h: &Held,
            now: i64,
            outcome: AttemptOutcome,
            class: ErrorClass,
            message: &str,
            cost_usd: Option<f64>,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO attempts (task_id, lease_token, number, worker_id, started_at, \
                 ended_at, outcome, error_class, error_message, cost_usd) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (task_id, lease_token) DO NOTHING",
            )
            .bind(tid(h.id))
            .bind(h.token)
            .bind(i32::try_from(h.attempts).unwrap_or(i32::MAX))
            .bind(&h.worker_id)
            .bind(h.started_at)
            .bind(now)
            .bind(outcome.as_str())
            .bind(class.as_str())
            .bind(message)
            .bind(cost_usd)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Fail every queued dependent of `failed` (transitively) with `DEPENDENCY_FAILED`, one
        /// statement per level of the dependency graph; each dependent's message names the
        /// dependency that failed (or was canceled).
        pub(crate) async fn cascade_failure(
            conn: &mut Conn,
            failed: Vec<TaskId>,
            now: i64,
            log: &mut LifecycleLog,
        ) -> Result<()> {
            let sql = format!(
                "UPDATE tasks SET state = 'failed', error_class = $1, error_message = {}, \
                 finished_at = $2, updated_at = $2 \
                 WHERE state = 'queued' AND id IN \
                   (SELECT task_id FROM task_deps WHERE dep_id IN ({})) \
                 RETURNING id, has_dependents, error_message",
                common::FAILED_DEPENDENCY_SQL,
                in_ids(3)
            );
            let mut frontier = failed;
            while !frontier.is_empty() {
                let rows = sqlx::query(&sql)
                    .bind(ErrorClass::DependencyFailed.as_str())
                    .bind(now)
                    .bind(ids_param(&frontier)?)
                    .fetch_all(&mut *conn)
                    .await?;
                frontier = Vec::new();
                for r in rows {
                    let id = r.task_id("id")?;
                    let message = r.opt_text("error_message")?.unwrap_or_default();
                    log.push(id, common::dependency_failed(message))?;
                    if r.flag("has_dependents")? {
                        frontier.push(id);
                    }
                }
            }
            Ok(())
        }

        /// One fewer pending dependency for every dependent of the tasks that just succeeded.
        /// A statement of its own: it must see dependents committed after the completion's
        /// snapshot (they locked the dependency rows first, so they are committed).
        pub(crate) async fn release_dependents(conn: &mut Conn, succeeded: &[TaskId], now: i64) -> Result<()> {
            let sql = format!(
                "UPDATE tasks SET deps_pending = tasks.deps_pending - d.n, updated_at = $1 \
                 FROM (SELECT task_id, CAST(count(*) AS INTEGER) AS n FROM task_deps \
                       WHERE dep_id IN ({}) GROUP BY task_id) AS d \
                 WHERE tasks.id = d.task_id",
                in_ids(2)
            );
            sqlx::query(&sql)
                .bind(now)
                .bind(ids_param(succeeded)?)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Persist the end of a failed or expired attempt as `ending` says; its lifecycle
        /// events go to `log`. Returns whether claimers should be woken (a lock or slot was
        /// freed, or the task is runnable again at once).
        /// `avoid`: a task given back is left to other workers for a while
        /// ([`crate::GIVEN_BACK_GRACE`]); not after its worker restarted, which starts afresh.
        #[allow(clippy::too_many_arguments)]
        async fn end_attempt(
            conn: &mut Conn,
            h: &Held,
            now: i64,
            avoid: bool,
            ending: &Ending,
            class: ErrorClass,
            message: &str,
            result: Option<&TaskResult>,
            log: &mut LifecycleLog,
        ) -> Result<bool> {
            // A task canceled on request says by whom, as one canceled while queued does; the
            // worker that stopped it knows only that it was asked to.
            let by_whom = match ending {
                Ending::Finish { state: TaskState::Canceled, .. } if h.cancel_requested => {
                    requested_cancel(conn, h.id).await?
                }
                _ => None,
            };
            let message = by_whom.as_deref().unwrap_or(message);
            log.push(h.id, common::ending_event(ending, h.attempts, now, class, message))?;
            let cost = spend::cost(result);
            if let (Some(project), Some(usd)) = (&h.project, cost) {
                spend::add_spend(conn, [(project.as_str(), usd)], now).await?;
            }
            let result = result.map(json).transpose()?;
            let outcome = common::attempt_outcome(ending, class);
            let mut wake = h.constrained;
            // The class the row records: a finish records the one the state machine decided on.
            let recorded = match ending {
                Ending::Finish { class, .. } => *class,
                Ending::Requeue { .. } => class,
            };
            // Either ending clears the lease and records the error and result on the row still
            // under the attempt's lease: `$1`…`$6` are the same in both statements.
            let ended = |sql: &'static str| {
                sqlx::query(sql)
                    .bind(now)
                    .bind(recorded.as_str())
                    .bind(message)
                    .bind(result)
                    .bind(tid(h.id))
                    .bind(h.token)
            };
            match ending {
                Ending::Requeue { delay, refund } => {
                    ended(
                        "UPDATE tasks SET state = 'queued', run_after = $7, updated_at = $1, \
                         worker_id = NULL, lease_expires_at = NULL, cancel_requested = FALSE, \
                         error_class = $2, error_message = $3, result = COALESCE($4, result), \
                         attempts = attempts - $8, avoid_worker = $9 \
                         WHERE id = $5 AND lease_token = $6",
                    )
                    .bind(now + dur_ms(*delay))
                    .bind(i32::from(*refund))
                    .bind((*refund && avoid).then_some(h.worker_id.as_str()))
                    .execute(&mut *conn)
                    .await?;
                    wake |= delay.is_zero();
                }
                Ending::Finish { state, .. } => {
                    ended(
                        "UPDATE tasks SET state = $7, finished_at = $1, updated_at = $1, \
                         lease_expires_at = NULL, error_class = $2, error_message = $3, \
                         result = COALESCE($4, result) WHERE id = $5 AND lease_token = $6",
                    )
                    .bind(state.as_str())
                    .execute(&mut *conn)
                    .await?;
                }
            }
            insert_attempt(conn, h, now, outcome, recorded, message, cost).await?;
            if matches!(ending, Ending::Finish { .. }) && h.has_dependents {
                cascade_failure(conn, vec![h.id], now, log).await?;
            }
            Ok(wake)
        }

        /// "canceled by …: why", from the `cancel_requested` event of running task `id`, when
        /// that event says who asked or why (the
        /// event's fields are stored in key order, so the state is matched anywhere in it; a
        /// quote inside a string value would be escaped and cannot match).
        async fn requested_cancel(conn: &mut Conn, id: TaskId) -> Result<Option<String>> {
            let data: Option<String> = sqlx::query_scalar(
                "SELECT data FROM events WHERE task_id = $1 AND kind = 'lifecycle' \
                 AND data LIKE '%\"state\":\"cancel_requested\"%' ORDER BY seq DESC LIMIT 1",
            )
            .bind(tid(id))
            .fetch_optional(&mut *conn)
            .await?;
            Ok(match data.map(|d| serde_json::from_str::<agentpool_core::Lifecycle>(&d)) {
                Some(Ok(agentpool_core::Lifecycle::CancelRequested { by, reason }))
                    if by.is_some() || reason.is_some() =>
                {
                    Some(agentpool_core::event::cancel_words(
                        "canceled",
                        by.as_deref(),
                        reason.as_deref(),
                    ))
                }
                _ => None,
            })
        }

        /// How a reported failure ended; the caller commits and wakes claimers.
        pub(crate) struct Failed {
            pub ending: Ending,
            pub attempt: i64,
            pub wake: bool,
        }

        /// Record a failed attempt reported by the lease holder (`StaleLease` otherwise).
        pub(crate) async fn fail(
            conn: &mut Conn,
            worker: &WorkerId,
            lease: Lease,
            failure: &Failure,
            policy: &RetryPolicy,
            now: i64,
        ) -> Result<Failed> {
            let sql = format!(
                "SELECT {HELD_COLS} FROM tasks \
                 WHERE id = $1 AND lease_token = $2 AND worker_id = $3 AND state = 'running'{FOR_UPDATE}"
            );
            let Some(r) = sqlx::query(&sql)
                .bind(tid(lease.task_id))
                .bind(lease.token.0)
                .bind(worker.as_str())
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Err(StoreError::StaleLease(lease.task_id));
            };
            let h = held(&r)?;
            // A broken worker (git or the agent could not be started) or infrastructure that
            // went away (worker stopped, pod evicted) hands the task back without using an
            // attempt, a bounded number of times.
            let prior = if agentpool_core::task::is_release(failure.class) {
                prior_releases(conn, &[h.id]).await?.get(&h.id).copied().unwrap_or(0)
            } else {
                0
            };
            let ending = ending_of(&h, failure.class, prior, failure.retry_after, policy)?;
            let mut log = LifecycleLog::default();
            let wake = end_attempt(
                conn,
                &h,
                now,
                true,
                &ending,
                failure.class,
                &failure.message,
                failure.result.as_ref(),
                &mut log,
            )
            .await?;
            insert_lifecycle(conn, &log, now).await?;
            Ok(Failed {
                ending,
                attempt: h.attempts,
                wake,
            })
        }

        /// Rescue up to [`common::EXPIRE_BATCH`] expired leases — or, with `of_worker`, the
        /// leases that worker holds, expired or not (it registered again, so whatever it ran
        /// before is gone). Returns those rescued, and whether claimers should be woken.
        pub(crate) async fn rescue_batch(
            conn: &mut Conn,
            policy: &RetryPolicy,
            now: i64,
            of_worker: Option<&WorkerId>,
        ) -> Result<(Vec<Held>, bool)> {
            let (cond, message) = match of_worker {
                None => ("lease_expires_at < $1", common::LEASE_EXPIRED_MSG),
                Some(_) => ("worker_id = $1", common::WORKER_RESTARTED_MSG),
            };
            let sql = format!(
                "SELECT {HELD_COLS} FROM tasks WHERE state = 'running' AND {cond} \
                 ORDER BY lease_expires_at LIMIT $2{FOR_UPDATE_SKIP_LOCKED}"
            );
            let q = sqlx::query(&sql);
            let q = match of_worker {
                None => q.bind(now),
                Some(w) => q.bind(w.as_str()),
            };
            let rows = q.bind(common::EXPIRE_BATCH).fetch_all(&mut *conn).await?;
            let expired = rows.iter().map(held).collect::<Result<Vec<Held>>>()?;
            // A worker that died (or lost its node) is the infrastructure's fault, not the
            // task's: like `INFRA_ERROR`, the attempt is given back, within the same bound.
            let ids: Vec<TaskId> = expired.iter().map(|h| h.id).collect();
            let prior = prior_releases(conn, &ids).await?;
            let mut wake = false;
            let mut log = LifecycleLog::default();
            for h in &expired {
                common::log_expiry(&mut log, h)?;
                let n = prior.get(&h.id).copied().unwrap_or(0);
                let ending = ending_of(h, ErrorClass::LeaseExpired, n, None, policy)?;
                wake |= end_attempt(
                    conn,
                    h,
                    now,
                    of_worker.is_none(),
                    &ending,
                    ErrorClass::LeaseExpired,
                    message,
                    None,
                    &mut log,
                )
                .await?;
            }
            insert_lifecycle(conn, &log, now).await?;
            Ok((expired, wake))
        }

        /// Let worker `w` claim at once the queued tasks it gave back.
        pub(crate) async fn forget_given_back(w: &Pool<Db>, worker: &WorkerId) -> Result<()> {
            sqlx::query("UPDATE tasks SET avoid_worker = NULL WHERE state = 'queued' AND avoid_worker = $1")
                .bind(worker.as_str())
                .execute(w)
                .await?;
            Ok(())
        }

        /// The task's row.
        pub(crate) async fn find_task(r: &Pool<Db>, id: TaskId) -> Result<Option<Task>> {
            let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1");
            let row = sqlx::query(&sql).bind(tid(id)).fetch_optional(r).await?;
            row.as_ref().map(task).transpose()
        }

        /// The task with its attempts and, while queued, why it waits.
        pub(crate) async fn get_task(r: &Pool<Db>, id: TaskId, now: i64) -> Result<Option<TaskDetail>> {
            let Some(t) = find_task(r, id).await? else {
                return Ok(None);
            };
            let rows = sqlx::query(
                "SELECT task_id, number, worker_id, lease_token, started_at, ended_at, outcome, \
                 error_class, error_message, cost_usd FROM attempts WHERE task_id = $1 ORDER BY lease_token",
            )
            .bind(tid(id))
            .fetch_all(r)
            .await?;
            let mut attempts: Vec<Attempt> = rows.iter().map(common::attempt_row).collect::<Result<_>>()?;
            attempts.extend(common::current_attempt(&t));
            let waiting = waiting(r, &t, now).await?;
            Ok(Some(TaskDetail {
                task: t,
                attempts_detail: attempts,
                waiting,
            }))
        }

        async fn waiting(r: &Pool<Db>, t: &Task, now: i64) -> Result<Vec<WaitReason>> {
            let mut out = Vec::new();
            if t.state != TaskState::Queued {
                return Ok(out);
            }
            if common::ms(t.run_after) > now {
                out.push(WaitReason::Scheduled {
                    run_after: t.run_after,
                });
            }
            let grace_ends = common::ms(t.run_after) + common::GIVEN_BACK_GRACE_MS;
            if grace_ends > now {
                let avoid: Option<String> = sqlx::query_scalar("SELECT avoid_worker FROM tasks WHERE id = $1")
                    .bind(tid(t.id))
                    .fetch_optional(r)
                    .await?
                    .flatten();
                if let Some(worker) = avoid {
                    out.push(WaitReason::GivenBack {
                        worker,
                        until: common::ts(grace_ends),
                    });
                }
            }
            let mut pending = sqlx::query(
                "SELECT d.dep_id FROM task_deps d JOIN tasks t ON t.id = d.dep_id \
                 WHERE d.task_id = $1 AND t.state <> 'succeeded'",
            )
            .bind(tid(t.id))
            .fetch_all(r)
            .await?
            .iter()
            .map(|row| row.task_id("dep_id"))
            .collect::<Result<Vec<_>>>()?;
            pending.sort();
            if !pending.is_empty() {
                out.push(WaitReason::Dependencies { pending });
            }
            let holder = sqlx::query(
                "SELECT r.id FROM tasks t JOIN tasks r ON r.lock_key = t.lock_key \
                 WHERE t.id = $1 AND r.state = 'running' LIMIT 1",
            )
            .bind(tid(t.id))
            .fetch_optional(r)
            .await?;
            if let Some(h) = holder {
                out.push(WaitReason::BranchLocked {
                    branch: t.spec.branch.clone().unwrap_or_default(),
                    held_by: h.task_id("id")?,
                });
            }
            if let Some(p) = &t.spec.project {
                let row = sqlx::query(
                    "SELECT p.slots, (SELECT count(*) FROM tasks WHERE state = 'running' \
                       AND project = p.name) AS running FROM projects p WHERE p.name = $1",
                )
                .bind(p)
                .fetch_optional(r)
                .await?;
                if let Some(row) = row
                    && let Some(slots) = row.opt_big("slots")?
                    && row.big("running")? >= slots
                {
                    out.push(WaitReason::ProjectSlotsFull {
                        project: p.clone(),
                        slots: u32::try_from(slots).unwrap_or(0),
                    });
                }
            }
            if let Some(p) = &t.spec.project {
                let budget: Option<f64> =
                    sqlx::query_scalar("SELECT daily_budget_usd FROM projects WHERE name = $1")
                        .bind(p)
                        .fetch_optional(r)
                        .await?
                        .flatten();
                if let Some(budget) = budget {
                    let day = common::utc_day_start(now);
                    let spent = spend::spent_today(r, p, now).await?.unwrap_or(0.0);
                    if spent >= budget {
                        let until = common::ts(day + common::DAY_MS);
                        out.push(WaitReason::BudgetExhausted {
                            project: p.clone(),
                            budget_usd: budget,
                            spent_usd: spent,
                            until,
                            message: format!(
                                "budget exhausted until {}",
                                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            ),
                        });
                    }
                }
            }
            // Given back, it still waits for a worker: say which kind, as for any other.
            if out.iter().all(|w| matches!(w, WaitReason::GivenBack { .. })) {
                out.push(WaitReason::NoWorker);
            }
            Ok(out)
        }

        /// Fill in the session to resume for claimed follow-up tasks: the earlier task's, when
        /// the work that session speaks of is in the workspace the follow-up starts from
        /// (docs/guarantees.md). Otherwise the agent starts afresh, and the runner says why.
        pub(crate) async fn resume_sessions(r: &Pool<Db>, claimed: &mut [ClaimedTask]) -> Result<()> {
            /// Whether `follow_up` starts where the work of `earlier` is: on the branch it
            /// pushed (the branch itself, or a branch of its own made from it), or anywhere
            /// when it succeeded without a commit, having changed nothing. A commit not
            /// pushed, or changes left uncommitted by a failure, or by a task told not to
            /// commit, are gone with that task's workspace.
            fn work_is_there(earlier: &Task, follow_up: &agentpool_core::TaskSpec) -> bool {
                let Some(done) = &earlier.result else {
                    return false;
                };
                match done.branch.as_deref().filter(|_| done.pushed) {
                    Some(b) => [&follow_up.branch, &follow_up.base_ref]
                        .into_iter()
                        .any(|from| from.as_deref() == Some(b)),
                    None => {
                        done.commit_sha.is_none()
                            && earlier.spec.commit
                            && earlier.state == TaskState::Succeeded
                    }
                }
            }
            for c in claimed.iter_mut() {
                let Some(prev) = c.task.spec.follow_up_of else {
                    continue;
                };
                let earlier = match find_task(r, prev).await {
                    Ok(t) => t,
                    // A record that cannot be read resumes nothing; the claim still stands.
                    Err(StoreError::Corrupt(e)) => {
                        let id = c.task.id;
                        tracing::warn!(
                            task = %id, earlier = %prev, error = %e,
                            "the task followed up is unreadable"
                        );
                        None
                    }
                    Err(e) => return Err(e),
                };
                c.resume_session = earlier
                    .filter(|t| work_is_there(t, &c.task.spec))
                    .and_then(|t| t.result)
                    .and_then(|r| r.session_id);
            }
            Ok(())
        }

        pub(crate) async fn list_events(r: &Pool<Db>, task: TaskId, after: i64, limit: u32) -> Result<Vec<Event>> {
            let limit = if limit == 0 { 1000 } else { limit.min(10_000) };
            let rows = sqlx::query(
                "SELECT seq, at, kind, data FROM events WHERE task_id = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3",
            )
            .bind(tid(task))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(r)
            .await?;
            rows.iter().map(|row| common::event_row(task, row)).collect()
        }
    };
}
pub(crate) use task_queries;
