//! The CLI's client of the agentpool HTTP API (SPEC §5): tasks, events (paged and live over
//! SSE), workers and projects, with errors mapped to what a person (and an exit code)
//! needs to know.

use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::{Attempt, Event, Project, Task, TaskId, TaskSpec, TaskState, Worker};
use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::exit::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the agentpool server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{message}")]
    Status {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ApiError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Connect { .. } | Self::Decode(_) => ExitCode::Connection,
            Self::Status { status, .. } => match status.as_u16() {
                400 | 413 | 422 => ExitCode::Usage,
                404 | 409 => ExitCode::Failed,
                _ => ExitCode::Connection,
            },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

pub type Result<T> = std::result::Result<T, ApiError>;

/// A task with its attempts and, while queued, why it waits (`GET /v1/tasks/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: Task,
    #[serde(default)]
    pub attempts_detail: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default)]
pub struct ListTasks {
    pub state: Option<TaskState>,
    pub project: Option<String>,
    pub label: Option<(String, String)>,
    pub worker: Option<String>,
    pub limit: u32,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(crate::exit::Exit::new(
                ExitCode::Usage,
                format!("server URL {base:?} must start with http:// or https://"),
            )
            .into());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self { base, token, http })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| self.connect_error(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(status_error(resp).await)
    }

    fn connect_error(&self, e: &reqwest::Error) -> ApiError {
        // reqwest's Display is "error sending request for url (…)"; the innermost cause
        // ("Connection refused") is what a person needs.
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        ApiError::Connect {
            url: self.base.clone(),
            reason,
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|e| self.connect_error(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// `GET /healthz`: is a server listening there?
    pub async fn health(&self) -> Result<()> {
        self.send(
            self.request(Method::GET, "/healthz")
                .timeout(Duration::from_secs(3)),
        )
        .await
        .map(|_| ())
    }

    pub async fn submit(&self, spec: &TaskSpec) -> Result<Task> {
        let v: serde_json::Value = self
            .json(self.request(Method::POST, "/v1/tasks").json(spec))
            .await?;
        task_from(v)
    }

    pub async fn get_task(&self, id: TaskId) -> Result<TaskView> {
        self.json(self.request(Method::GET, &format!("/v1/tasks/{id}")))
            .await
    }

    pub async fn list_tasks(&self, q: &ListTasks) -> Result<Vec<Task>> {
        let mut params: Vec<(&str, String)> = vec![("limit", q.limit.to_string())];
        if let Some(s) = q.state {
            params.push(("state", s.to_string()));
        }
        if let Some(p) = &q.project {
            params.push(("project", p.clone()));
        }
        if let Some((k, v)) = &q.label {
            params.push(("label", format!("{k}={v}")));
        }
        if let Some(w) = &q.worker {
            params.push(("worker", w.clone()));
        }
        let v: serde_json::Value = self
            .json(self.request(Method::GET, "/v1/tasks").query(&params))
            .await?;
        list_from(v, &["tasks", "items", "data"])
    }

    pub async fn cancel(&self, id: TaskId) -> Result<Task> {
        let v = self
            .json(self.request(Method::POST, &format!("/v1/tasks/{id}/cancel")))
            .await?;
        task_from(v)
    }

    pub async fn retry(&self, id: TaskId) -> Result<Task> {
        let v = self
            .json(self.request(Method::POST, &format!("/v1/tasks/{id}/retry")))
            .await?;
        task_from(v)
    }

    /// Events with `seq > after`.
    pub async fn events(&self, id: TaskId, after: i64, limit: u32) -> Result<Vec<Event>> {
        let v: serde_json::Value = self
            .json(
                self.request(Method::GET, &format!("/v1/tasks/{id}/events"))
                    .query(&[("after", after.to_string()), ("limit", limit.to_string())]),
            )
            .await?;
        list_from(v, &["events", "items", "data"])
    }

    /// The live event stream (SSE), starting after `after`. The stream ends when the server
    /// closes it (the task finished) or the connection drops; callers check the task's state.
    pub async fn event_stream(
        &self,
        id: TaskId,
        after: i64,
    ) -> Result<impl Stream<Item = Result<Event>> + use<>> {
        let resp = self
            .send(
                self.request(Method::GET, &format!("/v1/tasks/{id}/events/stream"))
                    .header("Accept", "text/event-stream")
                    .header("Last-Event-ID", after.to_string()),
            )
            .await?;
        let base = self.base.clone();
        let bytes = resp.bytes_stream().map(move |r| {
            r.map_err(|e| ApiError::Connect {
                url: base.clone(),
                reason: e.to_string(),
            })
        });
        Ok(sse_events(bytes))
    }

    pub async fn list_workers(&self) -> Result<Vec<Worker>> {
        let v: serde_json::Value = self.json(self.request(Method::GET, "/v1/workers")).await?;
        list_from(v, &["workers", "items", "data"])
    }

    pub async fn get_worker(&self, id: &str) -> Result<Worker> {
        self.json(self.request(Method::GET, &format!("/v1/workers/{id}")))
            .await
    }

    pub async fn drain_worker(&self, id: &str) -> Result<Worker> {
        self.json(self.request(Method::POST, &format!("/v1/workers/{id}/drain")))
            .await
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        let v: serde_json::Value = self.json(self.request(Method::GET, "/v1/projects")).await?;
        list_from(v, &["projects", "items", "data"])
    }

    pub async fn get_project(&self, name: &str) -> Result<Project> {
        self.json(self.request(Method::GET, &format!("/v1/projects/{name}")))
            .await
    }

    pub async fn put_project(&self, spec: &ProjectSpec) -> Result<Project> {
        self.json(
            self.request(Method::PUT, &format!("/v1/projects/{}", spec.name))
                .json(spec),
        )
        .await
    }

    pub async fn delete_project(&self, name: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &format!("/v1/projects/{name}")))
            .await
            .map(|_| ())
    }
}

async fn status_error(resp: reqwest::Response) -> ApiError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    // SPEC §5: `{ "error": { "code", "message", "details" } }`.
    let parsed: Option<serde_json::Value> = serde_json::from_str(&body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
        .to_string();
    let mut message = err
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            let b = body.trim();
            if b.is_empty() || b.len() > 300 {
                format!("server answered {status}")
            } else {
                format!("server answered {status}: {b}")
            }
        });
    // Validation errors list each field; show them on the same line.
    if let Some(details) = err.and_then(|e| e.get("details")).and_then(|d| d.as_array()) {
        let fields: Vec<String> = details
            .iter()
            .filter_map(|d| {
                let f = d.get("field")?.as_str()?;
                let m = d.get("message")?.as_str()?;
                Some(format!("{f} {m}"))
            })
            .collect();
        if !fields.is_empty() && !fields.iter().all(|f| message.contains(f.as_str())) {
            message = format!("{message} ({})", fields.join("; "));
        }
    }
    ApiError::Status {
        status,
        code,
        message,
    }
}

/// Accept a task either bare or wrapped (`{"task": …}`), as create and cancel answers may be.
fn task_from(v: serde_json::Value) -> Result<Task> {
    let inner = match v.get("task") {
        Some(t) if t.is_object() => t.clone(),
        _ => v,
    };
    serde_json::from_value(inner).map_err(|e| ApiError::Decode(e.to_string()))
}

/// Accept a list either bare or as a field of a page object.
fn list_from<T: DeserializeOwned>(v: serde_json::Value, keys: &[&str]) -> Result<Vec<T>> {
    let arr = if v.is_array() {
        v
    } else {
        keys.iter()
            .find_map(|k| v.get(*k).filter(|x| x.is_array()).cloned())
            .ok_or_else(|| ApiError::Decode("expected a list".into()))?
    };
    serde_json::from_value(arr).map_err(|e| ApiError::Decode(e.to_string()))
}

/// Parse a `text/event-stream` body into events. Only `data:` payloads that hold an event are
/// yielded; comments (keep-alives) and other event types are skipped.
fn sse_events<S, B>(bytes: S) -> impl Stream<Item = Result<Event>>
where
    S: Stream<Item = Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    futures::stream::unfold(
        (bytes, Vec::<u8>::new(), String::new(), false),
        |(mut bytes, mut buf, mut data, done)| async move {
            if done {
                return None;
            }
            loop {
                // Dispatch complete lines already buffered.
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if line.is_empty() {
                        if data.is_empty() {
                            continue;
                        }
                        let payload = std::mem::take(&mut data);
                        match serde_json::from_str::<Event>(&payload) {
                            Ok(ev) => return Some((Ok(ev), (bytes, buf, data, false))),
                            // Not an event (e.g. an `end` notice): skip it.
                            Err(_) => continue,
                        }
                    } else if let Some(d) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(chunk.as_ref()),
                    Some(Err(e)) => return Some((Err(e), (bytes, buf, data, true))),
                    None => return None,
                }
            }
        },
    )
}
