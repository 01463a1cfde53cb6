//! A scripted model endpoint for the real agent CLIs: a local HTTP server (127.0.0.1, port 0)
//! that speaks the Anthropic Messages API (`POST /v1/messages`), the OpenAI Responses API
//! (`POST /v1/responses`) and Chat Completions (`POST /v1/chat/completions`), and the Gemini API
//! (`POST /v1beta/models/{model}:streamGenerateContent`), streaming or not, and answers each
//! agent request with the next [`Step`] of a per-test [`Script`]: call the agent's own
//! file-writing or shell tool, answer text, cut the answer's stream short, fail with an HTTP
//! status, or never answer.
//!
//! Tools are chosen by name from what the agent offers (`Write`/`Bash`, `apply_patch`/
//! `exec_command`, `write`/`bash`, `write_file`/`run_shell_command`). Requests that offer no
//! tools (title generation and other side requests) get a short text answer and do not advance
//! the script. Every request is recorded for assertions.
//!
//! A product crate, not test support: `agentpool demo` runs a real agent CLI against it
//! offline, and the tests drive the real CLIs with it (through `agentpool-testkit`).

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;
use serde_json::Value;
use tokio::task::JoinHandle;

mod apis;
mod play;
mod request;

pub use request::{tools_offered, workdir_in};

/// The API key the endpoint hands out; any key is accepted (failures are scripted).
pub const TEST_API_KEY: &str = "sk-agentpool-test";

/// Token counts every answer reports, so tests can assert usage was recorded.
pub const INPUT_TOKENS: u64 = 100;
pub const OUTPUT_TOKENS: u64 = 20;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Call the agent's file-writing tool to create `path` (relative to the script's workdir)
    /// with `content`.
    WriteFile { path: String, content: String },
    /// Call the agent's shell tool with `command`.
    Shell { command: String },
    /// Call the offered tool named `name`, or whose name ends with it (MCP tools carry a
    /// prefix that differs by CLI, e.g. Claude Code's `mcp__<server>__<tool>`), with `args`.
    Tool { name: String, args: serde_json::Value },
    /// Answer with text and end the turn.
    Answer(String),
    /// Start answering with text, then close the stream without ending the answer: no finish
    /// or stop reason, no end event (an endpoint or proxy that cuts a stream short). Streamed
    /// requests only; a request that does not stream gets the answer cut mid-body.
    CutOff(String),
    /// Answer with an HTTP error (401, 429, 500, …) in the API's own error format, with a
    /// `retry-after` header when given.
    Fail { status: u16, retry_after: Option<u64> },
    /// Accept the request and never answer.
    Hang,
}

impl Step {
    pub fn write_file(path: &str, content: &str) -> Self {
        Self::WriteFile {
            path: path.into(),
            content: content.into(),
        }
    }
    pub fn shell(command: &str) -> Self {
        Self::Shell {
            command: command.into(),
        }
    }
    pub fn tool(name: &str, args: serde_json::Value) -> Self {
        Self::Tool {
            name: name.into(),
            args,
        }
    }
    pub fn answer(text: &str) -> Self {
        Self::Answer(text.into())
    }
    pub fn cut_off(text: &str) -> Self {
        Self::CutOff(text.into())
    }
    pub fn fail(status: u16) -> Self {
        Self::Fail {
            status,
            retry_after: None,
        }
    }
}

/// The steps for one test. Agent request N gets step N; past the end, the last step repeats
/// (so `[fail(401)]` fails every request, and `[write, answer]` keeps answering).
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub steps: Vec<Step>,
    /// The workspace, to turn relative paths into the absolute ones some tools require. When
    /// unset (a worker picks the directory), it is read from the request: the agents name their
    /// working directory in the system prompt or first message.
    pub workdir: Option<PathBuf>,
}

impl Script {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
            workdir: None,
        }
    }
    pub fn in_workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }
}

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Anthropic,
    Responses,
    ChatCompletions,
    Gemini,
    Other,
}

/// A request the endpoint received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub api: Api,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    /// Offered no tools (title generation, summaries): answered without advancing the script.
    pub side: bool,
    /// The script step this request got (agent requests only).
    pub step: Option<usize>,
}

impl RecordedRequest {
    /// Tool names the agent offered.
    pub fn tools(&self) -> Vec<String> {
        tools_offered(self.api, &self.body)
    }
}

pub(crate) struct Shared {
    pub(crate) script: Script,
    pub(crate) cursor: AtomicUsize,
    pub(crate) ids: AtomicU64,
    pub(crate) requests: Mutex<Vec<RecordedRequest>>,
}

/// A running scripted endpoint; stops when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ModelServer {
    pub async fn start(script: Script) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            script,
            cursor: AtomicUsize::new(0),
            ids: AtomicU64::new(1),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/messages", post(apis::anthropic))
            .route("/v1/messages/count_tokens", post(apis::count_tokens))
            .route("/v1/responses", post(apis::responses))
            .route("/v1/chat/completions", post(apis::chat))
            .route("/v1beta/models/{model_action}", post(apis::gemini))
            .fallback(apis::other)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Requests that advanced the script.
    pub fn agent_requests(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| !r.side).collect()
    }

    /// The environment an agent CLI needs to talk to this endpoint, by agentpool agent name.
    pub fn env_for(&self, agent: &str) -> BTreeMap<String, String> {
        let base = self.base_url();
        let pairs: Vec<(&str, String)> = match agent {
            "claude-code" => vec![
                ("ANTHROPIC_BASE_URL", base),
                ("ANTHROPIC_API_KEY", TEST_API_KEY.into()),
            ],
            "codex" | "opencode" => vec![
                ("OPENAI_BASE_URL", format!("{base}/v1")),
                ("OPENAI_API_KEY", TEST_API_KEY.into()),
            ],
            "gemini" => vec![
                ("GOOGLE_GEMINI_BASE_URL", base),
                ("GEMINI_API_KEY", TEST_API_KEY.into()),
            ],
            _ => vec![],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}
