//! The worker bell: "something changed for worker W" — a cancel asked for a task it runs, or a
//! drain asked of it — so a worker's waiting heartbeat can be answered at once instead of at
//! its next beat. Rung in process after the change commits, and on PostgreSQL also on the
//! other replicas through the work channel's NOTIFY.

use std::time::Duration;

use agentpool_core::WorkerId;
use tokio::sync::broadcast;

/// Rings kept for a bell that has not looked yet; one that falls further behind treats itself
/// as rung (its caller reads the worker's state anyway).
const BACKLOG: usize = 1024;

/// The ringing side, shared by a store, its clones and its NOTIFY listener.
#[derive(Debug, Clone)]
pub(crate) struct Bells {
    tx: broadcast::Sender<WorkerId>,
}

impl Default for Bells {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Bells {
    pub(crate) fn ring(&self, worker: &WorkerId) {
        // No subscriber is not an error: no heartbeat of that worker waits here.
        let _ = self.tx.send(worker.clone());
    }

    pub(crate) fn subscribe(&self) -> WorkerBell {
        WorkerBell {
            rx: self.tx.subscribe(),
        }
    }
}

/// A subscription to the worker bell (see [`crate::Store::worker_bell`]). Take it *before*
/// reading the worker's state: a ring between the read and [`WorkerBell::wait_for`] is then
/// not lost.
#[derive(Debug)]
pub struct WorkerBell {
    rx: broadcast::Receiver<WorkerId>,
}

impl WorkerBell {
    /// Resolve when `worker` was rung since this bell was taken, or after `timeout`. Returns
    /// whether it was rung (or may have been: a bell that fell behind says yes).
    pub async fn wait_for(&mut self, worker: &WorkerId, timeout: Duration) -> bool {
        let rung = async {
            loop {
                match self.rx.recv().await {
                    Ok(w) if &w == worker => return true,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    // The store holds the sender for as long as this bell can be used.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::time::timeout(timeout, rung).await.unwrap_or(false)
    }
}
