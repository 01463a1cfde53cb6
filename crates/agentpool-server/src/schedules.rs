//! Running schedules: every maintenance pass submits the task of each schedule whose time has
//! come (docs/schedules.md).
//!
//! Safe with several replicas: a due schedule is leased to one replica while it submits its
//! run, and the task carries the run's idempotency key (`schedule:NAME:TIME`), so even a
//! replica that crashed between submitting and recording leaves one task for that run, not
//! two. A server that was down over several run times submits the earliest missed one, once,
//! and says how many later ones it missed.

use agentpool_core::protocol::Enqueued;
use agentpool_core::schedule::{Overlap, Schedule, When, manual_run_key, run_key};
use agentpool_core::{NewEvent, TaskId, Timestamp, ValidationError};
use agentpool_store::Result;
use agentpool_store::schedules::ScheduleRun;

use crate::error::{ApiError, ApiResult};
use crate::routes::prepare::prepare_spec;
use crate::state::AppState;

/// How long a replica holds a due schedule while it submits its run: long past a submit's
/// time, short enough that a crashed replica's run is taken over within a minute.
pub const LEASE_MS: i64 = 60_000;

/// Due schedules taken per query.
const BATCH: u32 = 100;

/// The most missed run times counted for the message of a late run.
const MISSED_COUNTED: u32 = 1000;

/// Submit the run of every due schedule. Returns how many tasks were submitted.
pub async fn run_due(state: &AppState) -> Result<u32> {
    let mut submitted = 0;
    loop {
        let due = state.store().take_due_schedules(BATCH, LEASE_MS).await?;
        let full = due.len() == BATCH as usize;
        for s in due {
            let name = s.name.clone();
            match run_scheduled(state, s).await {
                Ok(true) => submitted += 1,
                Ok(false) => {}
                // Its lease runs out and a later pass (here or on another replica) takes the
                // same run again; the others are not held up by it.
                Err(e) => {
                    tracing::warn!(schedule = %name, error = %e, "running a schedule failed; it is tried again")
                }
            }
        }
        if !full {
            return Ok(submitted);
        }
    }
}

/// One due run of `s`: submitted, or skipped by its overlap policy, and recorded either way;
/// the schedule moves on to its first run time after now. Returns whether a task was
/// submitted.
async fn run_scheduled(state: &AppState, s: Schedule) -> Result<bool> {
    let store = state.store();
    let Some(due) = s.next_run_at else {
        return Ok(false);
    };
    let now = store.time();
    let when = When::parse(&s.spec.cron, s.spec.time_zone.as_deref());
    let next = when.as_ref().ok().and_then(|w| w.next_after(now));
    let missed = when.as_ref().map(|w| missed_between(w, due, now)).unwrap_or(0);
    let (outcome, message, task) = match unfinished_last_task(state, &s).await? {
        Some((task, state_name)) => (
            Outcome::Skipped,
            with_missed(
                format!("skipped: task {task} from the run before is still {state_name}"),
                missed,
            ),
            None,
        ),
        None => match submit(state, &s, run_key(&s.name, due), missed).await? {
            Ok(out) => (
                Outcome::Submitted,
                submitted_message(out.task.id, out.created, missed),
                Some(out.task.id),
            ),
            Err(errs) => {
                let why: Vec<String> = errs.iter().map(ToString::to_string).collect();
                let message = with_missed(format!("could not submit its task: {}", why.join("; ")), missed);
                (Outcome::Refused, message, None)
            }
        },
    };
    state.inner.metrics.schedule_run(outcome.as_str());
    match outcome {
        Outcome::Submitted => {
            tracing::info!(schedule = %s.name, run = %due, outcome = %message, "schedule submitted its task")
        }
        Outcome::Skipped => {
            tracing::info!(schedule = %s.name, run = %due, outcome = %message, "schedule skipped a run")
        }
        Outcome::Refused => {
            tracing::warn!(schedule = %s.name, run = %due, outcome = %message, "schedule could not submit its task")
        }
    }
    let run = ScheduleRun {
        at: due,
        task,
        message,
    };
    store
        .record_schedule_run(&s.name, &run, Some((due, next)))
        .await?;
    Ok(run.task.is_some())
}

/// What one run of a schedule did (`agentpool_schedule_runs_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Submitted,
    /// The task of the run before was unfinished (overlap `skip`).
    Skipped,
    /// The task could not be submitted (its project deleted since, say).
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Skipped => "skipped",
            Self::Refused => "refused",
        }
    }
}

/// The task `s` submitted last when its overlap policy is `skip` and that task is still
/// queued or running, with its state's name.
async fn unfinished_last_task(state: &AppState, s: &Schedule) -> Result<Option<(TaskId, &'static str)>> {
    if s.spec.overlap == Overlap::Allow {
        return Ok(None);
    }
    let Some(last) = s.last_task else {
        return Ok(None);
    };
    // A task purged past retention has long finished.
    Ok(state
        .store()
        .find_task(last)
        .await?
        .filter(|t| !t.state.is_finished())
        .map(|t| (last, t.state.as_str())))
}

/// Run times of `when` after `due` and up to `now`: the ones a late run stands in for.
fn missed_between(when: &When, due: Timestamp, now: Timestamp) -> u32 {
    let mut n = 0;
    let mut t = due;
    while n < MISSED_COUNTED {
        match when.next_after(t) {
            Some(next) if next <= now => {
                n += 1;
                t = next;
            }
            _ => break,
        }
    }
    n
}

/// Submit the task of `s` under idempotency key `key` (`missed`: later run times this run
/// stands in for), as `POST /v1/tasks` would: the project's defaults and the profile applied,
/// the spec checked. Returns the task and whether it is new (`created`: the key may have
/// been used by a replica that crashed before recording the run), or why the task cannot be
/// submitted (its project deleted since, say): for the loop that is the schedule's last
/// message, not an error.
pub(crate) async fn submit(
    state: &AppState,
    s: &Schedule,
    key: String,
    missed: u32,
) -> Result<Result<Enqueued, Vec<ValidationError>>> {
    let mut spec = s.spec.task.clone();
    spec.idempotency_key = Some(key);
    let spec = match prepare_spec(state, spec, "task.").await {
        Ok(spec) => spec,
        Err(errs) => return Ok(Err(errs)),
    };
    let project = match &spec.project {
        Some(name) => state.store().get_project(name).await?,
        None => None,
    };
    let out = state.store().enqueue(spec).await?;
    let id = out.task.id;
    if out.created {
        if let Some(p) = project {
            crate::routes::builds::link_pull_request(state, &p.spec, id).await?;
        }
        let mut line = format!("submitted by schedule {}", s.name);
        if missed > 0 {
            line.push_str(&format!("; {}", missed_words(missed)));
        }
        state
            .store()
            .append_events(id, None, vec![NewEvent::log("agentpool", line)])
            .await?;
    }
    Ok(Ok(out))
}

/// What a run that submitted task `id` says of itself.
pub(crate) fn submitted_message(id: TaskId, created: bool, missed: u32) -> String {
    let mut message = format!("submitted task {id}");
    if !created {
        message.push_str(" (submitted for this run before)");
    }
    with_missed(message, missed)
}

/// `message`, and how many later run times were missed when any were: whatever the run did,
/// a reader of the schedule learns that the server was down over run times it did not make up.
fn with_missed(mut message: String, missed: u32) -> String {
    if missed > 0 {
        message.push_str(&format!("; {}", missed_words(missed)));
    }
    message
}

/// "2 later run times were missed and not run", the verb agreeing with the count.
fn missed_words(missed: u32) -> String {
    if missed == 1 {
        "1 later run time was missed and not run".to_string()
    } else {
        format!("{missed} later run times were missed and not run")
    }
}

/// Schedule `name`, or 404.
pub(crate) async fn found(state: &AppState, name: &str) -> ApiResult<Schedule> {
    state
        .store()
        .get_schedule(name)
        .await?
        .ok_or_else(|| ApiError::not_found("schedule", name))
}

/// Submit the task of schedule `name` now, for `by`: paused or not, whatever its overlap
/// policy; its next scheduled run is unchanged. A task that cannot be submitted is refused
/// with its field errors.
pub(crate) async fn run_now(state: &AppState, name: &str, by: &str) -> ApiResult<Enqueued> {
    let s = found(state, name).await?;
    let at = state.store().time();
    let out = submit(state, &s, manual_run_key(name, at), 0)
        .await?
        .map_err(ApiError::validation)?;
    let run = ScheduleRun {
        at,
        task: Some(out.task.id),
        message: format!("{} (run by hand)", submitted_message(out.task.id, out.created, 0)),
    };
    state.store().record_schedule_run(name, &run, None).await?;
    tracing::info!(schedule = %name, task = %out.task.id, %by, "schedule run by hand");
    Ok(out)
}

/// Pause or resume `name` for `by`: its stored spec with `paused` changed. The task is not
/// checked again: a schedule whose project went away can still be paused, and a resumed one
/// says at its next run if its task cannot be submitted.
pub(crate) async fn set_paused(state: &AppState, name: &str, paused: bool, by: &str) -> ApiResult<Schedule> {
    let mut spec = found(state, name).await?.spec;
    spec.paused = paused;
    let next = spec.next_run_after(state.store().time());
    let s = state.store().put_schedule(name, &spec, next).await?;
    let done = if paused { "paused" } else { "resumed" };
    tracing::info!(schedule = %name, %by, "schedule {done}");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_run_counts_the_missed_ones_in_words_that_agree() {
        let id = TaskId::new();
        assert_eq!(submitted_message(id, true, 0), format!("submitted task {id}"));
        assert_eq!(
            submitted_message(id, true, 1),
            format!("submitted task {id}; 1 later run time was missed and not run")
        );
        assert_eq!(
            submitted_message(id, false, 3),
            format!(
                "submitted task {id} (submitted for this run before); 3 later run times were \
                 missed and not run"
            )
        );
    }
}
