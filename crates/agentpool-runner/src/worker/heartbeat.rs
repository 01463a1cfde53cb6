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
    reg: WorkerRegistration,
    interval: Duration,
    server_drain: CancellationToken,
    stop: CancellationToken,
) {
    // A beat waits at most two intervals for its answer, then the next goes out at once. A
    // call stuck on a dead keep-alive connection (a server restarted or a packet lost without
    // a reset) would otherwise hold back every later beat for the client's 30 s limit, longer
    // than a short lease lives. Dropping the call drops its connection; the next opens another.
    let limit = (interval * 2).max(Duration::from_secs(1));
    let mut again_now = false;
    loop {
        if again_now {
            if stop.is_cancelled() {
                return;
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shared.beat_now.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
        again_now = false;
        let req = HeartbeatRequest {
            leases: shared.leases(),
            status: Some(shared.status()),
            cache: None,
        };
        let beat = crate::cache_stats::heartbeat(&*shared.api, &shared.id, req, shared.cache.as_ref());
        let Ok(answer) = tokio::time::timeout(limit, beat).await else {
            tracing::warn!("heartbeat got no answer within {limit:?}; sending another");
            again_now = true;
            continue;
        };
        match answer {
            Ok(reply) => act_on(&shared, reply, &server_drain),
            Err(ApiError::NotFound(_)) => {
                tracing::warn!("the server does not know this worker; registering again");
                if let Err(e) = shared.api.register(reg.clone()).await {
                    tracing::warn!("re-registration failed: {e}");
                }
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
        // report ended it meanwhile): nothing to abandon then.
        let running = shared.lock_running().get(&id).is_some_and(|r| !r.reporting);
        if running {
            tracing::warn!(task = %id, "lease lost; abandoning the task");
            shared.count(|s| s.abandoned += 1);
            shared.cancel(&id, CancelCause::LeaseLost);
        } else {
            tracing::debug!(task = %id, "lease ended by this worker's own report");
        }
    }
    if reply.drain {
        server_drain.cancel();
    }
}
