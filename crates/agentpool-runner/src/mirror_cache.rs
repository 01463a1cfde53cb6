//! Bounds on the warm mirror cache: each use of a mirror is recorded (a marker file's mtime,
//! and the cache directory's hit/miss counts, kept in a file in it), and `prune` removes mirrors
//! unused for longer than a maximum age, then the least recently used ones while the cache is
//! over its size limit. A mirror a task is using (its `<mirror>.lock` held) is never removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Touched on every use of a mirror; its mtime is the mirror's last use. Inside the bare
/// repository, where git ignores it.
const MARKER: &str = "agentpool-last-used";

/// The hit and miss counts of a cache directory, as `<hits> <misses>`. In the directory, not in
/// the process: a pod's cache volume outlives the pod, and the pool's hit rate should not
/// start again from nothing each time a worker restarts. Per directory, so that several
/// workers in one process (`agentpool up`, tests) each report their own cache.
const USES: &str = "agentpool-uses";

/// Hits and misses recorded for the mirrors in `dir` (0 and 0 before the first use, or when
/// the counts cannot be read).
pub fn uses(dir: &Path) -> (u64, u64) {
    std::fs::read_to_string(dir.join(USES))
        .ok()
        .and_then(|s| parse_uses(&s))
        .unwrap_or((0, 0))
}

fn parse_uses(s: &str) -> Option<(u64, u64)> {
    let (h, m) = s.trim().split_once(' ')?;
    Some((h.parse().ok()?, m.parse().ok()?))
}

/// Add one hit or miss to `dir`'s counts, under an exclusive `flock` of the counts file so that
/// processes sharing the directory do not lose each other's.
fn count_use(dir: &Path, hit: bool) -> std::io::Result<()> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(USES))?;
    loop {
        // SAFETY: flock on a descriptor we own; released when `f` is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    // Unreadable counts (a write cut short by a crash) start again rather than stop counting.
    let (h, m) = parse_uses(&s).unwrap_or((0, 0));
    let (h, m) = if hit { (h + 1, m) } else { (h, m + 1) };
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(format!("{h} {m}\n").as_bytes())
}

/// What the cache may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheLimits {
    /// Mirrors unused for longer are removed.
    pub max_age: Option<Duration>,
    /// Past this many bytes the least recently used mirrors are removed.
    pub max_bytes: Option<u64>,
}

/// The cache after a prune, with its hit rate.
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
    if let Some(dir) = mirror.parent()
        && let Err(e) = count_use(dir, hit)
    {
        // Only the figures suffer: the task goes on.
        tracing::debug!(dir = %dir.display(), "cannot count a use of the mirror cache: {e}");
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
    fn the_counts_live_in_the_cache_directory_and_no_use_is_lost_to_a_concurrent_one() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        assert_eq!(uses(dir.path()), (0, 0), "before the first use");
        // Eight threads, each with its own open file (as separate processes would have).
        std::thread::scope(|s| {
            for t in 0..8 {
                let m = dir.path().join(format!("r{t}.git"));
                s.spawn(move || {
                    for i in 0..25 {
                        record_use(&m, i % 5 != 0);
                    }
                });
            }
        });
        assert_eq!(uses(dir.path()), (160, 40));
        assert_eq!(uses(other.path()), (0, 0), "per directory");
        // What a restarted worker reads: the file, nothing of this process.
        assert_eq!(
            std::fs::read_to_string(dir.path().join(USES)).unwrap(),
            "160 40\n"
        );
        // Counts a crash left unreadable start again instead of failing every use.
        std::fs::write(dir.path().join(USES), "16").unwrap();
        assert_eq!(uses(dir.path()), (0, 0));
        record_use(&dir.path().join("r0.git"), false);
        assert_eq!(uses(dir.path()), (0, 1));
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
