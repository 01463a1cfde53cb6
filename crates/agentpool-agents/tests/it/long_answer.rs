//! A final answer far longer than any event keeps: the run still succeeds with its whole text,
//! its usage and its cost, while the events that carry the text cut it for storage. A long
//! answer that repeats itself is one Gemini CLI stops instead: that run fails, saying so.

use agentpool_agents::events::MAX_FIELD_CHARS;
use agentpool_core::EventKind;
use agentpool_testkit::model::Step;

use crate::real_cli::{Fixture, agent};

/// Two million characters: one output line of Claude Code's (its `result` line carries the
/// whole text beside the run's cost), twice the longest line the adapters used to parse.
const LONG: usize = 2_000_000;

async fn a_long_final_answer_succeeds_with_its_text_and_usage(name: &str) {
    let Some(agent) = agent(name) else { return };
    let text = "All done. ".repeat(LONG / 10);
    let fx = Fixture::new(vec![Step::answer(&text)]).await;
    let (o, sink) = fx.run(agent.as_ref(), fx.request(name, "Say a lot")).await;
    let why = format!(
        "is_error {} {:?} {:?}, final text of {:?} bytes, usage {:?}, cost {:?}",
        o.is_error,
        o.error_class,
        o.error_message,
        o.final_text.as_ref().map(String::len),
        o.usage,
        o.cost_usd
    );
    assert!(!o.is_error, "{why}");
    // Compared, not printed: the text is two megabytes.
    assert!(
        o.final_text.as_deref().map(str::trim) == Some(text.trim()),
        "{why}"
    );
    assert!(o.usage.input_tokens > 0 && o.usage.output_tokens > 0, "{why}");
    if name == "claude-code" {
        assert!(o.cost_usd.is_some_and(|c| c > 0.0), "{why}");
    }
    // Events stay small: the text is cut, and the cut is marked.
    let results = sink.of(EventKind::Result);
    let shown = results
        .last()
        .and_then(|e| e.data()["text"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        shown.len() < MAX_FIELD_CHARS + 100 && shown.ends_with("bytes cut]"),
        "{why}: the result event's text is {} bytes",
        shown.len()
    );
    assert!(sink.of(EventKind::Raw).iter().all(|e| {
        e.data()["line"]
            .as_str()
            .is_none_or(|l| l.len() < MAX_FIELD_CHARS + 100)
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_long_final_answer_succeeds_with_its_text_usage_and_cost() {
    a_long_final_answer_succeeds_with_its_text_and_usage("claude-code").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_long_final_answer_succeeds_with_its_text_and_usage() {
    a_long_final_answer_succeeds_with_its_text_and_usage("codex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_long_final_answer_succeeds_with_its_text_and_usage() {
    a_long_final_answer_succeeds_with_its_text_and_usage("opencode").await;
}

/// Gemini CLI stops a model that repeats itself (its loop detection) and still reports
/// `success`, with no answer: the run did not do its work, and fails saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_stopping_a_looping_model_fails_the_run() {
    let Some(agent) = agent("gemini") else { return };
    let fx = Fixture::new(vec![Step::answer(&"All done. ".repeat(2_000))]).await;
    let (o, sink) = fx.run(agent.as_ref(), fx.request("gemini", "Say a lot")).await;
    let why = format!("{o:#?}\nresults: {:?}", sink.of(EventKind::Result));
    assert!(o.is_error, "{why}");
    assert_eq!(
        o.error_class,
        Some(agentpool_core::ErrorClass::AgentError),
        "{why}"
    );
    assert_eq!(
        o.error_message.as_deref(),
        Some("gemini stopped the model: Loop detected, stopping execution"),
        "{why}"
    );
    let results = sink.of(EventKind::Result);
    assert!(
        results.last().is_some_and(|r| r.data()["is_error"] == true),
        "{why}"
    );
}
