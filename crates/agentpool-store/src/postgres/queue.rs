//! The hot path on PostgreSQL: claims (one `UPDATE … SKIP LOCKED` statement for
//! unconstrained tasks, a serialized step for branch locks and project slots), heartbeats and
//! completions of many leases in one statement each, event appends and purging.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use agentpool_core::protocol::{ClaimedTask, HeartbeatReply};
use agentpool_core::{Lease, Lifecycle, NewEvent, TaskId, TaskResult, WorkerId};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{PgStore, retry_transient, spend, tasks, uuids};
use crate::common::{self, dur_ms, json};
use crate::{ClaimFilter, Result, StoreError};

/// A heartbeat in one statement: the worker's update (`$1`…`$3`, see
/// [`common::BEAT_WORKER_SQL`]) and the extension to `$4` of the leases bound as arrays (`$5`
/// ids, `$6` tokens) it still holds; its status, the leases held and those to cancel.
static BEAT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH w AS ({}), \
         l AS ( \
           UPDATE tasks t SET lease_expires_at = $4 \
           FROM unnest($5::uuid[], $6::bigint[]) AS i(id, token) \
           WHERE t.id = i.id AND t.lease_token = i.token AND t.worker_id = $3 \
             AND t.state = 'running' \
           RETURNING t.id, t.cancel_requested) \
         SELECT (SELECT status FROM w) AS status, \
           (SELECT coalesce(array_agg(id), '{{}}') FROM l) AS held, \
           (SELECT coalesce(array_agg(id) FILTER (WHERE cancel_requested), '{{}}') FROM l) \
             AS cancel",
        common::BEAT_WORKER_SQL
    )
});

/// What a completion statement binds for `items`: their task ids, lease tokens and results.
fn completion_arrays<'a>(
    items: impl ExactSizeIterator<Item = &'a (Lease, TaskResult)>,
) -> Result<(Vec<Uuid>, Vec<i64>, Vec<String>)> {
    let n = items.len();
    let (mut ids, mut tokens, mut results) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (l, r) in items {
        ids.push(l.task_id.0);
        tokens.push(l.token.0);
        results.push(json(r)?);
    }
    Ok((ids, tokens, results))
}

/// The projects claimer `f` is limited to, as a claim statement binds them: NULL for any.
fn limited_to(f: &ClaimFilter) -> Option<&[String]> {
    (!f.projects.is_empty()).then_some(f.projects.as_slice())
}

impl PgStore {
    /// How many finished tasks one purge statement deletes.
    pub(super) const PURGE_BATCH: i64 = 5000;

    /// Complete `items`, one result each in order; retried as a whole after a deadlock (a
    /// completion that releases dependents locks their rows).
    pub(super) async fn complete_many(
        &self,
        worker: &WorkerId,
        items: Vec<(Lease, TaskResult)>,
    ) -> Result<Vec<Result<()>>> {
        retry_transient(|| self.complete_once(worker, &items)).await
    }

    async fn complete_once(
        &self,
        worker: &WorkerId,
        items: &[(Lease, TaskResult)],
    ) -> Result<Vec<Result<()>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let succeeded = common::event_data(&Lifecycle::Succeeded.into())?;
        // Most completions free nothing (no dependents, no branch lock or project slot): one
        // autocommitted statement completes those. A task that gained a dependent meanwhile
        // is left to the transaction below (the enqueue locked and marked it first, and this
        // statement re-checks the row after that lock), as are stale leases, which it reports.
        let (ids, tokens, results) = completion_arrays(items.iter())?;
        let plain: HashSet<Uuid> = sqlx::query_scalar(&self.sql.complete_plain)
            .bind(&ids)
            .bind(&tokens)
            .bind(&results)
            .bind(now)
            .bind(worker.as_str())
            .bind(&succeeded)
            .fetch_all(&self.hot)
            .await?
            .into_iter()
            .collect();
        let rest: Vec<&(Lease, TaskResult)> = items
            .iter()
            .filter(|(l, _)| !plain.contains(&l.task_id.0))
            .collect();
        let mut ok = plain;
        if !rest.is_empty() {
            ok.extend(self.complete_in_tx(worker, &rest, now, &succeeded).await?);
        }
        Ok(items
            .iter()
            .map(|(l, _)| {
                if ok.contains(&l.task_id.0) {
                    Ok(())
                } else {
                    Err(StoreError::StaleLease(l.task_id))
                }
            })
            .collect())
    }

    /// Complete `items` in one transaction that also releases their dependents and wakes
    /// claimers when a lock or slot was freed; the ids completed.
    async fn complete_in_tx(
        &self,
        worker: &WorkerId,
        items: &[&(Lease, TaskResult)],
        now: i64,
        succeeded: &str,
    ) -> Result<HashSet<Uuid>> {
        let (ids, tokens, results) = completion_arrays(items.iter().copied())?;
        // A transaction only so that releasing dependents (rare) commits together with the
        // completion; the completion itself is one statement for the whole batch. The succeeded
        // attempt stays on the task row (see `common::current_attempt`).
        let mut tx = self.hot.begin().await?;
        let rows = sqlx::query(&self.sql.complete_any)
            .bind(&ids)
            .bind(&tokens)
            .bind(&results)
            .bind(now)
            .bind(worker.as_str())
            .bind(succeeded)
            .fetch_all(&mut *tx)
            .await?;
        let mut ok = HashSet::with_capacity(rows.len());
        let mut release = Vec::new();
        let mut wake = false;
        let mut projects = Vec::new();
        for r in &rows {
            let id: Uuid = r.try_get("id")?;
            if r.try_get::<bool, _>("has_dependents")? {
                release.push(TaskId(id));
            }
            wake |= r.try_get::<bool, _>("constrained")?;
            if let Some(p) = r.try_get::<Option<String>, _>("project")? {
                projects.push((id, p));
            }
            ok.insert(id);
        }
        // Only a project's tasks count towards its spend, and they are all constrained, so
        // the plain completion above never completes one; a batch without one skips this.
        if !projects.is_empty() {
            let costs: BTreeMap<Uuid, f64> = items
                .iter()
                .filter_map(|(l, r)| Some((l.task_id.0, spend::cost(Some(r))?)))
                .collect();
            let spent = projects
                .iter()
                .filter_map(|(id, p)| Some((p.as_str(), *costs.get(id)?)));
            spend::add_spend(&mut tx, spent, now).await?;
        }
        if !release.is_empty() {
            tasks::release_dependents(&mut tx, &release, now).await?;
            wake = true;
        }
        if wake {
            self.announce(&mut *tx, 1).await?;
        }
        tx.commit().await?;
        if wake {
            self.signal.notify();
        }
        Ok(ok)
    }

    async fn claim_constrained(&self, f: &ClaimFilter, max: i64, now: i64) -> Result<Vec<PgRow>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.sql.claim_lock)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(&self.sql.claim_candidates)
            .bind(now)
            .bind(common::claim_agents(&f.agents))
            .bind(json(&f.labels)?)
            .bind(f.worker_id.as_str())
            .bind(common::candidate_window(f.max))
            .bind(common::utc_day_start(now))
            .bind(limited_to(f))
            .fetch_all(&mut *tx)
            .await?;
        let picked = common::pick_candidate_rows(&rows, usize::try_from(max).unwrap_or(0))?;
        if picked.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // The attempt starts now, not when the claim call began: the candidates just read may
        // have been freed (a branch lock or slot released) after that, and an attempt that
        // ended to free them must not end after this one started.
        let started = self.now().max(now);
        let rows = sqlx::query(&self.sql.claim_update)
            .bind(started)
            .bind(f.worker_id.as_str())
            .bind(started + dur_ms(f.lease_ttl))
            .bind(uuids(&picked))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Claim constrained tasks first (when any wait), then fill up from the hot path; return
    /// them in claim order.
    pub(super) async fn claim_in_order(&self, f: &ClaimFilter) -> Result<Vec<ClaimedTask>> {
        if f.max == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let max = i64::from(f.max);
        let labels = json(&f.labels)?;
        let agents = common::claim_agents(&f.agents);
        // A hot-path claim statement (`claim_first` or `claim_hot`) of up to `limit` tasks,
        // its attempts starting at `at`.
        let hot_claim = |sql, limit: i64, at: i64| {
            sqlx::query(sql)
                .bind(at)
                .bind(&agents)
                .bind(&labels)
                .bind(f.worker_id.as_str())
                .bind(limit)
                .bind(at + dur_ms(f.lease_ttl))
                .bind(limited_to(f))
                .fetch_all(&self.hot)
        };
        // One round trip: probe for constrained work, read the worker's status and, when no
        // constrained task waits, claim from the hot path.
        let first = hot_claim(&self.sql.claim_first, max, now).await?;
        let head = first
            .first()
            .ok_or_else(|| StoreError::Corrupt("claim returned no probe row".into()))?;
        let status: Option<String> = head.try_get("worker_status")?;
        if status.is_none() {
            return Err(StoreError::not_found("worker", &f.worker_id));
        }
        let rows = if head.try_get::<bool, _>("constrained_waiting")? {
            // Constrained tasks first (serialized), then fill up from the hot path.
            let mut rows = self.claim_constrained(f, max, now).await?;
            let left = max - i64::try_from(rows.len()).unwrap_or(max);
            if left > 0 {
                // After the serialized step, which may have waited: a dependency that ended
                // meanwhile must not end after its dependent's attempt started.
                let at = self.now().max(now);
                rows.extend(hot_claim(&self.sql.claim_hot, left, at).await?);
            }
            rows
        } else {
            let mut rows = Vec::with_capacity(first.len());
            for r in first {
                if r.try_get::<Option<Uuid>, _>("id")?.is_some() {
                    rows.push(r);
                }
            }
            rows
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut claimed = common::claimed_tasks(&rows)?;
        claimed.sort_by(|a, b| {
            b.task
                .priority
                .cmp(&a.task.priority)
                .then(a.task.run_after.cmp(&b.task.run_after))
                .then(a.task.id.cmp(&b.task.id))
        });
        Ok(claimed)
    }

    pub(super) async fn beat(
        &self,
        worker: &WorkerId,
        leases: &[Lease],
        lease_ttl: Duration,
    ) -> Result<HeartbeatReply> {
        let now = self.now();
        let ids: Vec<Uuid> = leases.iter().map(|l| l.task_id.0).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token.0).collect();
        let r = sqlx::query(&BEAT)
            .bind(now)
            .bind(!leases.is_empty())
            .bind(worker.as_str())
            .bind(now + dur_ms(lease_ttl))
            .bind(&ids)
            .bind(&tokens)
            .fetch_one(&self.hot)
            .await?;
        let drain = common::beat_drains(r.try_get("status")?, worker)?;
        let held: Vec<Uuid> = r.try_get("held")?;
        let cancel: Vec<Uuid> = r.try_get("cancel")?;
        Ok(HeartbeatReply {
            cancel: cancel.into_iter().map(TaskId).collect(),
            lost: ids
                .iter()
                .filter(|id| !held.contains(id))
                .map(|id| TaskId(*id))
                .collect(),
            drain,
        })
    }

    pub(super) async fn append(
        &self,
        task: TaskId,
        lease: Option<Lease>,
        events: Vec<NewEvent>,
    ) -> Result<()> {
        let now = self.now();
        let token = lease.map(|l| l.token.0);
        let mut at = Vec::with_capacity(events.len());
        let mut kind = Vec::with_capacity(events.len());
        let mut data = Vec::with_capacity(events.len());
        for e in &events {
            let (a, k, d) = common::event_columns(e, now)?;
            at.push(a);
            kind.push(k);
            data.push(d);
        }
        // One statement. The task row is locked while the events are numbered: a re-claim
        // waits for the append (or the append sees the new token and is refused), and two
        // appends to one task commit in the order of their sequence numbers, so a reader
        // following `seq > last` never skips an event that commits late.
        let n = sqlx::query(
            "WITH t AS (SELECT id FROM tasks WHERE id = $1 \
                 AND ($5::bigint IS NULL OR (lease_token = $5 AND state = 'running')) \
                 FOR NO KEY UPDATE) \
             INSERT INTO events (task_id, at, kind, data) \
             SELECT t.id, i.at, i.kind, i.data \
             FROM t, unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY \
               AS i(at, kind, data, ord) \
             ORDER BY i.ord",
        )
        .bind(task.0)
        .bind(&at)
        .bind(&kind)
        .bind(&data)
        .bind(token)
        .execute(&self.hot)
        .await?
        .rows_affected();
        if n == 0 {
            let ok: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 \
                   AND ($2::bigint IS NULL OR (lease_token = $2 AND state = 'running')))",
            )
            .bind(task.0)
            .bind(token)
            .fetch_one(&self.pool)
            .await?;
            if !ok {
                return Err(common::append_refused(task, lease));
            }
        }
        Ok(())
    }

    /// Delete up to [`Self::PURGE_BATCH`] tasks finished before `cutoff`, with their
    /// attempts, events and dependency edges, in one statement; how many. Rows another replica
    /// is purging are skipped.
    pub(super) async fn purge_batch(&self, cutoff: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "WITH d AS ( \
               DELETE FROM tasks WHERE id IN ( \
                 SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < $1 \
                   AND state IN ('succeeded', 'failed', 'canceled') \
                 LIMIT $2 FOR UPDATE SKIP LOCKED) \
               RETURNING id), \
             e AS (DELETE FROM events WHERE task_id IN (SELECT id FROM d)), \
             a AS (DELETE FROM attempts WHERE task_id IN (SELECT id FROM d)), \
             x AS (DELETE FROM task_deps WHERE task_id IN (SELECT id FROM d) \
                     OR dep_id IN (SELECT id FROM d)) \
             SELECT count(*) FROM d",
        )
        .bind(cutoff)
        .bind(Self::PURGE_BATCH)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
