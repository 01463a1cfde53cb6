//! The maintenance loop: marks silent workers offline, rescues expired leases, submits the
//! tasks of due schedules ([`crate::schedules`]), purges finished
//! tasks past retention, workers offline past [`OFFLINE_WORKER_RETENTION`], GitHub delivery
//! ids past [`GITHUB_DELIVERY_RETENTION`] and notification deliveries past
//! [`crate::notifications::RETENTION`].
//!
//! A lease that expired while the server or its database was down says nothing of its worker:
//! the worker could not renew it. So leases are rescued only once the store has answered for a
//! whole lease TTL ([`RescueGrace`]), time enough for every live worker to heartbeat again;
//! a worker that still says nothing by then is taken for dead.
//!
//! Safe with several replicas on one database: each pass is a set of conditional statements
//! (`… WHERE lease_expires_at < now()`), so two replicas running it at once do the work once —
//! the second finds nothing left. Replicas jitter their period so they rarely overlap at all.

use std::time::Duration;

use agentpool_core::Timestamp;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How long a handled webhook delivery id is remembered. GitHub redelivers (on request) only
/// deliveries of the past three days; a week covers that with room to spare, and the table
/// stops growing with every event. A redelivery older than this is still one event: the
/// task's idempotency key makes it the same task.
pub const GITHUB_DELIVERY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long an offline worker stays in the worker list. Long enough to see in the morning
/// which workers went away in the night; short enough that workers coming and going under new
/// ids (autoscaled hosts, restarts of `agentpool up`) do not pile up.
pub const OFFLINE_WORKER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Settings of the loop.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceConfig {
    /// Base period between passes (±20 % jitter).
    pub interval: Duration,
    pub heartbeat_threshold: Duration,
    pub retention: Duration,
    /// Purge runs every this many passes (it is the heavy one).
    pub purge_every: u32,
}

/// When rescuing expired leases is fair: once the store has answered, without a failure, for
/// `grace` (the lease TTL) since the server started or since it last failed to answer.
#[derive(Debug, Clone, Copy)]
pub struct RescueGrace {
    grace: Duration,
    answering_since: Timestamp,
    /// Since when the store has not answered, while it does not.
    down_since: Option<Timestamp>,
}

impl RescueGrace {
    /// A server that starts at `now`.
    pub fn new(grace: Duration, now: Timestamp) -> Self {
        Self {
            grace,
            answering_since: now,
            down_since: None,
        }
    }

    /// Note whether the store answered at `now`; whether expired leases may be rescued. That
    /// it stopped answering, and that it answers again, are logged once each: in between,
    /// requests that need it are answered 503, which is logged only at debug level (one line
    /// per request would bury the rest).
    pub fn observe(&mut self, answered: bool, now: Timestamp) -> bool {
        if !answered {
            if self.down_since.is_none() {
                tracing::error!(
                    "the database does not answer: requests that need it are answered 503 \
                     (clients and workers retry them) until it does"
                );
                self.down_since = Some(now);
            }
            self.answering_since = now;
            return false;
        }
        if let Some(since) = self.down_since.take() {
            tracing::warn!(
                down_secs = (now - since).num_seconds(),
                "the database answers again; expired leases are rescued once it has answered for \
                 a lease TTL"
            );
        }
        now - self.answering_since
            >= chrono::TimeDelta::from_std(self.grace).unwrap_or(chrono::TimeDelta::MAX)
    }
}

/// Run passes until `stop` is cancelled.
pub async fn run(state: AppState, cfg: MaintenanceConfig, stop: CancellationToken) {
    let mut pass: u32 = 0;
    let mut grace = RescueGrace::new(state.inner.lease_ttl, state.store().time());
    loop {
        let jitter = rand::rng().random_range(0.8..1.2);
        let wait = cfg.interval.mul_f64(jitter);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        pass = pass.wrapping_add(1);
        run_pass(
            &state,
            &cfg,
            pass.is_multiple_of(cfg.purge_every.max(1)),
            &mut grace,
        )
        .await;
    }
}

/// One pass of a server that has been answering for long (leases are rescued).
pub async fn run_once(state: &AppState, cfg: &MaintenanceConfig, purge: bool) {
    let mut grace = RescueGrace::new(Duration::ZERO, state.store().time());
    run_pass(state, cfg, purge, &mut grace).await;
}

/// One pass; expired leases are rescued only when `grace` allows. Errors are logged and the
/// next pass tries again.
pub async fn run_pass(state: &AppState, cfg: &MaintenanceConfig, purge: bool, grace: &mut RescueGrace) {
    let store = state.store();
    let answered = match store.mark_workers_offline(cfg.heartbeat_threshold).await {
        Ok(0) => true,
        Ok(n) => {
            tracing::info!(workers = n, "marked workers offline");
            true
        }
        // An outage is said once, by `grace` below; another failure at each pass.
        Err(e) if e.is_unavailable() => {
            tracing::debug!(error = %e, "maintenance: marking workers offline failed");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "maintenance: marking workers offline failed");
            false
        }
    };
    if grace.observe(answered, store.time()) {
        match store.requeue_expired().await {
            Ok(0) => {}
            Ok(n) => {
                state.inner.metrics.rescued(n);
                // Each task is named (a warning) where it is rescued, in the store.
                tracing::info!(
                    tasks = n,
                    "rescued tasks whose lease expired: their workers died or were cut off"
                );
            }
            Err(e) => tracing::warn!(error = %e, "maintenance: rescuing expired leases failed"),
        }
    }
    match crate::schedules::run_due(state).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(tasks = n, "schedules submitted their tasks"),
        Err(e) => tracing::warn!(error = %e, "maintenance: running due schedules failed"),
    }
    if purge {
        match store.purge_finished(cfg.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "purged finished tasks past retention"),
            Err(e) => tracing::warn!(error = %e, "maintenance: purge failed"),
        }
        match store.forget_offline_workers(OFFLINE_WORKER_RETENTION).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(workers = n, "forgot workers offline for over a day"),
            Err(e) => tracing::warn!(error = %e, "maintenance: forgetting offline workers failed"),
        }
        match store.github_purge_deliveries(GITHUB_DELIVERY_RETENTION).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "forgot GitHub deliveries past retention"),
            Err(e) => tracing::warn!(error = %e, "maintenance: purging GitHub deliveries failed"),
        }
        let before = store.time() - crate::notifications::RETENTION;
        match store.purge_deliveries(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "forgot notification deliveries past retention"),
            Err(e) => tracing::warn!(error = %e, "maintenance: purging notification deliveries failed"),
        }
    }
    // Bookkeeping of tasks handed out here that never came back (a worker died and another
    // replica finished them): nothing can legitimately run longer than the maximum timeout.
    state.prune_claimed(Duration::from_secs(state.inner.limits.max_timeout_secs) + cfg.heartbeat_threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_rescued_a_lease_ttl_after_the_store_last_failed_or_the_server_started() {
        let t0 = chrono::Utc::now();
        let at = |secs: i64| t0 + chrono::TimeDelta::seconds(secs);
        let mut g = RescueGrace::new(Duration::from_secs(60), t0);
        assert!(!g.observe(true, at(0)));
        assert!(!g.observe(true, at(59)));
        assert!(g.observe(true, at(60)));
        // The database goes away, and comes back: another full TTL before the next rescue.
        assert!(!g.observe(false, at(100)));
        assert!(!g.observe(true, at(130)));
        assert!(g.observe(true, at(160)));
    }
}
