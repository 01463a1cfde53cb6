//! A task for a real agent that has no credentials fails at once, `AUTH_FAILED`, not retried,
//! with a message that says which variable to provide.

use crate::demo::agent_bin_dir;
use crate::{Env, json, stderr};

#[test]
fn claude_code_without_a_key_fails_once_naming_the_key() {
    let env = Env::new();
    let Some(bin) = agent_bin_dir() else {
        assert!(
            !agentpool_testkit::services_required(),
            "the claude CLI is not installed: run `npm ci --prefix tools/agents`"
        );
        return;
    };
    let remote = env.sample_repo();
    let o = env
        .cmd()
        .env("AGENTPOOL_AGENT_BIN_DIR", bin)
        .args([
            "run",
            "--repo",
            remote.to_str().unwrap(),
            "--agent",
            "claude-code",
        ])
        .args(["--max-attempts", "3", "--output", "json", "say hello"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    let task = json(&o);
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["error_class"], "AUTH_FAILED", "{task}");
    assert_eq!(task["attempts"], 1, "not retried: {task}");
    let message = task["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("ANTHROPIC_API_KEY"), "{message}");
}
