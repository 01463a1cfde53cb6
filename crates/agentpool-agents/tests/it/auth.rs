//! What each adapter needs to authenticate, checked before its CLI starts: a run without it
//! fails at once, `AUTH_FAILED`, with a message naming the variable to set — and the real
//! Claude Code, started without credentials anyway, is classified the same way.

use std::sync::Arc;

use agentpool_agents::adapter::CliAgent;
use agentpool_agents::cli::{self, CliRun};
use agentpool_agents::{AgentConfig, AgentError, AgentRequest, claude_code, codex, gemini, opencode};
use agentpool_core::ErrorClass;
use agentpool_testkit::model::Step;
use tokio_util::sync::CancellationToken;

use crate::real_cli::{Collect, Fixture, agent};

struct Req {
    _dir: tempfile::TempDir,
    req: AgentRequest,
}

fn request(model: Option<&str>, env: &[(&str, &str)]) -> Req {
    let dir = tempfile::tempdir().unwrap();
    let mut req = AgentRequest::new("p", dir.path(), dir.path().join("home"));
    req.model = model.map(str::to_string);
    req.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Req { _dir: dir, req }
}

/// A request with a login file at `rel` under its home.
fn logged_in(model: Option<&str>, env: &[(&str, &str)], rel: &str) -> Req {
    let r = request(model, env);
    let path = r.req.home.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, "{}").unwrap();
    r
}

/// The check's verdict: `None` when it passes, else the message (class asserted).
fn verdict<A: CliAgent>(agent: &A, r: &Req) -> Option<String> {
    match agent.auth_needs(&r.req).check(A::NAME, &r.req) {
        Ok(()) => None,
        Err(e) => {
            assert_eq!(e.class(), ErrorClass::AuthFailed);
            Some(e.to_string())
        }
    }
}

/// The message of the check refusing a request with `model` and `env`.
fn refusal<A: CliAgent>(agent: &A, model: Option<&str>, env: &[(&str, &str)]) -> String {
    verdict(agent, &request(model, env)).expect("refused")
}

fn assert_passes<A: CliAgent>(agent: &A, model: Option<&str>, env: &[(&str, &str)]) {
    assert_eq!(verdict(agent, &request(model, env)), None, "{model:?} {env:?}");
}

#[test]
fn claude_code_needs_a_key_a_token_a_cloud_provider_or_a_login() {
    let a = claude_code::ClaudeCode;
    let msg = refusal(&a, None, &[("ANTHROPIC_BASE_URL", "http://x")]);
    assert!(msg.contains("ANTHROPIC_API_KEY"), "{msg}");
    assert!(msg.contains("anthropic_api_key"), "{msg}");
    for env in [
        ("ANTHROPIC_API_KEY", "k"),
        ("ANTHROPIC_AUTH_TOKEN", "t"),
        ("CLAUDE_CODE_OAUTH_TOKEN", "t"),
        ("CLAUDE_CODE_USE_BEDROCK", "1"),
        ("CLAUDE_CODE_USE_VERTEX", "1"),
    ] {
        assert_passes(&a, None, &[env]);
    }
    assert!(verdict(&a, &request(None, &[("CLAUDE_CODE_USE_BEDROCK", "0")])).is_some());
    assert_eq!(
        verdict(&a, &logged_in(None, &[], ".claude/.credentials.json")),
        None
    );
}

#[test]
fn codex_needs_the_endpoint_key_or_an_openai_key_or_a_login() {
    let a = codex::Codex;
    let msg = refusal(&a, None, &[("OPENAI_BASE_URL", "http://x/v1")]);
    assert!(
        msg.contains("OPENAI_API_KEY") && msg.contains("OPENAI_BASE_URL"),
        "{msg}"
    );
    // A login does not help a custom endpoint: its provider reads the variable.
    let r = logged_in(None, &[("OPENAI_BASE_URL", "http://x/v1")], ".codex/auth.json");
    assert!(verdict(&a, &r).is_some());
    let msg = refusal(&a, None, &[]);
    assert!(
        msg.contains("OPENAI_API_KEY") && msg.contains(".codex/auth.json"),
        "{msg}"
    );
    assert_passes(&a, None, &[("CODEX_API_KEY", "k")]);
    assert_eq!(verdict(&a, &logged_in(None, &[], ".codex/auth.json")), None);
}

#[test]
fn gemini_needs_its_api_key() {
    let a = gemini::Gemini;
    let msg = refusal(&a, None, &[("GOOGLE_GEMINI_BASE_URL", "http://x")]);
    assert!(msg.contains("GEMINI_API_KEY"), "{msg}");
    assert_passes(&a, None, &[("GEMINI_API_KEY", "k")]);
}

#[test]
fn opencode_needs_the_key_of_the_models_provider() {
    let a = opencode::OpenCode;
    let msg = refusal(&a, None, &[("OPENAI_BASE_URL", "http://x/v1")]);
    assert!(msg.contains("OPENAI_API_KEY"), "{msg}");
    let msg = refusal(&a, Some("anthropic/claude-sonnet-4-5"), &[]);
    assert!(
        msg.contains("ANTHROPIC_API_KEY") && msg.contains("opencode/auth.json"),
        "{msg}"
    );
    assert_passes(
        &a,
        Some("anthropic/claude-sonnet-4-5"),
        &[("ANTHROPIC_API_KEY", "k")],
    );
    assert_passes(&a, Some("google/gemini-2.5-flash"), &[("GEMINI_API_KEY", "k")]);
    let r = logged_in(Some("openai/gpt-5.5"), &[], ".local/share/opencode/auth.json");
    assert_eq!(verdict(&a, &r), None);
    // OpenCode's own free models and providers it does not know are not checked.
    assert_passes(&a, None, &[]);
    assert_passes(&a, Some("someprovider/m"), &[]);
}

/// A Claude Code request to a scripted endpoint, with the endpoint's key taken out.
async fn claude_code_without_a_key() -> (Fixture, AgentRequest) {
    let fx = Fixture::new(vec![Step::answer("never asked")]).await;
    let mut req = fx.request("claude-code", "Create hello.txt");
    req.env.remove("ANTHROPIC_API_KEY");
    (fx, req)
}

#[tokio::test]
async fn real_claude_code_without_credentials_is_refused_before_it_starts() {
    let Some(agent) = agent("claude-code") else { return };
    let (fx, req) = claude_code_without_a_key().await;
    let err = agent
        .run(req, Arc::new(Collect::default()), CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(matches!(err, AgentError::NotAuthenticated(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::AuthFailed);
    assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");
    assert!(fx.server.requests().is_empty(), "the CLI did not run");
}

#[tokio::test]
async fn real_claude_code_started_without_credentials_is_an_auth_failure() {
    // Past the check (as when a login file is there but not valid), the CLI itself says "Not
    // logged in"; that must not read as a retryable agent error either.
    let Some(_) = agent("claude-code") else { return };
    let (_fx, req) = claude_code_without_a_key().await;
    let cfg = AgentConfig {
        bin_dir: Some(crate::real_cli::bin_dir()),
        ..Default::default()
    };
    let program = cfg.find(claude_code::NAME, "claude").expect("installed");
    let mut env = cli::agent_env(&cfg, &req, &[]).unwrap();
    env.insert(
        "CLAUDE_CONFIG_DIR".into(),
        req.home.join(".claude").display().to_string(),
    );
    env.insert("IS_SANDBOX".into(), "1".into());
    let run = CliRun {
        program,
        args: claude_code::ClaudeCode::args(&req),
        env,
        request: req,
        secrets: Vec::new(),
    };
    let sink = Arc::new(Collect::default());
    let o = cli::run_cli(
        run,
        Box::new(claude_code::Parser::default()),
        sink,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(o.is_error, "{o:?}");
    assert_eq!(o.error_class, Some(ErrorClass::AuthFailed), "{o:?}");
}
