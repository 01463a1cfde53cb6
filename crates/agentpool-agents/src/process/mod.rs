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
//! end too, and a recycled pid is never hit. A recorded run ([`ProcessSpec::record_group`]) also
//! kills, last, every process carrying its marker: one that double-forked out of the tree before
//! a census saw it. When the main process exits on its own, what it left in the background is
//! killed as well, and [`run_process`] returns only once none of that remains alive.
//!
//! A worker that is itself killed (SIGKILL, OOM) cannot clean up: [`ProcessSpec::record_group`]
//! records each run, from before it starts, so that the next life of the worker can kill
//! what it left ([`kill_orphans`]).
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
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod caps;
mod mask;
mod orphans;
#[cfg(test)]
mod tests;
mod tree;

pub use mask::LineMask;
pub use orphans::kill_orphans;
use tree::{
    CENSUS_EVERY, TreeGuard, kill_survivors, remember_tree, signal_group, terminate, wait_group_gone,
};
pub use tree::{group_alive, is_running};

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
    /// Record the process group while it runs, for a worker restarted after a crash
    /// ([`kill_orphans`]).
    pub record: Option<GroupRecord>,
    /// Mask secrets in the lines before they are delivered, across the cuts of
    /// [`LongLines::Split`] ([`LineMask`]).
    pub mask: Option<LineMask>,
}

/// Where a run records its process group while it runs, so that a worker restarted after
/// being killed (SIGKILL, OOM) kills what its previous life left running ([`kill_orphans`]):
/// a file of its own in `dir`, written before the run starts, with the environment marker
/// `name=value` and one unique to the run that every process of the run carries (they are set
/// in their environment), its process group, and the worker process that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub dir: PathBuf,
    pub name: String,
    pub value: String,
}

impl GroupRecord {
    /// Runs of task `task` recorded in `dir`, marked with `AGENTPOOL_TASK_ID`.
    pub fn task(dir: impl Into<PathBuf>, task: impl std::fmt::Display) -> Self {
        Self {
            dir: dir.into(),
            name: "AGENTPOOL_TASK_ID".into(),
            value: task.to_string(),
        }
    }
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
            record: None,
            mask: None,
        }
    }

    /// Record the running process group (see [`GroupRecord`]).
    pub fn record_group(mut self, record: GroupRecord) -> Self {
        self.record = Some(record);
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

    /// Deliver lines masked by `mask`, a line cut in pieces masked as one text.
    pub fn mask_lines(mut self, mask: LineMask) -> Self {
        self.mask = Some(mask);
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
    /// A piece of a longer line whose next piece follows ([`LongLines::Split`]).
    cut: bool,
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
    // Recorded before it starts, so that a worker killed at any point leaves a record.
    let mut record = spec.record.as_ref().map(orphans::Record::begin);
    let markers = spec.record.iter().zip(&record).flat_map(|(r, rec)| rec.env(r));
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        // The markers last, so that the run's processes carry them whatever `env` says.
        .envs(markers)
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
    if caps::running_as_root() {
        // SAFETY: the hook makes only raw system calls (prctl, capget, capset).
        unsafe { cmd.pre_exec(caps::drop_file_override) };
    }
    let spawned = cmd
        .spawn()
        .map_err(|e| spawn_error(std::path::Path::new(&spec.program), e));
    let pgid = spawned
        .as_ref()
        .ok()
        .and_then(|c| c.id())
        .and_then(|p| i32::try_from(p).ok());
    let (mut child, pgid) = match (spawned, pgid) {
        (Ok(child), Some(pgid)) => (child, pgid),
        (spawned, _) => {
            if let Some(r) = &record {
                let _ = std::fs::remove_file(&r.path);
            }
            return Err(spawned
                .err()
                .unwrap_or_else(|| io::Error::other("spawned process has no pid")));
        }
    };
    if let Some(r) = record.as_mut() {
        r.started(pgid);
    }
    // Whatever happens to this future (dropped on abort, panics), the tree dies with it.
    let mut guard = TreeGuard {
        pgid,
        armed: true,
        seen: HashMap::new(),
        file: record.as_ref().map(|r| r.path.clone()),
        marker: record.as_ref().map(orphans::Record::marker),
    };

    if let (Some(data), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    let (tx, mut rx) = mpsc::channel::<Line>(256);
    let limits = (spec.max_line_bytes.max(1), spec.long_lines);
    let readers = [
        tokio::spawn(read_lines(
            child.stdout.take(),
            OutputStream::Stdout,
            limits,
            tx.clone(),
        )),
        tokio::spawn(read_lines(
            child.stderr.take(),
            OutputStream::Stderr,
            limits,
            tx.clone(),
        )),
    ];
    drop(tx);

    let over_limit = |bytes: u64| spec.max_output_bytes.is_some_and(|max| bytes > max);
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut census = tokio::time::interval_at(tokio::time::Instant::now() + CENSUS_EVERY, CENSUS_EVERY);
    census.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut killed: Option<KillReason> = None;
    let mut output_bytes: u64 = 0;
    let mut delivery = mask::Delivery::new(spec.mask.clone());
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
                    delivery.line(on_line, &line);
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
            _ = census.tick() => {
                let known = guard.seen.len();
                remember_tree(pgid, &mut guard.seen);
                if let Some(r) = record.as_ref().filter(|_| guard.seen.len() > known) {
                    r.note_tree(&guard.seen);
                }
            }
        }
    };
    // The main process is gone; what it left in its group (a background server a tool started)
    // would hold our pipes open and outlive the task, and so would a remembered process that
    // left the group, or one that double-forked out of both (found by the run's marker, before
    // the guard removes the record a restarted worker would need).
    signal_group(pgid, libc::SIGKILL);
    kill_survivors(&guard.seen).await;
    wait_group_gone(pgid, Duration::from_secs(5)).await;
    if let Some(marker) = &guard.marker {
        orphans::kill_carriers(marker).await;
    }
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
            delivery.line(on_line, &line);
        }
    }
    delivery.finish(on_line);
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

/// Sends `reader`'s lines as they come (nothing when the stream was not captured).
async fn read_lines<R: AsyncRead + Unpin>(
    reader: Option<R>,
    stream: OutputStream,
    (max_line, mode): (usize, LongLines),
    tx: mpsc::Sender<Line>,
) {
    let Some(reader) = reader else { return };
    let mut reader = BufReader::new(reader);
    loop {
        let mut bytes = Vec::new();
        match read_line_capped(&mut reader, &mut bytes, max_line, mode).await {
            Ok((0, _)) | Err(_) => return,
            Ok((consumed, cut)) => {
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                let line = Line {
                    stream,
                    bytes,
                    consumed: consumed as u64,
                    cut,
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
/// the bytes consumed (0 at end of stream) and whether the line goes on in the next call.
async fn read_line_capped<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    max: usize,
    mode: LongLines,
) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok((consumed, false));
        }
        let (len, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = max.saturating_sub(out.len());
        if mode == LongLines::Split && len > room {
            out.extend_from_slice(&buf[..room]);
            reader.consume(room);
            return Ok((consumed + room, true));
        }
        out.extend_from_slice(&buf[..len.min(room)]);
        reader.consume(len);
        consumed += len;
        if done {
            return Ok((consumed, false));
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A failed start that names the program, and the likely cause when the file is there but
/// exec still answers "not found": the interpreter its `#!` line names is missing (a Node.js
/// CLI on a machine without `node`). Its kind is kept: it still reads as the machine's fault.
fn spawn_error(program: &std::path::Path, e: io::Error) -> io::Error {
    let shown = program.display();
    let said = if e.kind() == io::ErrorKind::NotFound && program.is_file() {
        format!(
            "cannot start {shown}: {e} (the file is there: the interpreter its #! line names is likely missing)"
        )
    } else {
        format!("cannot start {shown}: {e}")
    };
    io::Error::new(e.kind(), said)
}
