//! What only SQLite reads its own way: task lists (label filters through `json_each`), and the
//! queued tasks queue statistics count.

use std::sync::LazyLock;

use agentpool_core::Task;

use super::SqliteStore;
use crate::common::{self, TASK_COLS, json, task};
use crate::shared::claim::Candidates;
use crate::{Result, TaskFilter};

/// The queued constrained tasks any worker could claim now, checked as a claim checks them
/// (`CLAIM_CANDIDATES` in [`super::queue`]): `?1` now, `?2` the projects (JSON; NULL for any), `?3`
/// the start of the budget day, `?4` the limit.
static RUNNABLE: LazyLock<String> = LazyLock::new(|| {
    Candidates {
        filters: "t.state = 'queued' AND t.deps_pending = 0 AND t.constrained AND t.run_after <= ?1 \
                  AND (?2 IS NULL OR t.project IN (SELECT value FROM json_each(?2)))",
        since: "?3",
        also: "",
        limit: "?4",
    }
    .sql()
});

impl SqliteStore {
    /// The rows of [`crate::Store::runnable_now`] before the branches and slots are counted.
    pub(super) async fn runnable_candidates(
        &self,
        projects: Option<&[String]>,
        limit: u32,
        now: i64,
    ) -> Result<Vec<sqlx::sqlite::SqliteRow>> {
        Ok(sqlx::query(&RUNNABLE)
            .bind(now)
            .bind(projects.map(|p| json(&p)).transpose()?)
            .bind(common::utc_day_start(now))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?)
    }

    /// The rows of [`crate::Store::queued_shapes`]: the columns a pool is matched on only.
    pub(super) async fn queued_rows(
        &self,
        projects: Option<&[String]>,
        limit: u32,
    ) -> Result<Vec<sqlx::sqlite::SqliteRow>> {
        // Each part on its partial index (the claim's, and waiting tasks'): every queued task,
        // and none of the finished history.
        Ok(sqlx::query(
            "SELECT id, labels, required_agent, run_after, project FROM tasks \
               WHERE state = 'queued' AND deps_pending = 0 \
                 AND (?1 IS NULL OR project IN (SELECT value FROM json_each(?1))) \
             UNION ALL \
             SELECT id, labels, required_agent, run_after, project FROM tasks \
               WHERE state = 'queued' AND deps_pending > 0 \
                 AND (?1 IS NULL OR project IN (SELECT value FROM json_each(?1))) \
             LIMIT ?2",
        )
        .bind(projects.map(|p| json(&p)).transpose()?)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?)
    }

    pub(super) async fn list(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        let mut sql = format!("SELECT {TASK_COLS} FROM tasks t WHERE 1 = 1");
        if f.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if f.project.is_some() {
            sql.push_str(" AND project = ?");
        }
        if let Some(ps) = &f.projects {
            // A project token with no project reaches nothing: `IN ()` is not SQL.
            let marks = vec!["?"; ps.len()].join(", ");
            sql.push_str(&if ps.is_empty() {
                " AND 0".to_string()
            } else {
                format!(" AND project IN ({marks})")
            });
        }
        if f.label.is_some() {
            sql.push_str(" AND EXISTS (SELECT 1 FROM json_each(t.labels) l WHERE l.key = ? AND l.value = ?)");
        }
        if f.worker.is_some() {
            sql.push_str(" AND worker_id = ?");
        }
        if f.agent.is_some() {
            sql.push_str(" AND required_agent = ?");
        }
        if f.before.is_some() {
            sql.push_str(" AND id < ?");
        }
        if f.error_class.is_some() {
            sql.push_str(" AND error_class = ?");
        }
        if f.key_prefix.is_some() {
            sql.push_str(" AND substr(idempotency_key, 1, length(?)) = ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let mut q = sqlx::query(&sql);
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(p) = &f.project {
            q = q.bind(p.clone());
        }
        for p in f.projects.iter().flatten() {
            q = q.bind(p.clone());
        }
        if let Some((k, v)) = &f.label {
            q = q.bind(k.clone()).bind(v.clone());
        }
        if let Some(w) = &f.worker {
            q = q.bind(w.as_str().to_string());
        }
        if let Some(a) = &f.agent {
            q = q.bind(a.clone());
        }
        if let Some(b) = f.before {
            q = q.bind(b.to_string());
        }
        if let Some(c) = f.error_class {
            q = q.bind(c.as_str());
        }
        if let Some(p) = &f.key_prefix {
            q = q.bind(p.clone()).bind(p.clone());
        }
        let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) };
        q = q.bind(i64::from(limit));
        q.fetch_all(&self.reader).await?.iter().map(task).collect()
    }
}
