//! Follow-ups of the REAL agent CLIs against the scripted endpoint, each in a fresh home and
//! workspace as the worker runs them: a resumed run records only what it spent itself (the
//! endpoint reports the same usage for every request), and a second follow-up of a task resumes
//! the session as that task left it, not as the first follow-up did.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::{AgentConfig, AgentOutcome, AgentRequest, CodeAgent, Registry};
use agentpool_core::{EventKind, Usage};
use agentpool_testkit::model::{INPUT_TOKENS, OUTPUT_TOKENS, Step};

use crate::real_cli::{Collect, Fixture, bin_dir};

/// What the scripted endpoint's answers cost on Claude Code's price list for the model the
/// fixture picks: 100 input and 20 output tokens at $3 and $15 per million.
const CLAUDE_COST_PER_REQUEST: f64 = 0.0006;

/// The adapter for `name` with its own kept-session directory, or `None` when its CLI is not
/// installed (see [`crate::real_cli::agent`]).
fn agent_keeping_in(name: &str, kept: &Path) -> Option<Arc<dyn CodeAgent>> {
    crate::real_cli::agent(name)?;
    let cfg = AgentConfig {
        bin_dir: Some(bin_dir()),
        session_dir: Some(kept.to_path_buf()),
        ..Default::default()
    };
    Registry::builtin(&cfg).get(name)
}

/// A fixture whose workspace is another checkout of `earlier`'s repository (what a follow-up
/// task gets), with a home of its own.
async fn next_task(earlier: &Fixture, steps: Vec<Step>) -> Fixture {
    let fx = Fixture::new(steps).await;
    std::fs::remove_dir_all(fx.repo.path().join(".git")).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(earlier.repo.path().join(".git"))
        .arg(fx.repo.path())
        .status()
        .unwrap();
    assert!(cp.success());
    fx
}

/// A request for task `task` that resumes `session` as task `from` left it.
fn follow_up(fx: &Fixture, name: &str, prompt: &str, session: &str, task: &str, from: &str) -> AgentRequest {
    let mut req = fx.request(name, prompt);
    req.resume_session = Some(session.to_string());
    req.keep_as = Some(task.to_string());
    req.restore_from = Some(from.to_string());
    req
}

/// A first task, "Remember 42", answered "Noted." and kept under `keep_as` (or its session id
/// alone): its fixture and session id.
async fn remember_42(agent: &dyn CodeAgent, name: &str, keep_as: Option<&str>) -> (Fixture, String) {
    let fx = Fixture::new(vec![Step::answer("Noted.")]).await;
    let mut req = fx.request(name, "Remember 42");
    req.keep_as = keep_as.map(str::to_string);
    let (first, sink) = fx.run(agent, req).await;
    assert!(!first.is_error, "{}", why(&first, &sink, &fx));
    let session = first.session_id.clone().expect("a session id");
    (fx, session)
}

/// The follow-up task `task` of `first_fx`'s task-a, in a new fixture whose endpoint answers
/// "It was 42.", asking what it was asked to remember.
async fn ask_what_was_remembered(
    agent: &dyn CodeAgent,
    name: &str,
    first_fx: &Fixture,
    session: &str,
    task: &str,
) -> (Fixture, AgentOutcome, Arc<Collect>) {
    let fx = next_task(first_fx, vec![Step::answer("It was 42.")]).await;
    let mut req = follow_up(
        &fx,
        name,
        "What did I ask you to remember?",
        session,
        task,
        "task-a",
    );
    // A setting Codex and Gemini CLI say they ignore as they prepare: said once, even by a run
    // prepared again as a new session.
    req.max_turns = Some(10);
    let (outcome, sink) = fx.run(agent, req).await;
    (fx, outcome, sink)
}

/// The body of the last request `fx`'s endpoint was sent: the conversation the agent resumed.
fn last_request(fx: &Fixture) -> String {
    fx.server
        .agent_requests()
        .last()
        .cloned()
        .expect("a request")
        .body
        .to_string()
}

fn why(o: &AgentOutcome, sink: &Collect, fx: &Fixture) -> String {
    let requests = fx.server.agent_requests().len();
    format!(
        "outcome: {o:#?}\nusage events: {:?}\nrequests to the endpoint: {requests}",
        sink.of(EventKind::Usage)
    )
}

/// The run made `requests` requests and records exactly their tokens (and, for Claude Code,
/// their cost), in its outcome and in its live usage events alike.
fn records_only_its_own(name: &str, o: &AgentOutcome, sink: &Collect, fx: &Fixture) {
    let why = why(o, sink, fx);
    assert!(!o.is_error, "{why}");
    let requests = fx.server.agent_requests().len() as u64;
    assert!(requests >= 1, "{why}");
    let own = Usage {
        input_tokens: requests * INPUT_TOKENS,
        output_tokens: requests * OUTPUT_TOKENS,
        ..Usage::default()
    };
    assert_eq!(o.usage, own, "{why}");
    let mut events = Usage::default();
    let mut event_cost = 0.0;
    for e in sink.of(EventKind::Usage) {
        let d = e.data();
        events.add(&serde_json::from_value::<Usage>(d.clone()).unwrap());
        event_cost += d["cost_usd"].as_f64().unwrap_or(0.0);
    }
    assert_eq!(
        events, own,
        "the usage events add up to the run's own tokens: {why}"
    );
    if name == "claude-code" {
        let cost = o.cost_usd.expect("Claude Code reports a cost");
        let expected = requests as f64 * CLAUDE_COST_PER_REQUEST;
        assert!(
            (cost - expected).abs() < 1e-9,
            "cost {cost}, expected {expected}: {why}"
        );
        assert!(
            (event_cost - cost).abs() < 1e-9,
            "the usage events add up to the cost: {why}"
        );
    }
}

/// A task, a follow-up in a fresh home, and that follow-up's feedback round in the same home:
/// each records only the requests it made itself.
async fn a_follow_up_records_only_its_own_tokens_and_cost(name: &str) {
    let kept = tempfile::tempdir().unwrap();
    let Some(agent) = agent_keeping_in(name, kept.path()) else {
        return;
    };
    // The first task makes two requests: what a follow-up would count again.
    let first_fx = Fixture::new(vec![Step::shell("echo hi"), Step::answer("Noted.")]).await;
    let mut req = first_fx.request(name, "Remember 42");
    req.keep_as = Some("task-a".into());
    let (first, sink) = first_fx.run(agent.as_ref(), req).await;
    records_only_its_own(name, &first, &sink, &first_fx);
    let session = first.session_id.clone().expect("a session id");

    let (fx, second, sink) =
        ask_what_was_remembered(agent.as_ref(), name, &first_fx, &session, "task-b").await;
    assert_eq!(
        second.session_id.as_deref(),
        Some(session.as_str()),
        "{}",
        why(&second, &sink, &fx)
    );
    records_only_its_own(name, &second, &sink, &fx);

    // A feedback round of the follow-up: the same home, the session as its first run left it.
    let requests_before = fx.server.agent_requests().len();
    let req = follow_up(&fx, name, "Say it again.", &session, "task-b", "task-b");
    let (round, sink) = fx.run(agent.as_ref(), req).await;
    let why = why(&round, &sink, &fx);
    assert!(!round.is_error, "{why}");
    let requests = (fx.server.agent_requests().len() - requests_before) as u64;
    assert_eq!(round.usage.input_tokens, requests * INPUT_TOKENS, "{why}");
    assert_eq!(round.usage.output_tokens, requests * OUTPUT_TOKENS, "{why}");
    if name == "claude-code" {
        let cost = round.cost_usd.expect("a cost");
        assert!(
            (cost - requests as f64 * CLAUDE_COST_PER_REQUEST).abs() < 1e-9,
            "{why}"
        );
    }
}

/// Two follow-ups of the same task: the second resumes the task's conversation, without the
/// first follow-up's turns.
async fn a_second_follow_up_does_not_see_the_first_follow_ups_turns(name: &str) {
    let kept = tempfile::tempdir().unwrap();
    let Some(agent) = agent_keeping_in(name, kept.path()) else {
        return;
    };
    let (first_fx, session) = remember_42(agent.as_ref(), name, Some("task-a")).await;

    let b = next_task(&first_fx, vec![Step::answer("Noted 7 as well.")]).await;
    let req = follow_up(&b, name, "Remember 7 too", &session, "task-b", "task-a");
    let (second, sink) = b.run(agent.as_ref(), req).await;
    assert!(!second.is_error, "{}", why(&second, &sink, &b));

    let (c, third, sink) = ask_what_was_remembered(agent.as_ref(), name, &first_fx, &session, "task-c").await;
    let why = why(&third, &sink, &c);
    assert!(!third.is_error, "{why}");
    assert_eq!(third.session_id.as_deref(), Some(session.as_str()), "{why}");
    let last = last_request(&c);
    assert!(
        last.contains("Remember 42"),
        "the task's conversation was resumed: {why}"
    );
    assert!(
        !last.contains("Remember 7 too") && !last.contains("Noted 7 as well"),
        "the first follow-up's turns reached the second: {why}"
    );
    records_only_its_own(name, &third, &sink, &c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_follow_up_records_only_its_own_tokens_and_cost() {
    a_follow_up_records_only_its_own_tokens_and_cost("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_follow_up_records_only_its_own_tokens_and_cost() {
    a_follow_up_records_only_its_own_tokens_and_cost("codex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_follow_up_records_only_its_own_tokens_and_cost() {
    a_follow_up_records_only_its_own_tokens_and_cost("gemini").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_second_follow_up_does_not_see_the_first_follow_ups_turns() {
    a_second_follow_up_does_not_see_the_first_follow_ups_turns("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_second_follow_up_does_not_see_the_first_follow_ups_turns() {
    a_second_follow_up_does_not_see_the_first_follow_ups_turns("codex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_second_follow_up_does_not_see_the_first_follow_ups_turns() {
    a_second_follow_up_does_not_see_the_first_follow_ups_turns("gemini").await;
}

/// A session kept under its id alone (by a run that named no task, or before copies were kept
/// per task) is still resumed by a follow-up that names the task it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_kept_under_its_id_alone_is_still_resumed() {
    let name = "claude-code";
    let kept = tempfile::tempdir().unwrap();
    let Some(agent) = agent_keeping_in(name, kept.path()) else {
        return;
    };
    let (first_fx, session) = remember_42(agent.as_ref(), name, None).await;
    let (fx, second, sink) =
        ask_what_was_remembered(agent.as_ref(), name, &first_fx, &session, "task-b").await;
    assert!(
        last_request(&fx).contains("Remember 42"),
        "{}",
        why(&second, &sink, &fx)
    );
    records_only_its_own(name, &second, &sink, &fx);
}

/// A follow-up run by another worker (or pod), which keeps no copy of the session: the CLI
/// could not resume it (Claude Code answers "No conversation found" and fails), so the run is a
/// new session, told that it continues earlier work, and its log says so once.
async fn a_follow_up_on_another_worker_starts_a_new_session(name: &str) {
    let (kept_here, kept_there) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (Some(here), Some(there)) = (
        agent_keeping_in(name, kept_here.path()),
        agent_keeping_in(name, kept_there.path()),
    ) else {
        return;
    };
    let (first_fx, earlier) = remember_42(here.as_ref(), name, Some("task-a")).await;

    let (fx, o, sink) = ask_what_was_remembered(there.as_ref(), name, &first_fx, &earlier, "task-b").await;
    let logs = sink.logs();
    let why = format!("{}\nlogs: {logs:#?}", why(&o, &sink, &fx));
    assert!(!o.is_error, "{why}");
    assert_eq!(o.final_text.as_deref(), Some("It was 42."), "{why}");
    assert_ne!(o.session_id.as_deref(), Some(earlier.as_str()), "{why}");
    let said: Vec<&String> = logs.iter().filter(|l| l.contains("cannot resume")).collect();
    let ignored = logs.iter().filter(|l| l.contains("max_turns is ignored"));
    assert_eq!(ignored.count(), usize::from(name != "claude-code"), "{why}");
    assert_eq!(said.len(), 1, "{why}");
    assert!(
        said[0].contains(&earlier) && said[0].contains("no copy of it is kept on this worker"),
        "{why}"
    );
    let body = last_request(&fx);
    assert!(body.contains("What did I ask you to remember?"), "{why}");
    assert!(body.contains("follows up an earlier one"), "{why}");
    assert!(
        !body.contains("Remember 42"),
        "the earlier conversation is not there: {why}"
    );
    records_only_its_own(name, &o, &sink, &fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_follow_up_on_another_worker_starts_a_new_session() {
    a_follow_up_on_another_worker_starts_a_new_session("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_follow_up_on_another_worker_starts_a_new_session() {
    a_follow_up_on_another_worker_starts_a_new_session("codex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_follow_up_on_another_worker_starts_a_new_session() {
    a_follow_up_on_another_worker_starts_a_new_session("gemini").await;
}

/// A run keeps its session and removes the copies not written for the days kept (one is kept
/// per task, and nothing else would remove them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_removes_kept_sessions_past_their_time() {
    let name = "claude-code";
    let kept = tempfile::tempdir().unwrap();
    let Some(agent) = agent_keeping_in(name, kept.path()) else {
        return;
    };
    let old = kept.path().join(name).join("tasks").join("task-old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("a.jsonl"), "{}").unwrap();
    let forty_days = Duration::from_secs(40 * 24 * 3600);
    std::fs::File::open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - forty_days)
        .unwrap();
    remember_42(agent.as_ref(), name, Some("task-new")).await;
    assert!(!old.exists(), "a copy 40 days old is still kept");
    let new = kept.path().join(name).join("tasks").join("task-new");
    assert!(new.is_dir(), "this run's copy is kept");
}
