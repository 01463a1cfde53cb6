//! Integration tests of the `agentpool` binary: each test runs the real executable against a
//! real embedded pool (SQLite, git, in-process workers) in a private data directory.

mod agent_access;
mod auth;
mod bulk;
mod chaos;
mod dashboard;
mod data_dir;
mod demo;
mod interrupts;
mod json;
mod kube;
mod logging;
mod notifications;
mod pool;
mod probe;
mod profiles;
mod restarts;
mod run;
mod schedules;
mod schemathesis;
mod serve;
mod status;
mod tls;
mod tokens;
mod up_start;
mod usage;
mod waiting;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

pub use agentpool_testkit::git::git;

/// A private data directory plus a scratch area for repositories.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `agentpool` with this environment's data dir and nothing inherited that could point it
    /// at another server.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_agentpool"));
        c.env("AGENTPOOL_DATA_DIR", self.data_dir())
            .env_remove("AGENTPOOL_SERVER")
            .env_remove("AGENTPOOL_TOKEN")
            .env_remove("AGENTPOOL_OUTPUT")
            .env_remove("AGENTPOOL_DATABASE_URL")
            .env("NO_COLOR", "1")
            .env("AGENTPOOL_LOG", "warn")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// [`Env::cmd`] as on a machine without any agent CLI: an empty agent bin dir, and PATH
    /// the system's directories only.
    pub fn cmd_without_agents(&self) -> Command {
        let empty = self.dir.path().join("no-agents");
        std::fs::create_dir_all(&empty).unwrap();
        let mut c = self.cmd();
        c.env("AGENTPOOL_AGENT_BIN_DIR", &empty)
            .env("PATH", "/usr/bin:/bin");
        c
    }

    /// `agentpool up` on a free port with `workers` workers, then `extra` arguments.
    pub fn up_cmd(&self, workers: u32, extra: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["up", "--listen", "127.0.0.1:0", "--workers", &workers.to_string()])
            .args(extra);
        c
    }

    /// `agentpool serve` on a free port without auth, on a SQLite file in this environment,
    /// accepting local repositories: what the tests of a separate server start.
    pub fn serve_cmd(&self) -> Command {
        let db = format!("sqlite://{}?mode=rwc", self.dir.path().join("serve.db").display());
        let mut c = self.cmd();
        c.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--allow-local-repos",
        ])
        .args(["--database-url", &db]);
        c
    }

    /// `agentpool tokens create NAME --role ROLE` on the database at `db`: the token it prints.
    pub fn create_token(&self, db: &str, name: &str, role: &str) -> String {
        let o = self
            .cmd()
            .args(["tokens", "create", name, "--role", role, "--database-url", db])
            .output()
            .expect("run agentpool");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let token = stdout(&o).trim().to_string();
        assert!(token.starts_with("apt_"), "{token}");
        token
    }

    /// `f` with this environment and a SQLite database file in it.
    pub fn on_sqlite(&self, f: impl FnOnce(&Env, &str)) {
        let db = format!("sqlite://{}?mode=rwc", self.dir.path().join("test.db").display());
        f(self, &db);
    }

    /// `f` with this environment and a fresh PostgreSQL database (none when PostgreSQL is not
    /// configured and services are not required).
    pub fn on_postgres(&self, f: impl FnOnce(&Env, &str)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let Some(db) = rt.block_on(agentpool_testkit::db::TestDb::postgres()) else {
            return;
        };
        f(self, db.url());
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run agentpool")
    }

    /// A repository with one commit on `main`, published to a bare "remote"; returns the
    /// bare repository's path (what tasks clone from and push to).
    pub fn sample_repo(&self) -> PathBuf {
        let work = self.dir.path().join("src-repo");
        let bare = self.dir.path().join("remote.git");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README.md"), "# sample\n").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial"]);
        git(
            self.dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        bare
    }
}

/// `--server URL submit --repo REPO --command CMD` followed by `extra`.
pub fn submit_args<'a>(url: &'a str, repo: &'a str, command: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--server", url, "submit", "--repo", repo, "--command", command];
    args.extend_from_slice(extra);
    args
}

/// The command exited with `code` (its output shown when not).
/// Serve `app` on a free loopback port from a thread of its own (these tests are not async);
/// its `http://ADDR`.
pub fn serve_in_thread(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// `o`'s stderr contains `part` (all of it shown when it does not).
#[track_caller]
pub fn assert_stderr_contains(o: &Output, part: &str) {
    let err = stderr(o);
    assert!(err.contains(part), "{err}");
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", stdout(o), stderr(o)))
}

/// A spawned process that is killed and reaped when dropped, so a test that fails part-way
/// leaves no `agentpool worker` running behind it.
pub struct Reaped(Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // A process the test already waited for is not signalled again.
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// [`Command::spawn`] into a [`Reaped`].
pub trait SpawnReaped {
    fn spawn_reaped(&mut self) -> Reaped;
}

impl SpawnReaped for Command {
    fn spawn_reaped(&mut self) -> Reaped {
        Reaped(self.spawn().expect("spawn agentpool"))
    }
}

/// A long-running `agentpool` (up, serve) in the background; stopped (SIGTERM) when dropped.
pub struct Up {
    pub child: Child,
    pub url: String,
}

impl Up {
    /// Start `up` on a free port and wait for the line announcing its URL.
    pub fn start(env: &Env, workers: u32) -> Self {
        Self::spawn(env.up_cmd(workers, &[]))
    }

    /// Spawn a command that prints its `http://…` (or `https://…`) URL on stdout once it listens.
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_with(cmd, false).0
    }

    /// Like [`Up::spawn`], with each line the process writes to stderr sent to the receiver.
    pub fn spawn_watching_stderr(cmd: Command) -> (Self, std::sync::mpsc::Receiver<String>) {
        let (up, lines) = Self::spawn_with(cmd, true);
        (up, lines.expect("stderr is watched"))
    }

    fn spawn_with(mut cmd: Command, watch_stderr: bool) -> (Self, Option<std::sync::mpsc::Receiver<String>>) {
        let stderr = if watch_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn agentpool");
        let err_lines = child.stderr.take().map(|err| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    let _ = tx.send(line);
                }
            });
            rx
        });
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line
                        .split_whitespace()
                        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    {
                        break u.to_string();
                    }
                }
                _ => {
                    let status = child.wait().expect("wait");
                    panic!("agentpool exited ({status}) before printing its URL");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (Self { child, url }, err_lines)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        terminate(&self.child);
        let status = self.child.wait().expect("wait for up");
        std::mem::forget(self);
        status
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        terminate(&self.child);
        let _ = self.child.wait();
    }
}

pub fn terminate(child: &Child) {
    signal(child, "TERM");
}

/// Send signal `name` (TERM, INT, …) to `child`.
pub fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status();
}
