//! The child's process tree: reading /proc (state, parent, group, start time), signalling a
//! group and every process of a recorded tree, and waiting until they are gone — so that a run
//! ends with nothing it started left alive, not even processes that left its group.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Whether any live (non-zombie) process is in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    if std::fs::metadata("/proc/self/stat").is_err() {
        // SAFETY: kill with signal 0 only checks for existence; no memory is involved.
        return unsafe { libc::kill(-pgid, 0) == 0 };
    }
    !group_members(pgid).is_empty()
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}

/// Live members of group `pgid`.
pub(super) fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.pgrp == pgid && !matches!(s.state, 'Z' | 'X')))
        .collect()
}

/// SIGTERM the group and the child's whole tree, give them `grace` to exit, then SIGKILL both.
pub(super) async fn terminate(
    child: &mut tokio::process::Child,
    pgid: i32,
    grace: Duration,
) -> io::Result<std::process::ExitStatus> {
    // Find the tree before anything dies and gets re-parented out of it.
    let mut tree = tree_of(pgid);
    signal_group(pgid, libc::SIGTERM);
    signal_tree(&tree, libc::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            // The leader obeyed; give the rest the same grace before SIGKILL.
            let deadline = Instant::now() + grace;
            while (group_alive(pgid) || any_running(&tree)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            status?
        }
        Err(_) => {
            tree.extend(tree_of(pgid));
            signal_group(pgid, libc::SIGKILL);
            signal_tree(&tree, libc::SIGKILL);
            child.wait().await?
        }
    };
    signal_group(pgid, libc::SIGKILL);
    signal_tree(&tree, libc::SIGKILL);
    // A signal is delivered asynchronously; callers are promised a dead tree on return.
    wait_gone(&tree, Duration::from_secs(2)).await;
    Ok(status)
}

pub(super) fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
        // ESRCH (group already gone) is expected and ignored.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Signal each process of `procs` that is still the same process (same start time), and its
/// group when it leads one.
pub(super) fn signal_tree(procs: &[(i32, u64)], sig: i32) {
    for &(pid, start) in procs {
        if pid > 1 && proc_stat(pid).is_some_and(|s| s.start == start) {
            // SAFETY: kill(2) has no memory effects; a process already gone gives ESRCH.
            unsafe {
                libc::kill(pid, sig);
                if libc::getpgid(pid) == pid {
                    libc::kill(-pid, sig);
                }
            }
        }
    }
}

pub(super) fn any_running(procs: &[(i32, u64)]) -> bool {
    procs.iter().any(|(p, _)| is_running(*p))
}

/// Wait (bounded) until none of `procs` is running any more; zombies count as gone.
pub(super) async fn wait_gone(procs: &[(i32, u64)], limit: Duration) {
    let deadline = Instant::now() + limit;
    while any_running(procs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll until the group has no live member (members die asynchronously after SIGKILL).
pub(super) async fn wait_group_gone(pgid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How often the running tree is recorded.
pub(super) const CENSUS_EVERY: Duration = Duration::from_millis(500);

/// The fields of /proc/PID/stat used here.
pub(super) struct ProcStat {
    state: char,
    ppid: i32,
    pgrp: i32,
    /// Start time in clock ticks since boot: with the pid, identifies one process.
    start: u64,
}

pub(super) fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain anything:
    // state (3), ppid (4), pgrp (5), …, starttime (22).
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(ProcStat {
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

/// When process `pid` started (clock ticks since boot), while it runs and is not a zombie.
pub(super) fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid)
        .filter(|s| !matches!(s.state, 'Z' | 'X'))
        .map(|s| s.start)
}

pub(super) fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every live descendant of `root` with its start time, from /proc's parent links (empty where
/// /proc is missing).
pub(super) fn tree_of(root: i32) -> Vec<(i32, u64)> {
    let table: Vec<(i32, ProcStat)> = all_pids()
        .into_iter()
        .filter_map(|pid| proc_stat(pid).map(|s| (pid, s)))
        .filter(|(_, s)| !matches!(s.state, 'Z' | 'X'))
        .collect();
    let mut found: Vec<(i32, u64)> = vec![(root, 0)];
    let mut i = 0;
    while i < found.len() {
        let p = found[i].0;
        found.extend(
            table
                .iter()
                .filter(|(_, s)| s.ppid == p)
                .map(|(c, s)| (*c, s.start)),
        );
        i += 1;
    }
    found.remove(0);
    found
}

pub(super) fn remember_tree(root: i32, seen: &mut HashMap<i32, u64>) {
    seen.extend(tree_of(root));
}

/// SIGKILL every remembered process that still runs as the same process (same start time).
pub(super) async fn kill_survivors(seen: &HashMap<i32, u64>) {
    let alive: Vec<(i32, u64)> = seen
        .iter()
        .map(|(p, s)| (*p, *s))
        .filter(|(pid, _)| is_running(*pid))
        .collect();
    if !alive.is_empty() {
        signal_tree(&alive, libc::SIGKILL);
        wait_gone(&alive, Duration::from_secs(2)).await;
    }
}

/// Kills the group, the remembered tree and what carries the run's marker if the run is
/// abandoned half-way (the future dropped), and removes the group file once they are gone.
pub(super) struct TreeGuard {
    pub(super) pgid: i32,
    pub(super) armed: bool,
    /// Processes seen in the child's tree, with their start times.
    pub(super) seen: HashMap<i32, u64>,
    pub(super) file: Option<PathBuf>,
    /// The run's `AGENTPOOL_RUN_ID=…`, when it is recorded (and so marked).
    pub(super) marker: Option<String>,
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
            let seen: Vec<(i32, u64)> = self.seen.iter().map(|(p, s)| (*p, *s)).collect();
            signal_tree(&seen, libc::SIGKILL);
            if let Some(m) = &self.marker {
                super::orphans::kill_carriers_now(m);
            }
        }
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }
}
