//! Retry backoff with jitter, and the host name a worker registers with.

use super::*;

/// Exponential backoff with jitter for claim and registration retries.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Self {
            next: Duration::from_millis(200),
        }
    }

    pub(super) fn reset(&mut self) {
        self.next = Duration::from_millis(200);
    }

    /// Sleep; false when `shutdown` fired first.
    pub(super) async fn sleep(&mut self, shutdown: &CancellationToken) -> bool {
        // Jitter from the clock's low bits: enough to spread a fleet's retries apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = 0.5 + f64::from(nanos % 1000) / 1000.0;
        let d = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}
