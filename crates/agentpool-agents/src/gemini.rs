//! The `gemini` adapter: `gemini -p PROMPT --output-format stream-json --yolo` with a private
//! HOME whose `.gemini/settings.json` selects API-key auth, turns folder trust, telemetry, usage
//! statistics and auto-update off, and allows one API attempt; and a parser for its stream-json
//! lines (`init`, `message`, `tool_use`, `tool_result`, `error`, `result` with stats).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use agentpool_core::{ErrorClass, NewEvent, Usage};
use serde_json::{Value, json};

use crate::adapter::{self, CliAgent, Prepared, SessionFiles};
use crate::auth::{AuthNeeds, AuthSource};
use crate::cli::{self, LineParser, Summary};
use crate::events::{self, u64_at};
use crate::kept::RunningTotals;
use crate::{AgentError, AgentRequest, Capabilities, EventSink};

pub const NAME: &str = "gemini";
const EXE: &str = "gemini";

pub struct Gemini;

impl Gemini {
    pub fn settings() -> Value {
        json!({
            "security": {
                "auth": { "selectedType": "gemini-api-key" },
                // The workspace is agentpool's own checkout; without this --yolo falls back to
                // asking for approval, which headless means never.
                "folderTrust": { "enabled": false }
            },
            "telemetry": { "enabled": false },
            "privacy": { "usageStatisticsEnabled": false },
            "general": {
                "enableAutoUpdate": false,
                "enableAutoUpdateNotification": false,
                // agentpool retries across attempts with its own backoff; the CLI's own retries
                // would turn one 429 into minutes of waiting.
                "maxAttempts": 1
            }
        })
    }

    pub fn args(req: &AgentRequest) -> Vec<OsString> {
        let mut a = cli::stream_json_run(&req.prompt, &["--yolo"]);
        a.extend(cli::options([
            ("-m", req.model.clone()),
            ("--resume", req.resume_session.clone()),
        ]));
        a
    }
}

impl CliAgent for Gemini {
    const EXE: &'static str = EXE;
    const PACKAGE: &'static str = "@google/gemini-cli";
    const CAPABILITIES: Capabilities = Capabilities {
        resume: true,
        ..Capabilities::none(NAME)
    };
    type Parser = Parser;
    // A resumed session's `stats` count only the run's own requests.
    const RUNNING_TOTALS: RunningTotals = RunningTotals::NONE;

    /// The settings select API-key authentication, which reads `GEMINI_API_KEY` (without it
    /// the CLI exits 41: "When using Gemini API, you must specify the GEMINI_API_KEY
    /// environment variable").
    fn auth_needs(&self, _request: &AgentRequest) -> AuthNeeds {
        AuthNeeds::any_of([AuthSource::Key("GEMINI_API_KEY")])
    }

    fn prepare(&self, request: &AgentRequest, events: &dyn EventSink) -> Result<Prepared, AgentError> {
        let dir = request.home.join(".gemini");
        std::fs::create_dir_all(&dir)?;
        let mut settings = Self::settings();
        if !request.profile.mcp_servers.is_empty() {
            settings["mcpServers"] = adapter::mcp_servers_json(request);
        }
        if !request.profile.allowed_tools.is_empty() {
            settings["tools"] = json!({ "allowed": request.profile.allowed_tools });
        }
        adapter::write_json(&dir.join("settings.json"), &settings)?;
        adapter::note_profile_ignored(request, events, NAME, true, false);
        adapter::note_max_turns_ignored(request, events, NAME, "flag");
        // Pin the project's directory name so a kept chat can be put where this run looks.
        let project = dir.join("tmp").join(PROJECT);
        std::fs::create_dir_all(project.join("chats"))?;
        let workdir = request.workdir.to_string_lossy().into_owned();
        adapter::write_json(
            &dir.join("projects.json"),
            &json!({ "projects": { workdir.clone(): PROJECT } }),
        )?;
        std::fs::write(project.join(".project_root"), &workdir)?;
        Ok(Prepared {
            args: Self::args(request),
            env: Vec::new(),
            sessions: Some(Box::new(Chats { dir })),
        })
    }
}

/// The directory name the adapter gives every workspace under `~/.gemini/tmp`.
const PROJECT: &str = "agentpool-workspace";

/// Gemini names a chat `session-<date>-<first 8 chars of the id>.jsonl` and records the full id
/// inside.
fn chat_matches(path: &Path, id: &str) -> bool {
    let Some(prefix) = id.get(..8) else {
        return false;
    };
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("session-") && n.contains(prefix))
        && std::fs::read_to_string(path).is_ok_and(|t| t.contains(id))
}

fn safe_id(id: &str) -> bool {
    id.len() >= 8 && adapter::plain_id(id)
}

/// Gemini's chats under this run's (throw-away) `~/.gemini` (`dir`).
struct Chats {
    dir: PathBuf,
}

impl SessionFiles for Chats {
    /// Copy the session's chat out, in place of an older copy.
    fn keep(&self, kept: &Path, id: &str) -> std::io::Result<()> {
        if !safe_id(id) {
            return Ok(());
        }
        let mut found = Vec::new();
        for project in std::fs::read_dir(self.dir.join("tmp"))?.flatten() {
            let Ok(chats) = std::fs::read_dir(project.path().join("chats")) else {
                continue;
            };
            found.extend(chats.flatten().map(|c| c.path()).filter(|p| chat_matches(p, id)));
        }
        if found.is_empty() {
            return Ok(());
        }
        let dst = kept.join(id);
        if dst.is_dir() {
            std::fs::remove_dir_all(&dst)?;
        }
        std::fs::create_dir_all(&dst)?;
        for p in found {
            if let Some(name) = p.file_name() {
                std::fs::copy(&p, dst.join(name))?;
            }
        }
        Ok(())
    }

    /// Put a kept chat where this run's `--resume` looks.
    fn restore(&self, kept: &Path, id: &str) -> bool {
        if !safe_id(id) {
            return false;
        }
        let chats = self.dir.join("tmp").join(PROJECT).join("chats");
        let in_home = std::fs::read_dir(&chats)
            .is_ok_and(|mut files| files.any(|f| f.is_ok_and(|f| chat_matches(&f.path(), id))));
        if in_home {
            return true;
        }
        let Ok(files) = std::fs::read_dir(kept.join(id)) else {
            return false;
        };
        let mut there = false;
        for f in files.flatten() {
            there |= std::fs::copy(f.path(), chats.join(f.file_name())).is_ok();
        }
        there
    }
}

/// Parser for Gemini CLI's stream-json lines.
#[derive(Debug, Default)]
pub struct Parser {
    summary: Summary,
    /// Assistant text since the last tool call (deltas are concatenated).
    text: String,
    /// Why the CLI stopped the model short, as its `error` events said: its loop detection
    /// (a warning, after which it still reports `success`), or an error (an empty or blocked
    /// answer). The run did not do its work.
    stopped: Option<String>,
}

/// What Gemini CLI says when its loop detection stops the model; its result still says
/// `success`, with no answer.
const LOOP_DETECTED: &str = "Loop detected, stopping execution";

impl LineParser for Parser {
    fn summary(&self) -> &Summary {
        &self.summary
    }

    fn classify_exit(&self, code: Option<i32>) -> Option<ErrorClass> {
        // Gemini exits with the API's HTTP status mod 256, or its own codes.
        match code? {
            41 | 145 | 147 => Some(ErrorClass::AuthFailed), // auth config, 401, 403
            173 => Some(ErrorClass::RateLimited),           // 429
            130 => Some(ErrorClass::Canceled),
            42 | 52 | 53 => Some(ErrorClass::AgentError), // input, config, turn limit
            _ => None,
        }
    }

    fn parse_object(&mut self, line: &str, v: &Value) -> Vec<NewEvent> {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        match ty {
            "init" => match s("session_id") {
                Some(id) => {
                    self.summary.outcome.session_id = Some(id.to_string());
                    vec![events::session_started(id, s("model"))]
                }
                None => vec![],
            },
            "message" if s("role") == Some("assistant") => {
                let t = s("content").unwrap_or_default();
                self.text.push_str(t);
                vec![events::assistant_message(t)]
            }
            "tool_use" => {
                self.text.clear();
                vec![events::tool_call(
                    s("tool_id"),
                    s("tool_name").unwrap_or("unknown"),
                    v.get("parameters").unwrap_or(&Value::Null),
                )]
            }
            "tool_result" => {
                let ok = s("status") == Some("success");
                let output = match v.get("output") {
                    Some(o) if !o.is_null() => events::text_of(o),
                    _ => events::text_of(v.pointer("/error/message").unwrap_or(&Value::Null)),
                };
                vec![events::tool_result(s("tool_id"), ok, &output)]
            }
            "error" => {
                let message = s("message").unwrap_or(line);
                if s("severity") == Some("error") || message == LOOP_DETECTED {
                    self.stopped = Some(message.to_string());
                }
                vec![events::log("agent", message)]
            }
            "result" => self.result(v),
            _ => vec![],
        }
    }
}

impl Parser {
    fn result(&mut self, v: &Value) -> Vec<NewEvent> {
        let stats = v.get("stats").cloned().unwrap_or(Value::Null);
        let s = &mut self.summary;
        s.saw_result = true;
        s.outcome.usage = Usage {
            input_tokens: u64_at(&stats, "input_tokens"),
            output_tokens: u64_at(&stats, "output_tokens"),
            cache_read_tokens: u64_at(&stats, "cached"),
            cache_write_tokens: 0,
        };
        let ok = v.get("status").and_then(Value::as_str) == Some("success") && self.stopped.is_none();
        if !self.text.is_empty() {
            s.outcome.final_text = Some(self.text.clone());
        }
        let mut message = None;
        if !ok {
            let m = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    self.stopped
                        .as_ref()
                        .map(|why| format!("gemini stopped the model: {why}"))
                })
                .unwrap_or_else(|| "gemini reported an error".to_string());
            s.error(None, &m);
            if s.outcome.retry_after.is_none() {
                s.outcome.retry_after = cli::retry_after_in(&m);
            }
            message = Some(m);
        }
        vec![
            events::usage(&s.outcome.usage, None),
            events::result(
                message.as_deref().or(s.outcome.final_text.as_deref()),
                !ok,
                v.get("status").and_then(Value::as_str),
            ),
        ]
    }
}
