//! Crash recovery: processes a previous life of this worker left running (it was killed
//! before it could clean up) are found through the files [`super::ProcessSpec::record_group`]
//! writes, and killed. The run's marker is also searched for at the end of every recorded run
//! ([`kill_carriers`]): a process that double-forked out of the run's group and tree
//! (`(setsid cmd &)`, reparented to init before any census could see it) still carries it.
//!
//! A run's record is written *before* its process starts, so a worker killed at any point of
//! a run leaves one. It names, line by line: the process group (0 until the process started),
//! the task's environment marker, the worker process that started the run (pid and start
//! time), the run's own marker `AGENTPOOL_RUN_ID=…` (unique to the run: every process of the
//! run, and whatever they start, inherits it), and the processes seen in its tree (pid and
//! start time), which finds one that left the group and cleared its environment. A record
//! whose worker still runs is not an orphan's: several workers may share one directory, and
//! one that starts must not kill the runs of another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::GroupRecord;
use super::tree::{group_members, is_running, signal_group, start_time};

/// The name of the marker unique to one run.
const RUN_MARKER: &str = "AGENTPOOL_RUN_ID";

/// This worker process, as a record names it: `PID START` (empty if unreadable). Read once:
/// it does not change while the process lives.
fn this_process() -> &'static str {
    static ME: OnceLock<String> = OnceLock::new();
    ME.get_or_init(|| {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        start_time(me).map(|t| format!("{me} {t}")).unwrap_or_default()
    })
}

/// What the ids of this process's runs start with: this process by pid and start time, or,
/// if its start time cannot be read, by pid and the time of its first run.
fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| match this_process() {
        "" => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}-t{nanos}", std::process::id())
        }
        me => me.replace(' ', "-"),
    })
}

/// A run's record on disk: its file, what it says of the run, and the run's marker.
pub(super) struct Record {
    pub(super) path: PathBuf,
    pgid: i32,
    task_marker: String,
    run_id: String,
}

impl Record {
    /// Write the record of a run about to start (best effort: without it only crash clean-up
    /// is lost, not the run). Its id is unique to this run: this process (pid and start
    /// time, so not a previous life under a recycled pid) and a counter.
    pub(super) fn begin(r: &GroupRecord) -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let run_id = format!("{}-{n}", run_prefix());
        let _ = std::fs::create_dir_all(&r.dir);
        let record = Self {
            path: r.dir.join(format!("{run_id}.pgid")),
            pgid: 0,
            task_marker: format!("{}={}", r.name, r.value),
            run_id,
        };
        record.write(&HashMap::new());
        record
    }

    /// The environment the run's processes carry: the task's marker and the run's own.
    pub(super) fn env(&self, r: &GroupRecord) -> [(String, String); 2] {
        [
            (r.name.clone(), r.value.clone()),
            (RUN_MARKER.to_string(), self.run_id.clone()),
        ]
    }

    /// `AGENTPOOL_RUN_ID=…`: what every process of the run carries in its environment.
    pub(super) fn marker(&self) -> String {
        format!("{RUN_MARKER}={}", self.run_id)
    }

    /// The run's process started as group `pgid`.
    pub(super) fn started(&mut self, pgid: i32) {
        self.pgid = pgid;
        self.write(&HashMap::new());
    }

    /// Add the processes seen in the run's tree, with their start times: one that left the
    /// group (`setsid`, a dev server a tool started) is found through them.
    pub(super) fn note_tree(&self, seen: &HashMap<i32, u64>) {
        self.write(seen);
    }

    /// Write the record aside and rename it over the old one, so a reader never sees half
    /// of one.
    fn write(&self, seen: &HashMap<i32, u64>) {
        let mut text = format!(
            "{}\n{}\n{}\n{RUN_MARKER}={}\n",
            self.pgid,
            self.task_marker,
            this_process(),
            self.run_id
        );
        for (pid, start) in seen {
            text.push_str(&format!("{pid} {start}\n"));
        }
        let aside = self.path.with_extension("new");
        if std::fs::write(&aside, text).is_ok() {
            let _ = std::fs::rename(&aside, &self.path);
        }
    }
}

/// Kill what the records in `dir` ([`super::ProcessSpec::record_group`]) name whose worker is
/// gone — left by a previous life of this worker that died without cleaning up (SIGKILL,
/// OOM): every process carrying the run's marker, the recorded group if a live member carries
/// it, and the recorded tree's processes whose start times match. So a recycled pid or group
/// id is never hit. Returns how many runs had something to kill.
pub fn kill_orphans(dir: &Path) -> usize {
    let dead = dead_runs(dir);
    // One pass over every process's environment serves all the records: a worker that died
    // with many runs under way must not read /proc once per run at start-up.
    let carriers = carrying(dead.iter().filter_map(|d| d.run_marker.as_deref()));
    let mut killed = 0;
    for d in &dead {
        let mut any = false;
        if d.pgid > 1
            && !d.marker().is_empty()
            && group_members(d.pgid).iter().any(|pid| has_env(*pid, d.marker()))
        {
            signal_group(d.pgid, libc::SIGKILL);
            any = true;
        }
        // Only a run's own marker is searched for everywhere: a task's may also be carried by
        // a live run of the same task on another worker.
        for pid in d
            .run_marker
            .as_ref()
            .and_then(|m| carriers.get(m))
            .into_iter()
            .flatten()
        {
            // SAFETY: kill(2) on a live process found carrying the dead run's marker.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            any = true;
        }
        // The tree seen while it ran, by pid and start time: a recycled pid is never hit.
        for &(pid, start) in &d.tree {
            if pid > 1 && start_time(pid) == Some(start) {
                // SAFETY: kill(2) on a pid this record names, checked to be that process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                any = true;
            }
        }
        killed += usize::from(any);
        let _ = std::fs::remove_file(&d.path);
    }
    killed
}

/// How many times the end of a run looks for what carries its marker. A carrier that forks
/// while it is killed can start another after the scan passed it, so scans repeat until one
/// finds none; bounded, so that processes forking faster than they die (or a carrier that
/// will not die, stuck in the kernel) cannot hold the run's end forever.
const END_SCANS: usize = 20;

/// How long one round waits for the carriers it killed to be gone before looking again.
const END_ROUND_WAIT: Duration = Duration::from_millis(500);

/// At the end of a run, after its group and tree were killed: SIGKILL every process still
/// carrying the run's `marker` (`AGENTPOOL_RUN_ID=…`, unique to the run, so concurrent runs
/// of this worker, even of the same task, are untouched) and wait until they are gone. This
/// finds what escaped both the group and the census of the tree: a double fork with `setsid`
/// is reparented to init within microseconds, still with the task's environment and
/// credentials. A process that also cleared its environment is out of its reach.
pub(super) async fn kill_carriers(marker: &str) {
    for _ in 0..END_SCANS {
        let found = carriers_of(marker);
        if found.is_empty() {
            return;
        }
        kill_all(&found);
        // SIGKILL is delivered asynchronously: look again once these are gone, so that the
        // next scan finds only what they started meanwhile.
        let deadline = Instant::now() + END_ROUND_WAIT;
        while found.iter().any(|p| is_running(*p)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tracing::warn!(
        marker,
        "processes of an ended run were still being found after {END_SCANS} scans"
    );
}

/// [`kill_carriers`] for a run abandoned half-way (its future dropped), which cannot wait:
/// the scans repeat at once, a carrier that is dying but not yet dead found (and signalled)
/// again at worst.
pub(super) fn kill_carriers_now(marker: &str) {
    for _ in 0..END_SCANS {
        let found = carriers_of(marker);
        if found.is_empty() {
            return;
        }
        kill_all(&found);
    }
}

fn carriers_of(marker: &str) -> Vec<i32> {
    carrying(std::iter::once(marker))
        .into_values()
        .flatten()
        .collect()
}

fn kill_all(pids: &[i32]) {
    for pid in pids {
        // SAFETY: kill(2) on a live process just found carrying the run's marker; it has no
        // memory effects, and one that died since gives ESRCH.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

/// A record in the directory whose worker is gone, as read.
struct DeadRun {
    path: PathBuf,
    /// The run's group (0 or unreadable: it had not started).
    pgid: i32,
    task_marker: String,
    /// `AGENTPOOL_RUN_ID=…`; a record of an older worker has none.
    run_marker: Option<String>,
    tree: Vec<(i32, u64)>,
}

impl DeadRun {
    /// What a live member of the recorded group must carry to be the run's: its own marker,
    /// or for an older worker's record the task's.
    fn marker(&self) -> &str {
        self.run_marker.as_deref().unwrap_or(&self.task_marker)
    }
}

/// The records in `dir` whose worker no longer runs. A record being rewritten (`.new`)
/// belongs to a run that is writing it, so only `.pgid` files are read.
fn dead_runs(dir: &Path) -> Vec<DeadRun> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dead = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|x| x != "pgid") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut lines = text.lines();
        let pgid = lines
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
            .unwrap_or(0);
        let task_marker = lines.next().map(str::trim).unwrap_or("").to_string();
        if lines.next().is_some_and(owner_runs) {
            continue;
        }
        let rest: Vec<&str> = lines.map(str::trim).collect();
        let run_marker = rest
            .iter()
            .find(|l| l.starts_with(RUN_MARKER) && l.contains('='))
            .map(|l| l.to_string());
        let tree = rest.iter().filter_map(|l| pid_and_start(l)).collect();
        dead.push(DeadRun {
            path,
            pgid,
            task_marker,
            run_marker,
            tree,
        });
    }
    dead
}

/// The live processes (other than this one) carrying each of `markers` in their environment,
/// in one pass over /proc; only those this worker may read, which are those it may signal.
fn carrying<'a>(markers: impl Iterator<Item = &'a str>) -> HashMap<String, Vec<i32>> {
    let wanted: std::collections::HashSet<&[u8]> = markers.map(str::as_bytes).collect();
    let mut found: HashMap<String, Vec<i32>> = HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for pid in procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if pid <= 1 || pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        for kv in env.split(|b| *b == 0).filter(|kv| wanted.contains(kv)) {
            found
                .entry(String::from_utf8_lossy(kv).into_owned())
                .or_default()
                .push(pid);
        }
    }
    found
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
