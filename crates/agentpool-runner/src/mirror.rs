//! Where the warm mirrors live and how tasks share them: each repository's mirror name, the
//! locks that keep one mirror's fetches apart (within the process and across processes), and a
//! view of a mirror's refs read without starting git.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

/// Serializes fetches into one mirror within this process (git's own ref locks would make
/// concurrent fetches fail rather than wait).
#[derive(Debug, Clone, Default)]
pub struct MirrorLocks(Arc<StdMutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>);

impl MirrorLocks {
    /// The locks shared by every worker of this process (`agentpool up` runs several).
    pub fn global() -> Self {
        static GLOBAL: std::sync::OnceLock<MirrorLocks> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(MirrorLocks::default).clone()
    }

    pub(crate) fn get(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(path.to_path_buf()).or_default().clone()
    }
}

/// An exclusive `flock` on `<mirror>.lock`, so worker processes sharing a cache directory
/// take turns too. Released when dropped (the file is closed).
pub(crate) struct FileLock(#[allow(dead_code)] std::fs::File);

pub(crate) async fn lock_file(path: PathBuf) -> std::io::Result<FileLock> {
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        loop {
            // SAFETY: flock on a descriptor we own for the lifetime of the call.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(FileLock(f));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A file-system-safe, stable name for the mirror of `url`.
pub(crate) fn mirror_name(url: &str) -> String {
    // FNV-1a: stable across builds (std's hasher is not guaranteed to be).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let tail: String = url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let tail = tail.trim_start_matches('.');
    format!("{tail}-{h:016x}.git")
}

/// The mirror's refs as stored (`packed-refs` and every loose ref, with `HEAD`): equal before
/// and after a fetch exactly when the fetch moved, added or removed no ref. Read directly,
/// without starting git.
pub(crate) async fn ref_state(mirror: &Path) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                match std::fs::read(&p) {
                    Ok(data) => out.push((p, data)),
                    // A lock file renamed away while we looked.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
    let mirror = mirror.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for f in ["HEAD", "packed-refs"] {
            if let Ok(data) = std::fs::read(mirror.join(f)) {
                out.push((PathBuf::from(f), data));
            }
        }
        walk(&mirror.join("refs"), &mut out)?;
        out.sort();
        Ok(out)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_names_are_stable_safe_and_distinct() {
        let a = mirror_name("https://example.com/org/app.git");
        assert_eq!(a, mirror_name("https://example.com/org/app.git"));
        assert!(a.starts_with("app-") && a.ends_with(".git"));
        assert_ne!(a, mirror_name("https://example.com/other/app.git"));
        let odd = mirror_name("git@host:../../etc/passwd");
        assert!(!odd.contains('/') && !odd.starts_with('.'), "{odd}");
    }
}
