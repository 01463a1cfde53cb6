//! Counts of tasks for overviews — by state, and the tasks that ended per interval of the
//! recent past — the same on both backends.

/// Instantiate the count queries for database `$db` (see the [module docs](super)).
macro_rules! count_queries {
    ($db:ty) => {
        use std::collections::BTreeMap;

        use agentpool_core::{TaskState, Timestamp};
        use sqlx::Pool;

        use $crate::common::{self, StoreRow};
        use $crate::{FinishedCount, Result};

        type Db = $db;

        pub(crate) async fn count_by_state(r: &Pool<Db>) -> Result<BTreeMap<TaskState, u64>> {
            let rows = sqlx::query("SELECT state, count(*) AS n FROM tasks GROUP BY state")
                .fetch_all(r)
                .await?;
            let mut m: BTreeMap<TaskState, u64> = TaskState::ALL.into_iter().map(|s| (s, 0)).collect();
            add_counts(&mut m, &rows)?;
            Ok(m)
        }

        /// [`count_by_state`] of the tasks of these projects: a query a project (a project
        /// token names a few), each a scan as the unfiltered count is.
        pub(crate) async fn count_by_state_of(
            r: &Pool<Db>,
            projects: &[String],
        ) -> Result<BTreeMap<TaskState, u64>> {
            let mut m: BTreeMap<TaskState, u64> = TaskState::ALL.into_iter().map(|s| (s, 0)).collect();
            for p in projects {
                let rows =
                    sqlx::query("SELECT state, count(*) AS n FROM tasks WHERE project = $1 GROUP BY state")
                        .bind(p)
                        .fetch_all(r)
                        .await?;
                add_counts(&mut m, &rows)?;
            }
            Ok(m)
        }

        fn add_counts(m: &mut BTreeMap<TaskState, u64>, rows: &[<Db as sqlx::Database>::Row]) -> Result<()> {
            for row in rows {
                let n = u64::try_from(row.big("n")?).unwrap_or(0);
                *m.entry(common::parse_state(&row.text("state")?)?)
                    .or_insert(0) += n;
            }
            Ok(())
        }

        /// The tasks that ended at or after `since`, counted by interval of `step_ms` from it
        /// and by state: one grouped read on the index of end times, so it costs what ended
        /// in the window, not the history. Of the projects `projects` only, when given (a
        /// read a project).
        pub(crate) async fn count_finished(
            r: &Pool<Db>,
            since: Timestamp,
            step_ms: i64,
            projects: Option<&[String]>,
        ) -> Result<Vec<FinishedCount>> {
            const SQL: &str = "SELECT (finished_at - $1) / $2 AS slot, state, count(*) AS n FROM tasks \
                 WHERE finished_at >= $1";
            let since = since.timestamp_millis();
            let step_ms = step_ms.max(1);
            let rows = match projects {
                None => {
                    sqlx::query(&format!("{SQL} GROUP BY slot, state"))
                        .bind(since)
                        .bind(step_ms)
                        .fetch_all(r)
                        .await?
                }
                Some(ps) => {
                    let sql = format!("{SQL} AND project = $3 GROUP BY slot, state");
                    let mut all = Vec::new();
                    for p in ps {
                        all.extend(
                            sqlx::query(&sql)
                                .bind(since)
                                .bind(step_ms)
                                .bind(p)
                                .fetch_all(r)
                                .await?,
                        );
                    }
                    all
                }
            };
            rows.iter()
                .map(|row| {
                    Ok(FinishedCount {
                        interval: u32::try_from(row.big("slot")?).unwrap_or(u32::MAX),
                        state: common::parse_state(&row.text("state")?)?,
                        tasks: u64::try_from(row.big("n")?).unwrap_or(0),
                    })
                })
                .collect()
        }
    };
}
pub(crate) use count_queries;
