//! What only SQLite does: enqueue (dependencies checked one by one in the writer's
//! transaction), the claim inside one `BEGIN IMMEDIATE` transaction, heartbeats, completions,
//! event appends, and purging in batches.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use agentpool_core::protocol::{ClaimedTask, HeartbeatReply};
use agentpool_core::{
    ErrorClass, Lease, Lifecycle, NewEvent, TaskId, TaskResult, TaskSpec, TaskState, WorkerId,
};
use sqlx::{Sqlite, Transaction};

use super::{SqliteStore, insert_lifecycle, spend, tasks};
use crate::common::{
    self, HELD_COLS, LifecycleLog, NewTaskRow, StoreRow, TASK_COLS, dur_ms, held, json, task,
};
use crate::shared::claim::Candidates;
use crate::shared::handover::Plan;
use crate::{ClaimFilter, Enqueued, Result, StoreError};

/// A condition true when task `t` may go to a worker with the labels (JSON) bound at `param`:
/// always, unless the worker is dedicated, then only when the task carries its dedication.
fn dedicated_to(param: &str) -> String {
    let key = format!("'$.\"{}\"'", agentpool_core::spec::DEDICATED_LABEL);
    format!(
        "(json_extract({param}, {key}) IS NULL \
          OR json_extract(t.labels, {key}) IS json_extract({param}, {key}))"
    )
}

/// The tasks a claim may take, checked against branch locks, project slots and budgets; `?1`
/// now, `?2` the worker's agents and `?3` its labels (JSON), `?4` the limit, `?5` the start of
/// the budget day, `?6` the worker, `?7` the projects it is limited to (JSON; NULL for any). A
/// dedicated worker takes only the tasks dedicated to it ([`dedicated_to`]).
static CLAIM_CANDIDATES: LazyLock<String> = LazyLock::new(|| {
    Candidates {
        filters: &format!(
            "t.state = 'queued' AND t.deps_pending = 0 AND t.run_after <= ?1 \
             AND (t.required_agent IN (SELECT value FROM json_each(?2)) \
                  OR (t.required_agent IS NULL AND '*' IN (SELECT value FROM json_each(?2)))) \
             AND (t.labels IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(t.labels) l \
                  WHERE NOT EXISTS (SELECT 1 FROM json_each(?3) w \
                                    WHERE w.key = l.key AND w.value = l.value))) \
             AND {dedicated} \
             AND (?7 IS NULL OR t.project IN (SELECT value FROM json_each(?7))) AND {}",
            common::not_given_back_by("t.", "?6", "?1"),
            dedicated = dedicated_to("?3"),
        ),
        since: "?5",
        also: "",
        limit: "?4",
    }
    .sql()
});

impl SqliteStore {
    /// How many finished tasks one purge transaction deletes, so a large purge does not hold
    /// the writer for long.
    pub(super) const PURGE_BATCH: i64 = 2000;

    async fn enqueue_in(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        spec: TaskSpec,
        now: i64,
        log: &mut LifecycleLog,
    ) -> Result<Enqueued> {
        if let Some((scope, key)) = crate::common::scoped_key(&spec) {
            let sql = format!(
                "SELECT {TASK_COLS} FROM tasks WHERE COALESCE(project, '') = ? AND idempotency_key = ?"
            );
            if let Some(r) = sqlx::query(&sql)
                .bind(scope)
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?
            {
                return Ok(Enqueued {
                    task: task(&r)?,
                    created: false,
                });
            }
        }
        let mut pending = 0i64;
        let mut states = HashMap::new();
        for dep in &spec.depends_on {
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?")
                .bind(dep.to_string())
                .fetch_optional(&mut **tx)
                .await?;
            let state = match state.as_deref().map(common::parse_state).transpose()? {
                None => {
                    return Err(StoreError::Invalid(format!(
                        "depends_on: task {dep} does not exist"
                    )));
                }
                Some(s) => s,
            };
            if !matches!(
                state,
                TaskState::Succeeded | TaskState::Failed | TaskState::Canceled
            ) {
                pending += 1;
            }
            states.insert(*dep, state);
        }
        let dep_failed = common::failed_dependency(&spec, |d| states.get(&d).copied());
        let row = NewTaskRow::new(spec, now, self.config.retry.max_attempts)?;
        let (state, class, finished) = if dep_failed.is_some() {
            (
                TaskState::Failed,
                Some(ErrorClass::DependencyFailed.as_str()),
                Some(now),
            )
        } else {
            (TaskState::Queued, None, None)
        };
        sqlx::query(
            "INSERT INTO tasks (id, spec, state, priority, run_after, created_at, updated_at, \
             max_attempts, required_agent, labels, project, lock_key, constrained, deps_pending, \
             idempotency_key, error_class, error_message, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(row.id.to_string())
        .bind(&row.spec_json)
        .bind(state.as_str())
        .bind(row.priority)
        .bind(row.run_after)
        .bind(now)
        .bind(now)
        .bind(row.max_attempts)
        .bind(&row.required_agent)
        .bind(&row.labels_json)
        .bind(&row.project)
        .bind(&row.lock_key)
        .bind(row.constrained)
        .bind(pending)
        .bind(&row.idempotency_key)
        .bind(class)
        .bind(&dep_failed)
        .bind(finished)
        .execute(&mut **tx)
        .await?;
        for dep in &row.spec.depends_on {
            sqlx::query("INSERT OR IGNORE INTO task_deps (task_id, dep_id) VALUES (?, ?)")
                .bind(row.id.to_string())
                .bind(dep.to_string())
                .execute(&mut **tx)
                .await?;
            sqlx::query("UPDATE tasks SET has_dependents = 1 WHERE id = ?")
                .bind(dep.to_string())
                .execute(&mut **tx)
                .await?;
        }
        let task = common::new_task(&row, now, dep_failed.as_deref());
        log.push(
            row.id,
            match dep_failed {
                Some(message) => common::dependency_failed(message),
                None => Lifecycle::Queued,
            },
        )?;
        Ok(Enqueued { task, created: true })
    }

    pub(super) async fn enqueue_many(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(specs.len());
        let mut log = LifecycleLog::default();
        for spec in specs {
            out.push(self.enqueue_in(&mut tx, spec, now, &mut log).await?);
        }
        let queued = || {
            out.iter()
                .filter(|e| e.created && e.task.state == TaskState::Queued)
                .map(|e| &e.task)
        };
        // Parked claimers that can take a new task get it handed over, claimed in this
        // transaction; the other tasks claimable now wake claimers.
        let mut plan = self.plan_handover(
            queued().map(|t| {
                (
                    t.id,
                    &t.spec,
                    common::ms(t.run_after),
                    common::constrained(&t.spec),
                )
            }),
            now,
        );
        let (scope, count) = crate::enqueued_scope(
            queued()
                .filter(|t| !plan.has(t.id))
                .map(|t| (&t.spec, common::ms(t.run_after))),
            now,
        );
        let handed = claim_planned(&mut tx, &mut plan, now, &mut log).await?;
        insert_lifecycle(&mut tx, &log, now).await?;
        tx.commit().await?;
        for e in out.iter_mut() {
            if let Some((_, c)) = handed.iter().find(|(_, c)| c.task.id == e.task.id) {
                e.task = c.task.clone();
            }
        }
        self.deliver(plan, handed).await;
        self.wake_enqueued(&out, &scope, count);
        Ok(out)
    }

    /// Claim in one `BEGIN IMMEDIATE` transaction, in claim order (priority, then FIFO).
    pub(super) async fn claim_in_order(&self, f: &ClaimFilter) -> Result<Vec<ClaimedTask>> {
        if f.max == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        // Read the clock once the write lock is held: an attempt that ended before this claim
        // (freeing the branch or a slot, or a dependency) then never ends after it started.
        let now = self.now();
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM workers WHERE id = ?")
            .bind(f.worker_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match status.as_deref() {
            None => {
                return Err(StoreError::not_found("worker", &f.worker_id));
            }
            Some("draining" | "unhealthy") => return Ok(Vec::new()),
            Some(_) => {}
        }
        let max = usize::try_from(f.max).unwrap_or(usize::MAX);
        let rows = sqlx::query(&CLAIM_CANDIDATES)
            .bind(now)
            .bind(json(&common::claim_agents(&f.agents))?)
            .bind(json(&f.labels)?)
            .bind(common::candidate_window(f.max))
            .bind(common::utc_day_start(now))
            .bind(f.worker_id.as_str())
            .bind(if f.projects.is_empty() {
                None
            } else {
                Some(json(&f.projects)?)
            })
            .fetch_all(&mut *tx)
            .await?;
        let picked = common::pick_candidate_rows(&rows, max)?;
        if picked.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE tasks SET state = 'running', attempts = attempts + 1, \
             lease_token = lease_token + 1, worker_id = ?, lease_expires_at = ?, started_at = ?, \
             updated_at = ?, cancel_requested = 0, avoid_worker = NULL \
             WHERE id IN (SELECT value FROM json_each(?)) AND state = 'queued' \
             RETURNING {TASK_COLS}"
        );
        let rows = sqlx::query(&sql)
            .bind(f.worker_id.as_str())
            .bind(now + dur_ms(f.lease_ttl))
            .bind(now)
            .bind(now)
            .bind(json(&picked)?)
            .fetch_all(&mut *tx)
            .await?;
        let mut log = LifecycleLog::default();
        for r in &rows {
            log.push(
                r.task_id("id")?,
                Lifecycle::Claimed {
                    attempt: u32::try_from(r.int("attempts")?).unwrap_or(0),
                    worker: f.worker_id.clone(),
                },
            )?;
        }
        insert_lifecycle(&mut tx, &log, now).await?;
        tx.commit().await?;
        let order: HashMap<TaskId, usize> = picked.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut claimed = common::claimed_tasks(&rows)?;
        claimed.sort_by_key(|c| order.get(&c.task.id).copied().unwrap_or(usize::MAX));
        Ok(claimed)
    }

    pub(super) async fn beat(
        &self,
        worker: &WorkerId,
        leases: &[Lease],
        lease_ttl: Duration,
    ) -> Result<HeartbeatReply> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let status: Option<String> = sqlx::query_scalar(common::BEAT_WORKER_SQL)
            .bind(now)
            .bind(!leases.is_empty())
            .bind(worker.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let mut reply = HeartbeatReply {
            drain: common::beat_drains(status, worker)?,
            ..HeartbeatReply::default()
        };
        for l in leases {
            let cancel: Option<bool> = sqlx::query_scalar(
                "UPDATE tasks SET lease_expires_at = ? \
                 WHERE id = ? AND lease_token = ? AND worker_id = ? AND state = 'running' \
                 RETURNING cancel_requested",
            )
            .bind(now + dur_ms(lease_ttl))
            .bind(l.task_id.to_string())
            .bind(l.token.0)
            .bind(worker.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            match cancel {
                None => reply.lost.push(l.task_id),
                Some(true) => reply.cancel.push(l.task_id),
                Some(false) => {}
            }
        }
        tx.commit().await?;
        Ok(reply)
    }

    pub(super) async fn complete_many(
        &self,
        worker: &WorkerId,
        items: Vec<(Lease, TaskResult)>,
    ) -> Result<Vec<Result<()>>> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(items.len());
        let mut succeeded = Vec::new();
        let mut wake = false;
        let mut log = LifecycleLog::default();
        let sql = format!(
            "UPDATE tasks SET state = 'succeeded', finished_at = ?, updated_at = ?, \
             lease_expires_at = NULL, result = ?, error_class = NULL, error_message = NULL \
             WHERE id = ? AND lease_token = ? AND worker_id = ? AND state = 'running' \
             RETURNING {HELD_COLS}"
        );
        let mut spent = Vec::new();
        for (lease, result) in items {
            let r = sqlx::query(&sql)
                .bind(now)
                .bind(now)
                .bind(json(&result)?)
                .bind(lease.task_id.to_string())
                .bind(lease.token.0)
                .bind(worker.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(r) = r else {
                out.push(Err(StoreError::StaleLease(lease.task_id)));
                continue;
            };
            // The succeeded attempt stays on the task row (see `common::current_attempt`).
            let h = held(&r)?;
            if let (Some(project), Some(usd)) = (h.project.clone(), spend::cost(Some(&result))) {
                spent.push((project, usd));
            }
            log.push(h.id, Lifecycle::Succeeded)?;
            wake |= h.constrained;
            if h.has_dependents {
                succeeded.push(h.id);
            }
            out.push(Ok(()));
        }
        if !succeeded.is_empty() {
            tasks::release_dependents(&mut tx, &succeeded, now).await?;
            wake = true;
        }
        spend::add_spend(&mut tx, spent.iter().map(|(p, usd)| (p.as_str(), *usd)), now).await?;
        insert_lifecycle(&mut tx, &log, now).await?;
        tx.commit().await?;
        if wake {
            self.signal.notify();
        }
        Ok(out)
    }

    pub(super) async fn append(
        &self,
        task: TaskId,
        lease: Option<Lease>,
        events: Vec<NewEvent>,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let ok: Option<i64> = match lease {
            Some(l) => {
                sqlx::query_scalar(
                    "SELECT 1 FROM tasks WHERE id = ? AND lease_token = ? AND state = 'running'",
                )
                .bind(task.to_string())
                .bind(l.token.0)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => {
                sqlx::query_scalar("SELECT 1 FROM tasks WHERE id = ?")
                    .bind(task.to_string())
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        if ok.is_none() {
            return Err(common::append_refused(task, lease));
        }
        for e in &events {
            let (at, kind, data) = common::event_columns(e, now)?;
            sqlx::query("INSERT INTO events (task_id, at, kind, data) VALUES (?, ?, ?, ?)")
                .bind(task.to_string())
                .bind(at)
                .bind(kind)
                .bind(data)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Delete up to [`Self::PURGE_BATCH`] tasks finished before `cutoff`, with their
    /// attempts, events and dependency edges, in one transaction; how many.
    pub(super) async fn purge_batch(&self, cutoff: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ? \
             AND state IN ('succeeded', 'failed', 'canceled') LIMIT ?",
        )
        .bind(cutoff)
        .bind(Self::PURGE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if !ids.is_empty() {
            let ids_json = json(&ids)?;
            for sql in [
                "DELETE FROM events WHERE task_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM attempts WHERE task_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM task_deps WHERE task_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM task_deps WHERE dep_id IN (SELECT value FROM json_each(?))",
                "DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
            ] {
                sqlx::query(sql).bind(&ids_json).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }
}

/// In the enqueue's transaction, after its insert: claim each planned task (all of them were
/// just created) for its reserved waiter's worker (unless that worker is draining or unhealthy), with its
/// `claimed` event in `log`. (SQLite writes in process: a statement more costs no round trip,
/// so the insert stays as it is.)
async fn claim_planned(
    tx: &mut Transaction<'static, Sqlite>,
    plan: &mut Plan,
    now: i64,
    log: &mut LifecycleLog,
) -> Result<Vec<(u64, ClaimedTask)>> {
    let sql = format!(
        "UPDATE tasks SET state = 'running', attempts = attempts + 1, \
           lease_token = lease_token + 1, worker_id = ?1, lease_expires_at = ?2, \
           started_at = ?3, updated_at = ?3, cancel_requested = FALSE \
         WHERE id = ?4 AND state = 'queued' AND EXISTS (SELECT 1 FROM workers \
           WHERE id = ?1 AND status NOT IN ('draining', 'unhealthy')) \
         RETURNING {TASK_COLS}"
    );
    let mut handed = Vec::new();
    for (id, to) in plan.handoffs() {
        let row = sqlx::query(&sql)
            .bind(to.worker.as_str())
            .bind(now + dur_ms(to.lease_ttl))
            .bind(now)
            .bind(id.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            continue;
        };
        let c = common::claimed_tasks(std::slice::from_ref(&row))?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("hand-over row".into()))?;
        log.push(
            id,
            Lifecycle::Claimed {
                attempt: c.attempt,
                worker: to.worker.clone(),
            },
        )?;
        if let Some(res) = plan.take(id) {
            handed.push((res.member, c));
        }
    }
    Ok(handed)
}
