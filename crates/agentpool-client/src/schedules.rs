//! Schedules: set, read, pause, resume, delete, and run one now.

use agentpool_core::protocol::Enqueued;
use agentpool_core::schedule::{Schedule, ScheduleList, ScheduleSpec};
use reqwest::Method;

use crate::{Client, Result, seg};

impl Client {
    /// Create or replace schedule `name`.
    pub async fn put_schedule(&self, name: &str, spec: &ScheduleSpec) -> Result<Schedule> {
        self.call(Method::PUT, &format!("/v1/schedules/{}", seg(name)), spec)
            .await
    }

    pub async fn get_schedule(&self, name: &str) -> Result<Schedule> {
        self.get(&format!("/v1/schedules/{}", seg(name))).await
    }

    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        let l: ScheduleList = self.get("/v1/schedules").await?;
        Ok(l.schedules)
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/schedules/{}", seg(name))).await
    }

    /// Stop the schedule submitting tasks until it is resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<Schedule> {
        self.json(self.req(Method::POST, &format!("/v1/schedules/{}/pause", seg(name))))
            .await
    }

    /// Let a paused schedule run again, from its first run time after now.
    pub async fn resume_schedule(&self, name: &str) -> Result<Schedule> {
        self.json(self.req(Method::POST, &format!("/v1/schedules/{}/resume", seg(name))))
            .await
    }

    /// Submit the schedule's task now, whatever its time, pause and overlap policy.
    pub async fn run_schedule(&self, name: &str) -> Result<Enqueued> {
        self.json(self.req(Method::POST, &format!("/v1/schedules/{}/run", seg(name))))
            .await
    }
}
