//! Talking to the server about the worker itself: registration with retries, the heartbeat
//! loop, and acting on what a heartbeat reply says.

use super::*;

pub(super) async fn register(
    api: &dyn WorkerApi,
    reg: WorkerRegistration,
    shutdown: &CancellationToken,
) -> Result<Option<agentpool_core::Worker>, WorkerError> {
    let mut backoff = Backoff::new();
    loop {
        match api.register(reg.clone()).await {
            Ok(w) => return Ok(Some(w)),
            Err(e) if e.is_transient() => {
                tracing::warn!("cannot register yet: {e}");
                if !backoff.sleep(shutdown).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(WorkerError::Register(e)),
        }
    }
}

pub(super) async fn heartbeat_loop(
    shared: Arc<Shared>,
    server_drain: CancellationToken,
    stop: CancellationToken,
) {
    // Each beat asks the server to hold its answer for up to one interval while there is
    // nothing to tell, and to answer at once when one of these tasks is canceled or the worker
    // is asked to drain: a cancel reaches the task in moments, not at the next beat. Beats
    // still go out once per interval (the leases are extended when one arrives): after an
    // answer the next waits for the rest of the interval, which also paces an older server
    // that answers at once, and a reply that keeps saying "cancel" while the task winds down.
    //
    // A new claim or a finished task starts a new beat at once (`beat_now`), since the server
    // rings only for the leases a beat names. A beat waits at most one interval past its own
    // wait for its answer: a call stuck on a dead keep-alive connection (a server restarted,
    // a packet lost without a reset) is dropped with its connection, and the next goes out.
    let mut next_at: Option<tokio::time::Instant> = None;
    loop {
        // Read each time: a claim may have shortened it (`Shared::fit_beats_to`).
        let interval = shared.beat_interval();
        let limit = interval * 2 + Duration::from_secs(1);
        if let Some(at) = next_at.take() {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = shared.beat_now.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
        if stop.is_cancelled() {
            return;
        }
        if shared.register_pending.load(Ordering::SeqCst) {
            shared.register_again().await;
        }
        let started = tokio::time::Instant::now();
        let req = HeartbeatRequest {
            leases: shared.leases(),
            status: Some(shared.status()),
            status_message: shared.status_message(),
            cache: None,
        };
        let beat = crate::api::heartbeat(&*shared.api, &shared.id, req, shared.cache.as_ref(), interval);
        let answer = tokio::select! {
            answer = tokio::time::timeout(limit, beat) => answer,
            // The leases or the status changed: the beat in flight names the old ones.
            _ = shared.beat_now.notified() => continue,
            _ = stop.cancelled() => return,
        };
        next_at = Some(started + interval);
        let Ok(answer) = answer else {
            tracing::warn!("heartbeat got no answer within {limit:?}; sending another");
            next_at = None;
            continue;
        };
        match answer {
            Ok(reply) => act_on(&shared, reply, &server_drain),
            Err(ApiError::NotFound(_)) => {
                tracing::warn!("the server does not know this worker; registering again");
                shared.register_again().await;
            }
            Err(e) if crate::api::is_refusal(&e) => {
                shared.refuse(&e);
                return;
            }
            // Unreachable server: keep running tasks; the next beat tries again.
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }
}

pub(super) fn act_on(shared: &Shared, reply: HeartbeatReply, server_drain: &CancellationToken) {
    for id in reply.cancel {
        tracing::info!(task = %id, "cancel requested");
        shared.cancel(&id, CancelCause::User);
    }
    for id in reply.lost {
        // A beat sent just before a report can come back listing that task as lost (the
        // report ended it meanwhile): nothing to abandon then. Nor when an earlier beat
        // already said so: the task is ending.
        let newly_lost = match shared.lock_running().get_mut(&id) {
            Some(r) if !r.reporting && !r.lost => {
                r.lost = true;
                Some(true)
            }
            Some(r) if r.lost => Some(false),
            _ => None,
        };
        match newly_lost {
            Some(true) => {
                tracing::warn!(task = %id, "lease lost; abandoning the task");
                shared.count(|s| s.abandoned += 1);
                shared.cancel(&id, CancelCause::LeaseLost);
            }
            Some(false) => {}
            None => tracing::debug!(task = %id, "lease ended by this worker's own report"),
        }
    }
    if reply.drain {
        server_drain.cancel();
    }
}
