//! The REAL agent CLIs (pinned in tools/agents) through agentpool's worker pipeline: a real
//! SQLite store, the smart-HTTP git server, the scripted model endpoint. A missing CLI fails
//! these tests when services are required (scripts/test, CI); otherwise they return early.
//! (The helpers they use are the worker tests' own.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::{AgentConfig, Registry};
use agentpool_core::{ErrorClass, Event, EventKind, Task, TaskId, TaskSpec, TaskState};
use agentpool_store::{Store, TaskDetail};
use agentpool_testkit::model::{ModelServer, Script, Step, TEST_API_KEY};
use agentpool_testkit::process::PidFile;

use super::worker::{Env, RunningWorker, TOKEN, alive, api, assert_succeeded, config, env, events, start};

pub(super) fn bin_dir() -> PathBuf {
    std::env::var_os("AGENTPOOL_AGENT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/agents/node_modules/.bin")
        })
}

/// Whether `agent`'s CLI is installed; panics when it is not and services are required.
pub(super) fn installed(agent: &str) -> bool {
    let cfg = AgentConfig {
        bin_dir: Some(bin_dir()),
        ..Default::default()
    };
    let exe = if agent == "claude-code" { "claude" } else { agent };
    if cfg.find(agent, exe).is_some() {
        return true;
    }
    assert!(
        !agentpool_testkit::services_required(),
        "the {agent} CLI is not installed in {}; run scripts/test (it installs tools/agents)",
        bin_dir().display()
    );
    eprintln!("skipping: {exe} not installed");
    false
}

/// For a test of `agent`'s real CLI: a worker environment and a model endpoint playing `steps`;
/// `None` when the CLI is not installed (and services are not required).
pub(super) async fn agent_env(
    agent: &str,
    steps: impl IntoIterator<Item = Step>,
) -> Option<(Env, ModelServer)> {
    if !installed(agent) {
        return None;
    }
    let env = env().await;
    let model = ModelServer::start(Script::new(steps)).await.unwrap();
    Some((env, model))
}

/// The model's script for "Create hello.txt": write it with `content`, then say so.
fn creates_hello(content: &str) -> [Step; 2] {
    [
        Step::write_file("hello.txt", content),
        Step::answer("Created hello.txt."),
    ]
}

fn model_for(agent: &str) -> &'static str {
    match agent {
        "claude-code" => "claude-sonnet-4-5",
        "codex" => "gpt-5.5",
        "opencode" => "stub-model",
        _ => "gemini-2.5-flash",
    }
}

/// A worker whose agents are the real CLIs talking to `model`.
async fn agent_worker(env: &Env, agent: &str, model: &ModelServer) -> RunningWorker {
    let mut c = config(env, "w1", TOKEN);
    let cfg = AgentConfig {
        bin_dir: Some(bin_dir()),
        session_dir: Some(env.dir.path().join("agent-sessions")),
        ..Default::default()
    };
    c.agents = Registry::builtin(&cfg);
    c.pipeline.extra_env = model.env_for(agent);
    start(c, api(&env.store, Duration::from_secs(30)).await)
}

pub(super) fn agent_task(env: &Env, agent: &str, prompt: &str) -> TaskSpec {
    let mut spec = TaskSpec::agent(&env.server.url("app"), agent, prompt);
    spec.model = Some(model_for(agent).into());
    spec.commit = true;
    spec.push = true;
    spec.timeout_secs = Some(180);
    spec.max_attempts = Some(1);
    spec
}

pub(super) async fn finished_within(store: &Arc<dyn Store>, id: TaskId, limit: Duration) -> TaskDetail {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(t) = store.get_task(id).await.unwrap()
            && t.task.state.is_finished()
        {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "task {id} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Enqueue `spec`, run a worker whose agents talk to `model` until the task finishes (within
/// `limit`), stop the worker.
pub(super) async fn run_to_end(
    env: &Env,
    agent: &str,
    model: &ModelServer,
    spec: TaskSpec,
    limit: Duration,
) -> TaskDetail {
    let task = env.store.enqueue(spec).await.unwrap().task;
    let w = agent_worker(env, agent, model).await;
    let done = finished_within(&env.store, task.id, limit).await;
    w.stop().await;
    done
}

fn of(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.kind() == kind).collect()
}

async fn task_writes_a_file_and_commits_it(agent: &str) {
    let Some((env, model)) = agent_env(agent, creates_hello("hello from the pipeline\n")).await else {
        return;
    };
    let mut spec = agent_task(&env, agent, "Create hello.txt");
    if agent == "claude-code" {
        // Named by no task, the worker's default runs it (claude-code, the first built in),
        // and the result says which agent that was.
        spec.agent = None;
    }
    let done = run_to_end(&env, agent, &model, spec, Duration::from_secs(150)).await;
    let evs = events(&env.store, done.task.id).await;
    let why = format!("{:?}\n{:#?}", done.task.error_message, evs);
    assert_eq!(done.task.state, TaskState::Succeeded, "{why}");
    let result = done.task.result.clone().expect("a result");
    assert_eq!(result.agent.as_deref(), Some(agent), "{why}");
    let sha = result.commit_sha.clone().expect("a commit");
    assert_eq!(
        env.server.read_file("app", &sha, "hello.txt").as_deref(),
        Some("hello from the pipeline\n"),
        "{why}"
    );
    assert!(result.files.iter().any(|f| f.path == "hello.txt"), "{why}");
    // The prompt is the commit's subject and the agent's last answer its body.
    let (_, message) = env.server.commit_info("app", &sha).expect("the commit");
    assert_eq!(
        message,
        format!(
            "Create hello.txt\n\nCreated hello.txt.\n\nAgentpool-Task: {}",
            done.task.id
        ),
        "{why}"
    );
    assert!(!of(&evs, EventKind::ToolCall).is_empty(), "{why}");
    assert!(
        of(&evs, EventKind::ToolResult)
            .iter()
            .any(|e| e.data()["ok"] == true),
        "{why}"
    );
    assert!(
        result.usage.input_tokens > 0 && result.usage.output_tokens > 0,
        "{why}"
    );
    assert!(result.session_id.is_some(), "{why}");
    if agent == "claude-code" {
        assert!(result.cost_usd.is_some_and(|c| c > 0.0), "{why}");
    }
    let all = serde_json::to_string(&evs).unwrap();
    assert!(!all.contains(TEST_API_KEY), "the model key leaked into events");
}

/// A task for `agent` against a model that answers `steps`, allowed `attempts`, run to its
/// end, which must be a failure. `None` when the agent is not installed.
async fn failed_task(
    agent: &str,
    steps: impl IntoIterator<Item = Step>,
    attempts: u32,
    limit: Duration,
) -> Option<TaskDetail> {
    let (env, model) = agent_env(agent, steps).await?;
    let mut spec = agent_task(&env, agent, "Create hello.txt");
    spec.max_attempts = Some(attempts);
    let done = run_to_end(&env, agent, &model, spec, limit).await;
    assert_eq!(
        done.task.state,
        TaskState::Failed,
        "{:?}",
        done.task.error_message
    );
    Some(done)
}

async fn endpoint_401_fails_auth_without_retry(agent: &str) {
    let Some(done) = failed_task(agent, [Step::fail(401)], 3, Duration::from_secs(120)).await else {
        return;
    };
    assert_eq!(done.task.error_class, Some(ErrorClass::AuthFailed));
    assert_eq!(done.task.attempts, 1, "AUTH_FAILED is not retried");
}

async fn endpoint_429_is_rate_limited_and_retried(agent: &str) {
    let limited = Step::Fail {
        status: 429,
        retry_after: Some(1),
    };
    let Some(done) = failed_task(agent, [limited], 2, Duration::from_secs(180)).await else {
        return;
    };
    assert_eq!(done.task.error_class, Some(ErrorClass::RateLimited));
    let attempts = &done.attempts_detail;
    assert_eq!(attempts.len(), 2, "RATE_LIMITED is retried: {attempts:#?}");
    assert!(
        attempts
            .iter()
            .all(|a| a.error_class == Some(ErrorClass::RateLimited))
    );
    let first_end = attempts[0].ended_at.expect("first attempt ended");
    assert!(
        attempts[1].started_at > first_end,
        "the retry waited for its backoff"
    );
}

/// A worker whose own Claude Code key the model refuses fails the tasks it claims
/// `AUTH_FAILED`, and after three in a row runs no more Claude Code tasks: it registers again
/// without that agent, says why, and goes on with the rest. The next Claude Code task waits
/// for a worker that runs it instead of failing the same way; a task of another kind still
/// runs here. Tasks that bring a key of their own fail the same way without counting against
/// the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_own_agent_key_is_refused_stops_running_that_agent() {
    let Some((env, model)) = agent_env("claude-code", [Step::fail(401)]).await else {
        return;
    };
    let server = super::github::forge_server(&env, None).await;
    let (ids, w) = refused_six_times(&env, &model, &server.url(), None).await;
    let id = agentpool_core::WorkerId::parse("w1").unwrap();
    // It says why, and stays a claiming worker: idle once the report of the task that made it
    // so is in (busy until then), never unhealthy.
    let worker = super::worker::until("the worker to stop offering claude-code", async || {
        let w = env.store.get_worker(&id).await.unwrap()?;
        assert_ne!(w.status, agentpool_core::WorkerStatus::Unhealthy, "{w:?}");
        (w.status_message.is_some() && w.status == agentpool_core::WorkerStatus::Idle).then_some(w)
    })
    .await;
    assert!(
        !worker.agent_names().contains(&"claude-code".to_string()),
        "{worker:?}"
    );
    assert!(worker.agent_names().contains(&"codex".to_string()), "{worker:?}");
    let why = worker.status_message.unwrap();
    assert!(
        why.starts_with(
            "runs no claude-code tasks: claude-code's provider refused this worker's own key 3 times in a row"
        ),
        "{why}"
    );
    let last = env.store.get_task(ids[6]).await.unwrap().unwrap();
    assert_eq!(last.task.state, TaskState::Queued, "the seventh task was claimed");
    assert!(last.attempts_detail.is_empty());
    assert!(
        last.waiting.iter().any(|w| matches!(
            w,
            agentpool_core::protocol::WaitReason::NoWorkerCanRun { agent: Some(a), .. } if a == "claude-code"
        )),
        "{:?}",
        last.waiting
    );
    // Its other work goes on: a command, and a prompt that names no agent, which its next
    // agent runs (here refused too, by the same endpoint: once is no reason to retire it).
    let other = super::worker::enqueue_command(&env, "echo ok > ok.txt").await;
    assert_succeeded(&finished_within(&env.store, other.id, Duration::from_secs(120)).await);
    let mut any = agent_task(&env, "codex", "Task 8");
    (any.agent, any.model) = (None, None);
    let any = env.store.enqueue(any).await.unwrap().task;
    let done = finished_within(&env.store, any.id, Duration::from_secs(120)).await;
    assert_eq!(done.task.error_class, Some(ErrorClass::AuthFailed));
    let ran = done.task.result.and_then(|r| r.agent);
    assert_eq!(ran.as_deref(), Some("codex"));
    let summary = w.stop().await;
    assert!(!summary.unhealthy);
    assert_eq!((summary.failed, summary.succeeded), (7, 1));
    server.shutdown().await.unwrap();
}

/// A worker whose only agent's own key is refused has nothing left to run prompts with: it
/// turns unhealthy and claims no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_only_agents_key_is_refused_turns_unhealthy() {
    let Some((env, model)) = agent_env("claude-code", [Step::fail(401)]).await else {
        return;
    };
    let server = super::github::forge_server(&env, None).await;
    let mut only_claude = Registry::new();
    only_claude.register(Arc::new(agentpool_agents::Configured::new(
        agentpool_agents::claude_code::ClaudeCode,
        AgentConfig {
            bin_dir: Some(bin_dir()),
            session_dir: Some(env.dir.path().join("agent-sessions")),
            ..Default::default()
        },
    )));
    let (ids, w) = refused_six_times(&env, &model, &server.url(), Some(only_claude)).await;
    let worker = super::worker::until("the worker to report itself unhealthy", async || {
        let id = agentpool_core::WorkerId::parse("w1").unwrap();
        let w = env.store.get_worker(&id).await.unwrap()?;
        (w.status == agentpool_core::WorkerStatus::Unhealthy).then_some(w)
    })
    .await;
    assert!(worker.agent_names().contains(&"claude-code".to_string()));
    let summary = w.stop().await;
    assert!(summary.unhealthy);
    assert_eq!(summary.failed, 6);
    let last = env.store.get_task(ids[6]).await.unwrap().unwrap();
    assert_eq!(last.task.state, TaskState::Queued, "the seventh task was claimed");
    assert!(last.attempts_detail.is_empty());
    server.shutdown().await.unwrap();
}

/// Seven Claude Code tasks, three of them with their own key, and a worker (`agents`, else
/// every shipped one) that ran the first six: all refused.
async fn refused_six_times(
    env: &Env,
    model: &ModelServer,
    server: &str,
    agents: Option<Registry>,
) -> (Vec<TaskId>, RunningWorker) {
    let admin = agentpool_client::Client::new(server, None).unwrap();
    admin
        .put_credential("anthropic_api_key", "the-task's-own-key")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut spec = agent_task(env, "claude-code", &format!("Task {i}"));
        if i < 3 {
            spec.credentials = vec!["anthropic_api_key".into()];
        }
        ids.push(env.store.enqueue(spec).await.unwrap().task.id);
    }
    let w = super::github::claude_worker_with(env, TOKEN, model, server, agents);
    for id in &ids[..6] {
        let done = finished_within(&env.store, *id, Duration::from_secs(120)).await;
        assert_eq!(done.task.error_class, Some(ErrorClass::AuthFailed));
    }
    (ids, w)
}

agentpool_testkit::for_each_agent!(
    cancel_ends_the_agent_and_its_children,
    task_writes_a_file_and_commits_it,
    endpoint_401_fails_auth_without_retry,
    endpoint_429_is_rate_limited_and_retried,
);

/// An `agent` task for `prompt`, and a worker for it started.
async fn started(env: &Env, agent: &str, model: &ModelServer, prompt: &str) -> (Task, RunningWorker) {
    let task = env
        .store
        .enqueue(agent_task(env, agent, prompt))
        .await
        .unwrap()
        .task;
    (task, agent_worker(env, agent, model).await)
}

/// Canceling the task while the agent's shell tool runs ends the agent and that shell.
async fn cancel_ends_the_agent_and_its_children(agent: &str) {
    let pidfile = PidFile::new().unwrap();
    let steps = [Step::shell(&pidfile.sleeper()), Step::answer("done")];
    let Some((env, model)) = agent_env(agent, steps).await else {
        return;
    };
    let (task, w) = started(&env, agent, &model, "Run the command").await;
    // The pid file appears once the agent's shell tool runs.
    let pid = pidfile.wait(Duration::from_secs(90), String::new).await;
    env.store.cancel(task.id).await.unwrap();
    let done = finished_within(&env.store, task.id, Duration::from_secs(60)).await;
    w.stop().await;
    assert_eq!(done.task.state, TaskState::Canceled);
    assert!(!alive(pid), "the agent's shell child {pid} survived the cancel");
}

/// A follow-up task (another task directory, another private home) continues the first
/// task's session.
async fn follow_up_task_resumes_the_first_tasks_session(agent: &str) {
    let Some((env, model)) = agent_env(agent, [Step::answer("Noted.")]).await else {
        return;
    };
    let (first, w) = started(&env, agent, &model, "Remember the number 42").await;
    let first_done = finished_within(&env.store, first.id, Duration::from_secs(120)).await;
    assert_succeeded(&first_done);
    let session = first_done
        .task
        .result
        .clone()
        .unwrap()
        .session_id
        .expect("a session id");
    let mut spec = agent_task(&env, agent, "Which number did I ask you to remember?");
    spec.follow_up_of = Some(first.id);
    let second = env.store.enqueue(spec).await.unwrap().task;
    let second_done = finished_within(&env.store, second.id, Duration::from_secs(120)).await;
    w.stop().await;
    assert_succeeded(&second_done);
    assert_eq!(
        second_done.task.result.unwrap().session_id.as_deref(),
        Some(session.as_str())
    );
    let last = model.agent_requests().last().cloned().expect("a model request");
    assert!(
        last.body.to_string().contains("Remember the number 42"),
        "the resumed conversation reached the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_follow_up_task_resumes_the_first_tasks_session() {
    follow_up_task_resumes_the_first_tasks_session("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_follow_up_task_resumes_the_first_tasks_session() {
    follow_up_task_resumes_the_first_tasks_session("codex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_follow_up_task_resumes_the_first_tasks_session() {
    follow_up_task_resumes_the_first_tasks_session("gemini").await;
}

/// Claude Code told to create hello.txt, with three attempts allowed and the limit `limit`
/// sets, run to its end; with the model endpoint, to count what it was asked.
async fn claude_code_creates_hello_under(
    limit: impl FnOnce(&mut TaskSpec),
) -> Option<(TaskDetail, ModelServer)> {
    let agent = "claude-code";
    let (env, model) = agent_env(agent, creates_hello("hello\n")).await?;
    let mut spec = agent_task(&env, agent, "Create hello.txt");
    spec.max_attempts = Some(3);
    limit(&mut spec);
    let done = run_to_end(&env, agent, &model, spec, Duration::from_secs(150)).await;
    Some((done, model))
}

/// Real Claude Code reports `total_cost_usd` (priced from the scripted endpoint's token counts):
/// a limit below it stops the task as `BUDGET_EXCEEDED`, not retried, with the cost recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_over_its_cost_limit_fails_budget_exceeded_without_retry() {
    let Some((done, _)) = claude_code_creates_hello_under(|s| s.max_cost_usd = Some(0.000_001)).await else {
        return;
    };
    let why = format!("{:?}", done.task.error_message);
    assert_eq!(done.task.state, TaskState::Failed, "{why}");
    assert_eq!(done.task.error_class, Some(ErrorClass::BudgetExceeded), "{why}");
    assert_eq!(done.task.attempts, 1, "BUDGET_EXCEEDED is not retried");
    assert!(why.contains("passed the task's limit"), "{why}");
    let result = done.task.result.expect("the result keeps the cost so far");
    assert!(result.cost_usd.is_some_and(|c| c > 0.000_001), "{result:?}");
    assert!(result.usage.output_tokens > 0, "{result:?}");
}

/// Claude Code that uses every turn of the task's `max_turns` fails the task `MAX_TURNS` after
/// one attempt: another would stop the same way, at the same cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_out_of_turns_fails_max_turns_without_retry() {
    let Some((done, model)) = claude_code_creates_hello_under(|s| s.max_turns = Some(1)).await else {
        return;
    };
    let why = format!("{:?}", done.task.error_message);
    assert_eq!(done.task.state, TaskState::Failed, "{why}");
    assert_eq!(done.task.error_class, Some(ErrorClass::MaxTurns), "{why}");
    assert!(why.contains("maximum number of turns"), "{why}");
    assert_eq!(done.task.attempts, 1, "MAX_TURNS is not retried");
    assert_eq!(model.agent_requests().len(), 1, "one attempt, one turn: {why}");
}

/// A final answer of 2,000,000 characters is cut in the task's result (which travels in one
/// report and is the commit's message), the cut said; the task succeeds with its usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_a_very_long_answer_is_cut_in_the_result() {
    let agent = "claude-code";
    let long = "x".repeat(2_000_000);
    let Some((env, model)) = agent_env(agent, [Step::answer(&long)]).await else {
        return;
    };
    let spec = agent_task(&env, agent, "Say a lot");
    let done = run_to_end(&env, agent, &model, spec, Duration::from_secs(150)).await;
    assert_succeeded(&done);
    let result = done.task.result.expect("a result");
    let text = result.final_text.clone().expect("the final text");
    assert!(text.len() < 70 * 1024, "{} bytes kept", text.len());
    assert!(
        text.starts_with("xxxx") && text.ends_with("bytes cut]"),
        "{}",
        &text[text.len() - 40..]
    );
    assert!(result.usage.output_tokens > 0, "{result:?}");
}

/// Claude Code is held to the task's cost limit while it runs (`--max-budget-usd`), not only
/// judged when it ends: a run scripted to make four requests at $0.0006 each, under a $0.001
/// limit, stops after the request that passes it, and fails `BUDGET_EXCEEDED` without retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_stops_itself_at_the_task_s_cost_limit() {
    let agent = "claude-code";
    let steps = [
        Step::write_file("a.txt", "a\n"),
        Step::write_file("b.txt", "b\n"),
        Step::write_file("c.txt", "c\n"),
        Step::answer("done"),
    ];
    let Some((env, model)) = agent_env(agent, steps).await else {
        return;
    };
    let mut spec = agent_task(&env, agent, "Write three files");
    spec.max_attempts = Some(3);
    spec.max_cost_usd = Some(0.001);
    let done = run_to_end(&env, agent, &model, spec, Duration::from_secs(150)).await;
    let why = format!("{:?}", done.task.error_message);
    assert_eq!(done.task.error_class, Some(ErrorClass::BudgetExceeded), "{why}");
    assert_eq!(done.task.attempts, 1, "BUDGET_EXCEEDED is not retried");
    assert_eq!(
        model.agent_requests().len(),
        2,
        "it stopped once past the limit: {why}"
    );
    // Both requests' tokens, though the CLI's own `usage` names only the last one's.
    let result = done.task.result.expect("the result keeps what was spent");
    let tokens = agentpool_testkit::model::OUTPUT_TOKENS;
    assert_eq!(result.usage.output_tokens, 2 * tokens, "{result:?}");
}
