//! Process control for task commands, git and agent CLIs: a child runs in its own process
//! group with exactly the environment given; its stdout/stderr arrive line by line through a
//! callback; a timeout, a cancel token or too much output end it with a [`KillReason`]; and
//! whatever way it ends, no process of its group is left behind.
//!
//! Ending a run: SIGTERM to the whole group, then SIGKILL to the group after `kill_grace`.
//! When the main process exits on its own, members it left in the background are killed too,
//! and [`run_process`] returns only once no live member of the group remains.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use agentpool_runner::process::{run_process, ProcessSpec};
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

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
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

/// Why the runner ended a process instead of letting it finish.
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
    /// Longer lines are split; bounds memory per line.
    pub max_line_bytes: usize,
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

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        let k = k.into();
        self.env.retain(|(x, _)| *x != k);
        self.env.push((k, v.into()));
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
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutcome {
    /// Exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Set when the runner ended it.
    pub killed: Option<KillReason>,
    /// The process group id it ran in (its pid).
    pub pgid: i32,
    /// Output bytes seen on stdout and stderr.
    pub output_bytes: u64,
    pub duration: Duration,
}

impl ProcessOutcome {
    /// Exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.killed.is_none() && self.exit_code == Some(0)
    }
}

/// Run `spec` to the end. `on_line` gets each output line (without its newline, invalid UTF-8
/// replaced) as it arrives; `cancel` ends the run with [`KillReason::Canceled`].
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
    // Whatever happens to this future (dropped on abort, panics), the group dies with it.
    let mut guard = GroupGuard {
        pgid,
        armed: true,
        file: spec.group_file.as_ref().map(|(f, _)| f.clone()),
    };

    if let (Some(data), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    let (tx, mut rx) = mpsc::channel::<(OutputStream, Vec<u8>)>(256);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            out,
            OutputStream::Stdout,
            spec.max_line_bytes,
            tx.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            err,
            OutputStream::Stderr,
            spec.max_line_bytes,
            tx.clone(),
        )));
    }
    drop(tx);

    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut killed: Option<KillReason> = None;
    let mut output_bytes: u64 = 0;
    let mut output_open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            line = rx.recv(), if output_open => match line {
                None => output_open = false,
                Some((stream, bytes)) => {
                    output_bytes += bytes.len() as u64;
                    if spec.max_output_bytes.is_some_and(|max| output_bytes > max) {
                        killed = Some(KillReason::OutputLimit);
                        break terminate(&mut child, pgid, spec.kill_grace).await?;
                    }
                    deliver(on_line, stream, &bytes);
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
        }
    };
    // The main process is gone; background members it left would outlive the task.
    signal_group(pgid, libc::SIGKILL);
    wait_group_gone(pgid, Duration::from_secs(5)).await;
    guard.armed = false;
    drop(guard);

    // Every writer in the group is dead now, so the pipes reach EOF; deliver what is still
    // buffered. Bounded: a process that escaped the group (setsid) could hold a pipe open.
    let drain_deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some((stream, bytes))) = tokio::time::timeout_at(drain_deadline, rx.recv()).await {
        output_bytes += bytes.len() as u64;
        if killed.is_none() && spec.max_output_bytes.is_some_and(|max| output_bytes > max) {
            killed = Some(KillReason::OutputLimit);
        }
        if killed != Some(KillReason::OutputLimit) {
            deliver(on_line, stream, &bytes);
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
    match std::fs::read_dir("/proc") {
        Ok(entries) => entries.flatten().any(|e| {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                return false;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name, which is in parentheses and may contain spaces.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let _ppid = fields.next();
            let pgrp = fields.next().and_then(|s| s.parse::<i32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
        }),
        // SAFETY: kill with signal 0 only checks for existence; no memory is involved.
        Err(_) => unsafe { libc::kill(-pgid, 0) == 0 },
    }
}

fn deliver(on_line: &mut (dyn FnMut(OutputStream, &str) + Send), stream: OutputStream, bytes: &[u8]) {
    let mut line = String::from_utf8_lossy(bytes);
    if line.ends_with('\n') {
        let trimmed = line.trim_end_matches(['\n', '\r']).len();
        line.to_mut().truncate(trimmed);
    }
    on_line(stream, &line);
}

async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    stream: OutputStream,
    max_line: usize,
    tx: mpsc::Sender<(OutputStream, Vec<u8>)>,
) {
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(max_line as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send((stream, line)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// SIGTERM the group, give it `grace` to exit, then SIGKILL it.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: i32,
    grace: Duration,
) -> io::Result<std::process::ExitStatus> {
    signal_group(pgid, libc::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            // The leader obeyed; give the rest of the group the same grace before SIGKILL.
            let deadline = Instant::now() + grace;
            while group_alive(pgid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            signal_group(pgid, libc::SIGKILL);
            status
        }
        Err(_) => {
            signal_group(pgid, libc::SIGKILL);
            child.wait().await
        }
    }
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall on a process group id we created; ESRCH (already gone) is fine.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Poll until the group has no live member (members die asynchronously after SIGKILL).
async fn wait_group_gone(pgid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Kills the group if the run is abandoned half-way (the future dropped), and removes the
/// group file once the group is gone.
struct GroupGuard {
    pgid: i32,
    armed: bool,
    file: Option<PathBuf>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
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
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    let mut f = rest.split_whitespace();
                    let state = f.next()?;
                    let _ppid = f.next();
                    let pgrp = f.next()?.parse::<i32>().ok()?;
                    Some(pgrp == pgid && state != "Z" && state != "X")
                })
                .unwrap_or(false)
        })
        .collect()
}

fn has_env(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        .unwrap_or(false)
}
