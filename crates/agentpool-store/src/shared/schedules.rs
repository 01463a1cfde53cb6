//! The `schedules` table, the same SQL on both backends.

/// Implement [`crate::schedules::ScheduleStore`] for `$store` on database `$db`, writing
/// through the pool `self.$w` and reading through `self.$r`.
macro_rules! schedule_store {
    ($db:ty, $store:ty, $w:ident, $r:ident) => {
        use agentpool_core::Timestamp;
        use agentpool_core::schedule::{Schedule, ScheduleSpec};
        use async_trait::async_trait;
        use sqlx::Row;

        use $crate::common::{ms, ts};
        use $crate::schedules::{ScheduleRun, ScheduleStore};
        use $crate::{Result, StoreError};

        fn schedule_row(r: &<$db as sqlx::Database>::Row) -> Result<Schedule> {
            let name: String = r.try_get("name")?;
            let spec: String = r.try_get("spec")?;
            let spec: ScheduleSpec = serde_json::from_str(&spec)
                .map_err(|e| StoreError::Corrupt(format!("schedule {name}: {e}")))?;
            let last_task = r
                .try_get::<Option<String>, _>("last_task")?
                .map(|t| {
                    t.parse()
                        .map_err(|_| StoreError::Corrupt(format!("schedule {name}: bad task id {t:?}")))
                })
                .transpose()?;
            Ok(Schedule {
                name,
                spec,
                next_run_at: r.try_get::<Option<i64>, _>("next_run_at")?.map(ts),
                last_run_at: r.try_get::<Option<i64>, _>("last_run_at")?.map(ts),
                last_task,
                last_message: r.try_get("last_message")?,
                created_at: ts(r.try_get("created_at")?),
                updated_at: ts(r.try_get("updated_at")?),
            })
        }

        #[async_trait]
        impl ScheduleStore for $store {
            async fn put_schedule(
                &self,
                name: &str,
                spec: &ScheduleSpec,
                next_run_at: Option<Timestamp>,
            ) -> Result<Schedule> {
                let json = serde_json::to_string(spec)
                    .map_err(|e| StoreError::Invalid(format!("schedule {name}: {e}")))?;
                let now = self.now();
                let row = sqlx::query(
                    "INSERT INTO schedules (name, spec, next_run_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO UPDATE SET spec = $2, \
                     next_run_at = $3, updated_at = $4 RETURNING *",
                )
                .bind(name)
                .bind(json)
                .bind(next_run_at.map(ms))
                .bind(now)
                .fetch_one(&self.$w)
                .await?;
                schedule_row(&row)
            }

            async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>> {
                let row = sqlx::query("SELECT * FROM schedules WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.$r)
                    .await?;
                row.as_ref().map(schedule_row).transpose()
            }

            async fn list_schedules(&self) -> Result<Vec<Schedule>> {
                let rows = sqlx::query("SELECT * FROM schedules ORDER BY name")
                    .fetch_all(&self.$r)
                    .await?;
                rows.iter().map(schedule_row).collect()
            }

            async fn delete_schedule(&self, name: &str) -> Result<()> {
                let n = sqlx::query("DELETE FROM schedules WHERE name = $1")
                    .bind(name)
                    .execute(&self.$w)
                    .await?
                    .rows_affected();
                $crate::common::found(n, "schedule", name)
            }

            async fn take_due_schedules(&self, limit: u32, lease_ms: i64) -> Result<Vec<Schedule>> {
                let now = self.now();
                // One statement takes the lease: on PostgreSQL a row another replica leased
                // meanwhile fails the outer condition once its update commits, so it is not
                // returned here too.
                let rows = sqlx::query(
                    "UPDATE schedules SET lease_until = $2 WHERE name IN (SELECT name FROM schedules \
                     WHERE next_run_at <= $1 AND lease_until <= $1 ORDER BY next_run_at LIMIT $3) \
                     AND next_run_at <= $1 AND lease_until <= $1 RETURNING *",
                )
                .bind(now)
                .bind(now + lease_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.$w)
                .await?;
                let mut out = rows.iter().map(schedule_row).collect::<Result<Vec<_>>>()?;
                out.sort_by_key(|s| s.next_run_at);
                Ok(out)
            }

            async fn record_schedule_run(
                &self,
                name: &str,
                run: &ScheduleRun,
                advance: Option<(Timestamp, Option<Timestamp>)>,
            ) -> Result<()> {
                let (due, next) = match advance {
                    Some((due, next)) => (Some(ms(due)), next.map(ms)),
                    None => (None, None),
                };
                let n = sqlx::query(
                    "UPDATE schedules SET last_run_at = $2, last_task = COALESCE($3, last_task), \
                     last_message = $4, lease_until = CASE WHEN $5 IS NOT NULL THEN 0 ELSE lease_until END, \
                     next_run_at = CASE WHEN $5 IS NOT NULL AND next_run_at = $5 THEN $6 \
                     ELSE next_run_at END WHERE name = $1",
                )
                .bind(name)
                .bind(ms(run.at))
                .bind(run.task.map(|t| t.to_string()))
                .bind(&run.message)
                .bind(due)
                .bind(next)
                .execute(&self.$w)
                .await?
                .rows_affected();
                $crate::common::found(n, "schedule", name)
            }
        }
    };
}

pub(crate) use schedule_store;
