//! Notifications: set, read, delete, ping, and list what was delivered.

use agentpool_core::notification::{
    Delivery, DeliveryList, Notification, NotificationList, NotificationSpec, PingResult,
};
use reqwest::Method;

use crate::{Client, Result, seg};

impl Client {
    /// Create or replace notification `name`.
    pub async fn put_notification(&self, name: &str, spec: &NotificationSpec) -> Result<Notification> {
        self.call(Method::PUT, &format!("/v1/notifications/{}", seg(name)), spec)
            .await
    }

    pub async fn get_notification(&self, name: &str) -> Result<Notification> {
        self.get(&format!("/v1/notifications/{}", seg(name))).await
    }

    pub async fn list_notifications(&self) -> Result<Vec<Notification>> {
        let l: NotificationList = self.get("/v1/notifications").await?;
        Ok(l.notifications)
    }

    pub async fn delete_notification(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/notifications/{}", seg(name))).await
    }

    /// Send notification `name` a ping now; how it went.
    pub async fn ping_notification(&self, name: &str) -> Result<PingResult> {
        self.json(self.req(Method::POST, &format!("/v1/notifications/{}/test", seg(name))))
            .await
    }

    /// The newest `limit` deliveries of notification `name`, newest first.
    pub async fn list_deliveries(&self, name: &str, limit: u32) -> Result<Vec<Delivery>> {
        let l: DeliveryList = self
            .get(&format!(
                "/v1/notifications/{}/deliveries?limit={limit}",
                seg(name)
            ))
            .await?;
        Ok(l.deliveries)
    }
}
