//! Stopping a running task: a cancel token that remembers why it fired (user, shutdown, lost
//! lease), because what the worker reports depends on the reason.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Why a running task is being stopped. The first cause recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelCause {
    /// A user canceled the task: report `CANCELED`.
    User,
    /// The worker (or the pod running the attempt) is going away and the grace period ran
    /// out: report `INFRA_ERROR`, so the task is handed back to the queue.
    Shutdown,
    /// The lease is no longer ours: report nothing.
    LeaseLost,
}

/// A cancel token with the reason it fired.
#[derive(Debug, Clone, Default)]
pub struct TaskCancel {
    token: CancellationToken,
    cause: Arc<Mutex<Option<CancelCause>>>,
}

impl TaskCancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self, cause: CancelCause) {
        let mut c = self.cause.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_none() {
            *c = Some(cause);
        }
        drop(c);
        self.token.cancel();
    }

    pub fn cause(&self) -> Option<CancelCause> {
        *self.cause.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}
