//! The spend ledger of projects with reported costs: what each project's attempts reported
//! spending per UTC day, added as each attempt ends, which a project's daily budget is
//! checked against.

/// Instantiate the spend queries for database `$db` (see the [module docs](super)).
macro_rules! spend_queries {
    ($db:ty) => {
        use std::collections::BTreeMap;

        use agentpool_core::TaskResult;

        use $crate::Result;
        use $crate::common;

        type Conn = <$db as sqlx::Database>::Connection;

        /// The cost an attempt's `result` reported, if it is one to count: finite and above 0.
        pub(crate) fn cost(result: Option<&TaskResult>) -> Option<f64> {
            result
                .and_then(|r| r.cost_usd)
                .filter(|c| c.is_finite() && *c > 0.0)
        }

        /// Add each `(project, cost)` to its project's spend of the UTC day of `now`: one
        /// statement a project, in name order, so two batches lock the rows in one order.
        pub(crate) async fn add_spend<'a>(
            conn: &mut Conn,
            spends: impl IntoIterator<Item = (&'a str, f64)>,
            now: i64,
        ) -> Result<()> {
            let mut by_project: BTreeMap<&str, f64> = BTreeMap::new();
            for (project, usd) in spends {
                *by_project.entry(project).or_default() += usd;
            }
            for (project, usd) in by_project {
                sqlx::query(
                    "INSERT INTO project_spend (project, day, usd) VALUES ($1, $2, $3) \
                     ON CONFLICT (project, day) DO UPDATE SET usd = project_spend.usd + excluded.usd",
                )
                .bind(project)
                .bind(common::utc_day_start(now))
                .bind(usd)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        /// What `project`'s attempts reported spending on the UTC day of `now`; none if they
        /// reported no cost.
        pub(crate) async fn spent_today(r: &sqlx::Pool<$db>, project: &str, now: i64) -> Result<Option<f64>> {
            Ok(
                sqlx::query_scalar("SELECT usd FROM project_spend WHERE project = $1 AND day = $2")
                    .bind(project)
                    .bind(common::utc_day_start(now))
                    .fetch_optional(r)
                    .await?,
            )
        }

        /// [`spent_today`] of every project that reported a cost today.
        pub(crate) async fn spent_today_by_project(
            r: &sqlx::Pool<$db>,
            now: i64,
        ) -> Result<BTreeMap<String, f64>> {
            let rows: Vec<(String, f64)> =
                sqlx::query_as("SELECT project, usd FROM project_spend WHERE day = $1")
                    .bind(common::utc_day_start(now))
                    .fetch_all(r)
                    .await?;
            Ok(rows.into_iter().collect())
        }

        /// Forget the spend of the UTC days before the one of `cutoff` (the finished tasks
        /// that reported it are purged with the same cutoff).
        pub(crate) async fn purge_spend(w: &sqlx::Pool<$db>, cutoff: i64) -> Result<u64> {
            let done = sqlx::query("DELETE FROM project_spend WHERE day < $1")
                .bind(common::utc_day_start(cutoff))
                .execute(w)
                .await?;
            Ok(done.rows_affected())
        }
    };
}
pub(crate) use spend_queries;
