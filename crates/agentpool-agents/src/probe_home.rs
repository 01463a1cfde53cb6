//! The throwaway HOME of an agent's `--version` probe, and the sweep of ones left behind.
//!
//! A probe's HOME is removed when the probe ends. It can still be left behind: when the process
//! exits while a probe runs (a short-lived CLI call, a test binary finishing), or when the
//! CLI, killed as its probe is dropped, writes its settings directories once more before it
//! dies. So the first probe of a process also removes probe homes older than any probe can
//! run; without that, every such exit would leave a directory in the temp dir for good.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Name prefix of a probe's HOME in the temp directory.
pub(crate) const PREFIX: &str = "agentpool-version-";

/// How old a probe home must be to be swept: far beyond a probe's timeout (20 s), so a probe
/// still running in another process is never touched.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(600);

/// A new probe home in `parent` (the temp directory), removed when dropped.
pub(crate) fn create(parent: &Path) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)
}

/// Remove the probe homes in `parent` last modified more than `older_than` ago; returns how
/// many were removed. Best effort: an entry that cannot be read or removed is skipped.
pub(crate) fn sweep(parent: &Path, older_than: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        // `symlink_metadata`: a link named like a probe home is not followed or swept.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
        if meta.is_dir()
            && age.is_some_and(|a| a > older_than)
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age_by(path: &Path, by: Duration) {
        let dir = std::fs::File::open(path).expect("open dir");
        dir.set_modified(SystemTime::now() - by).expect("set mtime");
    }

    #[test]
    fn sweep_removes_only_stale_probe_homes() {
        let parent = tempfile::tempdir().expect("parent");
        let stale = create(parent.path()).expect("stale home");
        std::fs::create_dir_all(stale.path().join(".cache/node")).expect("cache dir");
        std::fs::write(stale.path().join(".cache/node/x"), "x").expect("file");
        age_by(stale.path(), Duration::from_secs(3600));
        let stale_path = stale.keep();

        let fresh = create(parent.path()).expect("fresh home");
        let other = parent.path().join("someone-else");
        std::fs::create_dir(&other).expect("other dir");
        age_by(&other, Duration::from_secs(3600));

        assert_eq!(sweep(parent.path(), STALE_AFTER), 1);
        assert!(!stale_path.exists(), "an old probe home is removed");
        assert!(fresh.path().exists(), "a probe home in use is kept");
        assert!(other.exists(), "a directory not named like a probe home is kept");
    }
}
