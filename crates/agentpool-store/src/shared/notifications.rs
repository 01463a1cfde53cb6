//! The `notifications` and `notification_deliveries` tables, the same SQL on both backends.

/// Implement [`crate::notifications::NotificationStore`] for `$store` on database `$db`,
/// writing through the pool `self.$w` and reading through `self.$r`.
macro_rules! notification_store {
    ($db:ty, $store:ty, $w:ident, $r:ident) => {
        use agentpool_core::Timestamp;
        use agentpool_core::TaskState;
        use agentpool_core::notification::{Delivery, Notification, NotificationSpec};
        use async_trait::async_trait;
        use sqlx::Row;

        use $crate::common::{ms, ts};
        use $crate::notifications::{DeliveryAttempt, NotificationStore};
        use $crate::{Result, StoreError};

        fn notification_row(r: &<$db as sqlx::Database>::Row) -> Result<Notification> {
            let name: String = r.try_get("name")?;
            let spec: String = r.try_get("spec")?;
            let spec: NotificationSpec = serde_json::from_str(&spec)
                .map_err(|e| StoreError::Corrupt(format!("notification {name}: {e}")))?;
            Ok(Notification {
                name,
                spec,
                created_at: ts(r.try_get("created_at")?),
                updated_at: ts(r.try_get("updated_at")?),
            })
        }

        fn delivery_row(r: &<$db as sqlx::Database>::Row) -> Result<Delivery> {
            let id: i64 = r.try_get("id")?;
            let corrupt = |what: &str| StoreError::Corrupt(format!("delivery {id}: {what}"));
            let task: String = r.try_get("task_id")?;
            let state: String = r.try_get("state")?;
            Ok(Delivery {
                id,
                notification: r.try_get("notification")?,
                task_id: task.parse().map_err(|_| corrupt("bad task id"))?,
                event: r.try_get("event")?,
                state: state.parse().map_err(|_| corrupt("bad state"))?,
                attempts: u32::try_from(r.try_get::<i32, _>("attempts")?).unwrap_or_default(),
                next_attempt_at: r.try_get::<Option<i64>, _>("next_attempt_at")?.map(ts),
                last_status: r
                    .try_get::<Option<i32>, _>("last_status")?
                    .and_then(|s| u16::try_from(s).ok()),
                last_error: r.try_get("last_error")?,
                finished_at: ts(r.try_get("finished_at")?),
                created_at: ts(r.try_get("created_at")?),
                updated_at: ts(r.try_get("updated_at")?),
            })
        }

        #[async_trait]
        impl NotificationStore for $store {
            async fn put_notification(&self, name: &str, spec: &NotificationSpec) -> Result<Notification> {
                let json = serde_json::to_string(spec)
                    .map_err(|e| StoreError::Invalid(format!("notification {name}: {e}")))?;
                let row = sqlx::query(
                    "INSERT INTO notifications (name, spec, scanned_until, created_at, updated_at) \
                     VALUES ($1, $2, $3, $3, $3) ON CONFLICT (name) DO UPDATE SET spec = $2, \
                     updated_at = $3 RETURNING *",
                )
                .bind(name)
                .bind(json)
                .bind(self.now())
                .fetch_one(&self.$w)
                .await?;
                notification_row(&row)
            }

            async fn get_notification(&self, name: &str) -> Result<Option<Notification>> {
                let row = sqlx::query("SELECT * FROM notifications WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.$r)
                    .await?;
                row.as_ref().map(notification_row).transpose()
            }

            async fn list_notifications(&self) -> Result<Vec<Notification>> {
                let rows = sqlx::query("SELECT * FROM notifications ORDER BY name")
                    .fetch_all(&self.$r)
                    .await?;
                rows.iter().map(notification_row).collect()
            }

            async fn delete_notification(&self, name: &str) -> Result<()> {
                let mut tx = self.$w.begin().await?;
                let n = sqlx::query("DELETE FROM notifications WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                $crate::common::found(n, "notification", name)?;
                sqlx::query("DELETE FROM notification_deliveries WHERE notification = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn find_deliveries(
                &self,
                name: &str,
                spec: &NotificationSpec,
                lookback_ms: i64,
            ) -> Result<u64> {
                let now = self.now();
                // The scan starts where the last one ended, less the look-back: an end written
                // with an earlier time (a slower transaction, another replica's clock) that
                // committed after the last scan is found now. Never before the notification
                // existed: it is told of ends from then on.
                // The label condition is written only when there are labels: bound as NULL it
                // still made PostgreSQL's scan a fifth to a third slower (BENCHMARKS.md).
                let (labels, labels_cond) = if spec.labels.is_empty() {
                    (None, "TRUE".to_string())
                } else {
                    (Some($crate::common::json(&spec.labels)?), labels_include(8))
                };
                let sql = format!(
                    "INSERT INTO notification_deliveries (notification, task_id, finished_at, event, \
                     state, next_attempt_at, created_at, updated_at) \
                     SELECT n.name, CAST(t.id AS TEXT), t.finished_at, 'task.' || t.state, 'pending', \
                     $2, $2, $2 FROM notifications n JOIN tasks t ON t.finished_at >= \
                     CASE WHEN n.scanned_until - $3 > n.created_at THEN n.scanned_until - $3 \
                     ELSE n.created_at END \
                     WHERE n.name = $1 AND t.finished_at IS NOT NULL \
                     AND (($4 AND t.state = 'succeeded') OR ($5 AND t.state = 'failed') \
                     OR ($6 AND t.state = 'canceled')) AND ($7 IS NULL OR t.project = $7) \
                     AND {labels_cond} ON CONFLICT (notification, task_id, finished_at) DO NOTHING"
                );
                let mut query = sqlx::query(&sql)
                    .bind(name)
                    .bind(now)
                    .bind(lookback_ms)
                    .bind(spec.wants(TaskState::Succeeded))
                    .bind(spec.wants(TaskState::Failed))
                    .bind(spec.wants(TaskState::Canceled))
                    .bind(spec.project.as_deref());
                if let Some(l) = labels {
                    query = query.bind(l);
                }
                let added = query.execute(&self.$w).await?.rows_affected();
                sqlx::query("UPDATE notifications SET scanned_until = $2 WHERE name = $1 AND scanned_until < $2")
                    .bind(name)
                    .bind(now)
                    .execute(&self.$w)
                    .await?;
                Ok(added)
            }

            async fn take_due_deliveries(&self, limit: u32, lease_ms: i64) -> Result<Vec<Delivery>> {
                let now = self.now();
                // As schedules are taken: one statement takes the lease, so a delivery another
                // replica leased meanwhile fails the outer condition and is not returned twice.
                let rows = sqlx::query(
                    "UPDATE notification_deliveries SET lease_until = $2 WHERE id IN (SELECT id \
                     FROM notification_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
                     AND lease_until <= $1 ORDER BY next_attempt_at LIMIT $3) AND state = 'pending' \
                     AND next_attempt_at <= $1 AND lease_until <= $1 RETURNING *",
                )
                .bind(now)
                .bind(now + lease_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.$w)
                .await?;
                let mut out = rows.iter().map(delivery_row).collect::<Result<Vec<_>>>()?;
                out.sort_by_key(|d| (d.next_attempt_at, d.id));
                Ok(out)
            }

            async fn record_delivery(&self, id: i64, attempt: &DeliveryAttempt) -> Result<()> {
                let n = sqlx::query(
                    "UPDATE notification_deliveries SET attempts = attempts + 1, state = $2, \
                     last_status = $3, last_error = $4, next_attempt_at = $5, lease_until = 0, \
                     updated_at = $6 WHERE id = $1",
                )
                .bind(id)
                .bind(attempt.state.as_str())
                .bind(attempt.status.map(i32::from))
                .bind(attempt.error.as_deref())
                .bind(attempt.next_attempt_at.map(ms))
                .bind(self.now())
                .execute(&self.$w)
                .await?
                .rows_affected();
                $crate::common::found(n, "delivery", &id.to_string())
            }

            async fn list_deliveries(&self, name: &str, limit: u32) -> Result<Vec<Delivery>> {
                let rows = sqlx::query(
                    "SELECT * FROM notification_deliveries WHERE notification = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(name)
                .bind(i64::from(limit))
                .fetch_all(&self.$r)
                .await?;
                rows.iter().map(delivery_row).collect()
            }

            async fn purge_deliveries(&self, before: Timestamp) -> Result<u64> {
                let n = sqlx::query(
                    "DELETE FROM notification_deliveries WHERE state <> 'pending' AND updated_at < $1",
                )
                .bind(ms(before))
                .execute(&self.$w)
                .await?
                .rows_affected();
                Ok(n)
            }
        }
    };
}

pub(crate) use notification_store;
