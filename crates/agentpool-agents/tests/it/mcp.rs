//! A profile's MCP servers reach the real CLI: a tiny stdio MCP server (node) offers one tool
//! that only it has; the scripted endpoint asks for that tool; the tool's answer comes back
//! in the run's events and in the next request to the model.

use agentpool_agents::{AgentOutcome, AgentRequest};
use agentpool_core::{AgentProfile, EventKind, McpServer};
use agentpool_testkit::model::{RecordedRequest, Step};
use serde_json::json;

use crate::real_cli::{Collect, Fixture, agent};

fn profile(dir: &std::path::Path) -> AgentProfile {
    let script = agentpool_testkit::mcp::write_words_server(dir).expect("write the MCP server");
    AgentProfile {
        mcp_servers: [(
            "words".to_string(),
            McpServer {
                command: "node".into(),
                args: vec![script.to_string_lossy().into_owned()],
                ..McpServer::default()
            },
        )]
        .into(),
        allowed_tools: vec!["mcp__words__secret_word".into()],
        append_system_prompt: Some("Use the words tools when asked for a secret.".into()),
        ..AgentProfile::default()
    }
}

/// A scripted endpoint that asks for the words server's tool, and a request for agent `name`
/// whose profile has that server (its script lives in the returned directory).
async fn asked_for_the_secret_word(name: &str) -> (Fixture, AgentRequest, tempfile::TempDir) {
    let fx = Fixture::new(vec![
        Step::tool("secret_word", json!({"topic": "fruit"})),
        Step::answer("done"),
    ])
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let mut req = fx.request(name, "what is the secret word?");
    req.profile = profile(scratch.path());
    (fx, req, scratch)
}

/// The words tool was offered to the model in the first request; its answer is in the run's
/// events and went back to the model in the last request.
fn assert_offered_and_answered(requests: &[RecordedRequest], sink: &Collect, out: &AgentOutcome) {
    let offered = requests.first().map(|r| r.tools()).unwrap_or_default();
    assert!(
        offered.iter().any(|t| t == "mcp__words__secret_word"),
        "the MCP tool is offered to the model: {offered:?}"
    );
    let shown = format!("{:?}", sink.of(EventKind::ToolResult));
    assert!(
        shown.contains("PINEAPPLE-42 for fruit"),
        "the MCP tool's answer is in the events: {shown}\noutcome: {out:?}"
    );
    let last = requests.last().map(|r| r.body.to_string()).unwrap_or_default();
    assert!(last.contains("PINEAPPLE-42"), "and went back to the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_loads_the_profile_s_mcp_server_and_calls_its_tool() {
    let Some(claude) = agent("claude-code") else {
        return;
    };
    let (fx, mut req, _scratch) = asked_for_the_secret_word("claude-code").await;
    // Claude Code defers MCP tools behind its ToolSearch tool by default, so a real model
    // would search first; the scripted one asks for the tool directly.
    req.env.insert("ENABLE_TOOL_SEARCH".into(), "false".into());
    let (out, sink) = fx.run(claude.as_ref(), req).await;
    let requests = fx.server.agent_requests();
    assert_offered_and_answered(&requests, &sink, &out);
    let system = format!("{}", requests[0].body["system"]);
    assert!(
        system.contains("Use the words tools"),
        "appended system prompt: {system}"
    );
    assert!(!out.is_error, "{out:?}");
}

/// Codex takes the servers from its `config.toml` (`[mcp_servers.<name>]`) and offers their
/// tools as a namespace. For models it has metadata for (gpt-5.5, the adapter tests' model) it
/// defers MCP tools behind its `tool_search` tool, which a real model calls first; with a model
/// it does not know, it offers them directly, so the scripted endpoint can call one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_loads_the_profile_s_mcp_server_and_calls_its_tool() {
    let Some(codex) = agent("codex") else { return };
    let (fx, mut req, _scratch) = asked_for_the_secret_word("codex").await;
    req.model = Some("stub-model".into());
    let (out, sink) = fx.run(codex.as_ref(), req).await;
    assert_offered_and_answered(&fx.server.agent_requests(), &sink, &out);
}

/// The other CLIs: the profile's server in their own config format, its tool called, its
/// answer in the events.
async fn loads_the_mcp_server(name: &str) {
    let Some(a) = agent(name) else { return };
    let (fx, req, _scratch) = asked_for_the_secret_word(name).await;
    let (out, sink) = fx.run(a.as_ref(), req).await;
    let offered: Vec<String> = fx
        .server
        .agent_requests()
        .iter()
        .flat_map(|r| r.tools())
        .collect();
    let shown = format!("{:?}", sink.of(EventKind::ToolResult));
    assert!(
        shown.contains("PINEAPPLE-42 for fruit"),
        "{name}: the MCP tool's answer is in the events: {shown}\noffered: {offered:?}\noutcome: {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_loads_the_profile_s_mcp_server() {
    loads_the_mcp_server("gemini").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_loads_the_profile_s_mcp_server() {
    loads_the_mcp_server("opencode").await;
}
