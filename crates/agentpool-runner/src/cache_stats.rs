//! What the worker says about its mirror cache (to the server on heartbeats, and on its local
//! probe): hits and misses since the cache was created and the mirrors' size on disk. The size
//! is measured again only after a use of the cache or every few minutes, since it walks every
//! mirror; a heartbeat ([`crate::api::heartbeat`]) carries the figures only when they changed
//! since the server last took them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpool_core::CacheStats;

use crate::mirror_cache;

/// Measure the size again at least this often (a fetch or a prune changes it without a use).
const RESCAN_EVERY: Duration = Duration::from_secs(300);
/// How long a heartbeat waits for a walk of the cache before it goes without the figures.
const SCAN_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct State {
    /// Hits + misses at the last measure, when it was taken, and its result.
    measured: Option<(u64, Instant, CacheStats)>,
    /// What the server last accepted.
    sent: Option<CacheStats>,
    /// The server refused the field (an older server): stop sending it.
    unsupported: bool,
    /// A walk of the cache is running.
    scanning: bool,
}

/// One worker's mirror cache as reported; cheap to clone.
#[derive(Debug, Clone)]
pub struct CacheMonitor {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    /// The latest figures, for the local probe.
    latest: Arc<Mutex<Option<CacheStats>>>,
}

impl CacheMonitor {
    /// The monitor of the cache in `dir`; its latest figures also go to `health`'s probe.
    pub fn new(dir: PathBuf, health: Option<&crate::HealthReporter>) -> Self {
        Self {
            dir,
            state: Arc::default(),
            latest: health.map(|h| h.cache_slot()).unwrap_or_default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The figures as last measured, without measuring (for the probe); `None` before the
    /// first measure.
    pub fn latest(&self) -> Option<CacheStats> {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cache now, measured again when it was used since the last measure or that one is
    /// old.
    pub async fn current(&self) -> CacheStats {
        let (hits, misses) = mirror_cache::uses(&self.dir);
        let uses = hits + misses;
        let cached = self.lock().measured.and_then(|(n, at, s)| {
            (n == uses && at.elapsed() < RESCAN_EVERY).then_some(CacheStats { hits, misses, ..s })
        });
        let stats = match cached {
            Some(s) => s,
            None if self.lock().scanning => {
                // A scan is under way (its caller stopped waiting): last figures, live counts.
                let last = self.lock().measured.map(|m| m.2).unwrap_or_default();
                CacheStats { hits, misses, ..last }
            }
            None => {
                self.lock().scanning = true;
                let (dir, me) = (self.dir.clone(), self.clone());
                // The scan keeps its own result, so a caller that stops waiting (a heartbeat
                // that may not wait for a walk of a large cache) does not waste it.
                let scan = tokio::task::spawn_blocking(move || {
                    let (mirrors, bytes) = mirror_cache::scan(&dir).unwrap_or_default();
                    let s = CacheStats {
                        hits,
                        misses,
                        bytes,
                        mirrors: u32::try_from(mirrors).unwrap_or(u32::MAX),
                    };
                    let mut st = me.lock();
                    st.measured = Some((uses, Instant::now(), s));
                    st.scanning = false;
                    s
                });
                scan.await.unwrap_or(CacheStats {
                    hits,
                    misses,
                    ..CacheStats::default()
                })
            }
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        stats
    }

    /// What the next heartbeat should carry: the cache when it changed since the server last
    /// took it.
    pub async fn to_send(&self) -> Option<CacheStats> {
        if self.lock().unsupported {
            return None;
        }
        let now = self.current().await;
        (self.lock().sent != Some(now)).then_some(now)
    }

    /// [`Self::to_send`] for a heartbeat about to go: the size is a walk of every mirror, so a
    /// beat waits for it only briefly and goes without the figures otherwise (the walk
    /// finishes on its own and the next beat carries them).
    pub async fn to_send_soon(&self) -> Option<CacheStats> {
        tokio::time::timeout(SCAN_WAIT, self.to_send())
            .await
            .ok()
            .flatten()
    }

    /// The server took `stats`.
    pub fn sent(&self, stats: CacheStats) {
        self.lock().sent = Some(stats);
    }

    /// The server may have lost what it was sent (it forgot the worker): send it again.
    pub fn resend(&self) {
        self.lock().sent = None;
    }

    /// The server refused the field: it predates cache reports.
    pub fn unsupported(&self) {
        self.lock().unsupported = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_uses_and_size_and_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let m = CacheMonitor::new(dir.path().to_path_buf(), None);
        let empty = m.to_send().await.expect("the first report goes out");
        assert_eq!(empty, CacheStats::default());
        m.sent(empty);
        assert_eq!(m.to_send().await, None, "unchanged: nothing to send");

        let mirror = dir.path().join("repo.git");
        std::fs::create_dir_all(mirror.join("objects")).unwrap();
        std::fs::write(mirror.join("objects/pack"), vec![0u8; 4096]).unwrap();
        mirror_cache::record_use(&mirror, false);
        mirror_cache::record_use(&mirror, true);
        let s = m.to_send().await.expect("used: sent again");
        assert_eq!((s.hits, s.misses, s.mirrors), (1, 1, 1));
        assert!(s.bytes >= 4096, "{s:?}");
        assert_eq!(m.latest(), Some(s));
        m.sent(s);
        m.resend();
        assert_eq!(
            m.to_send().await,
            Some(s),
            "sent again after the server forgot it"
        );
        m.unsupported();
        assert_eq!(m.to_send().await, None);
    }
}
