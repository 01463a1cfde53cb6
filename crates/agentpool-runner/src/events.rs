//! Event forwarding for one running task: the pipeline and the agent emit events into an
//! [`EventBuffer`] (never blocking), and a flusher sends them to the queue in batches with the
//! task's lease, retrying while the server is unreachable, redacting secrets first, and
//! keeping the output within the attempt's [`LogLimit`].

use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::EventSink;
use agentpool_core::protocol::AppendEventsRequest;
use agentpool_core::{Lease, NewEvent, Redactor, WorkerId};
use tokio::sync::mpsc;

use crate::api::{ApiError, WorkerApi};
use crate::log_limit::{LogFilter, LogLimit};

/// Events per append call.
const BATCH: usize = 200;
/// How long an event may wait for companions before a batch is sent.
const LINGER: Duration = Duration::from_millis(200);
/// Events kept while the server is unreachable; beyond that the oldest are dropped (and a
/// `log` event says how many).
const MAX_PENDING: usize = 20_000;

/// The sending side handed to the pipeline and the agent.
#[derive(Clone)]
pub struct EventBuffer {
    tx: mpsc::UnboundedSender<NewEvent>,
    redactor: Arc<Redactor>,
}

impl EventSink for EventBuffer {
    fn emit(&self, mut event: NewEvent) {
        if event.at.is_none() {
            event.at = Some(chrono::Utc::now());
        }
        let event = self.redactor.event(event);
        // The flusher outlives every emitter of its task; a send error only means it gave up.
        let _ = self.tx.send(event);
    }
}

/// How the flusher ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushEnd {
    /// Everything was delivered.
    Done,
    /// The lease was refused: the task is no longer ours.
    LeaseLost,
    /// The server stayed unreachable past the deadline or refused the events; some were lost.
    GaveUp,
}

/// Where the events of one attempt go, and how long they may wait for the server.
pub struct Forward {
    pub api: Arc<dyn WorkerApi>,
    pub worker: WorkerId,
    pub lease: Lease,
    pub redactor: Arc<Redactor>,
    pub log_limit: LogLimit,
    pub give_up_after: Duration,
}

/// Start forwarding events as `to` says. Returns the buffer to emit into and the flusher;
/// drop every clone of the buffer, then await the flusher to flush the rest.
pub fn start(
    to: Forward,
    on_lease_lost: impl Fn() + Send + 'static,
) -> (EventBuffer, tokio::task::JoinHandle<FlushEnd>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let redactor = to.redactor.clone();
    let flusher = tokio::spawn(flush(to, rx, on_lease_lost));
    (EventBuffer { tx, redactor }, flusher)
}

async fn flush(
    to: Forward,
    mut rx: mpsc::UnboundedReceiver<NewEvent>,
    on_lease_lost: impl Fn() + Send + 'static,
) -> FlushEnd {
    let Forward {
        api,
        worker,
        lease,
        log_limit,
        give_up_after,
        ..
    } = to;
    let mut filter = LogFilter::new(log_limit);
    let mut pending: Vec<NewEvent> = Vec::new();
    let mut open = true;
    let mut dropped = 0usize;
    let mut backoff = Duration::from_millis(200);
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut retries = crate::unreported::Retries::new();
    let task = lease.task_id;
    loop {
        if open {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(e) => filter.admit(e, &mut pending),
                    None => open = false,
                }
            }
            // Linger a little so that a burst of lines goes out as one call.
            let deadline = tokio::time::Instant::now() + LINGER;
            while open && pending.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(e)) => filter.admit(e, &mut pending),
                    Ok(None) => open = false,
                    Err(_) => break,
                }
            }
        }
        if !open {
            // The run is over: what the log limit still holds back goes last (once).
            filter.finish(&mut pending);
        }
        if pending.is_empty() {
            if open {
                continue;
            }
            return FlushEnd::Done;
        }
        if pending.len() > MAX_PENDING {
            let excess = pending.len() - MAX_PENDING;
            pending.drain(..excess);
            dropped += excess;
        }
        let mut batch: Vec<NewEvent> = pending.iter().take(BATCH).cloned().collect();
        if dropped > 0 {
            batch.push(NewEvent::log(
                "agentpool",
                // Unreachable, or reachable but unable to store them (its disk full): the
                // worker cannot tell which, so it says what it knows.
                format!("{dropped} events were dropped while the server did not take them"),
            ));
        }
        let sent = batch.len().min(BATCH).min(pending.len());
        let req = AppendEventsRequest {
            lease_token: lease.token,
            events: batch,
        };
        match api.append_events(&worker, lease.task_id, req).await {
            Ok(()) => {
                pending.drain(..sent);
                dropped = 0;
                backoff = Duration::from_millis(200);
                failing_since = None;
                if let Some(n) = retries.succeeded() {
                    let n = crate::unreported::tries(n);
                    tracing::info!(%task, "the events of task {task} were delivered after {n}");
                }
            }
            Err(ApiError::StaleLease(_)) => {
                on_lease_lost();
                return FlushEnd::LeaseLost;
            }
            Err(e) if e.is_transient() => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > give_up_after {
                    tracing::warn!(%task, "giving up sending events: {e}");
                    return FlushEnd::GaveUp;
                }
                // The report waits for its events: this is where a cut-off worker spends its
                // retries, and an operator should see that it is still trying.
                if let Some(n) = retries.failed() {
                    let n = crate::unreported::tries(n);
                    tracing::warn!(
                        %task,
                        "server unavailable; retrying the report of task {task} (its events, {n}): {e}"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                // Keep collecting while we wait for the server.
                while let Ok(e) = rx.try_recv() {
                    filter.admit(e, &mut pending);
                }
            }
            Err(e) => {
                tracing::warn!(%task, "events refused: {e}");
                pending.drain(..sent);
            }
        }
    }
}
