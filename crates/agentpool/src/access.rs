//! What an embedded pool's tasks may take from the caller (`--agent-env`,
//! `--use-local-login`): resolved once, before the pool starts, with one-line errors for
//! anything that cannot be honoured. Nothing else from the caller's environment reaches a task.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cli::AgentAccessArgs;
use crate::exit::{Exit, ExitCode};

/// The resolved opt-ins: variables with their values, and per agent the home to take its
/// login files from.
#[derive(Debug, Clone, Default)]
pub struct AgentAccess {
    pub env: BTreeMap<String, String>,
    pub local_logins: BTreeMap<String, PathBuf>,
}

impl AgentAccess {
    pub fn resolve(args: &AgentAccessArgs) -> anyhow::Result<Self> {
        Self::resolve_with(args, |k| std::env::var(k).ok())
    }

    fn resolve_with(args: &AgentAccessArgs, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let usage = |m: String| anyhow::Error::from(Exit::new(ExitCode::Usage, m));
        let mut out = Self::default();
        for name in &args.agent_env {
            if !valid_name(name) {
                return Err(usage(format!(
                    "--agent-env {name:?}: not a variable name (letters, digits and _; e.g. ANTHROPIC_API_KEY)"
                )));
            }
            match var(name).filter(|v| !v.trim().is_empty()) {
                Some(v) => {
                    out.env.insert(name.clone(), v);
                }
                None => {
                    return Err(usage(format!(
                        "--agent-env {name}: {name} is not set (or empty) in this environment"
                    )));
                }
            }
        }
        for agent in &args.use_local_login {
            let files = agentpool_agents::login::files_of(agent);
            if files.is_empty() {
                return Err(usage(format!(
                    "--use-local-login {agent}: agentpool cannot use a local login of {agent:?} (it can for: {})",
                    agentpool_agents::login::supported().join(", ")
                )));
            }
            let home = var("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| usage(format!("--use-local-login {agent}: HOME is not set")))?;
            if !files.iter().any(|f| home.join(f).is_file()) {
                let wanted: Vec<String> = files.iter().map(|f| format!("~/{f}")).collect();
                return Err(usage(format!(
                    "--use-local-login {agent}: no login found ({}); log in with the {agent} CLI first",
                    wanted.join(", ")
                )));
            }
            out.local_logins.insert(agent.clone(), home);
        }
        Ok(out)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(env: &[&str], logins: &[&str]) -> AgentAccessArgs {
        AgentAccessArgs {
            agent_env: env.iter().map(|s| s.to_string()).collect(),
            use_local_login: logins.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_named_variables_are_taken_and_unset_ones_are_refused() {
        let env = |k: &str| match k {
            "A_KEY" => Some("secret".to_string()),
            "EMPTY" => Some(" ".to_string()),
            _ => None,
        };
        let a = AgentAccess::resolve_with(&args(&["A_KEY"], &[]), env).unwrap();
        assert_eq!(a.env.len(), 1);
        assert_eq!(a.env["A_KEY"], "secret");
        for bad in ["UNSET", "EMPTY", "A-KEY", "1X", ""] {
            let e = AgentAccess::resolve_with(&args(&[bad], &[]), env)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("--agent-env"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn local_login_needs_a_supported_agent_and_an_existing_login() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().display().to_string();
        let env = |k: &str| (k == "HOME").then(|| home.clone());
        let e = AgentAccess::resolve_with(&args(&[], &["claude-code"]), env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("~/.claude/.credentials.json"), "{e}");
        let e = AgentAccess::resolve_with(&args(&[], &["gemini"]), env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("claude-code, codex, opencode"), "{e}");
        std::fs::create_dir_all(d.path().join(".codex")).unwrap();
        std::fs::write(d.path().join(".codex/auth.json"), "{}").unwrap();
        let a = AgentAccess::resolve_with(&args(&[], &["codex"]), env).unwrap();
        assert_eq!(a.local_logins["codex"], d.path());
    }
}
