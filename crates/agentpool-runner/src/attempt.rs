//! One attempt taken over from whoever claimed it: run exactly one [`ClaimedWork`] under a
//! worker id that is not this process's own registration (the Kubernetes launcher claims, a
//! pod runs the attempt). It heartbeats that one lease, acts on cancel and lost, runs the
//! pipeline, flushes events and reports — fenced by the lease token like any worker.

use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::{EventSink, Registry};
use agentpool_core::protocol::{CompleteRequest, FailOutcome, FailRequest, HeartbeatRequest};
use agentpool_core::{ErrorClass, Lease, NewEvent, Timestamp, WorkerId, WorkerStatus};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, ClaimedWork, WorkerApi};
use crate::events;
use crate::pipeline::{CancelCause, Pipeline, PipelineConfig, Report, TaskCancel};

/// How one attempt is run.
#[derive(Debug, Clone)]
pub struct AttemptConfig {
    pub pipeline: PipelineConfig,
    pub heartbeat_interval: Duration,
    /// How long reports are retried while the server is unreachable.
    pub report_retry_for: Duration,
}

impl AttemptConfig {
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            pipeline: PipelineConfig::new(dir),
            heartbeat_interval: Duration::from_secs(10),
            report_retry_for: Duration::from_secs(600),
        }
    }
}

/// How the attempt ended, as far as the server is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    /// Reported as failed with this class, and the task was queued again: its next attempt is
    /// `attempt` (the same number when this one was given back), runnable from `run_after`.
    Retrying {
        class: ErrorClass,
        attempt: u32,
        run_after: Timestamp,
        /// The attempt was handed back without using one of the task's attempts (the
        /// worker's or the infrastructure's fault: a drained worker, an evicted pod).
        given_back: bool,
    },
    /// Reported as failed with this class, and the task ended (failed, or canceled).
    Failed(ErrorClass),
    /// The lease was no longer ours: nothing was (or could be) reported.
    Lost,
    /// The report could not be delivered before giving up.
    Unreported,
    /// The server refused the caller's token (unknown or revoked, or not a worker's): the
    /// attempt was stopped and nothing more could be reported; the server rescues the task
    /// when its lease expires.
    Refused(String),
}

impl AttemptOutcome {
    /// Whether the server heard how the attempt ended (or no longer needed to).
    pub fn reported(&self) -> bool {
        !matches!(self, Self::Unreported | Self::Refused(_))
    }
}

/// Run `work` (claimed by `worker`) to its end. `terminate` fires when the process is asked to
/// stop (SIGTERM: the pod is being deleted or evicted): the run is stopped and reported as an
/// infrastructure failure, which the server turns into `CANCELED` if a user canceled the task
/// and otherwise retries.
pub async fn run_attempt(
    api: Arc<dyn WorkerApi>,
    worker: WorkerId,
    work: ClaimedWork,
    agents: Registry,
    cfg: AttemptConfig,
    terminate: CancellationToken,
) -> AttemptOutcome {
    let lease = work.claimed.lease;
    let pipeline = Pipeline::new(cfg.pipeline.clone(), agents);
    let cancel = TaskCancel::new();
    let stop_beats = CancellationToken::new();
    let beats = tokio::spawn(heartbeat_loop(
        api.clone(),
        worker.clone(),
        lease,
        crate::api::shorter_beats_for_lease(cfg.heartbeat_interval, &work.claimed.task)
            .unwrap_or(cfg.heartbeat_interval),
        cancel.clone(),
        terminate,
        stop_beats.clone(),
    ));
    let redactor = Arc::new(pipeline.redactor_for(&work));
    let lost_cancel = cancel.clone();
    let (buffer, flusher) = events::start(
        events::Forward {
            api: api.clone(),
            worker: worker.clone(),
            lease,
            redactor,
            log_limit: cfg.pipeline.log_limit,
            give_up_after: cfg.report_retry_for,
        },
        move || lost_cancel.cancel(CancelCause::LeaseLost),
    );
    let sink: Arc<dyn EventSink> = Arc::new(buffer);
    // The store wrote `claimed` when the launcher claimed; this notes who runs it now.
    sink.emit(NewEvent::log(
        "worker",
        format!("attempt {} taken over for worker {worker}", work.claimed.attempt),
    ));
    let mut report = pipeline.run(&work, sink.clone(), &cancel).await;
    drop(sink);
    let flushed = flusher.await.unwrap_or(events::FlushEnd::GaveUp);
    stop_beats.cancel();
    if let Ok(Some(why)) = beats.await {
        return AttemptOutcome::Refused(why);
    }
    if flushed == events::FlushEnd::LeaseLost || cancel.cause() == Some(CancelCause::LeaseLost) {
        report = report.abandoned();
        tracing::warn!(
            task = %lease.task_id,
            attempt = work.claimed.attempt,
            "lease lost: the attempt ends unreported; {}",
            crate::unreported::what_it_did(&report)
        );
    }
    deliver(&*api, &worker, lease, report, cfg.report_retry_for).await
}

/// Beat for `lease` until `stop`; acts on cancel, lost and `terminate`. Returns why the server
/// refused the token, when it did: then the attempt was stopped, since nothing it sends would
/// be accepted.
async fn heartbeat_loop(
    api: Arc<dyn WorkerApi>,
    worker: WorkerId,
    lease: Lease,
    interval: Duration,
    cancel: TaskCancel,
    terminate: CancellationToken,
    stop: CancellationToken,
) -> Option<String> {
    // As the worker loop's beats: each may wait on the server for up to an interval, answered
    // at once by a cancel, and the next goes out no sooner than an interval after it.
    let limit = interval * 2 + Duration::from_secs(1);
    let mut next_at = tokio::time::Instant::now() + interval;
    // Every beat until the attempt ends says "lost" again: it is acted on (and logged) once.
    let mut lost = false;
    loop {
        let beat = async {
            tokio::time::sleep_until(next_at).await;
            let started = tokio::time::Instant::now();
            let req = HeartbeatRequest {
                leases: vec![lease],
                status: Some(WorkerStatus::Busy),
                status_message: None,
                cache: None,
            };
            // Once the attempt is being canceled there is nothing more to wait for.
            let wait = if cancel.cause().is_none() {
                interval
            } else {
                Duration::ZERO
            };
            let answer = tokio::time::timeout(limit, api.heartbeat_waiting(&worker, req, wait)).await;
            (started, answer)
        };
        let (started, answer) = tokio::select! {
            beat = beat => beat,
            _ = terminate.cancelled(), if cancel.cause().is_none() => {
                tracing::warn!(task = %lease.task_id, "terminated: stopping the attempt");
                cancel.cancel(CancelCause::Shutdown);
                continue;
            }
            _ = stop.cancelled() => return None,
        };
        next_at = started + interval;
        match answer {
            Ok(Ok(reply)) => {
                if reply.cancel.contains(&lease.task_id) {
                    tracing::info!(task = %lease.task_id, "cancel requested");
                    cancel.cancel(CancelCause::User);
                }
                if reply.lost.contains(&lease.task_id) && !lost {
                    lost = true;
                    tracing::warn!(task = %lease.task_id, "lease lost; abandoning the attempt");
                    cancel.cancel(CancelCause::LeaseLost);
                }
            }
            // The token itself is refused (revoked, say): no later beat or report will be
            // accepted, so running on would only spend the agent's budget for nothing.
            Ok(Err(e)) if crate::api::is_refusal(&e) => {
                tracing::error!(
                    task = %lease.task_id,
                    "the server no longer accepts this token ({e}): stopping the attempt"
                );
                cancel.cancel(CancelCause::LeaseLost);
                return Some(e.to_string());
            }
            // Unreachable server or a forgotten worker: the lease is judged by its expiry alone;
            // keep running and try again at the next beat.
            Ok(Err(e)) => tracing::warn!("heartbeat failed: {e}"),
            Err(_) => tracing::warn!("heartbeat got no answer in time; sending another"),
        }
    }
}

/// Send `report` for `lease` once; `None` for [`Report::Abandon`], since nothing may be sent
/// for a lost lease. The worker loop and a lone attempt both report through this.
pub(crate) async fn send_report(
    api: &dyn WorkerApi,
    worker: &WorkerId,
    lease: Lease,
    report: &Report,
) -> Option<Result<Option<FailOutcome>, ApiError>> {
    let task = lease.task_id;
    let sent = match report {
        Report::Abandon(_) => return None,
        Report::Complete(result) => api
            .complete(
                worker,
                task,
                CompleteRequest {
                    lease_token: lease.token,
                    result: result.clone(),
                },
            )
            .await
            .map(|()| None),
        Report::Fail {
            class,
            message,
            retry_after,
            result,
            ..
        } => api
            .fail(
                worker,
                task,
                FailRequest {
                    lease_token: lease.token,
                    class: *class,
                    message: message.clone(),
                    retry_after_secs: retry_after.map(|d| d.as_secs()),
                    result: result.clone(),
                },
            )
            .await
            .map(Some),
    };
    Some(sent)
}

/// Report `report` for `lease`, retrying transient failures for `retry_for` (an abandoned
/// attempt reports nothing: its lease is no longer ours). The retries are logged at the first
/// failure and then once a minute; a report that does not arrive is logged with what the
/// attempt did in git, which nothing else records then.
pub async fn deliver(
    api: &dyn WorkerApi,
    worker: &WorkerId,
    lease: Lease,
    report: Report,
    retry_for: Duration,
) -> AttemptOutcome {
    let task = lease.task_id;
    let kind = match &report {
        Report::Fail { .. } => "fail",
        _ => "complete",
    };
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut delay = Duration::from_millis(250);
    let mut retries = crate::unreported::Retries::new();
    let did = || crate::unreported::what_it_did(&report);
    loop {
        let res = match send_report(api, worker, lease, &report).await {
            None => return AttemptOutcome::Lost,
            Some(sent) => sent.map(|then| match (&report, then) {
                (
                    Report::Fail { class, .. },
                    Some(FailOutcome::Retrying {
                        attempt,
                        run_after,
                        given_back,
                    }),
                ) => AttemptOutcome::Retrying {
                    class: *class,
                    attempt: if given_back { attempt } else { attempt + 1 },
                    run_after,
                    given_back,
                },
                (Report::Fail { class, .. }, _) => AttemptOutcome::Failed(*class),
                _ => AttemptOutcome::Succeeded,
            }),
        };
        match res {
            Ok(outcome) => {
                if let Some(n) = retries.succeeded() {
                    let n = crate::unreported::tries(n);
                    tracing::info!(%task, "the {kind} report of task {task} was delivered after {n}");
                }
                return outcome;
            }
            Err(ApiError::StaleLease(_)) => {
                tracing::warn!(%task, "{kind} refused: the lease was taken meanwhile; {}", did());
                return AttemptOutcome::Lost;
            }
            Err(e) if crate::api::is_refusal(&e) => {
                tracing::error!(
                    %task,
                    "{kind} refused: the server no longer accepts this token ({e}); {}",
                    did()
                );
                return AttemptOutcome::Refused(e.to_string());
            }
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                if let Some(n) = retries.failed() {
                    let n = crate::unreported::tries(n);
                    tracing::warn!(
                        %task,
                        "server unavailable; retrying the {kind} report of task {task} ({n}): {e}"
                    );
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            Err(e) => {
                tracing::error!(%task, "{kind} could not be reported: {e}; {}", did());
                return AttemptOutcome::Unreported;
            }
        }
    }
}
