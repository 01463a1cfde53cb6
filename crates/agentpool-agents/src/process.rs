//! Running a child process the way agentpool runs agents and commands: its own process group,
//! a cleared environment plus what it needs, stdin from `/dev/null`, output read line by line,
//! and a `select!` over exit, timeout, cancel and output-too-large, each with a named
//! [`KillReason`]. Killing escalates SIGTERM → SIGKILL on the whole group, so an agent's tool
//! children (shells, test runners) end with it.
//!
//! This lives in the agents crate (not the runner) so that both the adapters and the runner's
//! `command`/setup steps can use it without a dependency cycle: the runner depends on this crate.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Why agentpool ended a process itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    Timeout,
    Canceled,
    OutputLimit,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The complete environment: the child inherits nothing else.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Total bytes read from stdout and stderr before the process is killed.
    pub max_output_bytes: u64,
    /// How long SIGTERM is given before SIGKILL.
    pub kill_grace: Duration,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessExit {
    /// The exit code, when it exited rather than died of a signal.
    pub code: Option<i32>,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// Set when agentpool ended it.
    pub killed: Option<KillReason>,
    pub duration: Duration,
    /// Bytes of output read (stdout + stderr).
    pub output_bytes: u64,
}

impl ProcessExit {
    pub fn success(&self) -> bool {
        self.killed.is_none() && self.code == Some(0)
    }
}

/// The longest single line kept; longer lines are cut (the rest is still counted and skipped),
/// so one runaway line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Run `spec`, calling `on_line` for every output line (in arrival order per stream, without the
/// newline; invalid UTF-8 replaced). Returns when the process has ended and its output is read.
pub async fn run_process(
    spec: &ProcessSpec,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(Stream, &str),
) -> std::io::Result<ProcessExit> {
    let started = Instant::now();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A new process group whose id is the child's pid: signalling -pid reaches every
        // process the agent starts, unless one deliberately leaves the group.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|p| p as i32);

    let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(256);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(out, Stream::Stdout, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(err, Stream::Stderr, tx.clone())));
    }
    drop(tx);

    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut output_bytes: u64 = 0;
    let mut killed: Option<KillReason> = None;
    let mut status = None;
    let mut channel_open = true;
    // Processes seen in the tree while it ran, with their start times. One that left the
    // group and outlives the agent (a dev server a tool started with setsid) is killed at the
    // end; the start time guards against a reused pid.
    let mut seen: HashMap<i32, u64> = HashMap::new();
    let mut census = tokio::time::interval(CENSUS_EVERY);
    census.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    // Phase 1: until the child exits (or we decide to kill it).
    while status.is_none() && killed.is_none() {
        tokio::select! {
            s = child.wait() => { status = Some(s?); }
            msg = rx.recv(), if channel_open => match msg {
                Some((stream, line)) => {
                    output_bytes += line.len() as u64 + 1;
                    if output_bytes > spec.max_output_bytes {
                        killed = Some(KillReason::OutputLimit);
                    } else {
                        on_line(stream, &String::from_utf8_lossy(&line));
                    }
                }
                None => channel_open = false,
            },
            _ = &mut deadline => { killed = Some(KillReason::Timeout); }
            _ = cancel.cancelled() => { killed = Some(KillReason::Canceled); }
            _ = census.tick() => {
                if let Some(pgid) = pgid {
                    remember_tree(pgid, &mut seen);
                }
            }
        }
    }

    let status = match status {
        Some(s) => {
            // The leader is gone; anything it left running in its group (a background server a
            // tool started) would hold our pipes open and outlive the task.
            if let Some(pgid) = pgid {
                signal_group(pgid, libc::SIGKILL);
            }
            kill_survivors(&seen).await;
            s
        }
        None => {
            // Some agents start tool shells in process groups of their own (OpenCode does), out
            // of reach of the group signal: find the whole tree before anything dies and gets
            // re-parented, and signal each member too.
            let mut tree = pgid.map(descendants).unwrap_or_default();
            if let Some(pgid) = pgid {
                signal_group(pgid, libc::SIGTERM);
                signal_all(&tree, libc::SIGTERM);
            }
            let status = match tokio::time::timeout(spec.kill_grace, child.wait()).await {
                Ok(s) => s?,
                Err(_) => {
                    if let Some(pgid) = pgid {
                        tree.extend(descendants(pgid));
                        signal_group(pgid, libc::SIGKILL);
                    }
                    child.wait().await?
                }
            };
            if let Some(pgid) = pgid {
                signal_group(pgid, libc::SIGKILL);
                signal_all(&tree, libc::SIGKILL);
            }
            // A signal is delivered asynchronously; callers are promised a dead tree on return.
            wait_gone(&tree, Duration::from_secs(2)).await;
            kill_survivors(&seen).await;
            status
        }
    };

    // Phase 2: drain what is left in the pipes (every writer is dead now, so this ends).
    while let Some((stream, line)) = rx.recv().await {
        output_bytes += line.len() as u64 + 1;
        if killed.is_none() && output_bytes > spec.max_output_bytes {
            killed = Some(KillReason::OutputLimit);
        }
        if output_bytes <= spec.max_output_bytes {
            on_line(stream, &String::from_utf8_lossy(&line));
        }
    }
    for r in readers {
        let _ = r.await;
    }

    use std::os::unix::process::ExitStatusExt;
    Ok(ProcessExit {
        code: status.code(),
        signal: status.signal(),
        killed,
        duration: started.elapsed(),
        output_bytes,
    })
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
        // ESRCH (group already gone) is expected and ignored.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Wait (bounded) until none of `pids` is running any more; zombies count as gone.
async fn wait_gone(pids: &[i32], limit: Duration) {
    let deadline = Instant::now() + limit;
    while pids.iter().any(|p| is_running(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Signal each process (and its group, when it leads one) in `pids`.
fn signal_all(pids: &[i32], signal: i32) {
    for &pid in pids {
        if pid > 1 {
            // SAFETY: kill(2) has no memory effects; a process already gone gives ESRCH.
            unsafe {
                libc::kill(pid, signal);
                if libc::getpgid(pid) == pid {
                    libc::kill(-pid, signal);
                }
            }
        }
    }
}

/// How often the running tree is recorded.
const CENSUS_EVERY: Duration = Duration::from_millis(500);

/// `(ppid, start time)` of a process from /proc/PID/stat.
fn stat_of(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state (3), ppid (4), …, starttime (22).
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((rest.get(1)?.parse().ok()?, rest.get(19)?.parse().ok()?))
}

/// Every live descendant of `root` with its start time, from /proc's parent links (empty where
/// /proc is missing).
fn tree_of(root: i32) -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let table: Vec<(i32, i32, u64)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(|pid| stat_of(pid).map(|(ppid, start)| (pid, ppid, start)))
        .collect();
    let mut found: Vec<(i32, u64)> = vec![(root, 0)];
    let mut i = 0;
    while i < found.len() {
        let p = found[i].0;
        found.extend(
            table
                .iter()
                .filter(|(_, pp, _)| *pp == p)
                .map(|(c, _, st)| (*c, *st)),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Every live descendant of `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    tree_of(root).into_iter().map(|(p, _)| p).collect()
}

fn remember_tree(root: i32, seen: &mut HashMap<i32, u64>) {
    for (pid, start) in tree_of(root) {
        seen.insert(pid, start);
    }
}

/// SIGKILL every remembered process that still runs as the same process (same start time).
async fn kill_survivors(seen: &HashMap<i32, u64>) {
    let alive: Vec<i32> = seen
        .iter()
        .filter(|(pid, start)| is_running(**pid) && stat_of(**pid).is_some_and(|(_, s)| s == **start))
        .map(|(pid, _)| *pid)
        .collect();
    if !alive.is_empty() {
        signal_all(&alive, libc::SIGKILL);
        wait_gone(&alive, Duration::from_secs(2)).await;
    }
}

async fn read_lines<R: AsyncRead + Unpin>(reader: R, stream: Stream, tx: mpsc::Sender<(Stream, Vec<u8>)>) {
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = Vec::new();
        match read_line_capped(&mut reader, &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                if tx.send((stream, line)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Like `read_until(b'\n')`, but keeps at most [`MAX_LINE_BYTES`] of the line. Returns the bytes
/// consumed (0 at end of stream).
async fn read_line_capped<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        reader.consume(n);
        consumed += n;
        if done {
            return Ok(consumed);
        }
    }
}

/// Whether this process runs as root (Claude Code refuses its permission bypass as root unless
/// told it is sandboxed).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The environment every child starts from: a PATH, a locale, and nothing inherited that could
/// carry the worker's own secrets.
pub fn base_env(path: Option<&str>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let path = path
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_string());
    env.insert("PATH".into(), path);
    env.insert("LANG".into(), "C.UTF-8".into());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> ProcessSpec {
        ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: base_env(None),
            timeout: Duration::from_secs(30),
            max_output_bytes: 1 << 20,
            kill_grace: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn lines_from_both_streams_arrive_and_exit_code_is_kept() {
        let mut lines = Vec::new();
        let exit = run_process(
            &spec("echo out; echo err >&2; exit 3"),
            &CancellationToken::new(),
            |s, l| lines.push((s, l.to_string())),
        )
        .await
        .unwrap();
        assert_eq!(exit.code, Some(3));
        assert!(lines.contains(&(Stream::Stdout, "out".to_string())));
        assert!(lines.contains(&(Stream::Stderr, "err".to_string())));
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        let mut lines = Vec::new();
        // SAFETY: set in a test before spawning; no other thread reads this variable.
        unsafe { std::env::set_var("AGENTPOOL_SECRET_FOR_TEST", "leak") };
        run_process(
            &spec("echo \"[$AGENTPOOL_SECRET_FOR_TEST]\""),
            &CancellationToken::new(),
            |_, l| lines.push(l.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(lines, vec!["[]".to_string()]);
    }

    #[tokio::test]
    async fn timeout_kills_the_group_including_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut s = spec(&format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        s.timeout = Duration::from_millis(500);
        let exit = run_process(&s, &CancellationToken::new(), |_, _| {})
            .await
            .unwrap();
        assert_eq!(exit.killed, Some(KillReason::Timeout));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(!process_alive(pid), "child sleep {pid} survived");
    }

    #[tokio::test]
    async fn output_limit_kills() {
        let mut s = spec("yes agentpool");
        s.max_output_bytes = 10_000;
        let exit = run_process(&s, &CancellationToken::new(), |_, _| {})
            .await
            .unwrap();
        assert_eq!(exit.killed, Some(KillReason::OutputLimit));
    }

    #[tokio::test]
    async fn cancel_ends_the_process() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let exit = run_process(&spec("echo started; sleep 300"), &cancel, move |_, l| {
            if l == "started" {
                c2.cancel();
            }
        })
        .await
        .unwrap();
        assert_eq!(exit.killed, Some(KillReason::Canceled));
        assert!(exit.duration < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn cancel_reaches_children_that_left_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        // setsid puts the sleeper in a session and group of its own, as some agents do.
        let script = format!(
            "setsid sh -c 'echo $$ > {p}; exec sleep 300' & while [ ! -s {p} ]; do sleep 0.05; done; echo ready; wait",
            p = pidfile.display()
        );
        let exit = run_process(&spec(&script), &cancel, move |_, l| {
            if l == "ready" {
                c2.cancel();
            }
        })
        .await
        .unwrap();
        assert_eq!(exit.killed, Some(KillReason::Canceled));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(!process_alive(pid), "detached child {pid} survived");
    }

    #[tokio::test]
    async fn a_detached_child_left_behind_by_a_clean_exit_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The sleeper leaves the group, then the leader exits 0 after the tree was recorded.
        let script = format!(
            "setsid sh -c 'echo $$ > {p}; exec sleep 300' & sleep 1.5; exit 0",
            p = pidfile.display()
        );
        let exit = run_process(&spec(&script), &CancellationToken::new(), |_, _| {})
            .await
            .unwrap();
        assert_eq!(exit.code, Some(0));
        assert_eq!(exit.killed, None);
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(!process_alive(pid), "detached child {pid} outlived the run");
    }

    /// Alive and not a zombie.
    pub(crate) fn process_alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => !s
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }
}
