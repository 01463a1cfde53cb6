//! The worker loop end to end: a real server on a fresh SQLite database reached over HTTP
//! through the client, a real smart-HTTP git server with basic auth, real processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentpool_core::protocol::{
    AppendEventsRequest, CompleteRequest, FailOutcome, FailRequest, HeartbeatReply, HeartbeatRequest,
};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{ErrorClass, Event, Task, TaskId, TaskSpec, TaskState, Worker, WorkerId};
use agentpool_runner::api::{ApiError, ClaimedWork, WorkerApi};
use agentpool_runner::{GitCredentials, Secret, WorkerConfig, WorkerSummary, run_worker};
use agentpool_store::{Store, TaskDetail};
use agentpool_testkit::db::TestDb;
use agentpool_testkit::git::{GIT_USER, GitServer};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

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
    let server = GitServer::start(TOKEN).await.unwrap();
    server
        .create_repo(
            "app",
            &[&[("README.md", "hello\n")], &[("src/main.rs", "fn main() {}\n")]],
        )
        .unwrap();
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

pub fn pids(lines: &[String]) -> Vec<i32> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("pid "))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

/// Start worker `w1` with the right git token, straight on the store (30 s leases).
pub async fn start_w1(env: &Env) -> RunningWorker {
    start(
        config(env, "w1", TOKEN),
        api(&env.store, Duration::from_secs(30)).await,
    )
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

pub const GRANDCHILDREN: &str = "sleep 1000 & echo pid $!; sleep 1000 & echo pid $!; echo ready; wait";

pub fn command(env: &Env, cmd: &str) -> TaskSpec {
    TaskSpec::command(&env.server.url("app"), cmd)
}

/// Enqueue command `cmd` on repository `app`.
pub async fn enqueue_command(env: &Env, cmd: &str) -> Task {
    env.store.enqueue(command(env, cmd)).await.unwrap().task
}

#[tokio::test]
async fn command_task_commits_to_the_work_branch_in_the_remote_and_records_it() {
    let env = env().await;
    let task = env
        .store
        .enqueue(command(
            &env,
            "printf 'more\\n' >> README.md && echo new > added.txt && echo edited",
        ))
        .await
        .unwrap()
        .task;
    let w = start_w1(&env).await;
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;

    assert_succeeded(&done);
    let result = done.task.result.clone().unwrap();
    let branch = format!("agentpool/{}", task.id);
    assert_eq!(result.branch.as_deref(), Some(branch.as_str()));
    let sha = result.commit_sha.clone().unwrap();
    assert_eq!(env.server.branch_sha("app", &branch), Some(sha.clone()));
    assert_eq!(
        env.server.read_file("app", &sha, "README.md").as_deref(),
        Some("hello\nmore\n")
    );
    let mut files: Vec<_> = result
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.added, f.removed))
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![("README.md", Some(1), Some(0)), ("added.txt", Some(1), Some(0))]
    );
    assert!(result.pushed);
    let (author, _) = env.server.commit_info("app", &sha).unwrap();
    assert_eq!(author, "Pool Bot <pool@agentpool.test>");
    // main is untouched.
    assert_ne!(env.server.branch_sha("app", "main"), Some(sha));
    assert!(log_lines(&events(&env.store, task.id).await).contains(&"edited".to_string()));
    assert_eq!(summary.succeeded, 1);
    assert_eq!(
        env.store
            .get_worker(&WorkerId::parse("w1").unwrap())
            .await
            .unwrap()
            .map(|w| w.status)
            .unwrap_or(agentpool_core::WorkerStatus::Offline),
        agentpool_core::WorkerStatus::Offline
    );
}

#[tokio::test]
async fn failing_command_is_an_agent_error_with_its_exit_code() {
    let env = env().await;
    let mut spec = command(&env, "echo boom >&2; exit 7");
    spec.max_attempts = Some(1);
    let task = env.store.enqueue(spec).await.unwrap().task;
    let w = start_w1(&env).await;
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::AgentError));
    assert_eq!(done.task.result.as_ref().and_then(|r| r.exit_code), Some(7));
    assert!(log_lines(&events(&env.store, task.id).await).contains(&"boom".to_string()));
}

#[tokio::test]
async fn bad_repository_url_is_an_invalid_task() {
    let env = env().await;
    // Local repositories are refused by this worker (file repos not enabled).
    let mut spec = TaskSpec::command("/tmp/some/repo", "true");
    spec.max_attempts = Some(3);
    let enq = env.store.enqueue(spec).await.unwrap();
    let w = start_w1(&env).await;
    let done = finished(&env.store, enq.task.id).await;
    w.stop().await;
    assert_eq!(done.task.error_class, Some(ErrorClass::InvalidTask));
    assert_eq!(done.task.attempts, 1, "invalid tasks are not retried");
}

/// Captures everything the worker logs through `tracing`.
#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_token_fails_with_git_auth_not_retried_and_the_token_is_never_shown() {
    let logs = LogCapture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = env().await;
    let wrong = "wrong-token-7e1d44aa90";
    let mut spec = command(&env, "echo should-not-run");
    spec.max_attempts = Some(3);
    let task = env.store.enqueue(spec).await.unwrap().task;
    let w = start(
        config(&env, "w1", wrong),
        api(&env.store, Duration::from_secs(30)).await,
    );
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;

    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::GitAuthFailed));
    assert_eq!(done.task.attempts, 1, "an auth failure is not retried");
    assert_eq!(done.attempts_detail.len(), 1);
    assert_eq!(summary.failed, 1);

    let all_events = serde_json::to_string(&events(&env.store, task.id).await).unwrap();
    let detail = serde_json::to_string(&done).unwrap();
    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        !log_text.is_empty(),
        "the worker logged nothing, so the scan proves nothing"
    );
    for (what, text) in [("events", &all_events), ("task", &detail), ("logs", &log_text)] {
        for secret in [wrong, TOKEN] {
            assert!(!text.contains(secret), "{what} contain the token: {text}");
        }
    }
    assert!(!all_events.contains("should-not-run"));
}

#[tokio::test]
async fn the_command_gets_a_cleared_environment_without_git_credentials() {
    let env = env().await;
    // SAFETY: set before any worker starts; the variable must not leak into the task.
    unsafe { std::env::set_var("AGENTPOOL_TEST_LEAK", "leaked-value") };
    let token_dir = env.dir.path().join("w1/state/credentials");
    let cmd = format!(
        "env | sort; cat \"$HOME/.gitconfig\" 2>/dev/null; echo x > pushed.txt; \
         if [ -e '{}'/\"$AGENTPOOL_TASK_ID\"/git-token ]; then echo token-file-present; else echo token-file-absent; fi",
        token_dir.display()
    );
    let task = enqueue_command(&env, &cmd).await;
    let w = start_w1(&env).await;
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    assert_eq!(done.task.state, TaskState::Succeeded);
    let lines = log_lines(&events(&env.store, task.id).await);
    let vars: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(
        vars.contains(&"AGENTPOOL_TASK_ID") && vars.contains(&"HOME"),
        "{vars:?}"
    );
    let text = lines.join("\n");
    assert!(!text.contains(TOKEN));
    assert!(!text.contains("leaked-value"));
    assert!(!text.contains("GIT_ASKPASS") && !text.contains("AGENTPOOL_GIT_TOKEN_FILE"));
    assert!(
        lines.contains(&"token-file-absent".to_string()),
        "the git token file exists while the task's command runs"
    );
    // The token came back for the push after the command.
    assert!(done.task.result.as_ref().is_some_and(|r| r.pushed));
}

#[tokio::test]
async fn cancel_of_a_running_task_kills_its_grandchildren_and_records_canceled() {
    let env = env().await;
    let task = enqueue_command(&env, GRANDCHILDREN).await;
    let w = start_w1(&env).await;
    let lines = wait_log(&env.store, task.id, "ready").await;
    let children = pids(&lines);
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|p| alive(*p)));
    env.store.cancel(task.id).await.unwrap();
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;
    assert_eq!(done.task.state, TaskState::Canceled);
    assert_eq!(summary.canceled, 1);
    for pid in children {
        assert!(!alive(pid), "grandchild {pid} survived the cancel");
    }
}

#[tokio::test]
async fn timeout_of_a_task_kills_its_grandchildren_and_records_timeout() {
    let env = env().await;
    let mut spec = command(&env, GRANDCHILDREN);
    spec.timeout_secs = Some(1);
    spec.max_attempts = Some(1);
    let task = env.store.enqueue(spec).await.unwrap().task;
    let w = start_w1(&env).await;
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::Timeout));
    let children = pids(&log_lines(&events(&env.store, task.id).await));
    assert_eq!(children.len(), 2);
    for pid in children {
        assert!(!alive(pid), "grandchild {pid} survived the timeout");
    }
}

#[tokio::test]
async fn shutdown_lets_a_running_task_finish_within_the_grace_period() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let cmd = format!("echo ready; {wait}; echo done > finished.txt");
    let task = enqueue_command(&env, &cmd).await;
    let w = start_w1(&env).await;
    wait_log(&env.store, task.id, "ready").await;
    w.shutdown.cancel();
    // The worker drains: it is still running the task; let the task finish now.
    until("the worker to report draining", async || {
        env.store
            .get_worker(&WorkerId::parse("w1").unwrap())
            .await
            .unwrap()
            .filter(|w| w.status == agentpool_core::WorkerStatus::Draining)
    })
    .await;
    std::fs::write(&gate, "go").unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), w.handle)
        .await
        .unwrap()
        .unwrap();
    let done = env.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(done.task.state, TaskState::Succeeded);
    assert_eq!(summary.succeeded, 1);
    assert_no_running(&env.store).await;
}

#[tokio::test]
async fn shutdown_cancels_tasks_still_running_after_the_grace_period() {
    let env = env().await;
    let task = enqueue_command(&env, GRANDCHILDREN).await;
    let mut cfg = config(&env, "w1", TOKEN);
    cfg.drain_grace = Duration::from_millis(300);
    let w = start(cfg, api(&env.store, Duration::from_secs(30)).await);
    let children = pids(&wait_log(&env.store, task.id, "ready").await);
    let summary = w.stop().await;
    let done = env.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(done.task.state, TaskState::Canceled);
    assert_eq!(summary.canceled, 1);
    for pid in children {
        assert!(!alive(pid), "grandchild {pid} survived the drain");
    }
    assert_no_running(&env.store).await;
}

pub async fn assert_no_running(store: &Arc<dyn Store>) {
    let counts = store.count_by_state().await.unwrap();
    assert_eq!(
        counts.get(&TaskState::Running).copied().unwrap_or(0),
        0,
        "{counts:?}"
    );
}

/// A WorkerApi whose connection to the queue can be cut: while `down`, every call fails as
/// an unreachable server would (the real store behind it keeps working for others).
pub struct Partition {
    pub inner: Arc<dyn WorkerApi>,
    pub down: AtomicBool,
}

impl Partition {
    fn check(&self) -> Result<(), ApiError> {
        if self.down.load(Ordering::SeqCst) {
            Err(ApiError::Unavailable {
                status: None,
                message: "connection refused (partition)".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl WorkerApi for Partition {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError> {
        self.check()?;
        self.inner.register(reg).await
    }
    async fn heartbeat(&self, w: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError> {
        self.check()?;
        self.inner.heartbeat(w, req).await
    }
    async fn claim(&self, w: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        self.check()?;
        self.inner.claim(w, max, wait).await
    }
    async fn append_events(&self, w: &WorkerId, t: TaskId, req: AppendEventsRequest) -> Result<(), ApiError> {
        self.check()?;
        self.inner.append_events(w, t, req).await
    }
    async fn complete(&self, w: &WorkerId, t: TaskId, req: CompleteRequest) -> Result<(), ApiError> {
        self.check()?;
        self.inner.complete(w, t, req).await
    }
    async fn fail(&self, w: &WorkerId, t: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError> {
        self.check()?;
        self.inner.fail(w, t, req).await
    }
    async fn drain(&self, w: &WorkerId) -> Result<(), ApiError> {
        self.check()?;
        self.inner.drain(w).await
    }
    async fn deregister(&self, w: &WorkerId) -> Result<(), ApiError> {
        self.check()?;
        self.inner.deregister(w).await
    }
}

#[tokio::test]
async fn a_partitioned_worker_whose_lease_was_taken_has_its_late_report_refused() {
    let env = env().await;
    let gate = env.dir.path().join("gate");
    let cmd = format!(
        "echo ready; while [ ! -e '{}' ]; do sleep 0.02; done; echo \"$AGENTPOOL_ATTEMPT\" >> attempts.txt",
        gate.display()
    );
    let mut spec = command(&env, &cmd);
    spec.branch = Some("agentpool/partition".into());
    let task = env.store.enqueue(spec).await.unwrap().task;
    let lease_ttl = Duration::from_secs(1);
    let partition = Arc::new(Partition {
        inner: api(&env.store, lease_ttl).await,
        down: AtomicBool::new(false),
    });
    let a = start(config(&env, "worker-a", TOKEN), partition.clone());
    wait_log(&env.store, task.id, "ready").await;

    // Cut A off; its lease runs out and maintenance re-queues the task.
    partition.down.store(true, Ordering::SeqCst);
    until("the lease to expire and the task to be re-queued", async || {
        (env.store.requeue_expired().await.unwrap() > 0).then_some(())
    })
    .await;
    std::fs::write(&gate, "go").unwrap();

    // B runs the task to success while A is still cut off and retrying its report.
    let b = start(config(&env, "worker-b", TOKEN), api(&env.store, lease_ttl).await);
    let done = finished(&env.store, task.id).await;
    assert_eq!(done.task.state, TaskState::Succeeded);
    let b_summary = b.stop().await;

    // A comes back: its late report is refused and changes nothing.
    partition.down.store(false, Ordering::SeqCst);
    let a_summary = a.stop().await;
    assert_eq!(a_summary.succeeded, 0);
    assert_eq!(a_summary.lost, 1, "{a_summary:?}");
    assert_eq!(b_summary.succeeded, 1);

    let after = env.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(after.task.state, TaskState::Succeeded);
    let outcomes: Vec<_> = after.attempts_detail.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == agentpool_core::AttemptOutcome::Succeeded)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        after.task.result, done.task.result,
        "the late report changed the result"
    );
}

#[tokio::test]
async fn hostile_repository_urls_and_refs_fail_as_invalid_tasks_without_running() {
    let env = env().await;
    let marker = env.dir.path().join("pwned");
    let m = marker.display().to_string();
    let url = env.server.url("app");
    let mut specs = vec![
        TaskSpec::command(&format!("ext::sh -c touch% {m}"), "true"),
        TaskSpec::command(&format!("--upload-pack=touch {m}"), "true"),
        TaskSpec::command("file:///etc", "true"),
    ];
    let mut bad_ref = TaskSpec::command(&url, "true");
    bad_ref.base_ref = Some(format!("--upload-pack=touch {m}"));
    specs.push(bad_ref);
    let mut bad_branch = TaskSpec::command(&url, "true");
    bad_branch.branch = Some("-f".into());
    specs.push(bad_branch);
    let mut ids = Vec::new();
    for s in specs {
        ids.push(env.store.enqueue(s).await.unwrap().task.id);
    }
    let w = start_w1(&env).await;
    for id in ids {
        let done = finished(&env.store, id).await;
        assert_eq!(
            done.task.error_class,
            Some(ErrorClass::InvalidTask),
            "{:?}",
            done.task.spec
        );
        assert_eq!(done.task.attempts, 1);
    }
    w.stop().await;
    assert!(!marker.exists(), "a hostile value was executed");
    assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
}

#[tokio::test]
async fn a_worker_runs_at_most_its_concurrency_at_once() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let cmd = format!("echo ready; {wait}");
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(enqueue_command(&env, &cmd).await.id);
    }
    let mut cfg = config(&env, "w2", TOKEN);
    cfg.concurrency = 2;
    let w = start(cfg, api(&env.store, Duration::from_secs(30)).await);
    until("two tasks to run", async || {
        let c = env.store.count_by_state().await.unwrap();
        (c.get(&TaskState::Running).copied() == Some(2)).then_some(())
    })
    .await;
    // Both slots are busy: the worker must not claim a third while they run.
    let worker = env
        .store
        .get_worker(&WorkerId::parse("w2").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(worker.slots, 2);
    for _ in 0..10 {
        let c = env.store.count_by_state().await.unwrap();
        assert_eq!(c.get(&TaskState::Running).copied(), Some(2), "{c:?}");
        assert_eq!(c.get(&TaskState::Queued).copied(), Some(2), "{c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&gate, "go").unwrap();
    for id in ids {
        assert_eq!(finished(&env.store, id).await.task.state, TaskState::Succeeded);
    }
    assert_eq!(w.stop().await.succeeded, 4);
}

#[tokio::test]
async fn a_drain_requested_by_the_server_stops_the_worker_after_its_tasks() {
    let env = env().await;
    let (gate, wait) = gate(&env);
    let cmd = format!("echo ready; {wait}");
    let task = enqueue_command(&env, &cmd).await;
    let w = start_w1(&env).await;
    wait_log(&env.store, task.id, "ready").await;
    env.store
        .drain_worker(&WorkerId::parse("w1").unwrap())
        .await
        .unwrap();
    // A task queued now must not be taken by the draining worker.
    let later = enqueue_command(&env, "true").await;
    std::fs::write(&gate, "go").unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), w.handle)
        .await
        .expect("the worker stops by itself")
        .unwrap();
    assert_eq!(summary.succeeded, 1);
    assert_eq!(
        env.store.get_task(task.id).await.unwrap().unwrap().task.state,
        TaskState::Succeeded
    );
    assert_eq!(
        env.store.get_task(later.id).await.unwrap().unwrap().task.state,
        TaskState::Queued
    );
}
