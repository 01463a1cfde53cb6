//! What PostgreSQL reads its own way: task lists (every filter bound, one statement plan), and
//! the queued tasks queue statistics count.

use std::collections::BTreeMap;

use agentpool_core::Task;
use sqlx::postgres::PgRow;

use super::{PgStore, cols};
use crate::common::{self, json, task};
use crate::{Result, TaskFilter};

impl PgStore {
    /// The rows of [`crate::Store::runnable_now`] before the branches and slots are counted.
    pub(super) async fn runnable_candidates(
        &self,
        projects: Option<&[String]>,
        limit: u32,
        now: i64,
    ) -> Result<Vec<PgRow>> {
        Ok(sqlx::query(&self.sql.runnable)
            .bind(now)
            .bind(projects)
            .bind(common::utc_day_start(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    /// The rows of [`crate::Store::queued_shapes`]: the columns a pool is matched on only.
    pub(super) async fn queued_rows(&self, projects: Option<&[String]>, limit: u32) -> Result<Vec<PgRow>> {
        // Each part on its partial index (the claims' two, and waiting tasks'): every queued
        // task, and none of the finished history.
        Ok(sqlx::query(
            "SELECT id, labels::text AS labels, required_agent, run_after, project FROM ( \
               SELECT id, labels, required_agent, run_after, project FROM tasks \
                 WHERE state = 'queued' AND deps_pending = 0 AND NOT constrained \
               UNION ALL \
               SELECT id, labels, required_agent, run_after, project FROM tasks \
                 WHERE state = 'queued' AND deps_pending = 0 AND constrained \
               UNION ALL \
               SELECT id, labels, required_agent, run_after, project FROM tasks \
                 WHERE state = 'queued' AND deps_pending > 0) q \
             WHERE $1::text[] IS NULL OR project = ANY($1) LIMIT $2",
        )
        .bind(projects)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    pub(super) async fn list(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {} FROM tasks \
             WHERE ($1::text IS NULL OR state = $1) \
               AND ($2::text IS NULL OR project = $2) \
               AND ($3::jsonb IS NULL OR labels @> $3::jsonb) \
               AND ($4::text IS NULL OR worker_id = $4) \
               AND ($5::uuid IS NULL OR id < $5) \
               AND ($7::text IS NULL OR error_class = $7) \
               AND ($8::text IS NULL OR left(idempotency_key, length($8)) = $8) \
               AND ($9::text[] IS NULL OR project = ANY($9)) \
               AND ($10::text IS NULL OR required_agent = $10) \
             ORDER BY id DESC LIMIT $6",
            cols("")
        );
        let label = f
            .label
            .as_ref()
            .map(|(k, v)| json(&BTreeMap::from([(k.clone(), v.clone())])))
            .transpose()?;
        let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) };
        sqlx::query(&sql)
            .bind(f.state.map(|s| s.as_str()))
            .bind(f.project.as_deref())
            .bind(label)
            .bind(f.worker.as_ref().map(|w| w.as_str()))
            .bind(f.before.map(|b| b.0))
            .bind(i64::from(limit))
            .bind(f.error_class.map(|c| c.as_str()))
            .bind(f.key_prefix.as_deref())
            .bind(f.projects.as_deref())
            .bind(f.agent.as_deref())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(task)
            .collect()
    }
}
