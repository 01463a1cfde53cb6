//! The `opencode` adapter: `opencode run --format json`, with a private HOME/XDG dirs and a
//! generated config (no autoupdate, no sharing, every permission allowed, and — when the request
//! names `OPENAI_BASE_URL` — an OpenAI-compatible provider pointing there), and a parser for its
//! JSON lines (`step_start`, `tool_use`, `text`, `step_finish`, `error`).
//!
//! Why `run` and not `serve` + SSE: `run` is one process per task, so cancel and timeout are the
//! same group kill every adapter uses, and it reliably ends the agent *and* every tool child it
//! started (a shell, a test runner). With `serve`, `POST /session/{id}/abort` stops the session
//! but the server (and whatever it spawned) lives on; a server shared between tasks would also
//! couple their failures, and one per task adds a port, a health wait, basic auth and SSE
//! reconnection for no gain. `run --format json` already prints complete parts — tool input and
//! output together, per-step tokens and cost — which is all the normalized events need.
//!
//! Resume (`--session ID`) works within the same home only: OpenCode keeps sessions in an SQLite
//! database there, and a copy of it carried into a fresh home made `run --session` hang (seen
//! with 1.18.33), so unlike the other adapters no session is carried across homes. A feedback
//! round runs in its task's home and resumes; a follow-up task gets a new home, where
//! `--session` fails ("Session not found"), so it starts a new session instead, told that it
//! continues earlier work it finds in the workspace (see [`OpenCode::prepare`]).
//!
//! The end of an answer: `step_finish` carries the model's finish reason. `stop` (and `length`,
//! `content-filter`, `other`, after which OpenCode stops too) end the answer; `tool-calls` goes on
//! with the tools' results; `unknown` means the model's stream ended without a finish reason
//! (cut off), and OpenCode asks again at once, without end. Such steps are no result, and
//! [`UNFINISHED_LIMIT`] of them in a row fail the run.

use std::ffi::OsString;

use agentpool_core::{ErrorClass, NewEvent, Usage};
use serde_json::{Value, json};

use crate::adapter::{self, CliAgent, Prepared};
use crate::auth::{AuthNeeds, AuthSource};
use crate::cli::{self, LineParser, Summary};
use crate::events::{self, u64_at};
use crate::{AgentError, AgentRequest, Capabilities, EventSink};

pub const NAME: &str = "opencode";
const EXE: &str = "opencode";
/// The provider defined for a request's `OPENAI_BASE_URL`.
pub const PROVIDER: &str = "agentpool";
const DEFAULT_MODEL: &str = "default-model";

/// How many answers in a row may end without a finish reason before the run counts as failed.
/// OpenCode asks again right away (about four times a second), so a stream cut once by a
/// network hiccup is answered by the next request; three in a row within a second or so means
/// the endpoint cuts every answer, and each further request only spends input tokens until the
/// task's timeout.
pub const UNFINISHED_LIMIT: u32 = 3;

/// Finish reasons after which OpenCode ends the run: the answer is complete (`stop`) or the
/// model will not say more (`length`, `content-filter`, `other`).
const FINAL_REASONS: [&str; 4] = ["stop", "length", "content-filter", "other"];

pub struct OpenCode;

impl OpenCode {
    /// The `provider/model` to run, given whether a custom endpoint is configured.
    pub fn model(req: &AgentRequest, custom_endpoint: bool) -> Option<String> {
        match (&req.model, custom_endpoint) {
            (Some(m), true) if !m.contains('/') => Some(format!("{PROVIDER}/{m}")),
            (Some(m), _) => Some(m.clone()),
            (None, true) => Some(format!("{PROVIDER}/{DEFAULT_MODEL}")),
            (None, false) => None,
        }
    }

    pub fn config(req: &AgentRequest) -> Value {
        let mut cfg = json!({
            "$schema": "https://opencode.ai/config.json",
            "autoupdate": false,
            "share": "disabled",
            "permission": {
                "edit": "allow",
                "bash": "allow",
                "webfetch": "allow",
                "external_directory": "allow"
            }
        });
        if let Some(url) = req.env.get("OPENAI_BASE_URL") {
            let model = Self::model(req, true).unwrap_or_default();
            let model_id = model.split_once('/').map(|(_, m)| m).unwrap_or(&model);
            cfg["model"] = json!(model);
            cfg["small_model"] = json!(model);
            cfg["enabled_providers"] = json!([PROVIDER]);
            cfg["provider"] = json!({
                PROVIDER: {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "agentpool endpoint",
                    "options": { "baseURL": url, "apiKey": "{env:OPENAI_API_KEY}" },
                    "models": {
                        model_id: {
                            "name": model_id,
                            "tool_call": true,
                            "limit": { "context": 128000, "output": 8192 }
                        }
                    }
                }
            });
        }
        cfg
    }

    pub fn args(req: &AgentRequest) -> Vec<OsString> {
        let custom = req.env.contains_key("OPENAI_BASE_URL");
        let mut a: Vec<OsString> = vec!["run".into(), "--format".into(), "json".into()];
        a.extend(cli::options([
            ("-m", Self::model(req, custom)),
            ("--session", req.resume_session.clone()),
        ]));
        a.extend(["--dir".into(), req.workdir.clone().into_os_string()]);
        // `--` so a prompt starting with '-' is not read as an option.
        a.extend(["--".into(), req.prompt.clone().into()]);
        a
    }
}

impl CliAgent for OpenCode {
    const EXE: &'static str = EXE;
    const PACKAGE: &'static str = "opencode-ai";
    const CAPABILITIES: Capabilities = Capabilities {
        resume: true,
        cost: true,
        ..Capabilities::none(NAME)
    };
    type Parser = Parser;

    fn validate_request(&self, req: &AgentRequest) -> Result<(), AgentError> {
        cli::validate_common(req, "prompt")?;
        if let Some(m) = &req.model
            && !m.contains('/')
            && !req.env.contains_key("OPENAI_BASE_URL")
        {
            return Err(AgentError::Invalid(format!(
                "opencode models are provider/model, got {m:?}"
            )));
        }
        Ok(())
    }

    /// The key of the provider the run uses: `OPENAI_API_KEY` for the endpoint in
    /// `OPENAI_BASE_URL`, else the variable OpenCode reads for the model's provider — or the
    /// login `opencode auth login` writes (`$XDG_DATA_HOME/opencode/auth.json`). Without a
    /// model OpenCode uses its own free models, which need no key; other providers are not
    /// checked.
    fn auth_needs(&self, request: &AgentRequest) -> AuthNeeds {
        const LOGIN: AuthSource = AuthSource::LoginFile(".local/share/opencode/auth.json");
        if request.env.contains_key("OPENAI_BASE_URL") {
            return AuthNeeds::any_of([AuthSource::Key("OPENAI_API_KEY")])
                .because("the endpoint in OPENAI_BASE_URL");
        }
        let provider = request
            .model
            .as_deref()
            .and_then(|m| m.split_once('/'))
            .map(|(p, _)| p);
        let keys: &[&'static str] = match provider {
            Some("anthropic") => &["ANTHROPIC_API_KEY"],
            Some("openai") => &["OPENAI_API_KEY"],
            Some("google") => &["GOOGLE_GENERATIVE_AI_API_KEY", "GEMINI_API_KEY"],
            Some("openrouter") => &["OPENROUTER_API_KEY"],
            _ => return AuthNeeds::any_of([]),
        };
        AuthNeeds::any_of(keys.iter().copied().map(AuthSource::Key).chain([LOGIN]))
    }

    /// Writes the config; a follow-up whose session is not in this home (see the module docs)
    /// runs as a new session, with the prompt saying so.
    fn prepare(&self, request: &AgentRequest, events: &dyn EventSink) -> Result<Prepared, AgentError> {
        std::fs::create_dir_all(&request.home)?;
        let fresh;
        let request = match &request.resume_session {
            Some(id) if !has_sessions(&request.home) => {
                events.emit(events::log(
                    "agentpool",
                    &format!(
                        "opencode cannot resume session {id}: it keeps sessions only in the home \
                         that ran them, and this run has a new one; it starts a new session"
                    ),
                ));
                fresh = request.as_new_session();
                &fresh
            }
            _ => request,
        };
        let config_path = request.home.join("opencode.json");
        let mut config = Self::config(request);
        if !request.profile.mcp_servers.is_empty() {
            let servers: serde_json::Map<String, Value> = request
                .profile
                .mcp_servers
                .iter()
                .map(|(name, s)| {
                    let command: Vec<&str> = std::iter::once(s.command.as_str())
                        .chain(s.args.iter().map(String::as_str))
                        .collect();
                    let v =
                        json!({ "type": "local", "command": command, "environment": s.env, "enabled": true });
                    (name.clone(), v)
                })
                .collect();
            config["mcp"] = Value::Object(servers);
        }
        if let Some(text) = &request.profile.append_system_prompt {
            // OpenCode adds the files named in `instructions` to its system prompt.
            let path = request.home.join("agentpool-instructions.md");
            std::fs::write(&path, text)?;
            config["instructions"] = json!([path.to_string_lossy()]);
        }
        adapter::write_json(&config_path, &config)?;
        adapter::note_profile_ignored(request, events, NAME, false, true);
        let one = || "1".to_string();
        let defaults = [
            ("OPENCODE_CONFIG", config_path.to_string_lossy().into_owned()),
            ("OPENCODE_DISABLE_MODELS_FETCH", one()),
            ("OPENCODE_DISABLE_AUTOUPDATE", one()),
            ("OPENCODE_DISABLE_DEFAULT_PLUGINS", one()),
            ("OPENCODE_DISABLE_LSP_DOWNLOAD", one()),
            ("OPENCODE_DISABLE_SHARE", one()),
            ("OPENCODE_DISABLE_CLAUDE_CODE", one()),
        ];
        adapter::note_max_turns_ignored(request, events, NAME, "option");
        // Sessions stay in this home's database; see the module docs.
        Ok(Prepared {
            args: Self::args(request),
            env: defaults.into(),
            sessions: None,
        })
    }
}

/// Whether `home` holds OpenCode's session database, i.e. an earlier run in this home (a
/// feedback round's first run) started the session a resume names. A task's home is new for
/// each attempt, so a follow-up's first run never finds one.
fn has_sessions(home: &std::path::Path) -> bool {
    home.join(".local/share/opencode/opencode.db").is_file()
}

/// Parser for `opencode run --format json` lines.
#[derive(Debug, Default)]
pub struct Parser {
    summary: Summary,
    last_text: Option<String>,
    /// Answers in a row that ended without a finish reason.
    unfinished: u32,
}

impl LineParser for Parser {
    fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Answers keep ending without a finish reason (see [`UNFINISHED_LIMIT`]): OpenCode would
    /// ask again until the task's timeout, so the run is stopped now.
    fn gave_up(&self) -> Option<&str> {
        (self.unfinished >= UNFINISHED_LIMIT)
            .then_some(self.summary.outcome.error_message.as_deref())
            .flatten()
    }

    /// Unlike the default, a line that starts the session but is otherwise not understood
    /// gives both the session event and the raw line.
    fn parse_object(&mut self, line: &str, v: &Value) -> Vec<NewEvent> {
        let mut out = Vec::new();
        if let Some(id) = v.get("sessionID").and_then(Value::as_str)
            && self.summary.set_session_id_once(id)
        {
            out.push(events::session_started(id, None));
        }
        let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
        let part = v.get("part").cloned().unwrap_or(Value::Null);
        let mapped = match ty {
            "tool_use" => {
                out.extend(tool_use(&part));
                true
            }
            "text" => match part.get("text").and_then(Value::as_str) {
                Some(t) => {
                    self.last_text = Some(t.to_string());
                    out.push(events::assistant_message(t));
                    true
                }
                None => false,
            },
            "step_finish" => {
                out.extend(self.step_finish(&part));
                true
            }
            "error" => {
                out.extend(self.error(v));
                true
            }
            _ => false,
        };
        if !mapped {
            out.push(events::raw_json(line, Some(ty)));
        }
        out
    }
}

fn tool_use(part: &Value) -> Vec<NewEvent> {
    let id = part.get("callID").and_then(Value::as_str);
    let name = part.get("tool").and_then(Value::as_str).unwrap_or("unknown");
    let state = part.get("state").cloned().unwrap_or(Value::Null);
    let mut out = vec![events::tool_call(
        id,
        name,
        state.get("input").unwrap_or(&Value::Null),
    )];
    match state.get("status").and_then(Value::as_str) {
        Some("completed") => out.push(events::tool_result(
            id,
            true,
            &events::text_of(state.get("output").unwrap_or(&Value::Null)),
        )),
        Some("error") => out.push(events::tool_result(
            id,
            false,
            &events::text_of(state.get("error").unwrap_or(&Value::Null)),
        )),
        _ => {}
    }
    out
}

impl Parser {
    fn step_finish(&mut self, part: &Value) -> Vec<NewEvent> {
        let t = part.get("tokens").cloned().unwrap_or(Value::Null);
        let step = Usage {
            input_tokens: u64_at(&t, "input"),
            output_tokens: u64_at(&t, "output") + u64_at(&t, "reasoning"),
            cache_read_tokens: t.pointer("/cache/read").and_then(Value::as_u64).unwrap_or(0),
            cache_write_tokens: t.pointer("/cache/write").and_then(Value::as_u64).unwrap_or(0),
        };
        let cost = part.get("cost").and_then(Value::as_f64);
        let s = &mut self.summary;
        s.outcome.usage.add(&step);
        if let Some(c) = cost {
            s.outcome.cost_usd = Some(s.outcome.cost_usd.unwrap_or(0.0) + c);
        }
        s.outcome.num_turns = Some(s.outcome.num_turns.unwrap_or(0) + 1);
        let mut out = vec![events::usage(&step, cost)];
        let reason = part.get("reason").and_then(Value::as_str);
        match reason {
            Some("tool-calls") => self.unfinished = 0,
            Some(r) if FINAL_REASONS.contains(&r) => {
                self.unfinished = 0;
                s.outcome.final_text = self.last_text.clone();
                s.saw_result = true;
                out.push(events::result(s.outcome.final_text.as_deref(), false, reason));
            }
            // `unknown` (a stream cut off), `error`, none: no end of the answer, and OpenCode
            // asks the model again.
            _ => {
                self.unfinished += 1;
                if self.unfinished == UNFINISHED_LIMIT {
                    let message = format!(
                        "the model's answer ended without a finish reason {UNFINISHED_LIMIT} \
                         times in a row (its stream was cut off; OpenCode asks again each time); \
                         the run failed"
                    );
                    s.error(Some(ErrorClass::AgentError), &message);
                    s.saw_result = true;
                    out.push(events::result(Some(&message), true, reason));
                }
            }
        }
        out
    }

    fn error(&mut self, v: &Value) -> Vec<NewEvent> {
        let err = v.get("error").cloned().unwrap_or(Value::Null);
        let data = err.get("data").cloned().unwrap_or(Value::Null);
        let message = data
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| err.get("name").and_then(Value::as_str))
            .unwrap_or("opencode error")
            .to_string();
        let class = data
            .get("statusCode")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .and_then(cli::class_of_status)
            .or_else(|| {
                (err.get("name").and_then(Value::as_str) == Some("MessageAbortedError"))
                    .then_some(ErrorClass::Canceled)
            });
        let s = &mut self.summary;
        s.error(class, &message);
        if let Some(ra) = data
            .pointer("/responseHeaders/retry-after")
            .and_then(Value::as_str)
            .and_then(|r| r.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite() && *r >= 0.0 && *r < 86_400.0)
        {
            s.outcome.retry_after = Some(std::time::Duration::from_millis((ra * 1000.0) as u64));
        }
        s.saw_result = true;
        vec![events::result(Some(&message), true, Some("error"))]
    }
}
