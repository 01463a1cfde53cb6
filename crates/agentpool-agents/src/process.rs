//! Process control for agent CLIs, task commands and git: a child runs in its own process group
//! with exactly the environment given and stdin from `/dev/null` (or the bytes given); its
//! stdout/stderr arrive line by line through a callback; a timeout, a cancel token or too much
//! output end it with a named [`KillReason`]; and whatever way it ends, no process it started is
//! left behind.
//!
//! Ending a run: SIGTERM to the whole group and to every process of the child's tree, then
//! SIGKILL to both after `kill_grace`. The tree matters because some agents start tool shells in
//! process groups of their own (OpenCode does), out of reach of the group signal. While the child
//! runs its tree is recorded periodically with each process's start time, so a process that left
//! the group and outlives the child (a dev server a tool started with `setsid`) is killed at the
//! end too, and a recycled pid is never hit. When the main process exits on its own, what it left
//! in the background is killed as well, and [`run_process`] returns only once no live member of
//! the group remains.
//!
//! A worker that is itself killed (SIGKILL, OOM) cannot clean up: [`ProcessSpec::group_file`]
//! records the running group so that the next life of the worker can kill it
//! ([`kill_orphans`]).
//!
//! This lives in the agents crate (not the runner) so that both the adapters and the runner's
//! git, setup and command steps use it without a dependency cycle: the runner depends on this
//! crate and re-exports this module as `agentpool_runner::process`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use agentpool_agents::process::{run_process, ProcessSpec};
//! use tokio_util::sync::CancellationToken;
//! let spec = ProcessSpec::new("sh")
//!     .arg("-c")
//!     .arg("echo hello")
//!     .env("PATH", "/usr/bin:/bin")
//!     .timeout(std::time::Duration::from_secs(5));
//! let outcome = run_process(spec, &mut |_stream, line| println!("{line}"), &CancellationToken::new()).await?;
//! assert!(outcome.success());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Why agentpool ended a process instead of letting it finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KillReason {
    /// The timeout elapsed.
    Timeout,
    /// The cancel token fired (user cancel, lost lease, worker shutdown).
    Canceled,
    /// The process wrote more than `max_output_bytes`.
    OutputLimit,
}

impl KillReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Canceled => "canceled",
            Self::OutputLimit => "output_limit",
        }
    }
}

/// What happens to a line longer than `max_line_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongLines {
    /// Deliver it in pieces of `max_line_bytes` (command logs: nothing is lost).
    Split,
    /// Deliver its first `max_line_bytes` and skip the rest (an agent's JSON stream: one
    /// runaway line becomes one unparsable line, not a flood of fragments).
    Truncate,
}

/// What to run and under which limits. The child's environment is exactly `env`: nothing is
/// inherited from the worker.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; the worker's when `None`.
    pub cwd: Option<PathBuf>,
    /// Bytes written to stdin (then closed); stdin is `/dev/null` when `None`.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Total stdout+stderr bytes allowed; the process is killed beyond that.
    pub max_output_bytes: Option<u64>,
    /// Bounds memory per line; see `long_lines`.
    pub max_line_bytes: usize,
    pub long_lines: LongLines,
    /// Record the process group here while it runs (see [`kill_orphans`]): `(file, marker)`,
    /// where `marker` is a `NAME=value` pair from `env` that identifies this run's processes.
    pub group_file: Option<(PathBuf, String)>,
}

impl ProcessSpec {
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: None,
            timeout: None,
            kill_grace: Duration::from_secs(5),
            max_output_bytes: None,
            max_line_bytes: 64 * 1024,
            long_lines: LongLines::Split,
            group_file: None,
        }
    }

    /// Record the running process group in `file` with `marker` (a `NAME=value` pair of the
    /// environment), so that a worker restarted after a crash can kill what its previous life
    /// left running ([`kill_orphans`]).
    pub fn group_file(mut self, file: impl Into<PathBuf>, marker: impl Into<String>) -> Self {
        self.group_file = Some((file.into(), marker.into()));
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set one variable (replacing an earlier value of the same name).
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        let k = k.into();
        self.env.retain(|(x, _)| *x != k);
        self.env.push((k, v.into()));
        self
    }

    /// Set every variable of `vars` (see [`ProcessSpec::env`]).
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    pub fn kill_grace(mut self, t: Duration) -> Self {
        self.kill_grace = t;
        self
    }

    pub fn max_output_bytes(mut self, n: u64) -> Self {
        self.max_output_bytes = Some(n);
        self
    }

    pub fn max_line_bytes(mut self, n: usize) -> Self {
        self.max_line_bytes = n.max(1);
        self
    }

    pub fn long_lines(mut self, mode: LongLines) -> Self {
        self.long_lines = mode;
        self
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutcome {
    /// Exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Set when agentpool ended it.
    pub killed: Option<KillReason>,
    /// The process group id it ran in (its pid).
    pub pgid: i32,
    /// Output bytes read from stdout and stderr.
    pub output_bytes: u64,
    pub duration: Duration,
}

impl ProcessOutcome {
    /// Exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.killed.is_none() && self.exit_code == Some(0)
    }
}

/// A line as read: its bytes (without the line break, cut to `max_line_bytes`) and how many
/// bytes of output it consumed.
struct Line {
    stream: OutputStream,
    bytes: Vec<u8>,
    consumed: u64,
}

/// Run `spec` to the end. `on_line` gets each output line (without its line break, invalid
/// UTF-8 replaced) as it arrives, in order per stream; `cancel` ends the run with
/// [`KillReason::Canceled`].
///
/// Returns an error only when the process could not be started or waited for.
pub async fn run_process(
    spec: ProcessSpec,
    on_line: &mut (dyn FnMut(OutputStream, &str) + Send),
    cancel: &CancellationToken,
) -> io::Result<ProcessOutcome> {
    let started = Instant::now();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A new process group whose id is the child's pid: signalling -pid reaches every
        // process the child starts, unless one deliberately leaves the group.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn()?;
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| io::Error::other("spawned process has no pid"))?;
    if let Some((file, marker)) = &spec.group_file {
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Best effort: without the file only crash clean-up is lost, not the run.
        let _ = std::fs::write(file, format!("{pgid}\n{marker}\n"));
    }
    // Whatever happens to this future (dropped on abort, panics), the tree dies with it.
    let mut guard = TreeGuard {
        pgid,
        armed: true,
        seen: HashMap::new(),
        file: spec.group_file.as_ref().map(|(f, _)| f.clone()),
    };

    if let (Some(data), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    let (tx, mut rx) = mpsc::channel::<Line>(256);
    let mut readers = Vec::new();
    let limits = (spec.max_line_bytes.max(1), spec.long_lines);
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            out,
            OutputStream::Stdout,
            limits,
            tx.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            err,
            OutputStream::Stderr,
            limits,
            tx.clone(),
        )));
    }
    drop(tx);

    let over_limit = |bytes: u64| spec.max_output_bytes.is_some_and(|max| bytes > max);
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut census = tokio::time::interval_at(tokio::time::Instant::now() + CENSUS_EVERY, CENSUS_EVERY);
    census.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut killed: Option<KillReason> = None;
    let mut output_bytes: u64 = 0;
    let mut output_open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            line = rx.recv(), if output_open => match line {
                None => output_open = false,
                Some(line) => {
                    output_bytes += line.consumed;
                    if over_limit(output_bytes) {
                        killed = Some(KillReason::OutputLimit);
                        break terminate(&mut child, pgid, spec.kill_grace).await?;
                    }
                    deliver(on_line, &line);
                }
            },
            _ = cancel.cancelled() => {
                killed = Some(KillReason::Canceled);
                break terminate(&mut child, pgid, spec.kill_grace).await?;
            }
            _ = sleep_until(deadline) => {
                killed = Some(KillReason::Timeout);
                break terminate(&mut child, pgid, spec.kill_grace).await?;
            }
            _ = census.tick() => remember_tree(pgid, &mut guard.seen),
        }
    };
    // The main process is gone; what it left in its group (a background server a tool started)
    // would hold our pipes open and outlive the task, and so would a remembered process that
    // left the group.
    signal_group(pgid, libc::SIGKILL);
    kill_survivors(&guard.seen).await;
    wait_group_gone(pgid, Duration::from_secs(5)).await;
    guard.armed = false;
    drop(guard);

    // Every writer is dead now, so the pipes reach EOF; deliver what is still buffered.
    // Bounded: a process that escaped both the group and the recorded tree could hold a pipe.
    let drain_deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(line)) = tokio::time::timeout_at(drain_deadline, rx.recv()).await {
        output_bytes += line.consumed;
        if over_limit(output_bytes) {
            killed.get_or_insert(KillReason::OutputLimit);
        } else {
            deliver(on_line, &line);
        }
    }
    for r in readers {
        r.abort();
    }
    Ok(ProcessOutcome {
        exit_code: status.code(),
        signal: status.signal(),
        killed,
        pgid,
        output_bytes,
        duration: started.elapsed(),
    })
}

/// Run `spec` and collect its stdout and stderr (lines joined with `\n`), for short-lived
/// helpers such as git.
pub async fn run_captured(
    spec: ProcessSpec,
    cancel: &CancellationToken,
) -> io::Result<(ProcessOutcome, String, String)> {
    let mut stdout = String::new();
    let mut stderr = String::new();
    let outcome = run_process(
        spec,
        &mut |stream, line| {
            let buf = match stream {
                OutputStream::Stdout => &mut stdout,
                OutputStream::Stderr => &mut stderr,
            };
            buf.push_str(line);
            buf.push('\n');
        },
        cancel,
    )
    .await?;
    Ok((outcome, stdout, stderr))
}

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

/// Every live descendant of `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    tree_of(root).into_iter().map(|(p, _)| p).collect()
}

/// Whether this process runs as root (Claude Code refuses its permission bypass as root unless
/// told it is sandboxed).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The environment every agent starts from: a PATH, a locale, and nothing inherited that could
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

fn deliver(on_line: &mut (dyn FnMut(OutputStream, &str) + Send), line: &Line) {
    on_line(line.stream, &String::from_utf8_lossy(&line.bytes));
}

async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    stream: OutputStream,
    (max_line, mode): (usize, LongLines),
    tx: mpsc::Sender<Line>,
) {
    let mut reader = BufReader::new(reader);
    loop {
        let mut bytes = Vec::new();
        match read_line_capped(&mut reader, &mut bytes, max_line, mode).await {
            Ok(0) | Err(_) => return,
            Ok(consumed) => {
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                let line = Line {
                    stream,
                    bytes,
                    consumed: consumed as u64,
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Like `read_until(b'\n')`, but keeps at most `max` bytes of the line: the rest is left for the
/// next call ([`LongLines::Split`]) or consumed and dropped ([`LongLines::Truncate`]). Returns
/// the bytes consumed (0 at end of stream).
async fn read_line_capped<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    max: usize,
    mode: LongLines,
) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (len, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = max.saturating_sub(out.len());
        if mode == LongLines::Split && len > room {
            out.extend_from_slice(&buf[..room]);
            reader.consume(room);
            return Ok(consumed + room);
        }
        out.extend_from_slice(&buf[..len.min(room)]);
        reader.consume(len);
        consumed += len;
        if done {
            return Ok(consumed);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// SIGTERM the group and the child's whole tree, give them `grace` to exit, then SIGKILL both.
async fn terminate(
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

fn signal_group(pgid: i32, sig: i32) {
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
fn signal_tree(procs: &[(i32, u64)], sig: i32) {
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

fn any_running(procs: &[(i32, u64)]) -> bool {
    procs.iter().any(|(p, _)| is_running(*p))
}

/// Wait (bounded) until none of `procs` is running any more; zombies count as gone.
async fn wait_gone(procs: &[(i32, u64)], limit: Duration) {
    let deadline = Instant::now() + limit;
    while any_running(procs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll until the group has no live member (members die asynchronously after SIGKILL).
async fn wait_group_gone(pgid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How often the running tree is recorded.
const CENSUS_EVERY: Duration = Duration::from_millis(500);

/// The fields of /proc/PID/stat used here.
struct ProcStat {
    state: char,
    ppid: i32,
    pgrp: i32,
    /// Start time in clock ticks since boot: with the pid, identifies one process.
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
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

fn all_pids() -> Vec<i32> {
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
fn tree_of(root: i32) -> Vec<(i32, u64)> {
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

fn remember_tree(root: i32, seen: &mut HashMap<i32, u64>) {
    seen.extend(tree_of(root));
}

/// SIGKILL every remembered process that still runs as the same process (same start time).
async fn kill_survivors(seen: &HashMap<i32, u64>) {
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

/// Kills the group and the remembered tree if the run is abandoned half-way (the future
/// dropped), and removes the group file once the group is gone.
struct TreeGuard {
    pgid: i32,
    armed: bool,
    /// Processes seen in the child's tree, with their start times.
    seen: HashMap<i32, u64>,
    file: Option<PathBuf>,
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
            let seen: Vec<(i32, u64)> = self.seen.iter().map(|(p, s)| (*p, *s)).collect();
            signal_tree(&seen, libc::SIGKILL);
        }
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }
}

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

/// Live members of group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.pgrp == pgid && !matches!(s.state, 'Z' | 'X')))
        .collect()
}

fn has_env(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> ProcessSpec {
        ProcessSpec::new("/bin/sh")
            .args(["-c", script])
            .cwd(std::env::temp_dir())
            .envs(base_env(None))
            .timeout(Duration::from_secs(30))
            .max_output_bytes(1 << 20)
            .kill_grace(Duration::from_secs(2))
    }

    #[tokio::test]
    async fn lines_from_both_streams_arrive_and_exit_code_is_kept() {
        let mut lines = Vec::new();
        let exit = run_process(
            spec("echo out; echo err >&2; exit 3"),
            &mut |s, l| lines.push((s, l.to_string())),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(exit.exit_code, Some(3));
        assert!(lines.contains(&(OutputStream::Stdout, "out".to_string())));
        assert!(lines.contains(&(OutputStream::Stderr, "err".to_string())));
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        let mut lines = Vec::new();
        // SAFETY: set in a test before spawning; no other thread reads this variable.
        unsafe { std::env::set_var("AGENTPOOL_SECRET_FOR_TEST", "leak") };
        run_process(
            spec("echo \"[$AGENTPOOL_SECRET_FOR_TEST]\""),
            &mut |_, l| lines.push(l.to_string()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(lines, vec!["[]".to_string()]);
    }

    #[tokio::test]
    async fn timeout_kills_the_group_including_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let s = spec(&format!("sleep 300 & echo $! > {}; wait", pidfile.display()))
            .timeout(Duration::from_millis(500));
        let exit = run_process(s, &mut |_, _| {}, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(exit.killed, Some(KillReason::Timeout));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(!process_alive(pid), "child sleep {pid} survived");
    }

    #[tokio::test]
    async fn output_limit_kills() {
        let s = spec("yes agentpool").max_output_bytes(10_000);
        let exit = run_process(s, &mut |_, _| {}, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(exit.killed, Some(KillReason::OutputLimit));
    }

    #[tokio::test]
    async fn cancel_ends_the_process() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let exit = run_process(
            spec("echo started; sleep 300"),
            &mut move |_, l| {
                if l == "started" {
                    c2.cancel();
                }
            },
            &cancel,
        )
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
        let exit = run_process(
            spec(&script),
            &mut move |_, l| {
                if l == "ready" {
                    c2.cancel();
                }
            },
            &cancel,
        )
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
        let exit = run_process(spec(&script), &mut |_, _| {}, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(exit.exit_code, Some(0));
        assert_eq!(exit.killed, None);
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(!process_alive(pid), "detached child {pid} outlived the run");
    }

    #[tokio::test]
    async fn long_lines_are_split_or_truncated_as_asked() {
        let script = "printf '%s\\n' abcdefghij; echo short";
        let mut split = Vec::new();
        let out = run_process(
            spec(script).max_line_bytes(4),
            &mut |_, l| split.push(l.to_string()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(split, ["abcd", "efgh", "ij", "shor", "t"]);
        assert_eq!(out.output_bytes, 17);
        let mut cut = Vec::new();
        let out = run_process(
            spec(script).max_line_bytes(4).long_lines(LongLines::Truncate),
            &mut |_, l| cut.push(l.to_string()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(cut, ["abcd", "shor"]);
        // The dropped rest still counts against the output limit.
        assert_eq!(out.output_bytes, 17);
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
