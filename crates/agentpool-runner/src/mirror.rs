//! Where the warm mirrors live and how tasks share them: each repository's mirror name, the
//! locks that keep one mirror's fetches apart (within the process and across processes), a
//! view of a mirror's refs read without starting git, and when its default branch (`HEAD`)
//! must be asked of the remote again.

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

/// How long a mirror trusts the default branch it last learned from the remote. A fetch moves
/// branches but never the mirror's `HEAD` (the remote's default branch), so a remote whose
/// default changed (master renamed main, or another branch made the default) is asked again
/// after this long — or at once when the branch `HEAD` names is gone.
pub(crate) const HEAD_TRUSTED_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// The file whose modification time says when the mirror's `HEAD` was last learned.
pub(crate) fn head_stamp(mirror: &Path) -> PathBuf {
    mirror.join("agentpool-head-checked")
}

/// Record that the mirror's `HEAD` is what the remote has now.
pub(crate) async fn stamp_head(mirror: &Path) -> std::io::Result<()> {
    tokio::fs::write(head_stamp(mirror), b"").await
}

/// The branch the mirror's `HEAD` names (`refs/heads/main`), from `refs` as [`ref_state`]
/// read it.
fn head_target(refs: &[(PathBuf, Vec<u8>)]) -> Option<String> {
    let (_, data) = refs.iter().find(|(p, _)| p == Path::new("HEAD"))?;
    let text = std::str::from_utf8(data).ok()?;
    text.strip_prefix("ref: ").map(|r| r.trim().to_string())
}

/// Whether the mirror's `HEAD` must be asked of the remote again: it names a branch the mirror
/// does not have, or it was learned longer than [`HEAD_TRUSTED_FOR`] ago (or never recorded).
pub(crate) async fn head_is_stale(mirror: &Path, refs: &[(PathBuf, Vec<u8>)]) -> bool {
    let Some(target) = head_target(refs) else {
        return true;
    };
    let loose = mirror.join(&target);
    let packed = refs.iter().any(|(p, data)| {
        p == Path::new("packed-refs")
            && String::from_utf8_lossy(data)
                .lines()
                .any(|l| l.split_once(' ').is_some_and(|(_, name)| name == target))
    });
    let present = packed || refs.iter().any(|(p, _)| *p == loose);
    let fresh = tokio::fs::metadata(head_stamp(mirror))
        .await
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < HEAD_TRUSTED_FOR);
    !(present && fresh)
}

/// The default branch in `git ls-remote --symref origin HEAD`'s output.
pub(crate) fn remote_head(ls_remote: &str) -> Option<&str> {
    ls_remote.lines().find_map(|l| {
        let (r, name) = l.strip_prefix("ref: ")?.split_once('\t')?;
        (name.trim() == "HEAD" && r.starts_with("refs/heads/")).then_some(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_default_branch_is_read_from_ls_remote() {
        let out = "ref: refs/heads/trunk\tHEAD\n0123abcd\tHEAD\n";
        assert_eq!(remote_head(out), Some("refs/heads/trunk"));
        assert_eq!(
            remote_head("0123abcd\tHEAD\n"),
            None,
            "no symref: nothing to learn"
        );
    }

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
