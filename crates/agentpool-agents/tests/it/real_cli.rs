//! The REAL agent CLIs (pinned in tools/agents) run through the adapters against the scripted
//! model endpoint, in a temp git repository. A missing CLI fails these tests when services are
//! required (scripts/test, CI); otherwise they say so and return.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentpool_agents::process::GroupRecord;
use agentpool_agents::{AgentConfig, AgentOutcome, AgentRequest, CodeAgent, EventSink, Registry};
use agentpool_core::{ErrorClass, EventKind, NewEvent};
use agentpool_testkit::git::git;
use agentpool_testkit::model::{ModelServer, Script, Step};
use agentpool_testkit::process::{PidFile, alive};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Collects events and wakes waiters on each one.
#[derive(Default)]
pub struct Collect {
    pub events: Mutex<Vec<NewEvent>>,
    pub notify: Notify,
}

impl EventSink for Collect {
    fn emit(&self, event: NewEvent) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
        self.notify.notify_waiters();
    }
}

impl Collect {
    fn all(&self) -> Vec<NewEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
    pub fn of(&self, k: EventKind) -> Vec<NewEvent> {
        self.all().into_iter().filter(|e| e.kind() == k).collect()
    }

    /// The data of the log events, as text: what a run said in its log.
    pub fn logs(&self) -> Vec<String> {
        self.of(EventKind::Log)
            .iter()
            .map(|e| e.data().to_string())
            .collect()
    }
}

pub fn bin_dir() -> PathBuf {
    std::env::var_os("AGENTPOOL_AGENT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/agents/node_modules/.bin")
        })
}

/// The adapter for `name`, or `None` (test passes vacuously) when its CLI is not installed and
/// services are not required. Panics when they are.
pub fn agent(name: &str) -> Option<Arc<dyn CodeAgent>> {
    let cfg = AgentConfig {
        bin_dir: Some(bin_dir()),
        ..Default::default()
    };
    let exe = match name {
        "claude-code" => "claude",
        other => other,
    };
    if cfg.find(name, exe).is_none() {
        if agentpool_testkit::services_required() {
            panic!(
                "the {name} CLI ({exe}) is not installed in {} or on PATH; run scripts/test (it runs `npm install --prefix tools/agents`)",
                bin_dir().display()
            );
        }
        eprintln!("skipping: {exe} not installed (set AGENTPOOL_TEST_REQUIRE_SERVICES to fail)");
        return None;
    }
    Registry::builtin(&cfg).get(name)
}

/// A temp git repo with one commit, a private home, and a scripted endpoint.
pub struct Fixture {
    pub repo: tempfile::TempDir,
    pub home: tempfile::TempDir,
    pub server: ModelServer,
}

impl Fixture {
    pub async fn new(steps: Vec<Step>) -> Self {
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(repo.path().join("README.md"), "# test repo\n").unwrap();
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-q", "-m", "init"]);
        let home = tempfile::tempdir().unwrap();
        let server = ModelServer::start(Script::new(steps)).await.unwrap();
        Self { repo, home, server }
    }

    pub fn request(&self, agent: &str, prompt: &str) -> AgentRequest {
        let mut r = AgentRequest::new(prompt, self.repo.path(), self.home.path());
        r.timeout = Duration::from_secs(120);
        r.env = self.server.env_for(agent);
        r.model = Some(
            match agent {
                "claude-code" => "claude-sonnet-4-5",
                "codex" => "gpt-5.5",
                "opencode" => "stub-model",
                _ => "gemini-2.5-flash",
            }
            .into(),
        );
        r
    }

    pub async fn run(&self, agent: &dyn CodeAgent, req: AgentRequest) -> (AgentOutcome, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        let out = agent
            .run(req, sink.clone(), CancellationToken::new())
            .await
            .expect("the agent runs");
        (out, sink)
    }
}

fn describe(o: &AgentOutcome, sink: &Collect, server: &ModelServer) -> String {
    let reqs: Vec<_> = server
        .requests()
        .iter()
        .map(|r| format!("{:?} {} side={} tools={:?}", r.api, r.path, r.side, r.tools()))
        .collect();
    format!("outcome: {o:#?}\nevents: {:#?}\nrequests: {reqs:#?}", sink.all())
}

async fn writes_a_file_with_its_own_tool(name: &str) {
    let Some(agent) = agent(name) else { return };
    let fx = Fixture::new(vec![
        Step::write_file("hello.txt", "hello from agentpool\n"),
        Step::answer("Created hello.txt."),
    ])
    .await;
    let (o, sink) = fx.run(agent.as_ref(), fx.request(name, "Create hello.txt")).await;
    let why = describe(&o, &sink, &fx.server);
    assert!(!o.is_error, "{why}");
    assert_eq!(
        std::fs::read_to_string(fx.repo.path().join("hello.txt"))
            .ok()
            .as_deref(),
        Some("hello from agentpool\n"),
        "{why}"
    );
    // The agent's own file-writing tool did it (not a shell fallback).
    let tool = match name {
        "claude-code" => "Write",
        "codex" => "file_change",
        "opencode" => "write",
        _ => "write_file",
    };
    assert!(
        sink.of(EventKind::ToolCall)
            .iter()
            .any(|e| e.data()["name"] == tool),
        "{why}"
    );
    assert!(
        sink.of(EventKind::ToolResult)
            .iter()
            .any(|e| e.data()["ok"] == true),
        "{why}"
    );
    assert!(!sink.of(EventKind::SessionStarted).is_empty(), "{why}");
    assert!(o.session_id.is_some(), "{why}");
    assert!(o.usage.input_tokens > 0 && o.usage.output_tokens > 0, "{why}");
    assert_eq!(o.final_text.as_deref(), Some("Created hello.txt."), "{why}");
    assert!(!sink.of(EventKind::Result).is_empty(), "{why}");
    // The key the endpoint was given never shows up in events.
    let all = serde_json::to_string(&sink.all().iter().map(|e| e.data()).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains(agentpool_testkit::model::TEST_API_KEY));
    if name == "claude-code" {
        assert!(o.cost_usd.is_some_and(|c| c > 0.0), "{why}");
    }
}

async fn endpoint_status_is_classified(name: &str, status: u16, class: ErrorClass) {
    let Some(agent) = agent(name) else { return };
    let fx = Fixture::new(vec![Step::Fail {
        status,
        retry_after: Some(1),
    }])
    .await;
    let (o, sink) = fx.run(agent.as_ref(), fx.request(name, "Create hello.txt")).await;
    let why = describe(&o, &sink, &fx.server);
    assert!(o.is_error, "{why}");
    assert_eq!(o.error_class, Some(class), "{why}");
    assert!(
        o.duration_ms < 60_000,
        "the CLI's own retries should be off: {why}"
    );
    // What the CLI wrote to stderr reads as text: its colour codes are not in the log.
    let logs = sink.of(EventKind::Log);
    assert!(
        logs.iter().all(|e| !e.data().to_string().contains("\\u001b[")),
        "{why}"
    );
    assert!(!o.error_message.unwrap_or_default().contains("\x1b["), "{why}");
}

async fn cancel_ends_the_run_and_its_children(name: &str) {
    let Some(agent) = agent(name) else { return };
    let pidfile = PidFile::new().unwrap();
    let fx = Fixture::new(vec![Step::shell(&pidfile.sleeper()), Step::answer("done")]).await;
    let sink = Arc::new(Collect::default());
    let cancel = CancellationToken::new();
    let mut req = fx.request(name, "Run the command");
    let records = fx.home.path().join("running");
    req.record = Some(GroupRecord::task(&records, "t1"));
    let run = {
        let (agent, sink, cancel) = (agent.clone(), sink.clone(), cancel.clone());
        tokio::spawn(async move { agent.run(req, sink, cancel).await })
    };
    // The tool call event says the shell is starting; the pid file says it runs.
    let pid = pidfile
        .wait(Duration::from_secs(90), || {
            let requests: Vec<_> = fx
                .server
                .requests()
                .iter()
                .map(|r| (r.path.clone(), r.tools()))
                .collect();
            format!("{:#?}\n{requests:#?}", sink.all())
        })
        .await;
    // While it runs, the CLI's group is recorded, and the CLI carries the marker: a worker
    // killed now and started again would find and stop it.
    let recorded: Vec<String> = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let pgid: i32 = recorded[0].lines().next().unwrap().parse().unwrap();
    assert_eq!(recorded[0].lines().nth(1), Some("AGENTPOOL_TASK_ID=t1"));
    let environ = std::fs::read(format!("/proc/{pgid}/environ")).unwrap();
    assert!(environ.split(|b| *b == 0).any(|kv| kv == b"AGENTPOOL_TASK_ID=t1"));
    cancel.cancel();
    let o = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("cancel ends the run promptly")
        .unwrap()
        .unwrap();
    assert!(o.is_error);
    assert_eq!(o.error_class, Some(ErrorClass::Canceled));
    assert!(!alive(pid), "the agent's shell child {pid} survived the cancel");
    assert_eq!(
        std::fs::read_dir(&records).unwrap().count(),
        0,
        "the record outlived the run"
    );
}

/// Ask a follow-up resuming `session` in `fx`: it must succeed in the same session, and the
/// model must see the first task's prompt.
async fn follow_up_continues(agent: &dyn CodeAgent, fx: &Fixture, name: &str, session: &str) {
    let mut req = fx.request(name, "What did I ask you to remember?");
    req.resume_session = Some(session.to_string());
    let (second, sink) = fx.run(agent, req).await;
    let why = describe(&second, &sink, &fx.server);
    assert!(!second.is_error, "{why}");
    assert_eq!(second.session_id.as_deref(), Some(session), "{why}");
    let last = fx.server.agent_requests().last().cloned().expect("a request");
    assert!(last.body.to_string().contains("Remember 42"), "{why}");
}

async fn follow_up_resumes_the_session(name: &str) {
    let Some(agent) = agent(name) else { return };
    let fx = Fixture::new(vec![Step::answer("Noted.")]).await;
    let (first, sink) = fx.run(agent.as_ref(), fx.request(name, "Remember 42")).await;
    assert!(!first.is_error, "{}", describe(&first, &sink, &fx.server));
    let session = first.session_id.clone().expect("a session id");
    follow_up_continues(agent.as_ref(), &fx, name, &session).await;
}

/// As the worker runs follow-ups: another task directory, another private home.
async fn follow_up_in_a_fresh_home_resumes_the_session(name: &str) {
    let Some(agent) = agent(name) else { return };
    let first_fx = Fixture::new(vec![Step::answer("First answer.")]).await;
    let (first, sink) = first_fx
        .run(agent.as_ref(), first_fx.request(name, "Remember 42"))
        .await;
    assert!(!first.is_error, "{}", describe(&first, &sink, &first_fx.server));
    let session = first.session_id.clone().expect("a session id");
    let fx = Fixture::new(vec![Step::answer("It was 42.")]).await;
    // The follow-up's workspace is another checkout of the same repository.
    std::fs::remove_dir_all(fx.repo.path().join(".git")).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(first_fx.repo.path().join(".git"))
        .arg(fx.repo.path())
        .status()
        .unwrap();
    assert!(cp.success());
    follow_up_continues(agent.as_ref(), &fx, name, &session).await;
}

async fn timeout_is_classified_timeout(name: &str) {
    let Some(agent) = agent(name) else { return };
    let fx = Fixture::new(vec![Step::Hang]).await;
    let mut req = fx.request(name, "Create hello.txt");
    req.timeout = Duration::from_secs(15);
    let (o, sink) = fx.run(agent.as_ref(), req).await;
    let why = describe(&o, &sink, &fx.server);
    assert!(o.is_error, "{why}");
    assert_eq!(o.error_class, Some(ErrorClass::Timeout), "{why}");
    assert!(o.duration_ms < 40_000, "{why}");
}

async fn endpoint_401_is_auth_failed(name: &str) {
    endpoint_status_is_classified(name, 401, ErrorClass::AuthFailed).await;
}

async fn endpoint_429_is_rate_limited(name: &str) {
    endpoint_status_is_classified(name, 429, ErrorClass::RateLimited).await;
}

agentpool_testkit::for_each_agent!(
    writes_a_file_with_its_own_tool,
    endpoint_401_is_auth_failed,
    endpoint_429_is_rate_limited,
    cancel_ends_the_run_and_its_children,
    follow_up_resumes_the_session,
    timeout_is_classified_timeout,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_max_turns_fails_max_turns() {
    let Some(agent) = agent("claude-code") else { return };
    let fx = Fixture::new(vec![Step::shell("echo hi")]).await;
    let mut req = fx.request("claude-code", "Keep running commands");
    req.max_turns = Some(1);
    let (o, sink) = fx.run(agent.as_ref(), req).await;
    let why = describe(&o, &sink, &fx.server);
    assert!(o.is_error, "{why}");
    assert_eq!(o.error_class, Some(ErrorClass::MaxTurns), "{why}");
    assert!(o.session_id.is_some(), "{why}");
    assert!(
        o.error_message.as_deref().unwrap_or_default().contains("turns"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_follow_up_in_a_fresh_home_and_workspace_resumes_the_session() {
    follow_up_in_a_fresh_home_resumes_the_session("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_follow_up_in_a_fresh_home_and_workspace_resumes_the_session() {
    follow_up_in_a_fresh_home_resumes_the_session("codex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_follow_up_in_a_fresh_home_and_workspace_resumes_the_session() {
    follow_up_in_a_fresh_home_resumes_the_session("gemini").await;
}

#[tokio::test]
async fn invalid_requests_are_rejected_before_anything_runs() {
    let cfg = AgentConfig::default();
    let reg = Registry::builtin(&cfg);
    let fx = Fixture::new(vec![]).await;
    let base = || AgentRequest::new("do it", fx.repo.path(), fx.home.path());
    let claude = reg.get("claude-code").unwrap();
    let cases: Vec<(&str, AgentRequest)> = vec![
        (
            "empty prompt",
            AgentRequest {
                prompt: "  ".into(),
                ..base()
            },
        ),
        (
            "zero timeout",
            AgentRequest {
                timeout: Duration::ZERO,
                ..base()
            },
        ),
        (
            "huge timeout",
            AgentRequest {
                timeout: Duration::from_secs(10 * 24 * 3600),
                ..base()
            },
        ),
        (
            "flag as model",
            AgentRequest {
                model: Some("--evil".into()),
                ..base()
            },
        ),
        (
            "bad session",
            AgentRequest {
                resume_session: Some("a b".into()),
                ..base()
            },
        ),
        (
            "missing workdir",
            AgentRequest {
                workdir: fx.repo.path().join("nope"),
                ..base()
            },
        ),
    ];
    for (what, req) in cases {
        let err = claude.validate(&req).expect_err(what);
        assert_eq!(err.class(), ErrorClass::InvalidTask, "{what}");
    }
    let almost_out_of_time = AgentRequest {
        timeout: Duration::from_millis(300),
        ..base()
    };
    assert_eq!(
        claude.validate(&almost_out_of_time).unwrap_err().class(),
        ErrorClass::Timeout,
        "a run with no time left is a timeout, not a malformed task"
    );
    assert!(matches!(
        reg.resolve(Some("no-such-agent")),
        Err(e) if e.class() == ErrorClass::InvalidTask
    ));
    assert_eq!(reg.resolve(None).unwrap().capabilities().name, "claude-code");
}
