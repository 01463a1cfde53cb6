//! OpenCode's ends of a run: a follow-up in a new home (where OpenCode cannot resume its
//! session) starts a new session, and answers whose stream is cut off are no result and fail
//! the run — over the captured lines and with the real CLI against the scripted endpoint.

use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::cli::{LineParser, finish};
use agentpool_agents::opencode;
use agentpool_agents::process::ProcessOutcome;
use agentpool_core::{ErrorClass, EventKind, NewEvent};
use agentpool_testkit::model::Step;
use tokio_util::sync::CancellationToken;

use crate::real_cli::{Collect, Fixture, agent};

fn cut_off_sample() -> Vec<String> {
    let p =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/samples/opencode-run-cut-off.jsonl");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn feed(parser: &mut opencode::Parser, lines: &[String]) -> Vec<NewEvent> {
    lines.iter().flat_map(|l| parser.parse_line(l)).collect()
}

fn exit_0() -> ProcessOutcome {
    ProcessOutcome {
        exit_code: Some(0),
        signal: None,
        killed: None,
        pgid: 0,
        duration: Duration::from_millis(5),
        output_bytes: 0,
    }
}

fn results(events: &[NewEvent]) -> Vec<(bool, String)> {
    events
        .iter()
        .filter(|e| e.kind() == EventKind::Result)
        .map(|e| {
            let d = e.data();
            (
                d["is_error"] == true,
                d["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn answers_cut_off_are_no_result_and_three_in_a_row_fail_the_run() {
    let lines = cut_off_sample();
    // Four steps, each `step_start`, `text` "x", `step_finish` with reason `unknown`.
    assert_eq!(lines.len(), 12);
    let mut p = opencode::Parser::default();
    let first_two = feed(&mut p, &lines[..6]);
    assert!(results(&first_two).is_empty(), "{first_two:#?}");
    assert_eq!(p.gave_up(), None);
    let rest = feed(&mut p, &lines[6..]);
    let r = results(&rest);
    assert_eq!(r.len(), 1, "one failed result, at the third in a row: {rest:#?}");
    assert!(r[0].0, "{r:?}");
    assert!(
        r[0].1.contains("without a finish reason 3 times in a row"),
        "{r:?}"
    );
    assert!(p.gave_up().is_some());
    let o = finish(&p, &exit_0(), &[]);
    assert!(o.is_error);
    assert_eq!(o.error_class, Some(ErrorClass::AgentError));
    assert_eq!(o.error_message.as_deref(), Some(r[0].1.as_str()));
}

#[test]
fn an_answer_that_ends_after_a_cut_off_one_is_the_result() {
    let mut lines = cut_off_sample();
    lines.truncate(9);
    // The third answer finishes: OpenCode's asking again recovered the run.
    lines[8] = lines[8].replace("\"reason\":\"unknown\"", "\"reason\":\"stop\"");
    let mut p = opencode::Parser::default();
    let events = feed(&mut p, &lines);
    assert_eq!(results(&events), [(false, "x".to_string())]);
    let o = finish(&p, &exit_0(), &[]);
    assert!(!o.is_error, "{o:#?}");
    assert_eq!(o.final_text.as_deref(), Some("x"));
    assert_eq!(o.num_turns, Some(3));
}

/// With the real CLI: the endpoint cuts every answer off. No answer may count as a result,
/// and the run must stop itself and fail saying why (`AGENT_ERROR`, not the timeout it would
/// reach asking again and again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_run_whose_answers_are_cut_off_fails() {
    let Some(agent) = agent("opencode") else { return };
    let fx = Fixture::new(vec![Step::cut_off("x")]).await;
    let mut req = fx.request("opencode", "Say x");
    req.timeout = Duration::from_secs(90);
    let sink = Arc::new(Collect::default());
    // Nobody cancels it: the run stops itself once the parser gives up, well before its timeout.
    let o = agent
        .run(req, sink.clone(), CancellationToken::new())
        .await
        .expect("the agent runs");
    let events = sink.of(EventKind::Result);
    let why = format!("outcome: {o:#?}\nresults: {events:#?}");
    let r = results(&events);
    assert!(o.is_error, "{why}");
    assert_eq!(o.error_class, Some(ErrorClass::AgentError), "{why}");
    assert!(
        o.error_message
            .as_deref()
            .is_some_and(|m| m.contains("without a finish reason 3 times in a row")),
        "{why}"
    );
    assert!(r.iter().all(|(failed, _)| *failed), "{why}");
    assert!(
        r.iter()
            .any(|(_, text)| text.contains("without a finish reason 3 times in a row")),
        "{why}"
    );
    assert!(
        fx.server.agent_requests().len() >= 3,
        "the endpoint was asked again: {why}"
    );
}

/// A first OpenCode run, "Remember 42", answered "Noted.": its fixture (and home) and session.
async fn remember_42(agent: &dyn agentpool_agents::CodeAgent) -> (Fixture, String) {
    let fx = Fixture::new(vec![Step::answer("Noted.")]).await;
    let (first, _) = fx.run(agent, fx.request("opencode", "Remember 42")).await;
    assert!(!first.is_error, "{first:#?}");
    let session = first.session_id.clone().expect("a session id");
    (fx, session)
}

/// As the worker runs a follow-up: another task directory, another private home. OpenCode
/// cannot resume the earlier session there; the follow-up runs as a new session, told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_follow_up_in_a_fresh_home_starts_a_new_session() {
    let Some(agent) = agent("opencode") else { return };
    let (_, earlier) = remember_42(agent.as_ref()).await;

    let fx = Fixture::new(vec![Step::answer("Done again.")]).await;
    let mut req = fx.request("opencode", "Add a line to README.md");
    req.resume_session = Some(earlier.clone());
    let (o, sink) = fx.run(agent.as_ref(), req).await;
    let logs = sink.logs();
    let why = format!("outcome: {o:#?}\nlogs: {logs:#?}");
    assert!(!o.is_error, "{why}");
    assert_eq!(o.final_text.as_deref(), Some("Done again."), "{why}");
    let new = o.session_id.clone().expect("a session id");
    assert_ne!(new, earlier, "{why}");
    let said: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("starts a new session"))
        .collect();
    assert_eq!(said.len(), 1, "{why}");
    assert!(said[0].contains(&earlier), "{why}");
    let asked = fx.server.agent_requests().last().cloned().expect("a request");
    let body = asked.body.to_string();
    assert!(body.contains("Add a line to README.md"), "{why}");
    assert!(body.contains("follows up an earlier one"), "{why}");
}

/// OpenCode colours what it writes to stderr even when that is no terminal: the log and the
/// failure keep its words, not its colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_s_stderr_reads_as_text_in_the_log() {
    let Some(agent) = agent("opencode") else { return };
    let (fx, _) = remember_42(agent.as_ref()).await;
    // In the same home (as a feedback round runs), a session OpenCode does not have.
    let mut req = fx.request("opencode", "Say it again");
    req.resume_session = Some("ses_0123456789abcdefghijklmnop".into());
    let (o, sink) = fx.run(agent.as_ref(), req).await;
    let logs = sink.logs();
    let why = format!("outcome: {o:#?}\nlogs: {logs:#?}");
    assert!(o.is_error, "{why}");
    assert!(
        logs.iter().any(|l| l.contains("Error: Session not found")),
        "{why}"
    );
    assert!(logs.iter().all(|l| !l.contains("\\u001b")), "{why}");
    let message = o.error_message.clone().unwrap_or_default();
    assert!(
        message.contains("Error: Session not found") && !message.contains('\x1b'),
        "{why}"
    );
}
