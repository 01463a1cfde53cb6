//! Per-task private directories: one under a parent nobody can list (mode 0311), named by 128
//! random bits, created 0700, removed at the task's end. Tasks of one worker run as the same
//! user, so permission bits alone cannot keep one task out of another's files; what keeps a
//! task from finding another's workspace, HOME (agent logins and config) or askpass directory
//! is that it cannot list the parent and cannot guess the name. docs/guarantees.md says what
//! this does and does not protect against.

use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a parent of private directories: write and search for the owner (to create and
/// remove entries, and to reach an entry whose name it knows), no read: nobody lists it.
pub const PARENT_MODE: u32 = 0o311;

/// A private directory, removed when dropped unless [`PrivateDir::remove`] already did or
/// [`PrivateDir::keep`] was called.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    armed: bool,
}

impl PrivateDir {
    /// Create `parent` if needed, make it non-listable, and create a fresh 0700 directory with
    /// an unguessable name in it.
    pub fn create(parent: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(parent)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(PARENT_MODE))?;
        let path = parent.join(random_name()?);
        // `create` (not `recursive`): the name is new, so an existing entry is an error.
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        // The umask may have cleared bits, never added any; set exactly 0700 anyway.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self { path, armed: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the directory in place (the worker was asked to keep workspaces).
    pub fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }

    /// Remove the directory on a blocking-pool thread: a workspace can hold a large checkout,
    /// and deleting it on a runtime thread would hold up the worker's other tasks and its
    /// heartbeats.
    pub async fn remove(mut self) {
        self.armed = false;
        let path = std::mem::take(&mut self.path);
        let removed = tokio::task::spawn_blocking(move || remove(&path)).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!("cannot remove a task's private directory: {e}");
        }
    }
}

impl Drop for PrivateDir {
    /// The path the task took when it did not end normally (its future was dropped).
    fn drop(&mut self) {
        if self.armed {
            let _ = remove(&self.path);
        }
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// 128 random bits from the kernel, as 32 hex digits.
fn random_name() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_unlistable_and_names_are_fresh_and_private() {
        let t = tempfile::tempdir().unwrap();
        let parent = t.path().join("private");
        let a = PrivateDir::create(&parent).unwrap();
        let b = PrivateDir::create(&parent).unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 32);
        assert!(name.bytes().all(|c| c.is_ascii_hexdigit()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&parent), 0o311);
        assert_eq!(mode(a.path()), 0o700);
        // Even the owner cannot list the parent (a root test runner could: it bypasses modes).
        if unsafe { libc::geteuid() } != 0 {
            let e = std::fs::read_dir(&parent).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        }
        let kept = a.path().to_path_buf();
        drop(a);
        assert!(!kept.exists());
        let kept = b.keep();
        assert!(kept.is_dir());
    }

    /// Removal runs off the runtime's threads: on a one-thread runtime, another task (the
    /// heartbeat loop, in the worker) gets to run while a directory is being deleted.
    #[tokio::test(flavor = "current_thread")]
    async fn removal_lets_other_tasks_run() {
        let t = tempfile::tempdir().unwrap();
        let dir = PrivateDir::create(&t.path().join("private")).unwrap();
        for i in 0..500 {
            std::fs::write(dir.path().join(i.to_string()), "x").unwrap();
        }
        let path = dir.path().to_path_buf();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        });
        dir.remove().await;
        assert!(
            ticks.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "removal held the runtime"
        );
        assert!(!path.exists());
        ticker.abort();
    }
}
