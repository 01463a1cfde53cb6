//! What people do to tasks by hand: cancel (a queued task at once, a running one through its
//! worker) and retry (with the dependents that failed only because the task did), one task or
//! many in one transaction — the same on both backends.

/// Instantiate the cancel and retry queries for database `$db` (see the [module docs](super)).
macro_rules! manual_queries {
    ($db:ty) => {
        use agentpool_core::{ErrorClass, Lifecycle, Task, TaskId, TaskState};

        use $crate::common::{self, LifecycleLog, StoreRow, TASK_COLS, task};
        use $crate::{Result, StoreError};

        type Db = $db;
        type Conn = <Db as sqlx::Database>::Connection;

        /// The task's row (its task columns and `extra` ones), locked until the transaction ends.
        async fn locked_task(
            conn: &mut Conn,
            id: TaskId,
            extra: &str,
        ) -> Result<<Db as sqlx::Database>::Row> {
            let sql = format!("SELECT {TASK_COLS}{extra} FROM tasks WHERE id = $1{FOR_UPDATE}");
            sqlx::query(&sql)
                .bind(tid(id))
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::not_found("task", id))
        }

        /// Cancel: a queued task at once (failing its dependents), a running one by flagging it
        /// for its worker. `by` (who asks) and `reason` (why) go into the message and the events.
        async fn cancel(
            conn: &mut Conn,
            id: TaskId,
            now: i64,
            by: Option<&str>,
            reason: Option<&str>,
        ) -> Result<Task> {
            let r = locked_task(conn, id, ", has_dependents").await?;
            let t = task(&r)?;
            let has_dependents = r.flag("has_dependents")?;
            let mut log = LifecycleLog::default();
            match agentpool_core::task::cancel(t.state)? {
                agentpool_core::Transition::Finish { state, class } => {
                    let message = agentpool_core::event::cancel_words("canceled", by, reason);
                    sqlx::query(
                        "UPDATE tasks SET state = $1, error_class = $2, error_message = $5, \
                         finished_at = $3, updated_at = $3 WHERE id = $4",
                    )
                    .bind(state.as_str())
                    .bind(class.map(|c| c.as_str()))
                    .bind(now)
                    .bind(tid(id))
                    .bind(&message)
                    .execute(&mut *conn)
                    .await?;
                    log.push(id, Lifecycle::Canceled { message })?;
                    if has_dependents {
                        cascade_failure(conn, vec![id], now, &mut log).await?;
                    }
                }
                agentpool_core::Transition::CancelRequested => {
                    let first = sqlx::query(
                        "UPDATE tasks SET cancel_requested = TRUE, updated_at = $1 \
                         WHERE id = $2 AND NOT cancel_requested",
                    )
                    .bind(now)
                    .bind(tid(id))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if first > 0 {
                        log.push(
                            id,
                            Lifecycle::CancelRequested {
                                by: by.map(str::to_string),
                                reason: reason.map(str::to_string),
                            },
                        )?;
                    }
                }
                agentpool_core::Transition::Requeue { .. } => {
                    return Err(StoreError::Corrupt("cancel() asked to requeue".into()));
                }
            }
            insert_lifecycle(conn, &log, now).await?;
            let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1");
            task(
                &sqlx::query(&sql)
                    .bind(tid(id))
                    .fetch_one(&mut *conn)
                    .await?,
            )
        }

        /// Re-queue one failed or canceled task with a fresh attempt budget, once no dependency
        /// it has failed. The attempts it had keep their numbers and the new
        /// ones count on from them (a task that failed 3 of 3 runs attempt 4 of 6), so the
        /// history, the lifecycle events and a Job's attempt label do not start again at 1.
        async fn retry_one(conn: &mut Conn, id: TaskId, now: i64, default_max_attempts: u32) -> Result<Task> {
            let t = task(&locked_task(conn, id, "").await?)?;
            agentpool_core::task::retry(t.state)?;
            let budget = t.spec.max_attempts.unwrap_or(default_max_attempts).max(1);
            let max_attempts = i32::try_from(t.attempts.saturating_add(budget)).unwrap_or(i32::MAX);
            let deps = sqlx::query(
                "SELECT d.dep_id, t.state FROM task_deps d JOIN tasks t ON t.id = d.dep_id \
                 WHERE d.task_id = $1",
            )
            .bind(tid(id))
            .fetch_all(&mut *conn)
            .await?;
            let mut pending = 0i32;
            for d in &deps {
                match common::parse_state(&d.text("state")?)? {
                    TaskState::Succeeded => {}
                    TaskState::Failed | TaskState::Canceled => {
                        return Err(StoreError::Conflict(format!(
                            "dependency {} did not succeed; retry it first",
                            d.task_id("dep_id")?
                        )));
                    }
                    _ => pending += 1,
                }
            }
            let sql = format!(
                "UPDATE tasks SET state = 'queued', max_attempts = $4, run_after = $1, \
                 updated_at = $1, finished_at = NULL, worker_id = NULL, \
                 lease_expires_at = NULL, cancel_requested = FALSE, error_class = NULL, \
                 error_message = NULL, deps_pending = $2 WHERE id = $3 RETURNING {TASK_COLS}"
            );
            let r = sqlx::query(&sql)
                .bind(now)
                .bind(pending)
                .bind(tid(id))
                .bind(max_attempts)
                .fetch_one(&mut *conn)
                .await?;
            let mut log = LifecycleLog::default();
            log.push(id, Lifecycle::Queued)?;
            insert_lifecycle(conn, &log, now).await?;
            task(&r)
        }

        /// Re-queue a failed or canceled task (see [`retry_one`]) and, transitively, the tasks
        /// that failed only because it did (`DEPENDENCY_FAILED`): they wait for it again, as
        /// they did before it failed. A dependent that another failed dependency still holds
        /// back stays failed. Returns the task and the dependents re-queued.
        async fn retry(
            conn: &mut Conn,
            id: TaskId,
            now: i64,
            default_max_attempts: u32,
        ) -> Result<(Task, Vec<TaskId>)> {
            let t = retry_one(conn, id, now, default_max_attempts).await?;
            let mut requeued = Vec::new();
            // Depth first; a dependent of two re-queued tasks is tried again from the second,
            // when the first try found the second still failed.
            let mut pending = vec![id];
            while let Some(parent) = pending.pop() {
                let rows = sqlx::query(
                    "SELECT t.id FROM task_deps d JOIN tasks t ON t.id = d.task_id \
                     WHERE d.dep_id = $1 AND t.state = 'failed' AND t.error_class = $2 ORDER BY t.id",
                )
                .bind(tid(parent))
                .bind(ErrorClass::DependencyFailed.as_str())
                .fetch_all(&mut *conn)
                .await?;
                for r in rows {
                    let child = r.task_id("id")?;
                    match retry_one(conn, child, now, default_max_attempts).await {
                        Ok(_) => {
                            requeued.push(child);
                            pending.push(child);
                        }
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok((t, requeued))
        }

        /// Whether `e` passes one task of a bulk action over (it is not there, or the action
        /// does not apply to it as it is) instead of failing the whole batch. Each is found by
        /// a read before anything is written for that task, so on PostgreSQL the transaction
        /// stays usable for the next.
        fn passed_over(e: &StoreError) -> bool {
            matches!(
                e,
                StoreError::NotFound { .. } | StoreError::Conflict(_) | StoreError::Transition(_)
            )
        }

        /// The positions of `ids` in the order their rows are locked: by id, so that two bulk
        /// actions on overlapping tasks take their locks in one order and never wait on each
        /// other in a cycle.
        fn lock_order(ids: &[TaskId]) -> Vec<usize> {
            let mut order: Vec<usize> = (0..ids.len()).collect();
            order.sort_by_key(|&i| ids[i]);
            order
        }

        /// [`cancel`] each of `ids` on `conn` (one transaction): per id, in the order given,
        /// the task as the cancel left it or why it was passed over. Any other error ends it.
        pub(crate) async fn cancel_each(
            conn: &mut Conn,
            ids: &[TaskId],
            now: i64,
            by: Option<&str>,
            reason: Option<&str>,
        ) -> Result<Vec<Result<Task>>> {
            let mut out: Vec<Option<Result<Task>>> = ids.iter().map(|_| None).collect();
            for i in lock_order(ids) {
                match cancel(conn, ids[i], now, by, reason).await {
                    Err(e) if !passed_over(&e) => return Err(e),
                    done => out[i] = Some(done),
                }
            }
            Ok(out.into_iter().flatten().collect())
        }

        /// [`retry`] each of `ids` on `conn`, as [`cancel_each`] cancels them. A task named
        /// after a dependency of it was retried (and took it along) is passed over as queued.
        pub(crate) async fn retry_each(
            conn: &mut Conn,
            ids: &[TaskId],
            now: i64,
            default_max_attempts: u32,
        ) -> Result<Vec<Result<(Task, Vec<TaskId>)>>> {
            let mut out: Vec<Option<Result<(Task, Vec<TaskId>)>>> = ids.iter().map(|_| None).collect();
            for i in lock_order(ids) {
                match retry(conn, ids[i], now, default_max_attempts).await {
                    Err(e) if !passed_over(&e) => return Err(e),
                    done => out[i] = Some(done),
                }
            }
            Ok(out.into_iter().flatten().collect())
        }
    };
}
pub(crate) use manual_queries;
