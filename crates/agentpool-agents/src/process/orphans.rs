//! Crash recovery: process groups a previous life of this worker left running (it was killed
//! before it could clean up) are found through the files [`super::ProcessSpec::record_group`]
//! writes, and killed.
//!
//! A record names the group, the environment marker its processes carry, the worker process
//! that started it (pid and start time), and the processes seen in its tree (pid and start
//! time), which finds one that left the group. A group whose worker still runs is not an
//! orphan: several workers may share one directory, and one that starts must not kill the
//! runs of another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::GroupRecord;
use super::tree::{group_members, signal_group, start_time};

/// A run's record on disk: its file, and its first lines (group, marker, worker).
pub(super) struct Record {
    pub(super) path: PathBuf,
    head: String,
}

impl Record {
    /// Write the record of group `pgid` started by this process (best effort: without it only
    /// crash clean-up is lost, not the run).
    pub(super) fn write(r: &GroupRecord, pgid: i32) -> Self {
        let _ = std::fs::create_dir_all(&r.dir);
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        let owner = start_time(me).map(|t| format!("{me} {t}")).unwrap_or_default();
        let record = Self {
            path: r.dir.join(format!("{pgid}.pgid")),
            head: format!("{pgid}\n{}={}\n{owner}\n", r.name, r.value),
        };
        let _ = std::fs::write(&record.path, &record.head);
        record
    }

    /// Add the processes seen in the run's tree, with their start times: one that left the
    /// group (`setsid`, a dev server a tool started) is found through them. Written aside and
    /// renamed, so a reader never sees half a record.
    pub(super) fn note_tree(&self, seen: &HashMap<i32, u64>) {
        let mut text = self.head.clone();
        for (pid, start) in seen {
            text.push_str(&format!("{pid} {start}\n"));
        }
        let aside = self.path.with_extension("new");
        if std::fs::write(&aside, text).is_ok() {
            let _ = std::fs::rename(&aside, &self.path);
        }
    }
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
        // A record being rewritten (`.new`) belongs to a run that is writing it.
        if path.extension().is_none_or(|x| x != "pgid") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut lines = text.lines();
        let pgid = lines.next().and_then(|l| l.trim().parse::<i32>().ok());
        let marker = lines.next().map(str::trim).unwrap_or("");
        if lines.next().is_some_and(owner_runs) {
            continue;
        }
        let mut any = false;
        if let Some(pgid) = pgid
            && pgid > 1
            && !marker.is_empty()
            && group_members(pgid).iter().any(|pid| has_env(*pid, marker))
        {
            signal_group(pgid, libc::SIGKILL);
            any = true;
        }
        // The tree seen while it ran, by pid and start time: a recycled pid is never hit.
        for (pid, start) in lines.filter_map(pid_and_start) {
            if pid > 1 && start_time(pid) == Some(start) {
                // SAFETY: kill(2) on a pid this record names, checked to be that process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                any = true;
            }
        }
        killed += usize::from(any);
        let _ = std::fs::remove_file(&path);
    }
    killed
}

/// Whether the worker process a record names (`PID START`) still runs as that process.
fn owner_runs(line: &str) -> bool {
    pid_and_start(line).is_some_and(|(pid, start)| start_time(pid) == Some(start))
}

/// `PID START` of a record's line.
fn pid_and_start(line: &str) -> Option<(i32, u64)> {
    let mut parts = line.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some((pid, start))
}

fn has_env(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        .unwrap_or(false)
}
