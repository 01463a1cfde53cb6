//! One claimed task: run it through the pipeline and deliver its outcome with retries.

use super::*;

/// Run one claimed task and report its outcome; holds a slot until done.
pub(super) async fn run_task(
    shared: Arc<Shared>,
    work: ClaimedWork,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let lease = work.claimed.lease;
    let task_id = lease.task_id;
    let cancel = TaskCancel::new();
    shared.lock_running().insert(
        task_id,
        Running {
            lease,
            cancel: cancel.clone(),
            reporting: false,
        },
    );
    let redactor = Arc::new(shared.pipeline.redactor_for(&work));
    let lost_cancel = cancel.clone();
    let (buffer, flusher) = events::start(
        shared.api.clone(),
        shared.id.clone(),
        lease,
        redactor,
        move || lost_cancel.cancel(CancelCause::LeaseLost),
        shared.report_retry_for,
    );
    let sink: Arc<dyn EventSink> = Arc::new(buffer);
    tracing::info!(task = %task_id, attempt = work.claimed.attempt, "running task");
    let report = shared.pipeline.run(&work, sink.clone(), &cancel).await;
    drop(sink);
    // Events first, so the record reads in order and the report is the last word.
    let flushed = flusher.await.unwrap_or(events::FlushEnd::GaveUp);
    let report = if flushed == events::FlushEnd::LeaseLost {
        Report::Abandon
    } else {
        report
    };
    if let Some(r) = shared.lock_running().get_mut(&task_id) {
        r.reporting = true;
    }
    deliver(&shared, lease, report).await;
    shared.lock_running().remove(&task_id);
    drop(permit);
    shared.beat_now.notify_one();
}

pub(super) async fn deliver(shared: &Shared, lease: Lease, report: Report) {
    let task = lease.task_id;
    let deadline = tokio::time::Instant::now() + shared.report_retry_for;
    let mut delay = Duration::from_millis(250);
    let kind = match &report {
        Report::Complete(_) => "complete",
        Report::Fail { .. } => "fail",
        Report::Abandon => {
            shared.count(|s| s.lost += 1);
            return;
        }
    };
    shared.note_outcome(&report);
    loop {
        let Some(res) = crate::attempt::send_report(&*shared.api, &shared.id, lease, &report).await else {
            return;
        };
        match res {
            Ok(()) => {
                match &report {
                    Report::Complete(_) => shared.count(|s| s.succeeded += 1),
                    Report::Fail { class, .. } if *class == agentpool_core::ErrorClass::Canceled => {
                        shared.count(|s| s.canceled += 1)
                    }
                    _ => shared.count(|s| s.failed += 1),
                }
                return;
            }
            Err(ApiError::StaleLease(_)) => {
                tracing::warn!(%task, "{kind} refused: the lease was taken meanwhile");
                shared.count(|s| s.lost += 1);
                return;
            }
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%task, "{kind} failed, retrying in {delay:?}: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            Err(e) => {
                tracing::error!(%task, "{kind} could not be reported: {e}");
                shared.count(|s| s.unreported += 1);
                return;
            }
        }
    }
}
