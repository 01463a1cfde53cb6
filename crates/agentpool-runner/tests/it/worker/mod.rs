//! The worker loop end to end: a real server on a fresh SQLite database reached over HTTP
//! through the client, a real smart-HTTP git server with basic auth, real processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentpool_core::protocol::{
    AppendEventsRequest, CompleteRequest, FailOutcome, FailRequest, HeartbeatReply, HeartbeatRequest,
};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{ErrorClass, Event, Task, TaskId, TaskResult, TaskSpec, TaskState, Worker, WorkerId};
use agentpool_runner::api::{ApiError, ClaimedWork, WorkerApi};
use agentpool_runner::{GitCredentials, Secret, WorkerConfig, WorkerSummary, run_worker};
use agentpool_store::{Store, TaskDetail};
use agentpool_testkit::db::TestDb;
use agentpool_testkit::git::{GIT_USER, GitServer};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

mod commands;
mod hooked;
mod minted;
mod partition;
mod shutdown;
mod versions;

pub use agentpool_testkit::process::{alive, pids};
pub use hooked::{Hooked, Hooks, hooked};

pub const TOKEN: &str = "worker-git-token-5f3a9c1e";

pub struct Env {
    pub store: Arc<dyn Store>,
    pub server: GitServer,
    pub dir: tempfile::TempDir,
    _db: TestDb,
}

pub async fn env() -> Env {
    let db = TestDb::sqlite();
    let store = agentpool_store::open_store(db.url()).await.unwrap();
    let server = crate::workspace::app_server(TOKEN).await;
    Env {
        store,
        server,
        dir: tempfile::tempdir().unwrap(),
        _db: db,
    }
}

pub fn config(env: &Env, name: &str, token: &str) -> WorkerConfig {
    let mut c = WorkerConfig::new(env.dir.path().join(name), 1);
    c.id = Some(WorkerId::parse(name).unwrap());
    c.heartbeat_interval = Duration::from_millis(200);
    c.claim_wait = Duration::from_millis(500);
    c.drain_grace = Duration::from_secs(30);
    c.report_retry_for = Duration::from_secs(60);
    c.pipeline.kill_grace = Duration::from_millis(500);
    c.pipeline.git_credentials = Some(GitCredentials {
        username: GIT_USER.into(),
        token: Secret::new(token),
    });
    c.pipeline.commit_author_name = "Pool Bot".into();
    c.pipeline.commit_author_email = "pool@agentpool.test".into();
    c
}

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<WorkerSummary>,
}

pub fn start(config: WorkerConfig, api: Arc<dyn WorkerApi>) -> RunningWorker {
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let handle = tokio::spawn(async move { run_worker(config, api, s).await.unwrap() });
    RunningWorker { shutdown, handle }
}

impl RunningWorker {
    pub async fn stop(self) -> WorkerSummary {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("worker stops")
            .unwrap()
    }
}

/// The worker protocol of a real server serving `store` on a free port, reached over HTTP.
/// The server runs until the test's runtime ends; the test drives maintenance itself.
pub async fn api(store: &Arc<dyn Store>, lease_ttl: Duration) -> Arc<dyn WorkerApi> {
    let server = agentpool_server::serve_loopback(store.clone(), lease_ttl)
        .await
        .unwrap();
    Arc::new(agentpool_client::Client::new(&server.url(), None).unwrap())
}

/// Poll the store until `f` holds (the store offers no change feed for tests).
pub async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn finished(store: &Arc<dyn Store>, id: TaskId) -> TaskDetail {
    until("the task to finish", async || {
        store
            .get_task(id)
            .await
            .unwrap()
            .filter(|t| t.task.state.is_finished())
    })
    .await
}

pub async fn events(store: &Arc<dyn Store>, id: TaskId) -> Vec<Event> {
    store.list_events(id, 0, 10_000).await.unwrap()
}

pub async fn wait_log(store: &Arc<dyn Store>, id: TaskId, line: &str) -> Vec<String> {
    until("a log line", async || {
        let lines = log_lines(&events(store, id).await);
        lines.iter().any(|l| l == line).then_some(lines)
    })
    .await
}

pub fn log_lines(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind() == agentpool_core::EventKind::Log)
        .filter_map(|e| e.data().get("line").and_then(|l| l.as_str()).map(str::to_string))
        .collect()
}

/// Start worker `w1` with the right git token, straight on the store (30 s leases).
pub async fn start_w1(env: &Env) -> RunningWorker {
    start(
        config(env, "w1", TOKEN),
        api(&env.store, Duration::from_secs(30)).await,
    )
}

/// Run `spec` to its end on worker `w1`; what the store recorded.
pub async fn run_to_done(env: &Env, spec: TaskSpec) -> TaskDetail {
    let task = env.store.enqueue(spec).await.unwrap().task;
    let w = start_w1(env).await;
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    done
}

/// Captures everything logged through `tracing` on this thread (a `current_thread` test's
/// runtime: the worker, the server, the test).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Capture from now until the guard is dropped.
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The captured lines that contain `s`.
    pub fn lines_with(&self, s: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(s))
            .map(str::to_string)
            .collect()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// None of `pids` is alive after `what`: the whole process tree was killed, not its leader.
pub fn assert_all_gone(pids: &[i32], what: &str) {
    for pid in pids {
        assert!(!alive(*pid), "child {pid} survived the {what}");
    }
}

/// A gate file that does not exist yet, and a shell loop that waits until it does: a task
/// that runs the loop holds until the test writes the file.
pub fn gate(env: &Env) -> (std::path::PathBuf, String) {
    let gate = env.dir.path().join("gate");
    let wait = format!("while [ ! -e '{}' ]; do sleep 0.02; done", gate.display());
    (gate, wait)
}

/// The task succeeded (its error message shown when not).
pub fn assert_succeeded(done: &TaskDetail) {
    assert_eq!(
        done.task.state,
        TaskState::Succeeded,
        "{:?}",
        done.task.error_message
    );
}

/// The result of a task that succeeded (its error message shown when it did not).
pub fn succeeded_result(done: &TaskDetail) -> TaskResult {
    assert_succeeded(done);
    done.task.result.clone().expect("a succeeded task has a result")
}

/// Run command `cmd` on work branch `branch` to its end, which must be a success; its result.
pub async fn succeeded_on_branch(env: &Env, cmd: &str, branch: &str) -> TaskResult {
    let mut spec = command(env, cmd);
    spec.branch = Some(branch.into());
    succeeded_result(&run_to_done(env, spec).await)
}

pub const GRANDCHILDREN: &str = "sleep 1000 & echo pid $!; sleep 1000 & echo pid $!; echo ready; wait";

pub fn command(env: &Env, cmd: &str) -> TaskSpec {
    TaskSpec::command(&env.server.url("app"), cmd)
}

/// Enqueue command `cmd` on repository `app`.
pub async fn enqueue_command(env: &Env, cmd: &str) -> Task {
    env.store.enqueue(command(env, cmd)).await.unwrap().task
}

pub async fn assert_no_running(store: &Arc<dyn Store>) {
    let counts = store.count_by_state().await.unwrap();
    assert_eq!(
        counts.get(&TaskState::Running).copied().unwrap_or(0),
        0,
        "{counts:?}"
    );
}
