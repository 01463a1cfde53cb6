//! What the store keeps of notifications (`agentpool_core::notification`): each one as set,
//! and the outbox of deliveries — one row per task end to tell it of, found by scanning the
//! finished tasks, so nothing is added to the path a task takes to finish. Sending them is
//! the server's.

use agentpool_core::Timestamp;
use agentpool_core::notification::{Delivery, DeliveryState, Notification, NotificationSpec};
use async_trait::async_trait;

use crate::Result;

/// How one attempt at a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    /// `Delivered`, `Failed` (no more attempts), or `Pending` to be tried again at
    /// `next_attempt_at`.
    pub state: DeliveryState,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
}

#[async_trait]
pub trait NotificationStore {
    /// Create or replace notification `name` (validated by the caller). A new one is told of
    /// tasks that end from now on; a replaced one keeps its deliveries and where its scan was.
    async fn put_notification(&self, name: &str, spec: &NotificationSpec) -> Result<Notification>;
    async fn get_notification(&self, name: &str) -> Result<Option<Notification>>;
    /// Every notification, by name.
    async fn list_notifications(&self) -> Result<Vec<Notification>>;
    /// Delete the notification and its deliveries, sent or not.
    async fn delete_notification(&self, name: &str) -> Result<()>;
    /// Add a pending delivery, due now, for every task that ended since `name` last looked
    /// (less `lookback_ms`, for ends that committed late) and that it wants; an end found
    /// before is not added again. Returns how many were added.
    async fn find_deliveries(&self, name: &str, spec: &NotificationSpec, lookback_ms: i64) -> Result<u64>;
    /// Up to `limit` pending deliveries that are due and that no replica is sending, the
    /// longest due first; each is leased to the caller for `lease_ms`.
    async fn take_due_deliveries(&self, limit: u32, lease_ms: i64) -> Result<Vec<Delivery>>;
    /// Record an attempt at delivery `id` and release its lease.
    async fn record_delivery(&self, id: i64, attempt: &DeliveryAttempt) -> Result<()>;
    /// The newest `limit` deliveries of `name`, newest first.
    async fn list_deliveries(&self, name: &str, limit: u32) -> Result<Vec<Delivery>>;
    /// Forget delivered and failed deliveries last touched before `before`.
    async fn purge_deliveries(&self, before: Timestamp) -> Result<u64>;
}
