//! The `claude-code` adapter: `claude -p PROMPT --output-format stream-json --verbose` with the
//! permission bypass, and a parser for its stream-json lines (`system/init`, `assistant`,
//! `user` tool results, `system/api_retry`, the final `result`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use agentpool_core::{ErrorClass, NewEvent, Usage};
use serde_json::Value;

use crate::adapter::{self, CliAgent, Prepared, SessionFiles};
use crate::auth::{AuthNeeds, AuthSource};
use crate::cli::{self, LineParser, Summary};
use crate::events::{self, Retry, u64_at};
use crate::kept::RunningTotals;
use crate::{AgentError, AgentRequest, Capabilities, EventSink};

pub const NAME: &str = "claude-code";
const EXE: &str = "claude";

pub struct ClaudeCode;

impl ClaudeCode {
    /// The command line for a request (without the program).
    pub fn args(req: &AgentRequest) -> Vec<OsString> {
        // stream-json without --verbose is refused.
        let mut a = cli::stream_json_run(&req.prompt, &["--verbose", "--dangerously-skip-permissions"]);
        a.extend(cli::options([
            ("--model", req.model.clone()),
            ("--max-turns", req.max_turns.map(|n| n.to_string())),
            ("--max-budget-usd", req.max_cost_usd.map(|c| format!("{c:.6}"))),
            ("--resume", req.resume_session.clone()),
            ("--append-system-prompt", req.profile.append_system_prompt.clone()),
        ]));
        if !req.profile.allowed_tools.is_empty() {
            // One argument per tool: patterns like `Bash(git diff:*)` contain spaces.
            a.push("--allowedTools".into());
            a.extend(req.profile.allowed_tools.iter().map(OsString::from));
        }
        a
    }

    /// The profile's MCP servers as `--mcp-config` reads them; `None` without any.
    pub fn mcp_config(req: &AgentRequest) -> Option<serde_json::Value> {
        let servers = &req.profile.mcp_servers;
        (!servers.is_empty()).then(|| {
            let entries: serde_json::Map<String, serde_json::Value> = servers
                .iter()
                .map(|(name, s)| {
                    let v = serde_json::json!({
                        "type": "stdio", "command": s.command, "args": s.args, "env": s.env,
                    });
                    (name.clone(), v)
                })
                .collect();
            serde_json::json!({ "mcpServers": entries })
        })
    }
}

impl CliAgent for ClaudeCode {
    const EXE: &'static str = EXE;
    const PACKAGE: &'static str = "@anthropic-ai/claude-code";
    const CAPABILITIES: Capabilities = Capabilities {
        resume: true,
        cost: true,
        max_turns: true,
        ..Capabilities::none(NAME)
    };
    type Parser = Parser;
    // A resumed session's `total_cost_usd` goes on from what the session had cost (its tokens
    // are the run's own).
    const RUNNING_TOTALS: RunningTotals = RunningTotals {
        cost: true,
        tokens: false,
    };

    /// An API key or token, a cloud provider that brings its own credentials, or the login
    /// `claude /login` writes into the config dir (`CLAUDE_CONFIG_DIR/.credentials.json`; the
    /// adapter points `CLAUDE_CONFIG_DIR` at `~/.claude`). Without any, the CLI answers "Not
    /// logged in · Please run /login" and exits 1.
    fn auth_needs(&self, _request: &AgentRequest) -> AuthNeeds {
        AuthNeeds::any_of([
            AuthSource::Key("ANTHROPIC_API_KEY"),
            AuthSource::Key("ANTHROPIC_AUTH_TOKEN"),
            AuthSource::Key("CLAUDE_CODE_OAUTH_TOKEN"),
            AuthSource::Switch("CLAUDE_CODE_USE_BEDROCK"),
            AuthSource::Switch("CLAUDE_CODE_USE_VERTEX"),
            AuthSource::Switch("CLAUDE_CODE_USE_FOUNDRY"),
            AuthSource::LoginFile(".claude/.credentials.json"),
        ])
    }

    fn prepare(&self, request: &AgentRequest, _events: &dyn EventSink) -> Result<Prepared, AgentError> {
        let config_dir = request.home.join(".claude");
        let mut defaults = vec![
            ("CLAUDE_CONFIG_DIR", config_dir.to_string_lossy().into_owned()),
            // agentpool retries rate limits itself, with backoff across attempts; the CLI's
            // own retries would only hide the signal and stretch the attempt.
            ("CLAUDE_CODE_MAX_RETRIES", "0".to_string()),
            ("DISABLE_AUTOUPDATER", "1".to_string()),
            ("DISABLE_TELEMETRY", "1".to_string()),
            ("DISABLE_ERROR_REPORTING", "1".to_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ];
        if crate::process::running_as_root() {
            // --dangerously-skip-permissions is refused as root unless the CLI is told it runs
            // in a sandbox; the worker's workspace is that sandbox.
            defaults.push(("IS_SANDBOX", "1".to_string()));
        }
        let mut args = Self::args(request);
        if let Some(mcp) = Self::mcp_config(request) {
            std::fs::create_dir_all(&config_dir)?;
            let path = config_dir.join("agentpool-mcp.json");
            adapter::write_json(&path, &mcp)?;
            // Only the profile's servers: nothing a repository's .mcp.json would add.
            args.extend([
                "--mcp-config".into(),
                path.into_os_string(),
                "--strict-mcp-config".into(),
            ]);
        }
        Ok(Prepared {
            args,
            env: defaults,
            sessions: Some(Box::new(Transcripts {
                config_dir,
                workdir: request.workdir.clone(),
            })),
        })
    }
}

/// Claude Code files a session as `CLAUDE_CONFIG_DIR/projects/<cwd, non-alphanumerics as '-'>/
/// <session_id>.jsonl` and resumes only from the current project's directory.
pub fn project_dir_name(cwd: &Path) -> String {
    cwd.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn session_file_name(id: &str) -> Option<String> {
    adapter::plain_id(id).then(|| format!("{id}.jsonl"))
}

/// Claude Code's transcripts in this run's (throw-away) config dir, resumable only from the
/// project directory of `workdir`.
struct Transcripts {
    config_dir: PathBuf,
    workdir: PathBuf,
}

impl SessionFiles for Transcripts {
    fn keep(&self, kept: &Path, id: &str) -> std::io::Result<()> {
        let Some(file) = session_file_name(id) else {
            return Ok(());
        };
        let Ok(projects) = std::fs::read_dir(self.config_dir.join("projects")) else {
            return Ok(());
        };
        for project in projects.flatten() {
            let src = project.path().join(&file);
            if src.is_file() {
                std::fs::create_dir_all(kept)?;
                let tmp = kept.join(format!(".{file}.tmp"));
                std::fs::copy(&src, &tmp)?;
                std::fs::rename(&tmp, kept.join(&file))?;
            }
        }
        Ok(())
    }

    fn restore(&self, kept: &Path, id: &str) -> bool {
        let Some(file) = session_file_name(id) else {
            return false;
        };
        let src = kept.join(&file);
        let workdir = &self.workdir;
        let mut dirs = vec![workdir.clone()];
        if let Ok(real) = std::fs::canonicalize(workdir)
            && real != *workdir
        {
            dirs.push(real);
        }
        let mut there = false;
        for d in dirs {
            let project = self.config_dir.join("projects").join(project_dir_name(&d));
            let dst = project.join(&file);
            there |= dst.exists()
                || (src.is_file()
                    && std::fs::create_dir_all(&project).is_ok()
                    && std::fs::copy(&src, &dst).is_ok());
        }
        there
    }
}

/// Parser for Claude Code's stream-json output.
#[derive(Debug, Default)]
pub struct Parser {
    summary: Summary,
    last_text: Option<String>,
}

impl LineParser for Parser {
    fn summary(&self) -> &Summary {
        &self.summary
    }

    fn parse_object(&mut self, _line: &str, v: &Value) -> Vec<NewEvent> {
        if let Some(id) = v.get("session_id").and_then(Value::as_str) {
            self.summary.set_session_id_once(id);
        }
        let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
        let subtype = v.get("subtype").and_then(Value::as_str);
        match (ty, subtype) {
            ("system", Some("init")) => {
                let id = v.get("session_id").and_then(Value::as_str).unwrap_or_default();
                vec![events::session_started(
                    id,
                    v.get("model").and_then(Value::as_str),
                )]
            }
            ("system", Some("api_retry")) => vec![events::api_retry(Retry {
                attempt: v.get("attempt").and_then(Value::as_u64),
                max_retries: v.get("max_retries").and_then(Value::as_u64),
                delay_ms: v.get("retry_delay_ms").and_then(Value::as_u64),
                status: v.get("error_status").and_then(Value::as_u64),
                error: v.get("error").and_then(Value::as_str),
            })],
            ("assistant", _) => self.assistant(v),
            ("user", _) => self.user(v),
            ("result", _) => self.result(v),
            _ => vec![],
        }
    }
}

impl Parser {
    fn assistant(&mut self, v: &Value) -> Vec<NewEvent> {
        let mut out = Vec::new();
        let content = v.pointer("/message/content").and_then(Value::as_array);
        for block in content.into_iter().flatten() {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let text = block.get("text").and_then(Value::as_str).unwrap_or_default();
                    self.last_text = Some(text.to_string());
                    out.push(events::assistant_message(text));
                }
                Some("tool_use") => out.push(events::tool_call(
                    block.get("id").and_then(Value::as_str),
                    block.get("name").and_then(Value::as_str).unwrap_or("unknown"),
                    block.get("input").unwrap_or(&Value::Null),
                )),
                _ => {}
            }
        }
        // The synthetic message before an API-error result carries the status, or (when no
        // request was made, e.g. "Not logged in") only the error's name.
        let status = v.get("api_error_status").and_then(Value::as_u64);
        let named = match v.get("error").and_then(Value::as_str) {
            Some("authentication_failed") => Some(ErrorClass::AuthFailed),
            Some("rate_limit") => Some(ErrorClass::RateLimited),
            _ => None,
        };
        if status.is_some() || named.is_some() {
            let msg = events::text_of(v.pointer("/message/content").unwrap_or(&Value::Null));
            self.summary
                .error(status.and_then(class_of_status).or(named), &msg);
        }
        out
    }

    fn user(&mut self, v: &Value) -> Vec<NewEvent> {
        let content = v.pointer("/message/content").and_then(Value::as_array);
        content
            .into_iter()
            .flatten()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| {
                let is_error = b.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                events::tool_result(
                    b.get("tool_use_id").and_then(Value::as_str),
                    !is_error,
                    &events::text_of(b.get("content").unwrap_or(&Value::Null)),
                )
            })
            .collect()
    }

    fn result(&mut self, v: &Value) -> Vec<NewEvent> {
        let s = &mut self.summary;
        s.saw_result = true;
        let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
        let subtype = v.get("subtype").and_then(Value::as_str);
        let text = v.get("result").and_then(Value::as_str);
        if let Some(t) = text {
            s.outcome.final_text = Some(t.to_string());
        } else if !is_error {
            s.outcome.final_text = self.last_text.clone();
        }
        s.outcome.num_turns = v.get("num_turns").and_then(Value::as_u64).map(|n| n as u32);
        s.outcome.cost_usd = v.get("total_cost_usd").and_then(Value::as_f64);
        // This run's tokens per model, where the CLI says them: a run stopped at its cost limit
        // reports in `usage` its last request only.
        s.outcome.usage = match v.get("model_usage_since_last_result").and_then(Value::as_object) {
            Some(models) if !models.is_empty() => models.values().fold(Usage::default(), |mut t, m| {
                t.input_tokens += u64_at(m, "inputTokens");
                t.output_tokens += u64_at(m, "outputTokens");
                t.cache_read_tokens += u64_at(m, "cacheReadInputTokens");
                t.cache_write_tokens += u64_at(m, "cacheCreationInputTokens");
                t
            }),
            _ => {
                let u = v.get("usage").cloned().unwrap_or(Value::Null);
                Usage {
                    input_tokens: u64_at(&u, "input_tokens"),
                    output_tokens: u64_at(&u, "output_tokens"),
                    cache_read_tokens: u64_at(&u, "cache_read_input_tokens"),
                    cache_write_tokens: u64_at(&u, "cache_creation_input_tokens"),
                }
            }
        };
        if is_error {
            let errors = v.get("errors").map(events::text_of).filter(|e| !e.is_empty());
            let message = errors
                .or_else(|| text.map(str::to_string))
                .unwrap_or_else(|| format!("claude-code result {}", subtype.unwrap_or("error")));
            let class = match (
                v.get("api_error_status").and_then(Value::as_u64),
                subtype,
                v.get("terminal_reason").and_then(Value::as_str),
            ) {
                (Some(status), _, _) => class_of_status(status),
                // Its own cost limit (the task's, given as --max-budget-usd): final, as when the
                // worker sees the reported cost pass it.
                (_, Some("error_max_budget_usd"), _) => Some(ErrorClass::BudgetExceeded),
                // The task's turn limit: final like its cost limit.
                (_, Some("error_max_turns"), _) | (_, _, Some("max_turns")) => Some(ErrorClass::MaxTurns),
                _ => None,
            };
            s.error(class.or(Some(ErrorClass::AgentError)), &message);
            if s.outcome.retry_after.is_none() {
                s.outcome.retry_after = cli::retry_after_in(&message);
            }
        }
        vec![
            events::usage(&s.outcome.usage, s.outcome.cost_usd),
            events::result(s.outcome.final_text.as_deref().or(text), is_error, subtype),
        ]
    }
}

fn class_of_status(status: u64) -> Option<ErrorClass> {
    u16::try_from(status).ok().and_then(cli::class_of_status)
}
