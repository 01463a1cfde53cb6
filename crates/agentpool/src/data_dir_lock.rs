//! Who runs an embedded pool on a data dir: `up` holds `<data dir>/up.lock` exclusively for
//! its whole life, a transient `run` holds it shared. `up.json` says where a pool listens, but
//! it is written only once the pool is up: two `up`s started at the same moment would both
//! find none and both run, claiming and rescuing each other's tasks. The lock is taken before
//! anything starts, so the second one is refused at once; transient runs may share a data dir
//! with each other (each follows its own task), but not with an `up`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config;
use crate::exit::{Exit, ExitCode};

/// The lock file, in the data dir. It holds the pid of the `up` that holds it exclusively.
const LOCK_FILE: &str = "up.lock";

/// The data dir's lock, held until this is dropped (the descriptor is close-on-exec, so the
/// commands a pool runs do not inherit it and a dead pool's leftovers do not keep it).
#[derive(Debug)]
pub struct DataDirLock {
    data_dir: PathBuf,
    file: File,
    /// `up`'s: the file names its pid, cleared when it lets go.
    exclusive: bool,
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        if self.exclusive {
            // While the lock is still held: a pid left behind could later be another
            // process's, named in a refusal as the pool that runs.
            let _ = self.file.set_len(0);
        }
    }
}

/// Whether the lock could be taken.
enum Taken {
    Yes(File),
    /// Another process holds it in a way that excludes this one.
    Busy(File),
}

fn take(data_dir: &Path, how: libc::c_int) -> anyhow::Result<Taken> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let path = data_dir.join(LOCK_FILE);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match try_lock(&file, how) {
        Ok(true) => Ok(Taken::Yes(file)),
        Ok(false) => Ok(Taken::Busy(file)),
        Err(e) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Take the lock `how` on `file` without waiting: `false` when another holder's lock stands
/// in the way. Released when the file closes.
fn try_lock(file: &File, how: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock(2) on a descriptor the caller owns for as long as the call.
    if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

/// The pid the lock file names, if that process still runs: the `up` that holds it (a
/// transient `run` writes none, and a pid left by an `up` that was killed names a dead
/// process, or one that no longer is ours to name).
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
    alive.then(|| u32::try_from(pid).ok()).flatten()
}

/// `up`'s lock: exclusive, for as long as it runs. Refused at once (exit code 1, one line)
/// when another `up` runs or starts on the data dir, or a transient `run` uses it.
pub fn for_up(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    match take(data_dir, libc::LOCK_EX)? {
        Taken::Yes(mut file) => {
            // Best effort: the pid only names this process in a second `up`'s refusal.
            let _ = file
                .set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
                .and_then(|()| writeln!(file, "{}", std::process::id()));
            Ok(DataDirLock {
                data_dir: data_dir.to_path_buf(),
                file,
                exclusive: true,
            })
        }
        Taken::Busy(mut file) => {
            let dir = data_dir.display();
            // Only transient runs hold it if a shared lock can be had; the pid in the file
            // cannot tell, as an `up` that just took the lock may not have written it yet.
            let shared = try_lock(&file, libc::LOCK_SH).unwrap_or(false);
            // An `up` writes its pid just after it takes the lock: give it that moment.
            let mut pid = holder_pid(&mut file);
            for _ in 0..20 {
                if shared || pid.is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
                pid = holder_pid(&mut file);
            }
            let message = match pid {
                _ if shared => {
                    format!("a transient `agentpool run` uses {dir}: start `agentpool up` once it has ended")
                }
                Some(pid) => match config::read_up_state(data_dir).filter(|s| s.pid == pid) {
                    Some(up) => format!(
                        "an embedded pool already runs for {dir} at {} (pid {pid})",
                        up.url
                    ),
                    None => format!("an embedded pool already runs for {dir} (pid {pid}, starting)"),
                },
                None => format!("an embedded pool already runs for {dir} (starting)"),
            };
            Err(Exit::new(ExitCode::Failed, message).into())
        }
    }
}

/// Whether an `up` holds the data dir (it takes the lock before anything else, and writes where
/// it listens only once it is up): a shared lock cannot be had. Nothing is created or held.
pub fn held_by_up(data_dir: &Path) -> bool {
    let Ok(file) = File::open(data_dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(try_lock(&file, libc::LOCK_SH), Ok(false))
}

/// A transient `run`'s lock: shared with other transient runs, refused (exit code 1) while
/// an `up` holds the data dir — one that is still starting, since `run` found no server.
pub fn for_transient_run(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    match take(data_dir, libc::LOCK_SH)? {
        Taken::Yes(file) => Ok(DataDirLock {
            data_dir: data_dir.to_path_buf(),
            file,
            exclusive: false,
        }),
        Taken::Busy(mut file) => {
            let pid = holder_pid(&mut file)
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            Err(Exit::new(
                ExitCode::Failed,
                format!(
                    "an embedded pool is starting for {}{pid}: run again once it is up, and the task runs on it",
                    data_dir.display()
                ),
            )
            .into())
        }
    }
}

impl DataDirLock {
    /// Kill what the workers of a pool on this data dir that died (`kill -9`, OOM) left
    /// running in the worker directories that the pool starting now does not use (its
    /// `workers` use `work/worker-0` to `work/worker-{workers - 1}`, and each cleans its own
    /// as it starts): a restart with fewer workers must not leave the others' commands
    /// running. Only under the exclusive lock: then no other pool's workers run here (and a
    /// record whose worker process still runs is not touched anyway).
    pub fn kill_leftovers_of_other_workers(&self, workers: u32) {
        if !self.exclusive {
            return;
        }
        let work = self.data_dir.join("work");
        let Ok(entries) = std::fs::read_dir(&work) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("worker-")) else {
                continue;
            };
            if rest.parse::<u32>().is_ok_and(|i| i < workers) {
                continue;
            }
            let running = crate::embedded::running_records(&entry.path());
            let killed = agentpool_runner::process::kill_orphans(&running);
            if killed > 0 {
                tracing::warn!(
                    dir = %entry.path().display(),
                    groups = killed,
                    "killed processes left by a worker of an earlier pool on this data dir"
                );
            }
        }
    }
}
