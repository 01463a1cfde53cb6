//! Playing the script: which step a request gets, the tool call that carries it out for the
//! tools the agent offered, and the HTTP building blocks every API's answers share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{Api, RecordedRequest, Shared, Step, tools_offered, workdir_in};

/// What to do with one request.
pub(crate) enum Play {
    Step(Step),
    Side,
}

impl Shared {
    pub(crate) fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}_{:016x}", self.ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Record the request and decide the answer.
    pub(crate) fn play(&self, api: Api, uri: &Uri, headers: &HeaderMap, body: &Value) -> Play {
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
pub(crate) struct Call {
    pub(crate) name: String,
    pub(crate) args: Value,
    pub(crate) custom_input: Option<String>,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Pick the agent's tool for a step.
pub(crate) fn call_for(shared: &Shared, api: Api, body: &Value, step: &Step) -> Option<Call> {
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
        Step::Tool { name, args } => offered
            .iter()
            .find(|o| *o == name || o.ends_with(&format!("_{name}")))
            .map(|o| Call {
                name: o.clone(),
                args: args.clone(),
                custom_input: None,
            }),
        _ => None,
    }
}

pub(crate) fn parse_body(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// The model the request names, or the API's usual default.
pub(crate) fn model_of(body: &Value, default: &str) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

/// One request to a scripted API: its headers and body (`null` when not JSON), with the shared
/// state it plays against.
pub(crate) struct ApiRequest {
    pub shared: Arc<Shared>,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Value,
}

impl FromRequest<Arc<Shared>> for ApiRequest {
    type Rejection = Response;

    async fn from_request(req: Request, shared: &Arc<Shared>) -> Result<Self, Response> {
        let uri = req.uri().clone();
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            shared: shared.clone(),
            uri,
            headers,
            body: parse_body(&bytes),
        })
    }
}

impl ApiRequest {
    /// Record the request and pick the scripted step; side requests (titles, routing) get a
    /// fixed answer so they never consume the test's script.
    pub(crate) fn step(&self, api: Api, side: &str) -> Step {
        match self.shared.play(api, &self.uri, &self.headers, &self.body) {
            Play::Side => Step::answer(side),
            Play::Step(s) => s,
        }
    }

    /// Record a request that gets a fixed answer and consumes no step (its headers too when
    /// `with_headers`).
    pub(crate) fn record_side(self, api: Api, with_headers: bool) {
        let headers = if with_headers {
            self.headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect()
        } else {
            BTreeMap::new()
        };
        if let Ok(mut r) = self.shared.requests.lock() {
            r.push(RecordedRequest {
                api,
                path: self.uri.to_string(),
                headers,
                body: self.body,
                side: true,
                step: None,
            });
        }
    }
}

pub(crate) fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

pub(crate) fn sse(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The first half of `full`'s JSON, as a response body that ends there (a cut-off answer to a
/// request that does not stream).
pub(crate) fn cut_body(full: &Value) -> Response {
    let text = full.to_string();
    let mut end = text.len() / 2;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        text[..end].to_string(),
    )
        .into_response()
}

/// An event stream that ends early: `body` is what came before the cut, and the connection is
/// closed after it, as when an endpoint or a proxy drops the stream.
pub(crate) fn sse_cut(body: String) -> Response {
    let mut resp = sse(body);
    resp.headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    resp
}

pub(crate) fn hang() -> Response {
    let stream = futures::stream::pending::<Result<Bytes, std::io::Error>>();
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

pub(crate) fn error_response(status: u16, retry_after: Option<u64>, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, axum::Json(body)).into_response();
    if let Some(ra) = retry_after
        && let Ok(v) = ra.to_string().parse()
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

pub(crate) fn error_text(status: u16) -> &'static str {
    match status {
        401 => "Incorrect API key provided (scripted)",
        403 => "Permission denied (scripted)",
        429 => "Rate limit reached for requests (scripted)",
        _ => "Internal server error (scripted)",
    }
}

// ---------------------------------------------------------------- Anthropic Messages
