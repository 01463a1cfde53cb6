//! One claimed task: run it through the pipeline and deliver its outcome with retries.

use super::*;
use crate::attempt::AttemptOutcome;

/// Run one claimed task and report its outcome; holds a slot until done. `cancel` is the one
/// [`Shared::track`] registered the task's lease with.
pub(super) async fn run_task(
    shared: Arc<Shared>,
    work: ClaimedWork,
    cancel: TaskCancel,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let lease = work.claimed.lease;
    let task_id = lease.task_id;
    let redactor = Arc::new(shared.pipeline.redactor_for(&work));
    let lost_cancel = cancel.clone();
    let (buffer, flusher) = events::start(
        events::Forward {
            api: shared.api.clone(),
            worker: shared.id.clone(),
            lease,
            redactor,
            log_limit: shared.pipeline.log_limit(),
            give_up_after: shared.report_retry_for,
        },
        move || lost_cancel.cancel(CancelCause::LeaseLost),
    );
    let sink: Arc<dyn EventSink> = Arc::new(buffer);
    let attempt = work.claimed.attempt;
    tracing::info!(task = %task_id, attempt, worker = %shared.id, "running task");
    let started = std::time::Instant::now();
    let report = shared.pipeline.run(&work, sink.clone(), &cancel).await;
    let took = started.elapsed();
    drop(sink);
    // Events first, so the record reads in order and the report is the last word.
    let flushed = flusher.await.unwrap_or(events::FlushEnd::GaveUp);
    let report = if flushed == events::FlushEnd::LeaseLost {
        report.abandoned()
    } else {
        report
    };
    if let Some(r) = shared.lock_running().get_mut(&task_id) {
        r.reporting = true;
    }
    if matches!(report, Report::Abandon(_)) {
        // Nothing else will record what the attempt did: a commit it pushed is on the remote,
        // and another attempt may be building on it.
        let did = crate::unreported::what_it_did(&report);
        match shared.refused.get() {
            // Not a lost lease: the server stopped accepting this worker, and the lease stays
            // until it expires.
            Some(why) => tracing::warn!(
                task = %task_id,
                attempt,
                "stopped unreported: the server no longer accepts this worker's token ({why}); \
                 the task runs again once its lease expires; {did}"
            ),
            None => tracing::warn!(
                task = %task_id,
                attempt,
                "lease lost: the attempt ends unreported; {did}"
            ),
        }
    }
    // Before the report hands the task back: a worker that cannot start git or the agent
    // at all must not be the one to claim it again.
    let agent = attempt_agent(&report, &work);
    shared.confirm_own_failure(&report, &agent).await;
    let report = shared.confirm_refused_key(report, &agent, &work).await;
    let outcome = deliver(&shared, lease, report.clone(), &agent).await;
    log_end(task_id, attempt, took, &report, &outcome);
    shared.lock_running().remove(&task_id);
    drop(permit);
    shared.beat_now.notify_one();
}

/// The agent this attempt ran, as its report says, else the one its task names: the one
/// whose failures count against the worker (strikes are kept per agent).
fn attempt_agent(report: &Report, work: &ClaimedWork) -> String {
    report
        .result()
        .and_then(|r| r.agent.clone())
        .or_else(|| work.claimed.task.spec.required_agent().map(str::to_owned))
        .unwrap_or_else(|| agentpool_core::spec::COMMAND_AGENT.to_owned())
}

/// One line per finished attempt beside "running task", so a worker's log tells what became
/// of each task, as the server decided it (retried or ended), without the server. The failure
/// message was redacted by the pipeline; it is quoted, so a message of several lines stays one
/// log line. A report that was refused or not delivered was logged as such by [`deliver`].
fn log_end(task: TaskId, attempt: u32, took: Duration, report: &Report, outcome: &AttemptOutcome) {
    let took = format!("{:.1?}", took);
    let error = match report {
        Report::Fail { message, .. } => message.as_str(),
        _ => "",
    };
    match (report, outcome) {
        (Report::Complete(r), AttemptOutcome::Succeeded) => tracing::info!(
            %task,
            attempt,
            %took,
            commit = %r.commit_sha.as_deref().map_or("none", |c| c.get(..12).unwrap_or(c)),
            pushed = r.pushed,
            "task succeeded"
        ),
        (_, AttemptOutcome::Failed(ErrorClass::Canceled)) => {
            tracing::info!(%task, attempt, %took, "task canceled")
        }
        (_, AttemptOutcome::Failed(class)) => {
            tracing::info!(%task, attempt, %took, %class, ?error, "task failed")
        }
        (
            _,
            AttemptOutcome::Retrying {
                class,
                attempt: next,
                run_after,
                given_back,
            },
        ) => {
            let at = run_after.format("%H:%M:%S");
            let said = if *given_back {
                "attempt handed back; the task runs again"
            } else {
                "attempt failed; the task is retried"
            };
            tracing::info!(%task, attempt, %took, %class, ?error, next_attempt = next, %at, "{said}")
        }
        _ => {}
    }
}

/// Deliver `report` of a task `agent` ran (with the same retries as a single attempt's) and
/// count how it ended.
pub(super) async fn deliver(shared: &Shared, lease: Lease, report: Report, agent: &str) -> AttemptOutcome {
    if !matches!(report, Report::Abandon(_))
        && let Some(why) = shared.note_outcome(&report, agent)
    {
        shared.retire(agent, why).await;
    }
    let outcome =
        crate::attempt::deliver(&*shared.api, &shared.id, lease, report, shared.report_retry_for).await;
    shared.count(|s| match outcome {
        AttemptOutcome::Succeeded => s.succeeded += 1,
        AttemptOutcome::Failed(ErrorClass::Canceled) => s.canceled += 1,
        AttemptOutcome::Retrying { given_back: true, .. } => s.handed_back += 1,
        AttemptOutcome::Failed(_) | AttemptOutcome::Retrying { .. } => s.failed += 1,
        AttemptOutcome::Lost => s.lost += 1,
        AttemptOutcome::Unreported | AttemptOutcome::Refused(_) => s.unreported += 1,
    });
    outcome
}
