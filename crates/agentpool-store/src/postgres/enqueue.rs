//! Enqueue on PostgreSQL: a batch of tasks is one `INSERT … SELECT FROM unnest(…)` that also
//! writes their `queued` events and signals claimers; dependencies, when there are any, are
//! locked first in the same transaction.

use std::collections::{HashMap, HashSet};

use agentpool_core::{ErrorClass, Lifecycle, Task, TaskSpec, TaskState};
use sqlx::Row;
use uuid::Uuid;

use super::{PgStore, insert_lifecycle, retry_transient};
use crate::common::{self, LifecycleLog, NewTaskRow, task};
use crate::shared::handover::Plan;
use crate::{Enqueued, Result, StoreError};

impl PgStore {
    pub(super) async fn enqueue_many(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        // Only an enqueue with dependencies locks other rows (the dependencies), and only it
        // can deadlock with a concurrent completion of those rows; it is retried then.
        if specs.iter().all(|s| s.depends_on.is_empty()) {
            return self.enqueue_batch_once(specs).await;
        }
        retry_transient(|| self.enqueue_batch_once(specs.clone())).await
    }

    async fn enqueue_batch_once(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let has_deps = specs.iter().any(|s| !s.depends_on.is_empty());
        let mut tx = if has_deps {
            Some(self.pool.begin().await?)
        } else {
            None
        };
        // Lock the dependencies (and mark them as having dependents) first, so a dependency
        // finishing concurrently waits for this insert and then sees its new dependents.
        let mut dep_state: HashMap<Uuid, TaskState> = HashMap::new();
        if let Some(tx) = tx.as_mut() {
            let mut all: Vec<Uuid> = specs
                .iter()
                .flat_map(|s| s.depends_on.iter().map(|d| d.0))
                .collect();
            all.sort();
            all.dedup();
            let rows = sqlx::query(
                "UPDATE tasks SET has_dependents = true WHERE id = ANY($1::uuid[]) \
                 RETURNING id, state",
            )
            .bind(&all)
            .fetch_all(&mut **tx)
            .await?;
            for r in rows {
                let s: String = r.try_get("state")?;
                dep_state.insert(r.try_get("id")?, common::parse_state(&s)?);
            }
            if let Some(missing) = all.iter().find(|d| !dep_state.contains_key(d)) {
                return Err(StoreError::Invalid(format!(
                    "depends_on: task {missing} does not exist"
                )));
            }
        }
        // Within one batch the first spec with a key (in its project) wins; later ones return it.
        let mut first_with_key: HashMap<(String, String), usize> = HashMap::new();
        let mut dup_of: Vec<Option<usize>> = Vec::with_capacity(specs.len());
        let mut rows_in = Vec::with_capacity(specs.len());
        let mut c = Columns::default();
        for (i, spec) in specs.into_iter().enumerate() {
            if let Some(k) = common::scoped_key(&spec) {
                if let Some(&j) = first_with_key.get(&k) {
                    dup_of.push(Some(j));
                    rows_in.push(None);
                    continue;
                }
                first_with_key.insert(k, i);
            }
            dup_of.push(None);
            let pending = spec
                .depends_on
                .iter()
                .filter(|d| {
                    !matches!(
                        dep_state.get(&d.0),
                        Some(TaskState::Succeeded | TaskState::Failed | TaskState::Canceled)
                    )
                })
                .count();
            let pending = i32::try_from(pending).unwrap_or(i32::MAX);
            let dep_failed = common::failed_dependency(&spec, |d| dep_state.get(&d.0).copied());
            let failed = dep_failed.is_some();
            let row = NewTaskRow::new(spec, now, self.config.retry.max_attempts)?;
            c.id.push(row.id.0);
            c.spec.push(row.spec_json.clone());
            c.state.push(if failed { "failed" } else { "queued" });
            c.priority.push(row.priority);
            c.run_after.push(row.run_after);
            c.max_attempts.push(row.max_attempts);
            c.required_agent.push(row.required_agent.clone());
            c.labels.push(row.labels_json.clone());
            c.project.push(row.project.clone());
            c.lock_key.push(row.lock_key.clone());
            c.constrained.push(row.constrained);
            c.deps_pending.push(pending);
            c.idem.push(row.idempotency_key.clone());
            c.error_class
                .push(failed.then_some(ErrorClass::DependencyFailed.as_str()));
            c.error_message.push(dep_failed);
            c.finished_at.push(failed.then_some(now));
            rows_in.push(Some(row));
        }
        // Parked claimers that can take a new task get it handed over: the insert writes it
        // already claimed for them. The other tasks claimable now wake claimers (delayed ones
        // get a timer).
        let queued = || {
            rows_in
                .iter()
                .flatten()
                .zip(&c.state)
                .filter(|(_, st)| **st == "queued")
                .map(|(r, _)| r)
        };
        let mut plan = self.plan_handover(queued().map(|r| (r.id, &r.spec, r.run_after, r.constrained)), now);
        let (scope, count) = crate::enqueued_scope(
            queued()
                .filter(|r| !plan.has(r.id))
                .map(|r| (&r.spec, r.run_after)),
            now,
        );
        let sql = if plan.is_empty() {
            &self.sql.enqueue
        } else {
            &self.sql.enqueue_handover
        };
        let mut q = sqlx::query(sql)
            .bind(now)
            .bind(&c.id)
            .bind(&c.spec)
            .bind(&c.state)
            .bind(&c.priority)
            .bind(&c.run_after)
            .bind(&c.max_attempts)
            .bind(&c.required_agent)
            .bind(&c.labels)
            .bind(&c.project)
            .bind(&c.lock_key)
            .bind(&c.constrained)
            .bind(&c.deps_pending)
            .bind(&c.idem)
            .bind(&c.error_class)
            .bind(&c.error_message)
            .bind(&c.finished_at)
            .bind(common::event_data(&Lifecycle::Queued.into())?)
            .bind(self.note(&scope, count));
        if !plan.is_empty() {
            let (hw, hexp, hev) = handover_columns(&plan, rows_in.iter().flatten(), now)?;
            q = q.bind(hw).bind(hexp).bind(hev);
        }
        let inserted = match tx.as_mut() {
            Some(tx) => q.fetch_all(&mut **tx).await?,
            None => q.fetch_all(&self.pool).await?,
        };
        let mut by_id: HashMap<Uuid, Task> = HashMap::with_capacity(inserted.len());
        let failed: HashMap<Uuid, &str> =
            c.id.iter()
                .zip(&c.error_message)
                .filter_map(|(id, m)| Some((*id, m.as_deref()?)))
                .collect();
        let mut created = HashSet::with_capacity(inserted.len());
        let mut running = HashSet::new();
        for r in &inserted {
            let id: Uuid = r.try_get("id")?;
            if r.try_get::<String, _>("state")? == "running" {
                running.insert(id);
            }
            created.insert(id);
        }
        let mut handed = Vec::with_capacity(running.len());
        for r in rows_in.iter().flatten() {
            if !created.contains(&r.id.0) {
                continue;
            }
            let reserved = running.contains(&r.id.0).then(|| plan.take(r.id)).flatten();
            let t = match reserved {
                Some(res) => {
                    let c = common::handed_task(r, now, &res.to);
                    let t = c.task.clone();
                    handed.push((res.member, c));
                    t
                }
                None => common::new_task(r, now, failed.get(&r.id.0).copied()),
            };
            by_id.insert(r.id.0, t);
        }
        // Keys that already existed before this batch.
        let (lost_scopes, lost_keys): (Vec<String>, Vec<String>) = rows_in
            .iter()
            .flatten()
            .filter(|r| !by_id.contains_key(&r.id.0))
            .filter_map(|r| common::scoped_key(&r.spec))
            .unzip();
        let mut existing: HashMap<(String, String), Task> = HashMap::new();
        if !lost_keys.is_empty() {
            let q = sqlx::query(&self.sql.by_idempotency)
                .bind(&lost_scopes)
                .bind(&lost_keys);
            let rows = match tx.as_mut() {
                Some(tx) => q.fetch_all(&mut **tx).await?,
                None => q.fetch_all(&self.pool).await?,
            };
            for r in &rows {
                let k: (String, String) = (r.try_get("key_scope")?, r.try_get("idempotency_key")?);
                existing.insert(k, task(r)?);
            }
        }
        if let Some(tx) = tx.as_mut() {
            let (mut tids, mut dids) = (Vec::new(), Vec::new());
            for r in rows_in.iter().flatten() {
                if by_id.contains_key(&r.id.0) {
                    for d in &r.spec.depends_on {
                        tids.push(r.id.0);
                        dids.push(d.0);
                    }
                }
            }
            sqlx::query(
                "INSERT INTO task_deps (task_id, dep_id) \
                 SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING",
            )
            .bind(&tids)
            .bind(&dids)
            .execute(&mut **tx)
            .await?;
            // A task whose dependency had already failed is inserted failed, and its event
            // names that dependency: written here, in the transaction, rather than by the
            // insert, which writes one `queued` event for the rows of the common case.
            let mut log = LifecycleLog::default();
            for r in rows_in.iter().flatten() {
                if by_id.contains_key(&r.id.0)
                    && let Some(message) = failed.get(&r.id.0)
                {
                    log.push(r.id, common::dependency_failed(message.to_string()))?;
                }
            }
            insert_lifecycle(tx, &log, now).await?;
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        let mut out: Vec<Enqueued> = Vec::with_capacity(rows_in.len());
        for (i, r) in rows_in.iter().enumerate() {
            let e = match (r, dup_of[i]) {
                (Some(r), _) => match by_id.remove(&r.id.0) {
                    Some(t) => Enqueued {
                        task: t,
                        created: true,
                    },
                    None => {
                        let key = common::scoped_key(&r.spec).unwrap_or_default();
                        let t = existing.get(&key).cloned().ok_or_else(|| {
                            let key = &key.1;
                            StoreError::Conflict(format!(
                                "idempotency key {key:?} is being used concurrently; retry"
                            ))
                        })?;
                        Enqueued {
                            task: t,
                            created: false,
                        }
                    }
                },
                (None, Some(j)) => Enqueued {
                    task: out[j].task.clone(),
                    created: false,
                },
                (None, None) => return Err(StoreError::Corrupt("enqueue bookkeeping".into())),
            };
            out.push(e);
        }
        self.deliver(plan, handed).await;
        self.wake_enqueued(&out, &scope, count);
        Ok(out)
    }
}

/// Column arrays for one `unnest` insert of many tasks.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    spec: Vec<String>,
    state: Vec<&'static str>,
    priority: Vec<i32>,
    run_after: Vec<i64>,
    max_attempts: Vec<i32>,
    required_agent: Vec<Option<String>>,
    labels: Vec<Option<String>>,
    project: Vec<Option<String>>,
    lock_key: Vec<Option<String>>,
    constrained: Vec<bool>,
    deps_pending: Vec<i32>,
    idem: Vec<Option<String>>,
    error_class: Vec<Option<&'static str>>,
    error_message: Vec<Option<String>>,
    finished_at: Vec<Option<i64>>,
}

/// The hand-over columns of an enqueue, one entry per row (`rows`, in the insert's order): the
/// reserved waiter's worker, its lease's expiry and the `claimed` event, or nothing.
#[allow(clippy::type_complexity)]
fn handover_columns<'a>(
    plan: &Plan,
    rows: impl Iterator<Item = &'a NewTaskRow>,
    now: i64,
) -> Result<(Vec<Option<String>>, Vec<Option<i64>>, Vec<Option<String>>)> {
    let (mut hw, mut hexp, mut hev) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let to = plan.handoff(r.id);
        hw.push(to.map(|to| to.worker.as_str().to_string()));
        hexp.push(to.map(|to| now + common::dur_ms(to.lease_ttl)));
        hev.push(
            to.map(|to| {
                common::event_data(
                    &Lifecycle::Claimed {
                        attempt: 1,
                        worker: to.worker.clone(),
                    }
                    .into(),
                )
            })
            .transpose()?,
        );
    }
    Ok((hw, hexp, hev))
}
