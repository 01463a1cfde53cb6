//! Parser tests over the real CLIs' captured output (tests/samples, copied from the shared
//! captures) and over fuzzed lines.

use std::path::PathBuf;

use agentpool_agents::cli::{LineParser, finish};
use agentpool_agents::process::ProcessOutcome;
use agentpool_agents::{claude_code, codex, gemini, opencode};
use agentpool_core::{ErrorClass, EventKind, NewEvent};
use proptest::prelude::*;

fn sample(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/samples")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn parser_for(name: &str) -> Box<dyn LineParser> {
    if name.starts_with("claude-code") {
        Box::new(claude_code::Parser::default())
    } else if name.starts_with("codex") {
        Box::new(codex::Parser::default())
    } else if name.starts_with("gemini") {
        Box::new(gemini::Parser::default())
    } else if name.starts_with("opencode-run") {
        Box::new(opencode::Parser::default())
    } else {
        panic!("no parser for sample {name}")
    }
}

struct Parsed {
    events: Vec<NewEvent>,
    parser: Box<dyn LineParser>,
}

impl Parsed {
    fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(|e| e.kind()).collect()
    }
    fn has(&self, k: EventKind) -> bool {
        self.kinds().contains(&k)
    }
    fn of(&self, k: EventKind) -> Vec<&NewEvent> {
        self.events.iter().filter(|e| e.kind() == k).collect()
    }
    /// A run of the "write hello.txt" script: its first tool call is `tool` and succeeded, in
    /// session `session`, answering "Created hello.txt." after 200 input tokens. Its outcome
    /// (exit 0).
    fn wrote_hello(&self, tool: &str, session: &str) -> agentpool_agents::AgentOutcome {
        assert_eq!(self.of(EventKind::ToolCall)[0].data()["name"], tool);
        assert_eq!(self.of(EventKind::ToolResult)[0].data()["ok"], true);
        let o = self.outcome(0);
        assert_eq!(o.session_id.as_deref(), Some(session));
        assert_eq!(o.final_text.as_deref(), Some("Created hello.txt."));
        assert_eq!(o.usage.input_tokens, 200);
        o
    }
    /// The outcome as if the process exited with `code`.
    fn outcome(&self, code: i32) -> agentpool_agents::AgentOutcome {
        let exit = ProcessOutcome {
            exit_code: Some(code),
            signal: None,
            killed: None,
            pgid: 0,
            duration: std::time::Duration::from_millis(5),
            output_bytes: 0,
        };
        finish(self.parser.as_ref(), &exit, &[])
    }
}

fn parse(name: &str) -> Parsed {
    let mut parser = parser_for(name);
    let mut events = Vec::new();
    for line in sample(name).lines().filter(|l| !l.trim().is_empty()) {
        let ev = parser.parse_line(line);
        assert!(!ev.is_empty(), "{name}: line produced no event: {line}");
        events.extend(ev);
    }
    Parsed { events, parser }
}

/// The sample `name`, its process exiting with `code`, fails with `class`.
fn assert_class(name: &str, code: i32, class: ErrorClass) {
    assert_eq!(parse(name).outcome(code).error_class, Some(class), "{name}");
}

/// The sample is rate limited, and the agent's one-second retry hint reaches the outcome.
fn assert_rate_limited_retry_after_1s(name: &str, code: i32) {
    let o = parse(name).outcome(code);
    assert_eq!(o.error_class, Some(ErrorClass::RateLimited), "{name}");
    assert_eq!(o.retry_after, Some(std::time::Duration::from_secs(1)), "{name}");
}

#[test]
fn every_sample_line_of_every_agent_becomes_an_event() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".jsonl") {
            parse(&name);
            n += 1;
        }
    }
    assert!(n >= 25, "expected the captured samples, found {n}");
}

#[test]
fn opencode_serve_streams_are_kept_as_raw_events_by_the_run_parser() {
    // The adapter uses `opencode run`, not `serve`; its SSE captures still must not break or
    // vanish in the parser (every line is kept).
    for name in [
        "opencode-serve-events.txt",
        "opencode-serve-events-abort.txt",
        "opencode-serve-events-permission.txt",
    ] {
        let mut p = opencode::Parser::default();
        for line in sample(name).lines().filter(|l| !l.trim().is_empty()) {
            assert!(!p.parse_line(line).is_empty(), "{name}: {line}");
        }
    }
}

#[test]
fn claude_code_write_file_run_has_tool_call_result_usage_and_cost() {
    let p = parse("claude-code-write-file.jsonl");
    let call = p.of(EventKind::ToolCall)[0];
    assert_eq!(call.data()["name"], "Write");
    assert_eq!(call.data()["input"]["content"], "hello from stub\n");
    assert_eq!(p.of(EventKind::ToolResult)[0].data()["ok"], true);
    assert_eq!(
        p.of(EventKind::SessionStarted)[0].data()["session_id"],
        "a9d1eebf-4c05-4419-b14d-aa0ab612fbf2"
    );
    let o = p.outcome(0);
    assert!(!o.is_error);
    assert_eq!(o.final_text.as_deref(), Some("Created hello.txt."));
    assert_eq!(
        o.session_id.as_deref(),
        Some("a9d1eebf-4c05-4419-b14d-aa0ab612fbf2")
    );
    assert_eq!(o.num_turns, Some(2));
    assert_eq!(o.usage.input_tokens, 200);
    assert_eq!(o.usage.output_tokens, 40);
    assert_eq!(o.cost_usd, Some(0.0016));
}

#[test]
fn claude_code_result_is_found_although_type_is_not_the_first_key() {
    let p = parse("claude-code-text-only.jsonl");
    assert!(p.has(EventKind::Result));
    assert!(!p.outcome(0).is_error);
}

#[test]
fn claude_code_api_errors_are_classified_from_api_error_status() {
    assert_class("claude-code-401.jsonl", 1, ErrorClass::AuthFailed);
    assert_class("claude-code-429.jsonl", 1, ErrorClass::RateLimited);
}

#[test]
fn claude_code_without_a_login_is_an_auth_failure() {
    // No request reaches an endpoint, so there is no status: the synthetic message's `error`
    // names the failure.
    let o = parse("claude-code-not-logged-in.jsonl").outcome(1);
    assert_eq!(o.error_class, Some(ErrorClass::AuthFailed));
    assert!(o.error_message.unwrap().contains("Not logged in"));
}

#[test]
fn claude_code_max_turns_is_its_own_final_class() {
    let o = parse("claude-code-max-turns.jsonl").outcome(1);
    assert!(o.is_error);
    assert_eq!(o.error_class, Some(ErrorClass::MaxTurns));
    assert!(!ErrorClass::MaxTurns.is_retryable());
    // The session is kept, so a follow-up can go on from where the run stopped.
    assert!(o.session_id.is_some());
    assert!(o.error_message.unwrap().contains("maximum number of turns"));
}

#[test]
fn claude_code_api_retries_become_api_retry_events() {
    let p = parse("claude-code-api-retries.jsonl");
    let retries = p.of(EventKind::ApiRetry);
    assert!(retries.len() >= 5);
    assert_eq!(retries[0].data()["status"], 401);
    assert_eq!(retries[0].data()["attempt"], 1);
}

#[test]
fn claude_code_bash_and_resumed_samples_parse() {
    let p = parse("claude-code-bash-tool.jsonl");
    assert_eq!(p.of(EventKind::ToolCall)[0].data()["name"], "Bash");
    assert!(p.has(EventKind::ToolResult));
    let p = parse("claude-code-resumed-session.jsonl");
    assert!(p.outcome(0).session_id.is_some());
}

#[test]
fn codex_apply_patch_is_a_tool_call_with_result_and_usage() {
    let p = parse("codex-exec-apply-patch.jsonl");
    assert_eq!(
        p.of(EventKind::ToolCall).len(),
        1,
        "started+completed is one call"
    );
    let o = p.wrote_hello("file_change", "01a204ac-9a91-79c0-afc4-a1f2ebeaac6c");
    assert_eq!(o.usage.output_tokens, 40);
    assert_eq!(o.cost_usd, None);
}

#[test]
fn codex_shell_command_result_carries_output_and_cache_tokens() {
    let p = parse("codex-exec-shell-command.jsonl");
    let r = p.of(EventKind::ToolResult)[0];
    assert_eq!(r.data()["ok"], true);
    assert_eq!(r.data()["output"], "hi\n");
    assert_eq!(p.outcome(0).usage.cache_read_tokens, 200);
}

#[test]
fn codex_errors_are_classified_from_the_message() {
    assert_class("codex-exec-401.jsonl", 1, ErrorClass::AuthFailed);
    assert_class("codex-exec-429.jsonl", 1, ErrorClass::RateLimited);
    assert_class("codex-exec-missing-key.jsonl", 1, ErrorClass::AuthFailed);
}

#[test]
fn codex_error_items_are_warnings_not_failures() {
    let p = parse("codex-exec-unknown-model-text.jsonl");
    let o = p.outcome(0);
    assert!(!o.is_error);
    assert_eq!(o.final_text.as_deref(), Some("Hello from fake."));
    assert!(p.has(EventKind::Log));
}

#[test]
fn gemini_write_file_run_has_tool_events_and_stats() {
    let p = parse("gemini-write-file.jsonl");
    let o = p.wrote_hello("write_file", "f6dd050d-d7cd-411f-921e-f9019559ce93");
    assert_eq!(o.usage.output_tokens, 40);
}

#[test]
fn gemini_tool_error_is_a_failed_tool_result_in_a_successful_run() {
    let p = parse("gemini-tool-error.jsonl");
    assert_eq!(p.of(EventKind::ToolResult)[0].data()["ok"], false);
    assert!(!p.outcome(0).is_error);
}

#[test]
fn gemini_errors_are_classified_from_message_and_exit_code() {
    assert_class("gemini-401.jsonl", 145, ErrorClass::AuthFailed);
    assert_class("gemini-error-a.jsonl", 1, ErrorClass::AuthFailed);
    assert_rate_limited_retry_after_1s("gemini-429.jsonl", 173);
}

#[test]
fn gemini_interrupted_run_without_result_is_an_error() {
    let o = parse("gemini-interrupted.jsonl").outcome(130);
    assert!(o.is_error);
    assert_eq!(o.error_class, Some(ErrorClass::Canceled));
}

#[test]
fn opencode_write_run_has_tool_events_usage_and_result() {
    let p = parse("opencode-run-write-file.jsonl");
    let call = p.of(EventKind::ToolCall)[0];
    assert_eq!(call.data()["input"]["content"], "hello from stub\n");
    assert_eq!(
        p.of(EventKind::Result).len(),
        1,
        "only the final step ends the answer"
    );
    let o = p.wrote_hello("write", "ses_dfb51eda1ffeK5RwPf31NgGfKW");
    assert_eq!(o.num_turns, Some(2));
    assert_eq!(o.cost_usd, Some(0.0));
}

#[test]
fn opencode_errors_use_status_code_and_retry_after_header() {
    assert_class("opencode-run-401.jsonl", 1, ErrorClass::AuthFailed);
    assert_rate_limited_retry_after_1s("opencode-run-429.jsonl", 1);
}

#[test]
fn secrets_in_samples_would_be_redacted() {
    // The captured 401s echo the fake key the endpoint was given.
    let mut env = std::collections::BTreeMap::new();
    env.insert("OPENAI_API_KEY".to_string(), "sk-test".to_string());
    let r = agentpool_core::Redactor::from_env(&env);
    // Six characters is the floor for redaction; "sk-test" is seven.
    for e in parse("codex-exec-401.jsonl").events {
        let e = r.event(e);
        assert!(!e.data().to_string().contains("sk-test"), "{}", e.data());
    }
}

#[test]
fn a_clean_exit_without_a_result_line_is_an_agent_error() {
    // The first two lines of a real run, then the stream stops and the CLI exits 0.
    let mut p = claude_code::Parser::default();
    for line in sample("claude-code-write-file.jsonl").lines().take(2) {
        p.parse_line(line);
    }
    let parsed = Parsed {
        events: vec![],
        parser: Box::new(p),
    };
    let o = parsed.outcome(0);
    assert!(o.is_error);
    assert_eq!(o.error_class, Some(ErrorClass::AgentError));
}

fn all_parsers() -> Vec<Box<dyn LineParser>> {
    vec![
        Box::new(claude_code::Parser::default()),
        Box::new(codex::Parser::default()),
        Box::new(opencode::Parser::default()),
        Box::new(gemini::Parser::default()),
    ]
}

/// Lines shaped like the agents' output: real sample lines cut, spliced and mutated, plus
/// arbitrary JSON objects with the agents' type names.
fn garbled_line() -> impl Strategy<Value = String> {
    let samples: Vec<String> = [
        "claude-code-write-file.jsonl",
        "codex-exec-apply-patch.jsonl",
        "gemini-write-file.jsonl",
        "opencode-run-write-file.jsonl",
        "claude-code-429.jsonl",
    ]
    .iter()
    .flat_map(|n| sample(n).lines().map(str::to_string).collect::<Vec<_>>())
    .collect();
    let types = prop::sample::select(vec![
        "system",
        "assistant",
        "user",
        "result",
        "thread.started",
        "item.started",
        "item.completed",
        "turn.completed",
        "turn.failed",
        "error",
        "init",
        "message",
        "tool_use",
        "tool_result",
        "step_start",
        "step_finish",
        "text",
    ]);
    let json_value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    let keys = prop::sample::select(vec![
        "message",
        "item",
        "part",
        "usage",
        "result",
        "is_error",
        "subtype",
        "content",
        "session_id",
        "sessionID",
        "thread_id",
        "stats",
        "error",
        "status",
        "tokens",
        "api_error_status",
        "tool_id",
        "parameters",
        "output",
    ]);
    let nested = prop::collection::btree_map(keys.clone(), json_value.clone(), 0..5)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    let obj = (
        types,
        prop::collection::btree_map(keys, prop_oneof![json_value, nested], 0..6),
    )
        .prop_map(|(t, m)| {
            let mut o: serde_json::Map<String, serde_json::Value> =
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            o.insert("type".into(), t.into());
            serde_json::Value::Object(o).to_string()
        });
    let sample_line = prop::sample::select(samples);
    let cut = (sample_line.clone(), any::<prop::sample::Index>()).prop_map(|(s, i)| {
        let mut at = i.index(s.len().max(1));
        while at > 0 && !s.is_char_boundary(at) {
            at -= 1;
        }
        s[..at].to_string()
    });
    let mutated = (sample_line, any::<prop::sample::Index>(), any::<char>()).prop_map(|(s, i, c)| {
        let mut chars: Vec<char> = s.chars().collect();
        if !chars.is_empty() {
            let at = i.index(chars.len());
            chars[at] = c;
        }
        chars.into_iter().collect()
    });
    prop_oneof![obj, cut, mutated, ".{0,200}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn garbled_lines_never_panic_and_always_become_an_event(lines in prop::collection::vec(garbled_line(), 1..8)) {
        for mut p in all_parsers() {
            for line in &lines {
                if line.trim().is_empty() {
                    continue;
                }
                let ev = p.parse_line(line);
                prop_assert!(!ev.is_empty(), "no event for {line:?}");
            }
            let exit = ProcessOutcome { exit_code: Some(1), signal: None, killed: None, pgid: 0,
                duration: std::time::Duration::ZERO, output_bytes: 0 };
            let o = finish(p.as_ref(), &exit, &[]);
            prop_assert!(o.is_error && o.error_class.is_some());
        }
    }
}
