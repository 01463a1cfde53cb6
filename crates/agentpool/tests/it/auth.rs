//! A task for a real agent that has no credentials fails at once, `AUTH_FAILED`, not retried,
//! with a message that says which variable to provide.

use crate::agent_access::{bin_or_fail, claude_run};
use crate::{Env, json, stderr};

#[test]
fn claude_code_without_a_key_fails_once_naming_the_key() {
    let env = Env::new();
    let Some(bin) = bin_or_fail() else { return };
    let remote = env.sample_repo();
    let o = claude_run(&env, &bin, &remote, &[], "say hello")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    let task = json(&o);
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["error_class"], "AUTH_FAILED", "{task}");
    assert_eq!(task["attempts"], 1, "not retried: {task}");
    let message = task["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("ANTHROPIC_API_KEY"), "{message}");
    // The transient pool has no stored credentials: the line says how `run` passes them.
    let err = stderr(&o);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("agentpool: ")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("`--agent-env NAME`"), "{err}");
    assert!(err.contains("`--use-local-login claude-code`"), "{err}");
}
