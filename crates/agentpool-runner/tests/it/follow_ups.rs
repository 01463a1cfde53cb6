//! Follow-up tasks of the REAL agent CLIs through the worker pipeline, each on a fresh worker
//! sharing the kept sessions: a follow-up records (and is held to its cost limit by) only what
//! its own run spent, and a second follow-up of a task resumes the session as that task left
//! it, without the first follow-up's turns. A follow-up resumes the session only when the work
//! it speaks of is in its workspace: after a task that pushed its branch, not after one that
//! pushed nothing (its log says so).

use std::time::Duration;

use agentpool_core::{BranchName, CheckSpec, ErrorClass, TaskId, TaskResult, TaskSpec, TaskState};
use agentpool_testkit::model::{INPUT_TOKENS, ModelServer, OUTPUT_TOKENS, Step};

use super::agents::{agent_env, agent_task, run_to_end};
use super::worker::{Env, events, log_lines, succeeded_result};

/// What one scripted answer costs on Claude Code's price list: 100 input and 20 output tokens
/// of claude-sonnet-4-5 at $3 and $15 per million.
const CLAUDE_COST_PER_REQUEST: f64 = 0.0006;

/// Run `spec` to its end on a worker of its own; the task, its result, and the bodies of the
/// agent requests it made.
async fn run(
    env: &Env,
    agent: &str,
    model: &ModelServer,
    spec: TaskSpec,
) -> (TaskId, TaskResult, Vec<String>) {
    let before = model.agent_requests().len();
    let done = run_to_end(env, agent, model, spec, Duration::from_secs(150)).await;
    let result = succeeded_result(&done);
    let bodies = model.agent_requests()[before..]
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    (done.task.id, result, bodies)
}

/// The task made `requests` agent requests and its result counts exactly theirs.
fn records_only_its_own(agent: &str, result: &TaskResult, requests: usize) {
    let n = requests as u64;
    assert!(n >= 1, "{result:?}");
    assert_eq!(result.usage.input_tokens, n * INPUT_TOKENS, "{result:?}");
    assert_eq!(result.usage.output_tokens, n * OUTPUT_TOKENS, "{result:?}");
    if agent == "claude-code" {
        let cost = result.cost_usd.expect("a cost");
        assert!(
            (cost - n as f64 * CLAUDE_COST_PER_REQUEST).abs() < 1e-9,
            "{result:?}"
        );
    }
}

fn follow_up(env: &Env, agent: &str, prompt: &str, of: TaskId) -> TaskSpec {
    let mut spec = agent_task(env, agent, prompt);
    spec.follow_up_of = Some(of);
    spec
}

async fn two_follow_ups_of_one_task(agent: &str) {
    let Some((env, model)) = agent_env(agent, [Step::answer("Noted.")]).await else {
        return;
    };
    let spec = agent_task(&env, agent, "Remember the number 42");
    let (first, a, _) = run(&env, agent, &model, spec).await;
    let session = a.session_id.clone().expect("a session id");

    // A limit the follow-up's own run stays under, but the session's running total would not.
    let mut spec = follow_up(&env, agent, "Remember the number 7 as well", first);
    spec.max_cost_usd = Some(1.5 * CLAUDE_COST_PER_REQUEST);
    let (_, b, bodies) = run(&env, agent, &model, spec).await;
    assert_eq!(b.session_id.as_deref(), Some(session.as_str()));
    records_only_its_own(agent, &b, bodies.len());

    let spec = follow_up(&env, agent, "Which number did I ask you to remember?", first);
    let (_, c, bodies) = run(&env, agent, &model, spec).await;
    assert_eq!(c.session_id.as_deref(), Some(session.as_str()));
    records_only_its_own(agent, &c, bodies.len());
    let last = bodies.last().expect("a request");
    assert!(
        last.contains("Remember the number 42"),
        "the task's session was resumed"
    );
    assert!(
        !last.contains("Remember the number 7 as well"),
        "the first follow-up's turns reached the second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_follow_ups_of_one_task_each_resume_it_and_count_their_own_cost() {
    two_follow_ups_of_one_task("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_follow_ups_of_one_task_each_resume_it_and_count_their_own_tokens() {
    two_follow_ups_of_one_task("codex").await;
}

/// The line a follow-up's log has when it does not resume the session of task `earlier`.
fn not_resumed_line(earlier: TaskId) -> String {
    format!(
        "task {earlier}'s session is not resumed: what that task did is not in this workspace (it \
         pushed nothing this task starts from), or it left no session; the agent starts a new one"
    )
}

/// The script of these tests: write hello.txt, then (and from then on) say it was done.
fn writes_hello() -> [Step; 2] {
    [
        Step::write_file("hello.txt", "hello\n"),
        Step::answer("Created hello.txt."),
    ]
}

/// A follow-up on the work branch the server gives it (the earlier task's) resumes the session
/// of a task that pushed that branch: its work is there.
async fn a_follow_up_of_a_task_that_pushed_resumes_its_session(agent: &str) {
    let Some((env, model)) = agent_env(agent, writes_hello()).await else {
        return;
    };
    let spec = agent_task(&env, agent, "Create hello.txt");
    let (first, a, _) = run(&env, agent, &model, spec).await;
    assert!(a.pushed, "{a:?}");
    let session = a.session_id.clone().expect("a session id");

    let mut spec = follow_up(&env, agent, "Now say what you did", first);
    spec.branch = a.branch.clone();
    let (second, b, bodies) = run(&env, agent, &model, spec).await;
    assert_eq!(b.session_id.as_deref(), Some(session.as_str()));
    let last = bodies.last().expect("a request");
    assert!(last.contains("Create hello.txt"), "the session was resumed");
    let lines = log_lines(&events(&env.store, second).await);
    assert!(!lines.contains(&not_resumed_line(first)), "{lines:?}");
}

/// A task whose checks failed pushed nothing: its follow-up starts from the base, without the
/// file the earlier session wrote, so that session is not resumed, and the log says so.
async fn a_follow_up_of_a_task_that_pushed_nothing_starts_a_new_session(agent: &str) {
    let Some((env, model)) = agent_env(agent, writes_hello()).await else {
        return;
    };
    let mut spec = agent_task(&env, agent, "Create hello.txt");
    spec.checks = Some(vec![CheckSpec::command("false")]);
    spec.max_rounds = Some(1);
    let done = run_to_end(&env, agent, &model, spec, Duration::from_secs(150)).await;
    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::ChecksFailed));
    let a = done.task.result.clone().expect("a result");
    assert!(!a.pushed && a.commit_sha.is_none(), "{a:?}");
    let session = a.session_id.clone().expect("the failed task's session");
    let first = done.task.id;

    // On the earlier task's work branch, as the server gives it: the remote has no such branch.
    let mut spec = follow_up(&env, agent, "Now say what you did", first);
    spec.branch = Some(BranchName::for_task(first).as_str().to_string());
    let (second, b, bodies) = run(&env, agent, &model, spec).await;
    assert_ne!(b.session_id.as_deref(), Some(session.as_str()), "{b:?}");
    assert!(
        bodies.iter().all(|body| !body.contains("Create hello.txt")),
        "the earlier conversation reached the model"
    );
    let lines = log_lines(&events(&env.store, second).await);
    assert!(lines.contains(&not_resumed_line(first)), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_a_follow_up_of_a_task_that_pushed_resumes_its_session() {
    a_follow_up_of_a_task_that_pushed_resumes_its_session("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_a_follow_up_of_a_task_that_pushed_resumes_its_session() {
    a_follow_up_of_a_task_that_pushed_resumes_its_session("codex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_a_follow_up_of_a_task_that_pushed_nothing_starts_a_new_session() {
    a_follow_up_of_a_task_that_pushed_nothing_starts_a_new_session("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_a_follow_up_of_a_task_that_pushed_nothing_starts_a_new_session() {
    a_follow_up_of_a_task_that_pushed_nothing_starts_a_new_session("codex").await;
}
