//! The `codex` adapter: `codex exec --json` (or `exec resume THREAD_ID`) with approvals and
//! sandbox bypassed, a private `CODEX_HOME` whose `config.toml` turns off update checks,
//! analytics, plugins and the CLI's own retries, and a parser for its JSONL thread/turn/item
//! events (usage summed over `turn.completed`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use agentpool_core::{NewEvent, Usage};
use serde_json::{Value, json};

use crate::adapter::{self, CliAgent, Prepared, SessionFiles};
use crate::auth::{AuthNeeds, AuthSource};
use crate::cli::{self, LineParser, Summary};
use crate::events::{self, u64_at};
use crate::kept::RunningTotals;
use crate::{AgentError, AgentRequest, Capabilities, EventSink};

pub const NAME: &str = "codex";
const EXE: &str = "codex";

/// When the request gives `OPENAI_BASE_URL`, Codex ignores it; the adapter defines a provider
/// with that base URL instead (named so in `config.toml`).
const PROVIDER: &str = "agentpool";

pub struct Codex;

impl Codex {
    /// `exec [flags] [resume THREAD_ID] PROMPT`: the exec flags go before `resume`.
    pub fn args(req: &AgentRequest) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "exec".into(),
            "--json".into(),
            "--dangerously-bypass-approvals-and-sandbox".into(),
            "--skip-git-repo-check".into(),
            // -C keeps Codex in the workspace even if it resolves paths from a parent repo.
            "-C".into(),
            req.workdir.clone().into_os_string(),
        ];
        a.extend(cli::options([
            ("-m", req.model.clone()),
            ("resume", req.resume_session.clone()),
        ]));
        a.push(req.prompt.clone().into());
        a
    }

    /// `config.toml` for a run: everything that would reach outside hosts or retry is off.
    pub fn config_toml(base_url: Option<&str>) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let mut t = String::from(
            "check_for_update_on_startup = false\n\
             web_search = \"disabled\"\n",
        );
        if base_url.is_some() {
            t.push_str(&format!("model_provider = {}\n", q(PROVIDER)));
        }
        t.push_str(
            "\n[analytics]\nenabled = false\n\n[feedback]\nenabled = false\n\n\
             [otel]\nexporter = \"none\"\n\n\
             [features]\nplugins = false\nremote_plugin = false\napps = false\n\
             unbounded_connection_retries = false\n",
        );
        if let Some(url) = base_url {
            t.push_str(&format!(
                "\n[model_providers.{PROVIDER}]\nname = \"agentpool\"\nbase_url = {}\n\
                 env_key = \"OPENAI_API_KEY\"\nwire_api = \"responses\"\n\
                 request_max_retries = 0\nstream_max_retries = 0\nsupports_websockets = false\n",
                q(url)
            ));
        }
        t
    }

    /// The profile's MCP servers as `config.toml` tables (`[mcp_servers.<name>]`). Names and
    /// variable names are validated bare keys; values are quoted as JSON strings, which TOML
    /// basic strings accept.
    pub fn mcp_toml(req: &AgentRequest) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let mut t = String::new();
        for (name, s) in &req.profile.mcp_servers {
            let args: Vec<String> = s.args.iter().map(|a| q(a)).collect();
            t.push_str(&format!(
                "\n[mcp_servers.{name}]\ncommand = {}\nargs = [{}]\n",
                q(&s.command),
                args.join(", ")
            ));
            if !s.env.is_empty() {
                t.push_str(&format!("\n[mcp_servers.{name}.env]\n"));
                for (k, v) in &s.env {
                    t.push_str(&format!("{k} = {}\n", q(v)));
                }
            }
        }
        t
    }
}

impl CliAgent for Codex {
    const EXE: &'static str = EXE;
    const PACKAGE: &'static str = "@openai/codex";
    const CAPABILITIES: Capabilities = Capabilities {
        resume: true,
        ..Capabilities::none(NAME)
    };
    type Parser = Parser;
    // `exec resume` reports the whole thread's token usage in `turn.completed`, its earlier
    // runs included.
    const RUNNING_TOTALS: RunningTotals = RunningTotals {
        cost: false,
        tokens: true,
    };

    /// With `OPENAI_BASE_URL` the adapter's provider reads its key from `OPENAI_API_KEY` (the
    /// CLI fails "Missing environment variable" without it). Otherwise OpenAI's own provider:
    /// a key, or the login `codex login` writes to `CODEX_HOME/auth.json` — without either the
    /// CLI does not fail fast but tries the network.
    fn auth_needs(&self, request: &AgentRequest) -> AuthNeeds {
        if request.env.contains_key("OPENAI_BASE_URL") {
            AuthNeeds::any_of([AuthSource::Key("OPENAI_API_KEY")]).because("the endpoint in OPENAI_BASE_URL")
        } else {
            AuthNeeds::any_of([
                AuthSource::Key("OPENAI_API_KEY"),
                AuthSource::Key("CODEX_API_KEY"),
                AuthSource::LoginFile(".codex/auth.json"),
            ])
        }
    }

    fn prepare(&self, request: &AgentRequest, events: &dyn EventSink) -> Result<Prepared, AgentError> {
        let codex_home = request.home.join(".codex");
        std::fs::create_dir_all(&codex_home)?;
        let base_url = request.env.get("OPENAI_BASE_URL").map(String::as_str);
        let toml = Self::config_toml(base_url) + &Self::mcp_toml(request);
        std::fs::write(codex_home.join("config.toml"), toml)?;
        adapter::note_profile_ignored(request, events, NAME, true, true);
        let defaults = [("CODEX_HOME", codex_home.to_string_lossy().into_owned())];
        adapter::note_max_turns_ignored(request, events, NAME, "option");
        Ok(Prepared {
            args: Self::args(request),
            env: defaults.into(),
            sessions: Some(Box::new(Rollouts {
                sessions: codex_home.join("sessions"),
            })),
        })
    }
}

/// Codex files a thread as `CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<thread_id>.jsonl`.
fn find_rollout(dir: &Path, id: &str, depth: u8) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() && depth > 0 {
            if let Some(found) = find_rollout(&p, id, depth - 1) {
                return Some(found);
            }
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("rollout-") && n.ends_with(&format!("-{id}.jsonl")))
        {
            return Some(p);
        }
    }
    None
}

/// Codex's thread rollouts under this run's (throw-away) `CODEX_HOME/sessions`.
struct Rollouts {
    sessions: PathBuf,
}

impl SessionFiles for Rollouts {
    fn noun(&self) -> &'static str {
        "thread"
    }

    /// Copy the thread's rollout out, keeping its date-relative path.
    fn keep(&self, kept: &Path, id: &str) -> std::io::Result<()> {
        if !adapter::plain_id(id) {
            return Ok(());
        }
        let Some(src) = find_rollout(&self.sessions, id, 3) else {
            return Ok(());
        };
        let rel = src.strip_prefix(&self.sessions).map_err(std::io::Error::other)?;
        // One rollout per kept thread: an older copy (under another date) would be found too.
        let root = kept.join(id);
        if root.is_dir() {
            std::fs::remove_dir_all(&root)?;
        }
        let dst = root.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&src, &dst)?;
        Ok(())
    }

    /// Put a kept rollout into this run's CODEX_HOME so `exec resume` finds the thread.
    fn restore(&self, kept: &Path, id: &str) -> bool {
        if !adapter::plain_id(id) {
            return false;
        }
        if find_rollout(&self.sessions, id, 3).is_some() {
            return true;
        }
        let root = kept.join(id);
        let Some(src) = find_rollout(&root, id, 3) else {
            return false;
        };
        let Ok(rel) = src.strip_prefix(&root) else {
            return false;
        };
        let dst = self.sessions.join(rel);
        dst.parent().is_some_and(|p| std::fs::create_dir_all(p).is_ok()) && std::fs::copy(&src, &dst).is_ok()
    }
}

/// Parser for `codex exec --json` lines.
#[derive(Debug, Default)]
pub struct Parser {
    summary: Summary,
    started: HashSet<String>,
    last_text: Option<String>,
}

impl LineParser for Parser {
    fn summary(&self) -> &Summary {
        &self.summary
    }

    fn parse_object(&mut self, _line: &str, v: &Value) -> Vec<NewEvent> {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
        match ty {
            "thread.started" => match v.get("thread_id").and_then(Value::as_str) {
                Some(id) => {
                    self.summary.outcome.session_id = Some(id.to_string());
                    vec![events::session_started(id, None)]
                }
                None => vec![],
            },
            "item.started" => v.get("item").map(|i| self.item_started(i)).unwrap_or_default(),
            "item.completed" => v.get("item").map(|i| self.item_completed(i)).unwrap_or_default(),
            "turn.completed" => self.turn_completed(v),
            "turn.failed" => {
                let msg = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("turn failed");
                self.summary.error(None, msg);
                self.summary.saw_result = true;
                vec![events::result(Some(msg), true, Some("turn.failed"))]
            }
            "error" => {
                let msg = v.get("message").and_then(Value::as_str).unwrap_or_default();
                self.summary.error(None, msg);
                if self.summary.outcome.retry_after.is_none() {
                    self.summary.outcome.retry_after = cli::retry_after_in(msg);
                }
                vec![events::log("agent", msg)]
            }
            _ => vec![],
        }
    }
}

impl Parser {
    fn call_of(item: &Value) -> Option<(String, Value)> {
        let ty = item.get("type").and_then(Value::as_str)?;
        match ty {
            "command_execution" => Some((
                "command_execution".into(),
                json!({ "command": item.get("command") }),
            )),
            "file_change" => Some(("file_change".into(), json!({ "changes": item.get("changes") }))),
            "mcp_tool_call" => Some((
                format!(
                    "{}.{}",
                    item.get("server").and_then(Value::as_str).unwrap_or("mcp"),
                    item.get("tool").and_then(Value::as_str).unwrap_or("tool")
                ),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            )),
            "web_search" => Some(("web_search".into(), json!({ "query": item.get("query") }))),
            _ => None,
        }
    }

    fn item_started(&mut self, item: &Value) -> Vec<NewEvent> {
        let id = item.get("id").and_then(Value::as_str);
        match Self::call_of(item) {
            Some((name, input)) => {
                if let Some(id) = id {
                    self.started.insert(id.to_string());
                }
                vec![events::tool_call(id, &name, &input)]
            }
            None => vec![],
        }
    }

    fn item_completed(&mut self, item: &Value) -> Vec<NewEvent> {
        let id = item.get("id").and_then(Value::as_str);
        let ty = item.get("type").and_then(Value::as_str).unwrap_or_default();
        let status = item.get("status").and_then(Value::as_str);
        let mut out = Vec::new();
        if let Some((name, input)) = Self::call_of(item) {
            // A call that completes without a start line still gets its tool_call.
            if !id.is_some_and(|i| self.started.contains(i)) {
                out.push(events::tool_call(id, &name, &input));
            }
            let (ok, output) = match ty {
                "command_execution" => (
                    item.get("exit_code").and_then(Value::as_i64) == Some(0),
                    events::text_of(item.get("aggregated_output").unwrap_or(&Value::Null)),
                ),
                "file_change" => (
                    status == Some("completed"),
                    item.get("changes")
                        .and_then(Value::as_array)
                        .map(|cs| {
                            cs.iter()
                                .map(|c| {
                                    format!(
                                        "{} {}",
                                        c.get("kind").and_then(Value::as_str).unwrap_or("?"),
                                        c.get("path").and_then(Value::as_str).unwrap_or("?")
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join("\n")
                        })
                        .unwrap_or_default(),
                ),
                _ => (
                    status != Some("failed") && item.get("error").is_none_or(Value::is_null),
                    events::text_of(item.get("result").unwrap_or(&Value::Null)),
                ),
            };
            out.push(events::tool_result(id, ok, &output));
            return out;
        }
        match ty {
            "agent_message" => {
                let text = item.get("text").and_then(Value::as_str).unwrap_or_default();
                self.last_text = Some(text.to_string());
                out.push(events::assistant_message(text));
            }
            // Error items are warnings the run survives (e.g. unknown model metadata).
            "error" => out.push(events::log(
                "agent",
                item.get("message").and_then(Value::as_str).unwrap_or_default(),
            )),
            _ => {}
        }
        out
    }

    fn turn_completed(&mut self, v: &Value) -> Vec<NewEvent> {
        let u = v.get("usage").cloned().unwrap_or(Value::Null);
        let cached = u64_at(&u, "cached_input_tokens");
        let turn = Usage {
            input_tokens: u64_at(&u, "input_tokens"),
            output_tokens: u64_at(&u, "output_tokens"),
            cache_read_tokens: cached,
            cache_write_tokens: u64_at(&u, "cache_write_input_tokens"),
        };
        let s = &mut self.summary;
        s.outcome.usage.add(&turn);
        s.outcome.num_turns = Some(s.outcome.num_turns.unwrap_or(0) + 1);
        s.outcome.final_text = self.last_text.clone();
        s.saw_result = true;
        vec![
            events::usage(&turn, None),
            events::result(s.outcome.final_text.as_deref(), false, Some("turn.completed")),
        ]
    }
}
