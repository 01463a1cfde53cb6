//! Bounds on the warm mirror cache: each use of a mirror is recorded (a marker file's mtime,
//! and hit/miss counters per cache directory for this process), and `prune` removes mirrors
//! unused for longer than a maximum age, then the least recently used ones while the cache is
//! over its size limit. A mirror a task is using (its `<mirror>.lock` held) is never removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Touched on every use of a mirror; its mtime is the mirror's last use. Inside the bare
/// repository, where git ignores it.
const MARKER: &str = "agentpool-last-used";

/// (hits, misses) per cache directory: per directory so that several workers in one process
/// (`agentpool up`, tests) each report their own cache.
static USES: Mutex<Option<HashMap<PathBuf, (u64, u64)>>> = Mutex::new(None);

/// Hits and misses this process recorded for the mirrors in `dir`.
pub fn uses(dir: &Path) -> (u64, u64) {
    let uses = USES.lock().unwrap_or_else(|e| e.into_inner());
    uses.as_ref().and_then(|m| m.get(dir).copied()).unwrap_or((0, 0))
}

/// What the cache may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheLimits {
    /// Mirrors unused for longer are removed.
    pub max_age: Option<Duration>,
    /// Past this many bytes the least recently used mirrors are removed.
    pub max_bytes: Option<u64>,
}

/// The cache after a prune, with this process's hit rate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheReport {
    pub mirrors: usize,
    pub bytes: u64,
    pub removed: usize,
    /// Tasks that found their repository's mirror (fetch only) / had to create it (clone).
    pub hits: u64,
    pub misses: u64,
}

impl CacheReport {
    /// Hits over uses, 0 when unused.
    pub fn hit_rate(&self) -> f64 {
        let uses = self.hits + self.misses;
        if uses == 0 {
            0.0
        } else {
            self.hits as f64 / uses as f64
        }
    }
}

/// Record a use of `mirror`: `hit` when it existed already.
pub fn record_use(mirror: &Path, hit: bool) {
    if let Some(dir) = mirror.parent() {
        let mut uses = USES.lock().unwrap_or_else(|e| e.into_inner());
        let n = uses.get_or_insert_default().entry(dir.to_path_buf()).or_default();
        if hit {
            n.0 += 1;
        } else {
            n.1 += 1;
        }
    }
    // Best effort: a missing marker only makes the mirror look older than it is.
    let _ = std::fs::write(mirror.join(MARKER), b"");
}

fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|d| d.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

fn last_used(mirror: &Path) -> SystemTime {
    std::fs::metadata(mirror.join(MARKER))
        .or_else(|_| std::fs::metadata(mirror))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Take `<mirror>.lock` without waiting; `None` while a task holds it.
fn try_lock(mirror: &Path) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(mirror.with_extension("lock"))
        .ok()?;
    // SAFETY: flock on a descriptor we own for the lifetime of the call.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(f)
}

/// The mirrors in `dir`: path, last use, bytes on disk (blocking).
fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, SystemTime, u64)>> {
    let mut mirrors = Vec::new();
    if dir.exists() {
        for e in std::fs::read_dir(dir)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "git") && p.is_dir() {
                mirrors.push((p.clone(), last_used(&p), size_of(&p)));
            }
        }
    }
    Ok(mirrors)
}

/// How many mirrors `dir` holds and the bytes they take (blocking: it walks the mirrors).
pub fn scan(dir: &Path) -> std::io::Result<(usize, u64)> {
    let mirrors = list(dir)?;
    Ok((mirrors.len(), mirrors.iter().map(|m| m.2).sum()))
}

/// Prune the mirrors in `dir` to `limits` (blocking: run it off the async threads).
pub fn prune(dir: &Path, limits: CacheLimits) -> std::io::Result<CacheReport> {
    let mut mirrors = list(dir)?;
    // Oldest first.
    mirrors.sort_by_key(|m| m.1);
    let now = SystemTime::now();
    let mut total: u64 = mirrors.iter().map(|m| m.2).sum();
    let mut removed = 0;
    let mut kept = Vec::new();
    for (path, used, size) in mirrors {
        let too_old = limits
            .max_age
            .is_some_and(|age| now.duration_since(used).unwrap_or_default() > age);
        let too_big = limits.max_bytes.is_some_and(|max| total > max);
        if (too_old || too_big)
            && let Some(_lock) = try_lock(&path)
        {
            std::fs::remove_dir_all(&path)?;
            total = total.saturating_sub(size);
            removed += 1;
            continue;
        }
        kept.push(path);
    }
    let (hits, misses) = uses(dir);
    Ok(CacheReport {
        mirrors: kept.len(),
        bytes: total,
        removed,
        hits,
        misses,
    })
}

/// How often the mirror cache is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prune the mirror cache now and every [`PRUNE_EVERY`] until `stop`, logging its size and
/// hit rate each time.
pub async fn prune_loop(dir: PathBuf, limits: CacheLimits, stop: tokio_util::sync::CancellationToken) {
    loop {
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || prune(&d, limits)).await {
            Ok(Ok(r)) => tracing::info!(
                mirrors = r.mirrors,
                bytes = r.bytes,
                removed = r.removed,
                hits = r.hits,
                misses = r.misses,
                hit_rate = r.hit_rate(),
                "mirror cache pruned"
            ),
            Ok(Err(e)) => tracing::warn!("mirror cache prune failed: {e}"),
            Err(e) => tracing::warn!("mirror cache prune failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mirror of `kib` KiB last used `days` ago (mtime set with touch(1)).
    fn mirror(dir: &Path, name: &str, kib: usize, days: u32) -> PathBuf {
        let m = dir.join(format!("{name}.git"));
        std::fs::create_dir_all(m.join("objects")).unwrap();
        std::fs::write(m.join("objects/pack"), vec![0u8; kib * 1024]).unwrap();
        std::fs::write(m.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        record_use(&m, true);
        let ok = std::process::Command::new("touch")
            .arg("-d")
            .arg(format!("{days} days ago"))
            .arg(m.join(MARKER))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        m
    }

    #[test]
    fn prune_removes_old_mirrors_then_the_least_recently_used_and_spares_busy_ones() {
        let dir = tempfile::tempdir().unwrap();
        let old = mirror(dir.path(), "old", 10, 30);
        let busy_old = mirror(dir.path(), "busy-old", 10, 30);
        let lru = mirror(dir.path(), "lru", 100, 3);
        let fresh = mirror(dir.path(), "fresh", 100, 0);
        let held = try_lock(&busy_old).expect("lock");

        let r = prune(
            dir.path(),
            CacheLimits {
                max_age: Some(Duration::from_secs(14 * 86_400)),
                max_bytes: Some(150 * 1024),
            },
        )
        .unwrap();
        assert!(!old.exists(), "unused for 30 days");
        assert!(busy_old.exists(), "a task holds its lock");
        assert!(!lru.exists(), "over the size limit: the least recently used goes");
        assert!(fresh.exists());
        assert_eq!((r.removed, r.mirrors), (2, 2), "{r:?}");
        assert!(r.bytes <= 150 * 1024 + 20 * 1024, "{r:?}");
        assert!(r.hits >= 4 && r.hit_rate() > 0.0, "{r:?}");
        drop(held);

        // No limits: nothing goes.
        let r = prune(dir.path(), CacheLimits::default()).unwrap();
        assert_eq!((r.removed, r.mirrors), (0, 2));
    }
}
