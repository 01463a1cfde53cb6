//! Crash recovery: process groups a previous life of this worker left running (it was killed
//! before it could clean up) are found through the group files [`super::ProcessSpec::group_file`]
//! writes, and killed.

use std::path::Path;

use super::tree::{group_members, signal_group};

/// Kill process groups recorded in `dir` by [`ProcessSpec::group_file`] that are still alive
/// — left by a previous life of this worker that died without cleaning up (SIGKILL, OOM).
/// A group is killed only if one of its live members carries the recorded environment marker,
/// so a recycled process-group id is never hit. Returns how many groups were killed.
pub fn kill_orphans(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut killed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut lines = text.lines();
        let pgid = lines.next().and_then(|l| l.trim().parse::<i32>().ok());
        let marker = lines.next().map(str::trim).unwrap_or("");
        if let Some(pgid) = pgid
            && pgid > 1
            && !marker.is_empty()
            && group_members(pgid).iter().any(|pid| has_env(*pid, marker))
        {
            signal_group(pgid, libc::SIGKILL);
            killed += 1;
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

fn has_env(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        .unwrap_or(false)
}
