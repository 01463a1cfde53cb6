//! Agent profiles: named, non-secret agent settings stored on the server and referenced by
//! tasks (`profile`) — environment variables such as a base URL, a default model and turn
//! limit, allowed tools, an appended system prompt and MCP servers. Secrets stay credentials:
//! a profile refuses variables that look like keys, so they never sit unencrypted in the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// The settings of a profile (`PUT /v1/profiles/{name}`'s body).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentProfile {
    /// Non-secret variables for the agent (e.g. `ANTHROPIC_BASE_URL`, `CLAUDE_CODE_USE_BEDROCK`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The model when the task names none.
    pub model: Option<String>,
    /// The turn limit when the task sets none.
    pub max_turns: Option<u32>,
    /// Tools the agent may use without asking (in the CLI's own naming), where it has such a list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// Text appended to the agent's system prompt.
    pub append_system_prompt: Option<String>,
    /// MCP servers the agent starts (stdio), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mcp_servers: BTreeMap<String, McpServer>,
}

/// An MCP server started by the agent over stdio.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A stored profile (`GET /v1/profiles/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Profile {
    pub name: String,
    #[serde(flatten)]
    pub settings: AgentProfile,
}

/// `GET /v1/profiles`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileList {
    pub profiles: Vec<Profile>,
}

/// Variable names a profile may not set: the worker sets them, or they would let a profile
/// reach into agentpool itself.
const RESERVED: [&str; 5] = ["PATH", "HOME", "TMPDIR", "LANG", "CODEX_HOME"];

/// Words that mark a variable as a secret (`ANTHROPIC_API_KEY`, `GITHUB_TOKEN`, …).
const SECRET_WORDS: [&str; 10] = [
    "KEY",
    "APIKEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "CREDENTIAL",
    "CREDENTIALS",
    "PAT",
];

/// Whether `name` is a profile name: 1-64 of lowercase letters, digits, `-`, `_`, `.`,
/// starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Whether a variable named `name` looks like it holds a secret.
pub fn looks_secret(name: &str) -> bool {
    name.to_ascii_uppercase()
        .split('_')
        .any(|w| SECRET_WORDS.contains(&w))
}

fn check_env(field: &str, env: &BTreeMap<String, String>, errs: &mut Vec<ValidationError>) {
    for (k, v) in env {
        let f = format!("{field}.{k}");
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            errs.push(ValidationError::new(
                f,
                "is not a variable name (letters, digits and _)",
            ));
        } else if RESERVED.contains(&k.as_str()) || k.starts_with("AGENTPOOL_") {
            errs.push(ValidationError::new(
                f,
                "is set by the worker and cannot be overridden",
            ));
        } else if looks_secret(k) || v.starts_with("sk-") {
            let cred = k.to_ascii_lowercase();
            errs.push(ValidationError::new(
                f,
                format!(
                    "looks like a secret; profiles are stored unencrypted — store it as a credential \
                     (`agentpool credentials put {cred}`) and name it on the task or project"
                ),
            ));
        } else if v.len() > 4096 || v.contains('\0') {
            errs.push(ValidationError::new(
                f,
                "must be at most 4096 characters, without NUL",
            ));
        }
    }
}

impl AgentProfile {
    /// Check every setting; returns all problems, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut errs = Vec::new();
        check_env("env", &self.env, &mut errs);
        if let Some(m) = &self.model
            && !valid_model(m)
        {
            errs.push(ValidationError::new("model", MODEL_RULE));
        }
        if self.max_turns.is_some_and(|m| !(1..=10_000).contains(&m)) {
            errs.push(ValidationError::new("max_turns", "must be between 1 and 10000"));
        }
        for (i, t) in self.allowed_tools.iter().enumerate() {
            if t.trim().is_empty() || t.len() > 200 || t.starts_with('-') || t.chars().any(char::is_control) {
                errs.push(ValidationError::new(
                    format!("allowed_tools[{i}]"),
                    "must be a tool name like Bash(git:*) or mcp__server__tool",
                ));
            }
        }
        if let Some(p) = &self.append_system_prompt
            && (p.trim().is_empty() || p.len() > 32 * 1024)
        {
            errs.push(ValidationError::new(
                "append_system_prompt",
                "must be 1-32768 characters",
            ));
        }
        for (name, s) in &self.mcp_servers {
            let f = format!("mcp_servers.{name}");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                errs.push(ValidationError::new(
                    f.clone(),
                    "name must be 1-64 letters, digits, - or _",
                ));
            }
            if s.command.trim().is_empty() || s.command.contains('\0') {
                errs.push(ValidationError::new(format!("{f}.command"), "is required"));
            }
            check_env(&format!("{f}.env"), &s.env, &mut errs);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// What [`valid_model`] asks of a model name.
pub const MODEL_RULE: &str = "must be a model name like claude-sonnet-4-5";

/// A model name an agent CLI can be given as one argument: not empty, no whitespace, not
/// read as an option (`-…`), at most 200 characters.
pub fn valid_model(m: &str) -> bool {
    !m.is_empty() && m.chars().count() <= 200 && !m.starts_with('-') && !m.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_reserved_names_are_refused_with_a_hint() {
        let mut p = AgentProfile::default();
        p.env.insert("ANTHROPIC_BASE_URL".into(), "http://x".into());
        p.env.insert("CLAUDE_CODE_USE_BEDROCK".into(), "1".into());
        assert!(p.validate().is_ok());
        for bad in [
            "ANTHROPIC_API_KEY",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "PATH",
            "AGENTPOOL_X",
            "A-B",
        ] {
            let mut q = p.clone();
            q.env.insert(bad.into(), "v".into());
            let errs = q.validate().unwrap_err();
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(errs[0].field, format!("env.{bad}"));
        }
        let mut q = p.clone();
        q.env.insert("OPENAI_API_KEY".into(), "v".into());
        let msg = q.validate().unwrap_err()[0].message.clone();
        assert!(msg.contains("agentpool credentials put openai_api_key"), "{msg}");
    }

    #[test]
    fn mcp_servers_tools_and_names_are_checked() {
        let mut p = AgentProfile::default();
        p.mcp_servers.insert("bad name".into(), McpServer::default());
        p.allowed_tools.push("--evil".into());
        p.max_turns = Some(0);
        let fields: Vec<String> = p.validate().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "max_turns",
                "allowed_tools[0]",
                "mcp_servers.bad name",
                "mcp_servers.bad name.command"
            ]
        );
        assert!(valid_name("bedrock-eu") && !valid_name("Bad") && !valid_name(""));
    }
}
