//! What a worker process says about itself to a local probe (a Kubernetes readiness probe, a
//! supervisor): starting, ready to take tasks, draining, or unhealthy.

use std::sync::{Arc, Mutex};

use agentpool_core::CacheStats;
use tokio::sync::watch;

/// The worker's own view of whether it can take tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerHealth {
    /// Not registered with the server yet.
    Starting,
    /// Registered and claiming.
    Ready,
    /// Finishing what it runs and taking nothing new (SIGTERM, or the server asked).
    Draining,
    /// Git or its agents could not be started repeatedly (it claims nothing until they start
    /// again), or the model's provider refused its own key (until it is restarted).
    Unhealthy,
}

impl WorkerHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Whether a probe should route work to this worker: only when it is claiming.
    pub fn is_ready(self) -> bool {
        self == Self::Ready
    }
}

/// The sending side the worker loop updates; cheap to clone, a no-op when nobody watches.
#[derive(Debug, Clone)]
pub struct HealthReporter(
    watch::Sender<WorkerHealth>,
    Arc<Mutex<Option<CacheStats>>>,
    /// Why the worker is unhealthy, while it is.
    Arc<Mutex<Option<String>>>,
);

impl HealthReporter {
    /// A reporter and the receiver a probe server reads.
    pub fn new() -> (Self, watch::Receiver<WorkerHealth>) {
        let (tx, rx) = watch::channel(WorkerHealth::Starting);
        (Self(tx, Arc::default(), Arc::default()), rx)
    }

    /// Another receiver of the worker's health.
    pub fn subscribe(&self) -> watch::Receiver<WorkerHealth> {
        self.0.subscribe()
    }

    /// Why the worker is unhealthy (what it tells the server), while it is.
    pub fn why(&self) -> Option<String> {
        self.2.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Unhealthy, for `why`: said before the health changes, so a watcher that sees the
    /// change can read it.
    pub(crate) fn unhealthy(&self, why: &str) {
        *self.2.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
        self.set(WorkerHealth::Unhealthy);
    }

    /// The mirror cache's figures as the worker last measured them; `None` without a cache
    /// (or before the first heartbeat).
    pub fn cache(&self) -> Option<CacheStats> {
        *self.1.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the worker's cache monitor keeps its latest figures.
    pub(crate) fn cache_slot(&self) -> Arc<Mutex<Option<CacheStats>>> {
        self.1.clone()
    }

    /// Back to ready from unhealthy: what made the worker unhealthy is over (see
    /// [`crate::worker`]'s recheck).
    pub(crate) fn recover(&self) {
        *self.2.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.0.send_if_modified(|cur| {
            let was = *cur == WorkerHealth::Unhealthy;
            if was {
                *cur = WorkerHealth::Ready;
            }
            was
        });
    }

    /// Move to `h`, except that unhealthy is sticky: draining an unhealthy worker leaves it
    /// unhealthy, so a probe keeps saying why it takes nothing.
    pub fn set(&self, h: WorkerHealth) {
        self.0.send_if_modified(|cur| {
            let next = if *cur == WorkerHealth::Unhealthy {
                WorkerHealth::Unhealthy
            } else {
                h
            };
            let changed = *cur != next;
            *cur = next;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_is_sticky_and_only_ready_is_ready() {
        let (r, rx) = HealthReporter::new();
        assert_eq!(*rx.borrow(), WorkerHealth::Starting);
        r.set(WorkerHealth::Ready);
        assert!(rx.borrow().is_ready());
        r.set(WorkerHealth::Unhealthy);
        r.set(WorkerHealth::Draining);
        assert_eq!(*rx.borrow(), WorkerHealth::Unhealthy);
        assert!(!rx.borrow().is_ready());
    }
}
