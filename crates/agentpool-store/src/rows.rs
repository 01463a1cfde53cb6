//! Reading rows back into domain types, the same on both backends: the [`StoreRow`] column
//! reads each backend implements, and the mappers of tasks, attempts, workers, projects,
//! tokens and events built on them.

use agentpool_core::protocol::ClaimedTask;
use agentpool_core::{
    Attempt, AttemptOutcome, Event, EventKind, EventPayload, Lease, LeaseToken, Project, Task, TaskId,
    TaskResult, TaskSpec, TaskState, Worker, WorkerId,
};

use crate::common::{Candidate, corrupt, parse_class, parse_state, parse_worker, ts};
use crate::{Result, StoreError, TokenRecord};

/// The typed column reads the shared row mappers need. The two backends differ only in how a
/// task id is stored (TEXT in SQLite, UUID in PostgreSQL) and in the width of `INTEGER`
/// columns (64-bit in SQLite, 32-bit in PostgreSQL); everything else decodes the same way.
pub(crate) trait StoreRow {
    fn task_id(&self, col: &str) -> Result<TaskId>;
    /// An `INTEGER` column (attempt counts, priority), widened to `i64`.
    fn int(&self, col: &str) -> Result<i64>;
    /// A `BIGINT` column (timestamps, lease tokens, slots, sequence numbers).
    fn big(&self, col: &str) -> Result<i64>;
    fn opt_big(&self, col: &str) -> Result<Option<i64>>;
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    /// A nullable `DOUBLE PRECISION` (`REAL` in SQLite) column.
    fn opt_float(&self, col: &str) -> Result<Option<f64>>;
    fn flag(&self, col: &str) -> Result<bool>;
}

/// The [`StoreRow`] methods that are a plain `try_get` on both backends, for use inside each
/// backend's `impl StoreRow`.
macro_rules! plain_row_reads {
    () => {
        fn big(&self, col: &str) -> $crate::Result<i64> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_big(&self, col: &str) -> $crate::Result<Option<i64>> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn text(&self, col: &str) -> $crate::Result<String> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_text(&self, col: &str) -> $crate::Result<Option<String>> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_float(&self, col: &str) -> $crate::Result<Option<f64>> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn flag(&self, col: &str) -> $crate::Result<bool> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
    };
}
pub(crate) use plain_row_reads;

pub(crate) fn task(r: &impl StoreRow) -> Result<Task> {
    let spec: TaskSpec = serde_json::from_str(&r.text("spec")?).map_err(|e| corrupt("task spec", e))?;
    let result: Option<TaskResult> = r
        .opt_text("result")?
        .map(|t| serde_json::from_str(&t).map_err(|e| corrupt("task result", e)))
        .transpose()?;
    let lease_token = r.big("lease_token")?;
    Ok(Task {
        id: r.task_id("id")?,
        state: parse_state(&r.text("state")?)?,
        attempts: u32::try_from(r.int("attempts")?).unwrap_or(0),
        max_attempts: u32::try_from(r.int("max_attempts")?).unwrap_or(0),
        priority: i32::try_from(r.int("priority")?).unwrap_or(0),
        created_at: ts(r.big("created_at")?),
        updated_at: ts(r.big("updated_at")?),
        run_after: ts(r.big("run_after")?),
        started_at: r.opt_big("started_at")?.map(ts),
        finished_at: r.opt_big("finished_at")?.map(ts),
        worker_id: parse_worker(r.opt_text("worker_id")?)?,
        lease_token: (lease_token > 0).then_some(LeaseToken(lease_token)),
        lease_expires_at: r.opt_big("lease_expires_at")?.map(ts),
        cancel_requested: r.flag("cancel_requested")?,
        error_class: parse_class(r.opt_text("error_class")?)?,
        error_message: r.opt_text("error_message")?,
        result,
        spec,
    })
}

/// Task rows just claimed, each with the lease it is now held under.
pub(crate) fn claimed_tasks(rows: &[impl StoreRow]) -> Result<Vec<ClaimedTask>> {
    rows.iter()
        .map(|r| {
            let t = task(r)?;
            let token = t
                .lease_token
                .ok_or_else(|| StoreError::Corrupt("claimed task without token".into()))?;
            Ok(ClaimedTask {
                lease: Lease { task_id: t.id, token },
                attempt: t.attempts,
                resume_session: None,
                task: t,
            })
        })
        .collect()
}

/// A row of the candidates query of a constrained claim.
pub(crate) fn candidate(r: &impl StoreRow) -> Result<Candidate> {
    Ok(Candidate {
        id: r.task_id("id")?,
        lock_key: r.opt_text("lock_key")?,
        project: r.opt_text("project")?,
        project_running: r.big("project_running")?,
        project_slots: r.opt_big("project_slots")?,
    })
}

/// A `workers` row; `running` (how many tasks it holds) is counted separately.
pub(crate) fn worker_row(r: &impl StoreRow, running: u32) -> Result<Worker> {
    let agents = r.text("agents")?;
    let labels = r.text("labels")?;
    let status: agentpool_core::WorkerStatus = r
        .text("status")?
        .parse()
        .map_err(|e| corrupt("worker status", e))?;
    let cache = r
        .opt_text("cache_stats")?
        .map(|c| serde_json::from_str(&c).map_err(|e| corrupt("worker cache", e)))
        .transpose()?;
    Ok(Worker {
        id: WorkerId::parse(r.text("id")?).map_err(|e| corrupt("worker id", e))?,
        hostname: r.text("hostname")?,
        version: r.text("version")?,
        agents: serde_json::from_str(&agents).map_err(|e| corrupt("worker agents", e))?,
        labels: serde_json::from_str(&labels).map_err(|e| corrupt("worker labels", e))?,
        slots: u32::try_from(r.big("slots")?).unwrap_or(0),
        projects: serde_json::from_str(&r.text("projects")?).map_err(|e| corrupt("worker projects", e))?,
        status,
        // Why it is unhealthy, or (one that claims) which agent it no longer runs. Kept while
        // it drains or is offline, where it no longer says anything of what it does.
        status_message: match status {
            agentpool_core::WorkerStatus::Draining | agentpool_core::WorkerStatus::Offline => None,
            _ => r.opt_text("status_message")?,
        },
        running,
        registered_at: ts(r.big("registered_at")?),
        last_heartbeat_at: ts(r.big("last_heartbeat_at")?),
        cache,
    })
}

pub(crate) fn project_row(r: &impl StoreRow) -> Result<Project> {
    let spec = r.text("spec")?;
    Ok(Project {
        spec: serde_json::from_str(&spec).map_err(|e| corrupt("project spec", e))?,
        created_at: ts(r.big("created_at")?),
        updated_at: ts(r.big("updated_at")?),
        // Not a column of the project: the store fills it in from the spend ledger.
        spent_today_usd: None,
    })
}

pub(crate) fn token_row(r: &impl StoreRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.text("id")?,
        name: r.text("name")?,
        role: r.text("role")?,
        hash: r.text("hash")?,
        created_at: ts(r.big("created_at")?),
        revoked: r.flag("revoked")?,
        projects: serde_json::from_str(&r.text("projects")?).map_err(|e| corrupt("token projects", e))?,
        expires_at: r.opt_big("expires_at")?.map(ts),
        last_used_at: r.opt_big("last_used_at")?.map(ts),
    })
}

/// An `attempts` history row.
pub(crate) fn attempt_row(r: &impl StoreRow) -> Result<Attempt> {
    Ok(Attempt {
        task_id: r.task_id("task_id")?,
        number: u32::try_from(r.int("number")?).unwrap_or(0),
        worker_id: WorkerId::parse(r.text("worker_id")?).map_err(|e| corrupt("worker id", e))?,
        lease_token: LeaseToken(r.big("lease_token")?),
        started_at: ts(r.big("started_at")?),
        ended_at: r.opt_big("ended_at")?.map(ts),
        outcome: r
            .text("outcome")?
            .parse::<AttemptOutcome>()
            .map_err(|e| corrupt("attempt outcome", e))?,
        error_class: parse_class(r.opt_text("error_class")?)?,
        error_message: r.opt_text("error_message")?,
        cost_usd: r.opt_float("cost_usd")?,
    })
}

/// An `events` row of `task` (the query selects `seq, at, kind, data`).
pub(crate) fn event_row(task: TaskId, r: &impl StoreRow) -> Result<Event> {
    let kind = r.text("kind")?;
    let data = r.text("data")?;
    Ok(Event {
        task_id: task,
        seq: r.big("seq")?,
        at: ts(r.big("at")?),
        payload: EventPayload::from_parts(
            kind.parse::<EventKind>().map_err(|e| corrupt("event kind", e))?,
            serde_json::from_str(&data).map_err(|e| corrupt("event data", e))?,
        ),
    })
}

/// The columns of a task row that [`task`] reads.
pub(crate) const TASK_COLS: &str = "id, spec, state, attempts, max_attempts, priority, created_at, \
    updated_at, run_after, started_at, finished_at, worker_id, lease_token, lease_expires_at, \
    cancel_requested, error_class, error_message, result";

/// The columns [`held`] reads.
pub(crate) const HELD_COLS: &str = "id, lease_token, attempts, max_attempts, cancel_requested, \
    has_dependents, constrained, worker_id, started_at, project";

/// A running attempt as its holder presented it, read inside the transaction that ends it
/// (row-locked there on PostgreSQL).
pub(crate) struct Held {
    pub id: TaskId,
    pub token: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    pub cancel_requested: bool,
    pub has_dependents: bool,
    pub constrained: bool,
    pub worker_id: String,
    pub started_at: i64,
    /// Its project, whose day's spend the attempt's reported cost adds to.
    pub project: Option<String>,
}

pub(crate) fn held(r: &impl StoreRow) -> Result<Held> {
    Ok(Held {
        id: r.task_id("id")?,
        token: r.big("lease_token")?,
        attempts: r.int("attempts")?,
        max_attempts: r.int("max_attempts")?,
        cancel_requested: r.flag("cancel_requested")?,
        has_dependents: r.flag("has_dependents")?,
        constrained: r.flag("constrained")?,
        worker_id: r.opt_text("worker_id")?.unwrap_or_default(),
        started_at: r.opt_big("started_at")?.unwrap_or(0),
        project: r.opt_text("project")?,
    })
}

/// The task's current attempt, synthesised from the task row: while it runs, and once it
/// succeeded. Those attempts are never written to the history table — the claim and the
/// completion (the hot path) add no row per task; only attempts that end otherwise (failed,
/// expired, canceled) are recorded there, and they are rare.
pub(crate) fn current_attempt(task: &Task) -> Option<Attempt> {
    let (outcome, ended_at) = match task.state {
        TaskState::Running => (AttemptOutcome::Running, None),
        TaskState::Succeeded => (AttemptOutcome::Succeeded, task.finished_at),
        _ => return None,
    };
    Some(Attempt {
        task_id: task.id,
        number: task.attempts,
        worker_id: task.worker_id.clone()?,
        lease_token: task.lease_token?,
        started_at: task.started_at?,
        ended_at,
        outcome,
        error_class: None,
        error_message: None,
        // A succeeded attempt's cost is its task's result's; a running one has none yet.
        cost_usd: match task.state {
            TaskState::Succeeded => task.result.as_ref().and_then(|r| r.cost_usd),
            _ => None,
        },
    })
}
