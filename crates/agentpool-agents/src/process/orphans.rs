//! Crash recovery: process groups a previous life of this worker left running (it was killed
//! before it could clean up) are found through the files [`super::ProcessSpec::record_group`]
//! writes, and killed.
//!
//! A record names the group, the environment marker its processes carry, and the worker
//! process that started it (pid and start time). A group whose worker still runs is not an
//! orphan: several workers may share one directory, and one that starts must not kill the
//! runs of another.

use std::path::{Path, PathBuf};

use super::GroupRecord;
use super::tree::{group_members, signal_group, start_time};

/// Write the record of group `pgid` started by this process (best effort: without it only
/// crash clean-up is lost, not the run); its path, for removal when the group is gone.
pub(super) fn record(r: &GroupRecord, pgid: i32) -> PathBuf {
    let _ = std::fs::create_dir_all(&r.dir);
    let file = r.dir.join(format!("{pgid}.pgid"));
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let owner = start_time(me).map(|t| format!("{me} {t}")).unwrap_or_default();
    let _ = std::fs::write(&file, format!("{pgid}\n{}={}\n{owner}\n", r.name, r.value));
    file
}

/// Kill process groups recorded in `dir` by [`super::ProcessSpec::record_group`] that are
/// still alive and whose worker is gone — left by a previous life of this worker that died
/// without cleaning up (SIGKILL, OOM). A group is killed only if one of its live members
/// carries the recorded environment marker, so a recycled process-group id is never hit.
/// Returns how many groups were killed.
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
        if lines.next().is_some_and(owner_runs) {
            continue;
        }
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

/// Whether the worker process a record names (`PID START`) still runs as that process.
fn owner_runs(line: &str) -> bool {
    let mut parts = line.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(pid)), Some(Ok(start))) => {
            i32::try_from(pid).is_ok_and(|pid| start_time(pid) == Some(start))
        }
        _ => false,
    }
}

fn has_env(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        .unwrap_or(false)
}
