//! The GitHub bookkeeping tables (`github_deliveries`, `github_links`), the same SQL on both
//! backends.

/// Implement [`crate::github::GithubStore`] for `$store` on database `$db`, writing through
/// the pool `self.$w` and reading through `self.$r`.
macro_rules! github_store {
    ($db:ty, $store:ty, $w:ident, $r:ident) => {
        use agentpool_core::github::PullRequestRef;
        use agentpool_core::{TaskId, TaskResult};
        use async_trait::async_trait;
        use sqlx::Row;

        use $crate::github::{GithubLink, GithubStore, PrTasks};
        use $crate::{Result, StoreError};

        type Db = $db;

        fn opt_u64(v: Option<i64>) -> Option<u64> {
            v.and_then(|v| u64::try_from(v).ok())
        }

        fn opt_i64(v: Option<u64>) -> Option<i64> {
            v.and_then(|v| i64::try_from(v).ok())
        }

        type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

        /// Bind what changes as a link is worked on, in the order both the insert and the
        /// update name them: `comment_id`, `reported_state`, `pr_number`, `pr_url`, `pr_state`,
        /// `branch`, `done`, `failures`.
        fn bind_progress<'q>(q: Query<'q>, l: &'q GithubLink) -> Query<'q> {
            q.bind(opt_i64(l.comment_id))
                .bind(&l.reported_state)
                .bind(opt_i64(l.pr_number))
                .bind(&l.pr_url)
                .bind(&l.pr_state)
                .bind(&l.branch)
                .bind(i64::from(l.done))
                .bind(i64::from(l.failures))
        }

        /// The `task_id` of a `github_links` row (TEXT on both backends).
        fn link_task(r: &<Db as sqlx::Database>::Row) -> Result<TaskId> {
            let id: String = r.try_get("task_id")?;
            id.parse()
                .map_err(|_| StoreError::Corrupt(format!("bad task id {id:?} in github_links")))
        }

        fn link_row(r: &<Db as sqlx::Database>::Row) -> Result<GithubLink> {
            Ok(GithubLink {
                task_id: link_task(r)?,
                project: r.try_get("project")?,
                repository: r.try_get("repository")?,
                number: opt_u64(r.try_get("number")?),
                kind: r.try_get("kind")?,
                comment_id: opt_u64(r.try_get("comment_id")?),
                reported_state: r.try_get("reported_state")?,
                pr_number: opt_u64(r.try_get("pr_number")?),
                pr_url: r.try_get("pr_url")?,
                pr_state: r.try_get("pr_state")?,
                branch: r.try_get("branch")?,
                done: r.try_get::<i64, _>("done")? != 0,
                failures: u32::try_from(r.try_get::<i64, _>("failures")?).unwrap_or(u32::MAX),
                next_try_at: r.try_get("next_try_at")?,
                created_at: r.try_get("created_at")?,
            })
        }

        #[async_trait]
        impl GithubStore for $store {
            async fn github_delivery_seen(&self, delivery: &str) -> Result<bool> {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM github_deliveries WHERE id = $1")
                    .bind(delivery)
                    .fetch_one(&self.$r)
                    .await?;
                Ok(n > 0)
            }

            async fn github_record_delivery(&self, delivery: &str, event: &str) -> Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO github_deliveries (id, event, received_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(delivery)
                .bind(event)
                .bind(self.now())
                .execute(&self.$w)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn github_purge_deliveries(&self, retention: std::time::Duration) -> Result<u64> {
                let cutoff = self.now() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
                let done = sqlx::query("DELETE FROM github_deliveries WHERE received_at < $1")
                    .bind(cutoff)
                    .execute(&self.$w)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn github_insert_link(&self, l: &GithubLink) -> Result<bool> {
                let q = sqlx::query(
                    "INSERT INTO github_links (task_id, project, repository, number, kind, comment_id, \
                     reported_state, pr_number, pr_url, pr_state, branch, done, failures, next_try_at, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                     ON CONFLICT (task_id) DO NOTHING",
                )
                .bind(l.task_id.to_string())
                .bind(&l.project)
                .bind(&l.repository)
                .bind(opt_i64(l.number))
                .bind(&l.kind);
                let done = bind_progress(q, l)
                    .bind(self.now())
                    .bind(self.now())
                    .execute(&self.$w)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn github_update_link(&self, l: &GithubLink) -> Result<()> {
                let q = sqlx::query(
                    // A close recorded while the forge loop held this link stays: the loop's
                    // copy was read before it.
                    "UPDATE github_links SET comment_id = $2, reported_state = $3, pr_number = $4, \
                     pr_url = $5, pr_state = CASE WHEN pr_state = 'closed' THEN pr_state ELSE $6 END, \
                     branch = $7, done = $8, failures = $9, next_try_at = $10 WHERE task_id = $1",
                )
                .bind(l.task_id.to_string());
                bind_progress(q, l)
                    .bind(l.next_try_at)
                    .execute(&self.$w)
                    .await?;
                Ok(())
            }

            async fn github_link(&self, task: TaskId) -> Result<Option<GithubLink>> {
                let row = sqlx::query("SELECT * FROM github_links WHERE task_id = $1")
                    .bind(task.to_string())
                    .fetch_optional(&self.$r)
                    .await?;
                row.as_ref().map(link_row).transpose()
            }

            async fn github_take_due(&self, limit: u32, lease_ms: i64) -> Result<Vec<GithubLink>> {
                let now = self.now();
                let rows = sqlx::query(
                    "SELECT * FROM github_links WHERE done = 0 AND next_try_at <= $1 \
                     ORDER BY next_try_at LIMIT $2",
                )
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.$r)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut l = link_row(row)?;
                    // Take the lease only if no other replica moved it meanwhile.
                    let taken = sqlx::query(
                        "UPDATE github_links SET next_try_at = $2 WHERE task_id = $1 AND next_try_at = $3 \
                         AND done = 0",
                    )
                    .bind(l.task_id.to_string())
                    .bind(now + lease_ms)
                    .bind(l.next_try_at)
                    .execute(&self.$w)
                    .await?;
                    if taken.rows_affected() == 1 {
                        l.next_try_at = now + lease_ms;
                        out.push(l);
                    }
                }
                Ok(out)
            }

            async fn github_pr_tasks(&self, repository: &str, number: u64) -> Result<Option<PrTasks>> {
                let number = i64::try_from(number).unwrap_or(i64::MAX);
                let row = sqlx::query(
                    "SELECT task_id, branch, pr_state FROM github_links WHERE repository = $1 AND pr_number = $2 \
                     AND branch IS NOT NULL ORDER BY created_at DESC LIMIT 1",
                )
                .bind(repository)
                .bind(number)
                .fetch_optional(&self.$r)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let automatic: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM github_links WHERE repository = $1 AND pr_number = $2 \
                     AND kind IN ('check_run', 'review', 'review_comment')",
                )
                .bind(repository)
                .bind(number)
                .fetch_one(&self.$r)
                .await?;
                Ok(Some(PrTasks {
                    branch: row.try_get("branch")?,
                    last_task: link_task(&row)?,
                    automatic: u32::try_from(automatic).unwrap_or(u32::MAX),
                    closed: row.try_get::<Option<String>, _>("pr_state")?.as_deref() == Some("closed"),
                }))
            }

            async fn github_set_pr_closed(&self, repository: &str, number: u64, closed: bool) -> Result<u64> {
                let done = sqlx::query(
                    "UPDATE github_links SET pr_state = $3 WHERE repository = $1 AND pr_number = $2",
                )
                .bind(repository)
                .bind(i64::try_from(number).unwrap_or(i64::MAX))
                .bind(if closed { "closed" } else { "open" })
                .execute(&self.$w)
                .await?;
                Ok(done.rows_affected())
            }

            async fn github_unfinished_tasks(&self, repository: &str, number: u64) -> Result<Vec<TaskId>> {
                let number = i64::try_from(number).unwrap_or(i64::MAX);
                let links = sqlx::query(
                    "SELECT task_id FROM github_links WHERE repository = $1 \
                     AND (number = $2 OR pr_number = $2) ORDER BY created_at",
                )
                .bind(repository)
                .bind(number)
                .fetch_all(&self.$r)
                .await?;
                let ids = links.iter().map(link_task).collect::<Result<Vec<_>>>()?;
                if ids.is_empty() {
                    return Ok(ids);
                }
                // The link keeps the id as text, so the tasks are read by the list of ids.
                let sql = format!(
                    "SELECT id FROM tasks WHERE id IN ({}) AND state IN ('queued', 'running') \
                     AND NOT cancel_requested",
                    in_ids(1)
                );
                let live: Vec<TaskId> = sqlx::query(&sql)
                    .bind(ids_param(&ids)?)
                    .fetch_all(&self.$r)
                    .await?
                    .iter()
                    .map(|r| $crate::rows::StoreRow::task_id(r, "id"))
                    .collect::<Result<_>>()?;
                Ok(ids.into_iter().filter(|id| live.contains(id)).collect())
            }

            async fn github_comment_for(&self, repository: &str, number: u64) -> Result<Option<u64>> {
                let id: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT comment_id FROM github_links WHERE repository = $1 AND number = $2 \
                     AND comment_id IS NOT NULL ORDER BY created_at DESC LIMIT 1",
                )
                .bind(repository)
                .bind(i64::try_from(number).unwrap_or(i64::MAX))
                .fetch_optional(&self.$r)
                .await?;
                Ok(opt_u64(id.flatten()))
            }

            async fn github_set_pull_request(&self, task: TaskId, pr: &PullRequestRef) -> Result<()> {
                let result: Option<String> = sqlx::query_scalar("SELECT result FROM tasks WHERE id = $1")
                    .bind(super::tid(task))
                    .fetch_optional(&self.$r)
                    .await?
                    .flatten();
                let mut r: TaskResult = match result {
                    Some(s) => serde_json::from_str(&s)
                        .map_err(|e| StoreError::Corrupt(format!("task {task} result: {e}")))?,
                    None => TaskResult::default(),
                };
                r.pr_url = Some(pr.url.clone());
                r.pull_request = Some(pr.clone());
                let json = serde_json::to_string(&r)
                    .map_err(|e| StoreError::Corrupt(format!("task {task} result: {e}")))?;
                sqlx::query("UPDATE tasks SET result = $2 WHERE id = $1")
                    .bind(super::tid(task))
                    .bind(json)
                    .execute(&self.$w)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use github_store;
