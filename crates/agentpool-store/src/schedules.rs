//! What the store keeps of schedules (`agentpool_core::schedule`): the spec as set, when each
//! runs next, and what its last run did. Submitting a run's task is the server's: it applies
//! the project's defaults and checks the task as it checks a submitted one.

use agentpool_core::TaskId;
use agentpool_core::Timestamp;
use agentpool_core::schedule::{Schedule, ScheduleSpec};
use async_trait::async_trait;

use crate::Result;

/// What one run of a schedule did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRun {
    /// The time it ran for: the time it was due, or now for a run asked for by hand.
    pub at: Timestamp,
    /// The task it submitted; `None` when it skipped or could not submit (the schedule keeps
    /// the last task it did submit).
    pub task: Option<TaskId>,
    pub message: String,
}

#[async_trait]
pub trait ScheduleStore {
    /// Create or replace schedule `name` (validated by the caller), to run next at
    /// `next_run_at` (`None`: paused). A replaced schedule keeps what its last run did.
    async fn put_schedule(
        &self,
        name: &str,
        spec: &ScheduleSpec,
        next_run_at: Option<Timestamp>,
    ) -> Result<Schedule>;
    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>>;
    /// Every schedule, by name.
    async fn list_schedules(&self) -> Result<Vec<Schedule>>;
    async fn delete_schedule(&self, name: &str) -> Result<()>;
    /// Up to `limit` schedules whose next run is due and that no replica is submitting,
    /// soonest first; each returned one is leased to the caller for `lease_ms`, so another
    /// replica passes it over until the caller records the run (or the lease runs out, after
    /// a crash).
    async fn take_due_schedules(&self, limit: u32, lease_ms: i64) -> Result<Vec<Schedule>>;
    /// Record `run` and release the lease. With `advance` (the due time the run was for, and
    /// the next one), the schedule moves on to its next run, unless it was changed since
    /// it was taken (a new spec sets its own next run).
    async fn record_schedule_run(
        &self,
        name: &str,
        run: &ScheduleRun,
        advance: Option<(Timestamp, Option<Timestamp>)>,
    ) -> Result<()>;
}
