//! A scripted model endpoint for the real agent CLIs: a local HTTP server (127.0.0.1, port 0)
//! that speaks the Anthropic Messages API (`POST /v1/messages`), the OpenAI Responses API
//! (`POST /v1/responses`) and Chat Completions (`POST /v1/chat/completions`), and the Gemini API
//! (`POST /v1beta/models/{model}:streamGenerateContent`), streaming or not, and answers each
//! agent request with the next [`Step`] of a per-test [`Script`]: call the agent's own
//! file-writing or shell tool, answer text, fail with an HTTP status, or never answer.
//!
//! Tools are chosen by name from what the agent offers (`Write`/`Bash`, `apply_patch`/
//! `exec_command`, `write`/`bash`, `write_file`/`run_shell_command`). Requests that offer no
//! tools (title generation and other side requests) get a short text answer and do not advance
//! the script. Every request is recorded for assertions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

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
    /// Answer with text and end the turn.
    Answer(String),
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
    pub fn answer(text: &str) -> Self {
        Self::Answer(text.into())
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

struct Shared {
    script: Script,
    cursor: AtomicUsize,
    ids: AtomicU64,
    requests: Mutex<Vec<RecordedRequest>>,
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
            .route("/v1/messages", post(anthropic))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/responses", post(responses))
            .route("/v1/chat/completions", post(chat))
            .route("/v1beta/models/{model_action}", post(gemini))
            .fallback(other)
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

/// Tool names offered in a request body, per API.
pub fn tools_offered(api: Api, body: &Value) -> Vec<String> {
    let tools = body.get("tools").and_then(Value::as_array);
    let mut names = Vec::new();
    for t in tools.into_iter().flatten() {
        match api {
            Api::ChatCompletions => {
                if let Some(n) = t.pointer("/function/name").and_then(Value::as_str) {
                    names.push(n.to_string());
                }
            }
            Api::Gemini => {
                for d in t
                    .get("functionDeclarations")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(n) = d.get("name").and_then(Value::as_str) {
                        names.push(n.to_string());
                    }
                }
            }
            _ => {
                if let Some(n) = t.get("name").and_then(Value::as_str) {
                    names.push(n.to_string());
                }
            }
        }
    }
    names
}

/// The working directory an agent announces in its prompt: Claude Code's "Primary working
/// directory: /p", OpenCode's "Working directory: /p", Gemini's "Workspace Directories:\n  - /p",
/// Codex's `<cwd>/p</cwd>`.
pub fn workdir_in(body: &Value) -> Option<PathBuf> {
    const MARKERS: [&str; 4] = [
        "Primary working directory:",
        "Working directory:",
        "Workspace Directories:",
        "<cwd>",
    ];
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(body, &mut all);
    for marker in MARKERS {
        for s in &all {
            if let Some(i) = s.find(marker) {
                let rest = s[i + marker.len()..].trim_start_matches([' ', '\n', '\t', '-', '*']);
                let path: String = rest
                    .chars()
                    .take_while(|c| !matches!(c, '\n' | '<' | '"'))
                    .collect();
                let path = path.trim();
                if path.starts_with('/') {
                    return Some(PathBuf::from(path));
                }
            }
        }
    }
    None
}

/// What to do with one request.
enum Play {
    Step(Step),
    Side,
}

impl Shared {
    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}_{:016x}", self.ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Record the request and decide the answer.
    fn play(&self, api: Api, uri: &Uri, headers: &HeaderMap, body: &Value) -> Play {
        let side = tools_offered(api, body).is_empty();
        let (play, step) = if side {
            // A scripted failure fails side requests too (a bad key fails everything), without
            // consuming the step.
            let i = self.cursor.load(Ordering::SeqCst);
            match self.step_at(i) {
                Some(s @ (Step::Fail { .. } | Step::Hang)) => (Play::Step(s), None),
                _ => (Play::Side, None),
            }
        } else {
            let i = self.cursor.fetch_add(1, Ordering::SeqCst);
            let step = self.step_at(i).unwrap_or_else(|| Step::answer("Done."));
            (Play::Step(step), Some(i))
        };
        let recorded = RecordedRequest {
            api,
            path: uri.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect(),
            body: body.clone(),
            side,
            step,
        };
        if let Ok(mut r) = self.requests.lock() {
            r.push(recorded);
        }
        play
    }

    fn step_at(&self, i: usize) -> Option<Step> {
        let steps = &self.script.steps;
        steps.get(i.min(steps.len().saturating_sub(1))).cloned()
    }

    fn abs(&self, path: &str, body: &Value) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        match self.script.workdir.clone().or_else(|| workdir_in(body)) {
            Some(d) => d.join(path).to_string_lossy().into_owned(),
            None => path.to_string(),
        }
    }
}

/// A tool call decided for a request: the tool's name and its arguments (or, for Codex's
/// free-form `apply_patch`, its raw input).
struct Call {
    name: String,
    args: Value,
    custom_input: Option<String>,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Pick the agent's tool for a step.
fn call_for(shared: &Shared, api: Api, body: &Value, step: &Step) -> Option<Call> {
    let offered = tools_offered(api, body);
    let has = |n: &str| offered.iter().any(|o| o == n);
    let shell = |command: &str| -> Option<Call> {
        let (name, args) = if has("Bash") {
            (
                "Bash",
                json!({"command": command, "description": "Run a command"}),
            )
        } else if has("exec_command") {
            ("exec_command", json!({"cmd": command}))
        } else if has("shell") {
            ("shell", json!({"command": ["bash", "-lc", command]}))
        } else if has("shell_command") {
            ("shell_command", json!({"command": command}))
        } else if has("bash") {
            (
                "bash",
                json!({"command": command, "description": "Run a command"}),
            )
        } else if has("run_shell_command") {
            (
                "run_shell_command",
                json!({"command": command, "description": "Run a command"}),
            )
        } else {
            return None;
        };
        Some(Call {
            name: name.into(),
            args,
            custom_input: None,
        })
    };
    match step {
        Step::Shell { command } => shell(command),
        Step::WriteFile { path, content } => {
            let abs = shared.abs(path, body);
            if has("Write") {
                Some(Call {
                    name: "Write".into(),
                    args: json!({"file_path": abs, "content": content}),
                    custom_input: None,
                })
            } else if has("apply_patch") {
                let mut patch = format!("*** Begin Patch\n*** Add File: {path}\n");
                for line in content.lines() {
                    patch.push('+');
                    patch.push_str(line);
                    patch.push('\n');
                }
                patch.push_str("*** End Patch\n");
                let custom = body
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|t| {
                        t.get("name").and_then(Value::as_str) == Some("apply_patch")
                            && t.get("type").and_then(Value::as_str) == Some("custom")
                    });
                Some(Call {
                    name: "apply_patch".into(),
                    args: json!({"input": patch}),
                    custom_input: custom.then_some(patch),
                })
            } else if has("write") {
                Some(Call {
                    name: "write".into(),
                    args: json!({"filePath": abs, "content": content}),
                    custom_input: None,
                })
            } else if has("write_file") {
                Some(Call {
                    name: "write_file".into(),
                    args: json!({"file_path": abs, "content": content}),
                    custom_input: None,
                })
            } else {
                shell(&format!(
                    "printf %s {} > {}",
                    shell_quote(content),
                    shell_quote(&abs)
                ))
            }
        }
        _ => None,
    }
}

fn parse_body(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// The model the request names, or the API's usual default.
fn model_of(body: &Value, default: &str) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

/// Record the request and pick the scripted step; side requests (titles, routing) get a fixed
/// answer so they never consume the test's script.
fn step_for(shared: &Shared, api: Api, uri: &Uri, headers: &HeaderMap, body: &Value, side: &str) -> Step {
    match shared.play(api, uri, headers, body) {
        Play::Side => Step::answer(side),
        Play::Step(s) => s,
    }
}

fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn sse(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn hang() -> Response {
    let stream = futures::stream::pending::<Result<Bytes, std::io::Error>>();
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn error_response(status: u16, retry_after: Option<u64>, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, axum::Json(body)).into_response();
    if let Some(ra) = retry_after
        && let Ok(v) = ra.to_string().parse()
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn error_text(status: u16) -> &'static str {
    match status {
        401 => "Incorrect API key provided (scripted)",
        403 => "Permission denied (scripted)",
        429 => "Rate limit reached for requests (scripted)",
        _ => "Internal server error (scripted)",
    }
}

// ---------------------------------------------------------------- Anthropic Messages

async fn count_tokens(State(shared): State<Arc<Shared>>, uri: Uri, bytes: Bytes) -> Response {
    let body = parse_body(&bytes);
    if let Ok(mut r) = shared.requests.lock() {
        r.push(RecordedRequest {
            api: Api::Anthropic,
            path: uri.to_string(),
            headers: BTreeMap::new(),
            body,
            side: true,
            step: None,
        });
    }
    axum::Json(json!({"input_tokens": INPUT_TOKENS})).into_response()
}

async fn anthropic(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let body = parse_body(&bytes);
    let model = model_of(&body, "claude-sonnet-4-5");
    let step = step_for(
        &shared,
        Api::Anthropic,
        &uri,
        &headers,
        &body,
        "Scripted side answer",
    );
    let (block, stop) = match &step {
        Step::Hang => return hang(),
        Step::Fail { status, retry_after } => {
            let ty = match status {
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            return error_response(
                *status,
                *retry_after,
                json!({"type": "error", "error": {"type": ty, "message": error_text(*status)}}),
            );
        }
        Step::Answer(t) => (json!({"type": "text", "text": t}), "end_turn"),
        other => match call_for(&shared, Api::Anthropic, &body, other) {
            Some(c) => (
                json!({"type": "tool_use", "id": shared.next_id("toolu"), "name": c.name, "input": c.args}),
                "tool_use",
            ),
            None => (
                json!({"type": "text", "text": "No suitable tool offered."}),
                "end_turn",
            ),
        },
    };
    let id = shared.next_id("msg");
    let usage = json!({"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    if !wants_stream(&body) {
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let mut out = String::new();
    let mut ev = |name: &str, data: Value| {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    ev(
        "message_start",
        json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    );
    match block.get("type").and_then(Value::as_str) {
        Some("tool_use") => {
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}),
            );
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": block["input"].to_string()}}),
            );
        }
        _ => {
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            );
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": block["text"]}}),
            );
        }
    }
    ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    ev(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": OUTPUT_TOKENS}}),
    );
    ev("message_stop", json!({"type": "message_stop"}));
    sse(out)
}

// ---------------------------------------------------------------- OpenAI Responses

async fn responses(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let body = parse_body(&bytes);
    let model = model_of(&body, "gpt-5.5");
    let step = step_for(
        &shared,
        Api::Responses,
        &uri,
        &headers,
        &body,
        "Scripted side answer",
    );
    let item = match &step {
        Step::Hang => return hang(),
        Step::Fail { status, retry_after } => {
            return openai_error(*status, *retry_after);
        }
        Step::Answer(t) => message_item(&shared, t),
        other => match call_for(&shared, Api::Responses, &body, other) {
            Some(Call {
                name,
                custom_input: Some(input),
                ..
            }) => json!({
                "type": "custom_tool_call", "id": shared.next_id("ctc"), "status": "completed",
                "call_id": shared.next_id("call"), "name": name, "input": input}),
            Some(c) => json!({
                "type": "function_call", "id": shared.next_id("fc"), "status": "completed",
                "call_id": shared.next_id("call"), "name": c.name, "arguments": c.args.to_string()}),
            None => message_item(&shared, "No suitable tool offered."),
        },
    };
    let resp_id = shared.next_id("resp");
    let usage = json!({"input_tokens": INPUT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": OUTPUT_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS});
    let response = |status: &str, output: Value, usage: Value| {
        json!({
        "id": resp_id, "object": "response", "created_at": 0, "status": status, "model": model,
        "output": output, "usage": usage})
    };
    if !wants_stream(&body) {
        return axum::Json(response("completed", json!([item]), usage)).into_response();
    }
    let mut out = String::new();
    let mut seq = 0u64;
    let mut ev = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    ev(
        "response.created",
        json!({"response": response("in_progress", json!([]), Value::Null)}),
    );
    let mut added = item.clone();
    if item["type"] == "message" {
        added["content"] = json!([]);
        added["status"] = json!("in_progress");
    }
    ev(
        "response.output_item.added",
        json!({"output_index": 0, "item": added}),
    );
    if item["type"] == "message" {
        ev(
            "response.output_text.delta",
            json!({"item_id": item["id"], "output_index": 0,
            "content_index": 0, "delta": item["content"][0]["text"]}),
        );
    }
    ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    ev(
        "response.completed",
        json!({"response": response("completed", json!([item]), usage)}),
    );
    sse(out)
}

fn message_item(shared: &Shared, text: &str) -> Value {
    json!({"type": "message", "id": shared.next_id("msg"), "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn openai_error(status: u16, retry_after: Option<u64>) -> Response {
    let (ty, code) = match status {
        401 => ("invalid_request_error", "invalid_api_key"),
        429 => ("requests", "rate_limit_exceeded"),
        _ => ("server_error", "server_error"),
    };
    error_response(
        status,
        retry_after,
        json!({"error": {"message": error_text(status), "type": ty, "param": null, "code": code}}),
    )
}

// ---------------------------------------------------------------- OpenAI Chat Completions

async fn chat(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, bytes: Bytes) -> Response {
    let body = parse_body(&bytes);
    let model = model_of(&body, "stub-model");
    let step = step_for(
        &shared,
        Api::ChatCompletions,
        &uri,
        &headers,
        &body,
        "Scripted title",
    );
    let (message, finish) = match &step {
        Step::Hang => return hang(),
        Step::Fail { status, retry_after } => return openai_error(*status, *retry_after),
        Step::Answer(t) => (json!({"role": "assistant", "content": t}), "stop"),
        other => match call_for(&shared, Api::ChatCompletions, &body, other) {
            Some(c) => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0, "id": shared.next_id("call"), "type": "function",
                    "function": {"name": c.name, "arguments": c.args.to_string()}}]}),
                "tool_calls",
            ),
            None => (
                json!({"role": "assistant", "content": "No suitable tool offered."}),
                "stop",
            ),
        },
    };
    let id = shared.next_id("chatcmpl");
    let usage = json!({"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS});
    if !wants_stream(&body) {
        let mut m = message.clone();
        if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for c in calls {
                if let Some(o) = c.as_object_mut() {
                    o.remove("index");
                }
            }
        }
        return axum::Json(
            json!({"id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": m, "finish_reason": finish}], "usage": usage}),
        )
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk",
        "created": 0, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut out = String::new();
    out.push_str(&format!("data: {}\n\n", chunk(message, Value::Null)));
    out.push_str(&format!("data: {}\n\n", chunk(json!({}), json!(finish))));
    out.push_str(&format!(
        "data: {}\n\n",
        json!({"id": id, "object": "chat.completion.chunk",
        "created": 0, "model": model, "choices": [], "usage": usage})
    ));
    out.push_str("data: [DONE]\n\n");
    sse(out)
}

// ---------------------------------------------------------------- Gemini

async fn gemini(
    State(shared): State<Arc<Shared>>,
    Path(model_action): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let body = parse_body(&bytes);
    let (model, action) = model_action
        .split_once(':')
        .unwrap_or((&model_action, "generateContent"));
    if action == "countTokens" {
        return axum::Json(json!({"totalTokens": INPUT_TOKENS})).into_response();
    }
    let step = step_for(
        &shared,
        Api::Gemini,
        &uri,
        &headers,
        &body,
        "Scripted side answer",
    );
    let part = match &step {
        Step::Hang => return hang(),
        Step::Fail { status, retry_after } => {
            let (st, msg) = match status {
                401 => (
                    "UNAUTHENTICATED",
                    "API key not valid. Please pass a valid API key. (scripted)",
                ),
                403 => ("PERMISSION_DENIED", "Permission denied. (scripted)"),
                429 => (
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota). (scripted)",
                ),
                _ => ("INTERNAL", "Internal error. (scripted)"),
            };
            let mut err = json!({"error": {"code": status, "message": msg, "status": st}});
            if let Some(ra) = retry_after {
                err["error"]["details"] = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{ra}s")}]);
            }
            return error_response(*status, *retry_after, err);
        }
        Step::Answer(t) => json!({"text": t}),
        other => match call_for(&shared, Api::Gemini, &body, other) {
            Some(c) => json!({"functionCall": {"name": c.name, "args": c.args}}),
            None => json!({"text": "No suitable tool offered."}),
        },
    };
    let answer = json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
                          "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS},
        "modelVersion": model,
    });
    if action.starts_with("stream") {
        sse(format!("data: {answer}\r\n\r\n"))
    } else {
        axum::Json(answer).into_response()
    }
}

async fn other(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, bytes: Bytes) -> Response {
    let body = parse_body(&bytes);
    if let Ok(mut r) = shared.requests.lock() {
        r.push(RecordedRequest {
            api: Api::Other,
            path: uri.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect(),
            body,
            side: true,
            step: None,
        });
    }
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": {"message": "not scripted"}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_working_directory_each_agent_announces() {
        let claude = json!({"system": [{"type": "text", "text": "x\nPrimary working directory: /tmp/ws1\nIs a git repo"}]});
        assert_eq!(workdir_in(&claude), Some(PathBuf::from("/tmp/ws1")));
        let gemini =
            json!({"contents": [{"parts": [{"text": "Workspace Directories:\n  - /tmp/ws2\nmore"}]}]});
        assert_eq!(workdir_in(&gemini), Some(PathBuf::from("/tmp/ws2")));
        let codex = json!({"input": [{"content": [{"text": "<cwd>/tmp/ws3</cwd>"}]}]});
        assert_eq!(workdir_in(&codex), Some(PathBuf::from("/tmp/ws3")));
        assert_eq!(workdir_in(&json!({"messages": []})), None);
    }

    #[test]
    fn reads_tool_names_in_each_api_shape() {
        let chat = json!({"tools": [{"type": "function", "function": {"name": "write"}}]});
        assert_eq!(tools_offered(Api::ChatCompletions, &chat), vec!["write"]);
        let gemini = json!({"tools": [{"functionDeclarations": [{"name": "write_file"}, {"name": "run_shell_command"}]}]});
        assert_eq!(
            tools_offered(Api::Gemini, &gemini),
            vec!["write_file", "run_shell_command"]
        );
        let responses = json!({"tools": [{"type": "custom", "name": "apply_patch"}]});
        assert_eq!(tools_offered(Api::Responses, &responses), vec!["apply_patch"]);
    }
}
