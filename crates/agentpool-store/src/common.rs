//! What both backends share outside the shared queries: turning specs into column values, time
//! conversion, what a failed attempt leads to, the lifecycle events of a change, the in-batch
//! check of branch locks and project slots, and what their hot paths write alike (a heartbeat's
//! worker update, an event's columns). Reading rows back is in [`crate::rows`] (re-exported
//! here).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use agentpool_core::protocol::ClaimedTask;
use agentpool_core::spec::RepoUrl;
use agentpool_core::{
    AttemptOutcome, ErrorClass, EventPayload, Lease, LeaseToken, Lifecycle, NewEvent, Task, TaskId, TaskSpec,
    TaskState, Timestamp, WorkerId,
};

use crate::{Result, StoreError};

pub(crate) use crate::rows::*;

/// Unix milliseconds to a timestamp. Out-of-range values (never written by the store) clamp
/// to the epoch rather than failing a whole listing.
pub(crate) fn ts(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn parse_state(s: &str) -> Result<TaskState> {
    s.parse().map_err(|e| corrupt("task state", e))
}

pub(crate) fn parse_class(s: Option<String>) -> Result<Option<ErrorClass>> {
    s.map(|c| c.parse().map_err(|e| corrupt("error class", e)))
        .transpose()
}

pub(crate) fn parse_worker(s: Option<String>) -> Result<Option<WorkerId>> {
    s.map(|w| WorkerId::parse(w).map_err(|e| corrupt("worker id", e)))
        .transpose()
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// `Ok(())` when a write touched a row, else `NotFound` for `what` `id`.
pub(crate) fn found(rows_affected: u64, what: &'static str, id: &str) -> Result<()> {
    if rows_affected == 0 {
        return Err(StoreError::not_found(what, id));
    }
    Ok(())
}

/// The outcome of inserting a token: a duplicate id or hash is a conflict, not a database
/// failure.
pub(crate) fn token_created<T>(r: std::result::Result<T, sqlx::Error>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Conflict("a token with this id or hash exists".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Why an append of events to `task` was refused: its `lease` is not current, or (without
/// one) there is no such task.
pub(crate) fn append_refused(task: TaskId, lease: Option<agentpool_core::Lease>) -> StoreError {
    match lease {
        Some(_) => StoreError::StaleLease(task),
        None => StoreError::not_found("task", task),
    }
}

/// The `data` column of an event.
pub(crate) fn event_data(p: &EventPayload) -> Result<String> {
    json(&p.data())
}

/// Lifecycle events to append in the transaction of the state changes they record, in order.
/// Each backend writes them with one statement ([`crate::sqlite`]'s and [`crate::postgres`]'s
/// `insert_lifecycle`).
#[derive(Debug, Default)]
pub(crate) struct LifecycleLog {
    pub tasks: Vec<TaskId>,
    /// The `data` column of each event.
    pub data: Vec<String>,
}

impl LifecycleLog {
    pub fn push(&mut self, task: TaskId, l: Lifecycle) -> Result<()> {
        self.tasks.push(task);
        self.data.push(event_data(&EventPayload::Lifecycle(l))?);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// The `failed` event of a task whose dependency failed; `message` names it.
pub(crate) fn dependency_failed(message: String) -> Lifecycle {
    Lifecycle::Failed {
        class: ErrorClass::DependencyFailed,
        message,
    }
}

/// Why a new task of `spec` fails at once, when a dependency of it (the first in its
/// `depends_on`, of those in `state` as `state_of` tells) has already failed or been
/// canceled: the message names that dependency, so its submitter knows where to look.
pub(crate) fn failed_dependency(
    spec: &TaskSpec,
    state_of: impl Fn(TaskId) -> Option<TaskState>,
) -> Option<String> {
    spec.depends_on.iter().find_map(|d| match state_of(*d)? {
        TaskState::Failed => Some(format!("dependency {d} failed")),
        TaskState::Canceled => Some(format!("dependency {d} was canceled")),
        _ => None,
    })
}

/// The same message for a queued task failed by the cascade, computed in SQL for the row
/// being updated (`tasks.id`): a dependency of it that failed or was canceled.
pub(crate) const FAILED_DEPENDENCY_SQL: &str = "(SELECT 'dependency ' || CAST(d.dep_id AS TEXT) || \
     CASE WHEN t.state = 'canceled' THEN ' was canceled' ELSE ' failed' END \
     FROM task_deps d JOIN tasks t ON t.id = d.dep_id \
     WHERE d.task_id = tasks.id AND t.state IN ('failed', 'canceled') \
     ORDER BY d.dep_id LIMIT 1)";

/// Expired leases one maintenance transaction rescues; a pass loops until none is left.
pub(crate) const EXPIRE_BATCH: i64 = 500;

/// [`crate::GIVEN_BACK_GRACE`] in the store's unit.
pub(crate) const GIVEN_BACK_GRACE_MS: i64 = 30_000;

/// The agents a claim matches tasks' `required_agent` against (NULL read as
/// [`agentpool_core::worker::ANY_AGENT`]): the worker's, and that one when it offers an agent
/// that runs prompts, so that a task naming no agent goes to such a worker only.
pub(crate) fn claim_agents(agents: &[String]) -> Vec<String> {
    let mut all = agents.to_vec();
    let any = agentpool_core::worker::ANY_AGENT;
    if agentpool_core::worker::offers(agents.iter().map(String::as_str), any) {
        all.push(any.to_string());
    }
    all
}

/// The claim condition that keeps a task given back by worker `worker` (a placeholder) from
/// it for [`crate::GIVEN_BACK_GRACE`] after `now` (a placeholder) passed its `run_after`; `t`
/// is the table's alias and dot, or "".
pub(crate) fn not_given_back_by(t: &str, worker: &str, now: &str) -> String {
    format!(
        "({t}avoid_worker IS NULL OR {t}avoid_worker <> {worker} \
         OR {t}run_after <= {now} - {GIVEN_BACK_GRACE_MS})"
    )
}

pub(crate) const LEASE_EXPIRED_MSG: &str = "lease expired before the worker reported";
pub(crate) const WORKER_RESTARTED_MSG: &str =
    "the worker restarted (registered again under its id) before it reported";

/// Record that the lease of `h` expired (the ending event follows).
pub(crate) fn log_expiry(log: &mut LifecycleLog, h: &Held) -> Result<()> {
    let worker = WorkerId::parse(h.worker_id.clone()).map_err(|e| corrupt("worker id", e))?;
    log.push(
        h.id,
        Lifecycle::LeaseExpired {
            attempt: u32::try_from(h.attempts).unwrap_or(0),
            worker,
        },
    )
}

/// The lifecycle event that records how a failed or expired attempt ended.
pub(crate) fn ending_event(
    ending: &Ending,
    attempt: i64,
    now: i64,
    class: ErrorClass,
    message: &str,
) -> Lifecycle {
    match ending {
        Ending::Requeue { delay, refund } => Lifecycle::RetryScheduled {
            attempt: u32::try_from(attempt).unwrap_or(0),
            run_after: ts(now + dur_ms(*delay)),
            class,
            message: message.to_string(),
            given_back: *refund,
        },
        Ending::Finish {
            state: TaskState::Canceled,
            ..
        } => Lifecycle::Canceled {
            message: message.to_string(),
        },
        Ending::Finish { class, .. } => Lifecycle::Failed {
            class: *class,
            message: message.to_string(),
        },
    }
}

/// Column values of a new task, computed once from its spec.
#[derive(Debug, Clone)]
pub(crate) struct NewTaskRow {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub spec_json: String,
    pub priority: i32,
    pub run_after: i64,
    pub max_attempts: i32,
    pub required_agent: Option<String>,
    /// JSON object of the task's labels; NULL when there are none so the claim filter
    /// short-circuits for the common case.
    pub labels_json: Option<String>,
    pub project: Option<String>,
    /// Repo + branch, only when the task names its branch (the default `agentpool/<id>` branch
    /// is unique, so it can never collide).
    pub lock_key: Option<String>,
    /// Whether a claim must check a branch lock or project slots for this task; unconstrained
    /// tasks take the single-statement fast path.
    pub constrained: bool,
    pub idempotency_key: Option<String>,
}

/// The scope and value of the spec's idempotency key, as its unique index has them: a key
/// names one submission within its project (`""`: no project, which no project's name is).
pub(crate) fn scoped_key(spec: &TaskSpec) -> Option<(String, String)> {
    let key = spec.idempotency_key.clone()?;
    Some((spec.project.clone().unwrap_or_default(), key))
}

/// Whether a claim must check a branch lock or project slots for a task of `spec`: it names
/// its branch (the lock key) or belongs to a project.
pub(crate) fn constrained(spec: &TaskSpec) -> bool {
    spec.branch.is_some() || spec.project.is_some()
}

impl NewTaskRow {
    pub fn new(mut spec: TaskSpec, now: i64, default_max_attempts: u32) -> Result<Self> {
        // Added here, where every task enters the queue, so that the claim, the waiting
        // reasons and the dispatcher all read them from the one spec.
        spec.add_required_labels();
        let id = TaskId::new();
        let lock_key = spec.branch.as_ref().map(|branch| {
            let repo = match (&spec.repo, &spec.project) {
                (Some(r), _) => RepoUrl::parse(r, true)
                    .map(|u| u.lock_key())
                    .unwrap_or_else(|_| r.clone()),
                (None, Some(p)) => format!("project:{p}"),
                (None, None) => String::new(),
            };
            format!("{repo}#{branch}")
        });
        let labels_json = if spec.labels.is_empty() {
            None
        } else {
            Some(json(&spec.labels)?)
        };
        let max_attempts = spec.max_attempts.unwrap_or(default_max_attempts).max(1);
        Ok(Self {
            id,
            spec_json: json(&spec)?,
            priority: spec.priority,
            run_after: spec.run_after.map(ms).unwrap_or(now),
            max_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
            required_agent: spec.required_agent().map(str::to_string),
            labels_json,
            project: spec.project.clone(),
            constrained: constrained(&spec),
            lock_key,
            idempotency_key: spec.idempotency_key.clone(),
            spec,
        })
    }
}

/// A queued task that passed the SQL filters of a constrained claim.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub id: TaskId,
    pub lock_key: Option<String>,
    pub project: Option<String>,
    /// Tasks of the project running now (0 without a project).
    pub project_running: i64,
    pub project_slots: Option<i64>,
}

/// Choose up to `max` candidates (already in claim order) so that within this one batch no
/// branch lock key is taken twice and no project goes past its slots. The SQL filters already
/// excluded candidates blocked by tasks running before this claim.
pub(crate) fn pick_candidates(cands: &[Candidate], max: usize) -> Vec<TaskId> {
    let mut locks: HashSet<&str> = HashSet::new();
    let mut taken: HashMap<&str, i64> = HashMap::new();
    let mut out = Vec::new();
    for c in cands {
        if out.len() >= max {
            break;
        }
        if let Some(k) = &c.lock_key
            && locks.contains(k.as_str())
        {
            continue;
        }
        if let (Some(p), Some(slots)) = (&c.project, c.project_slots) {
            let n = taken.get(p.as_str()).copied().unwrap_or(0);
            if c.project_running + n >= slots {
                continue;
            }
            taken.insert(p, n + 1);
        }
        if let Some(k) = &c.lock_key {
            locks.insert(k);
        }
        out.push(c.id);
    }
    out
}

/// The candidate rows of a constrained claim (or of the runnable tasks), decoded and picked
/// as [`pick_candidates`] picks them.
pub(crate) fn pick_candidate_rows(rows: &[impl StoreRow], max: usize) -> Result<Vec<TaskId>> {
    let cands = rows.iter().map(candidate).collect::<Result<Vec<_>>>()?;
    Ok(pick_candidates(&cands, max))
}

/// How many candidates a constrained claim of up to `max` tasks reads: more than it takes, so
/// that candidates passed over for a branch or slot taken earlier in the batch leave enough.
pub(crate) fn candidate_window(max: u32) -> i64 {
    i64::from(max).saturating_mul(2).saturating_add(8)
}

/// A heartbeat's update of worker `$3` at `$1`: busy while it holds leases (`$2`), else idle,
/// unless it drains or is unhealthy. It returns the worker's status, and no row for an
/// unknown worker.
pub(crate) const BEAT_WORKER_SQL: &str = "UPDATE workers SET last_heartbeat_at = $1, \
     status = CASE WHEN status IN ('draining', 'unhealthy') THEN status \
       WHEN $2 THEN 'busy' ELSE 'idle' END \
     WHERE id = $3 RETURNING status";

/// Whether the worker a heartbeat updated (its status as [`BEAT_WORKER_SQL`] returned it) is to
/// drain; `NotFound` when there is no such worker.
pub(crate) fn beat_drains(status: Option<String>, worker: &WorkerId) -> Result<bool> {
    match status {
        Some(status) => Ok(status == "draining"),
        None => Err(StoreError::not_found("worker", worker)),
    }
}

/// The `at`, `kind` and `data` columns of event `e` appended at `now` (when it says no time).
pub(crate) fn event_columns(e: &NewEvent, now: i64) -> Result<(i64, &'static str, String)> {
    Ok((
        e.at.map(ms).unwrap_or(now),
        e.kind().as_str(),
        event_data(&e.payload)?,
    ))
}

/// A uniform sample in [0, 1) for backoff jitter.
pub(crate) fn jitter_sample() -> f64 {
    rand::random::<f64>()
}

/// Milliseconds in a day; a project's daily budget counts spend since UTC midnight.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The UTC midnight at or before `now` (epoch milliseconds).
pub(crate) fn utc_day_start(now: i64) -> i64 {
    now.div_euclid(DAY_MS) * DAY_MS
}

/// How a failed (or expired) attempt ends, as the state machine decided it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ending {
    /// Back to the queue; `refund` gives the attempt back (a broken worker released it).
    Requeue {
        delay: Duration,
        refund: bool,
    },
    Finish {
        state: TaskState,
        class: ErrorClass,
    },
}

/// Ask `agentpool_core::task::fail` what a failed attempt leads to. A cancel requested while the
/// task ran wins over whatever the worker reported: the user asked for it to stop.
pub(crate) fn decide_failure(
    cancel_requested: bool,
    class: ErrorClass,
    attempt: i64,
    max_attempts: i64,
    retry_after: Option<Duration>,
    policy: &agentpool_core::RetryPolicy,
) -> Result<Ending> {
    let class = if cancel_requested {
        ErrorClass::Canceled
    } else {
        class
    };
    let t = agentpool_core::task::fail(
        TaskState::Running,
        class,
        u32::try_from(attempt).unwrap_or(u32::MAX),
        u32::try_from(max_attempts).unwrap_or(u32::MAX),
        retry_after,
        policy,
        jitter_sample(),
    )?;
    Ok(match t {
        agentpool_core::Transition::Requeue { delay } => Ending::Requeue { delay, refund: false },
        agentpool_core::Transition::Finish { state, class } => Ending::Finish {
            state,
            class: class.unwrap_or(ErrorClass::AgentError),
        },
        agentpool_core::Transition::CancelRequested => {
            return Err(StoreError::Corrupt("fail() requested a cancel".into()));
        }
    })
}

/// The attempt outcome recorded for an ending.
pub(crate) fn attempt_outcome(ending: &Ending, class: ErrorClass) -> AttemptOutcome {
    match ending {
        Ending::Finish {
            state: TaskState::Canceled,
            ..
        } => AttemptOutcome::Canceled,
        _ if class == ErrorClass::LeaseExpired => AttemptOutcome::Expired,
        _ => AttemptOutcome::Failed,
    }
}

/// The task a fresh row describes, built in memory so enqueue needs no read-back and no
/// re-parse of the spec it just wrote. `dep_failed`: why it failed at once, if it did.
pub(crate) fn new_task(row: &NewTaskRow, now: i64, dep_failed: Option<&str>) -> Task {
    let max_attempts = u32::try_from(row.max_attempts).unwrap_or(0);
    let queued = Task {
        run_after: ts(row.run_after),
        ..Task::queued(row.id, row.spec.clone(), max_attempts, ts(now))
    };
    match dep_failed {
        Some(message) => Task {
            state: TaskState::Failed,
            finished_at: Some(ts(now)),
            error_class: Some(ErrorClass::DependencyFailed),
            error_message: Some(message.to_string()),
            ..queued
        },
        None => queued,
    }
}

/// Task `row`, inserted at `now` already claimed for `to` (handed over): attempt 1 under
/// lease token 1, as the enqueue's insert wrote it.
pub(crate) fn handed_task(row: &NewTaskRow, now: i64, to: &crate::HandOff) -> ClaimedTask {
    let token = LeaseToken(1);
    let mut task = new_task(row, now, None);
    task.state = TaskState::Running;
    task.attempts = 1;
    task.started_at = Some(ts(now));
    task.worker_id = Some(to.worker.clone());
    task.lease_token = Some(token);
    task.lease_expires_at = Some(ts(now + dur_ms(to.lease_ttl)));
    ClaimedTask {
        lease: Lease {
            task_id: row.id,
            token,
        },
        attempt: 1,
        resume_session: None,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(lock: Option<&str>, project: Option<(&str, i64, i64)>) -> Candidate {
        Candidate {
            id: TaskId::new(),
            lock_key: lock.map(str::to_string),
            project: project.map(|p| p.0.to_string()),
            project_running: project.map(|p| p.1).unwrap_or(0),
            project_slots: project.map(|p| p.2),
        }
    }

    #[test]
    fn one_batch_takes_one_task_per_lock_and_respects_slots() {
        let c = vec![
            cand(Some("r#a"), None),
            cand(Some("r#a"), None),
            cand(Some("r#b"), None),
            cand(None, Some(("p", 1, 3))),
            cand(None, Some(("p", 1, 3))),
            cand(None, Some(("p", 1, 3))),
            cand(None, None),
        ];
        let got = pick_candidates(&c, 10);
        let want: Vec<_> = [0, 2, 3, 4, 6].iter().map(|&i| c[i].id).collect();
        assert_eq!(got, want);
        assert_eq!(pick_candidates(&c, 2), vec![c[0].id, c[2].id]);
    }

    #[test]
    fn lock_key_ignores_git_suffix_and_default_branch_has_none() {
        let mk = |repo: &str, branch: Option<&str>| {
            let spec = TaskSpec {
                branch: branch.map(str::to_string),
                ..TaskSpec::command(repo, "true")
            };
            NewTaskRow::new(spec, 0, 3).map(|r| (r.lock_key, r.constrained))
        };
        let a = mk("https://h/r.git", Some("main")).ok();
        let b = mk("https://h/r/", Some("main")).ok();
        assert_eq!(a, b);
        assert_eq!(a, Some((Some("https://h/r#main".to_string()), true)));
        assert_eq!(mk("https://h/r", None).ok(), Some((None, false)));
    }
}
