//! A small typed HTTP client for the task API and the worker protocol, used by the worker
//! runtime, the CLI and the tests. Plain HTTP (no TLS feature): put TLS in front, or enable a
//! reqwest TLS feature in the binary.

use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{FailOutcome, FailRequest, HeartbeatReply, HeartbeatRequest};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{
    Event, LeaseToken, NewEvent, Project, Task, TaskId, TaskResult, TaskSpec, Worker, WorkerId,
};
use agentpool_store::{Enqueued, TaskDetail};
use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    BatchSubmit, BatchSubmitted, BuildRequest, ClaimResponse, ClaimedWork, CompleteBatch,
    CompleteBatchResponse, CompleteItem, CompleteItemResult, CredentialList, CredentialValue, EventPage,
    ProjectList, TaskListQuery, TaskPage, WorkerList,
};
use crate::error::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error body.
    #[error("{status}: {} ({})", .error.message, .error.code)]
    Api { status: StatusCode, error: ErrorDetail },
    #[error("invalid base URL {0:?}")]
    BaseUrl(String),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Http(e) => e.status(),
            Self::BaseUrl(_) => None,
        }
    }

    /// The lease was stale (409 `stale_lease`): stop working on the task.
    pub fn is_stale_lease(&self) -> bool {
        matches!(self, Self::Api { status, error } if *status == StatusCode::CONFLICT && error.code == "stale_lease")
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Client of one agentpool server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Time allowed for an ordinary call; long polls get their wait on top.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// `base` is the server's root URL (`http://127.0.0.1:7070`); `token` a bearer token.
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BaseUrl(base));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http, base, token })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, r: RequestBuilder) -> Result<reqwest::Response> {
        let resp = r.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let error = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| ErrorDetail {
                code: "http_error".into(),
                message: text.chars().take(500).collect(),
                details: serde_json::Value::Null,
            });
        Err(ClientError::Api { status, error })
    }

    async fn json<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        Ok(self.send(r.timeout(CALL_TIMEOUT)).await?.json().await?)
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        m: Method,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.json(self.req(m, path).json(body)).await
    }

    async fn call_empty<B: Serialize + ?Sized>(&self, m: Method, path: &str, body: Option<&B>) -> Result<()> {
        let mut r = self.req(m, path).timeout(CALL_TIMEOUT);
        if let Some(b) = body {
            r = r.json(b);
        }
        self.send(r).await.map(|_| ())
    }

    // ---- ops ----

    pub async fn ready(&self) -> Result<()> {
        self.call_empty::<()>(Method::GET, "/readyz", None).await
    }

    // ---- tasks ----

    pub async fn submit(&self, spec: &TaskSpec) -> Result<Enqueued> {
        self.call(Method::POST, "/v1/tasks", spec).await
    }

    pub async fn submit_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>> {
        let out: BatchSubmitted = self
            .call(Method::POST, "/v1/tasks", &BatchSubmit { tasks: specs })
            .await?;
        Ok(out.tasks)
    }

    pub async fn list_tasks(&self, q: &TaskListQuery) -> Result<TaskPage> {
        self.json(self.req(Method::GET, "/v1/tasks").query(q)).await
    }

    pub async fn get_task(&self, id: TaskId) -> Result<TaskDetail> {
        self.json(self.req(Method::GET, &format!("/v1/tasks/{id}"))).await
    }

    pub async fn cancel(&self, id: TaskId) -> Result<Task> {
        self.json(self.req(Method::POST, &format!("/v1/tasks/{id}/cancel")))
            .await
    }

    pub async fn retry(&self, id: TaskId) -> Result<Task> {
        self.json(self.req(Method::POST, &format!("/v1/tasks/{id}/retry")))
            .await
    }

    pub async fn events(&self, id: TaskId, after: i64, limit: u32) -> Result<EventPage> {
        self.json(
            self.req(Method::GET, &format!("/v1/tasks/{id}/events"))
                .query(&[("after", after.to_string()), ("limit", limit.to_string())]),
        )
        .await
    }

    /// Follow a task's events live from `after` (0: from the start). The stream ends when the
    /// task has finished and its last events arrived. To resume after a disconnect, call again
    /// with the last `seq` seen (sent as `Last-Event-ID`).
    pub async fn stream_events(
        &self,
        id: TaskId,
        after: i64,
    ) -> Result<impl Stream<Item = Result<Event>> + use<>> {
        let r = self
            .req(Method::GET, &format!("/v1/tasks/{id}/events/stream"))
            .header("Last-Event-ID", after.to_string())
            .header("Accept", "text/event-stream");
        let resp = self.send(r).await?;
        Ok(sse_events(resp.bytes_stream()))
    }

    // ---- workers ----

    pub async fn register(&self, reg: &WorkerRegistration) -> Result<Worker> {
        self.call(Method::POST, "/v1/workers/register", reg).await
    }

    pub async fn heartbeat(&self, worker: &WorkerId, req: &HeartbeatRequest) -> Result<HeartbeatReply> {
        self.call(Method::POST, &format!("/v1/workers/{worker}/heartbeat"), req)
            .await
    }

    /// Claim up to `max` tasks, waiting up to `wait` for work (long poll). Empty when nothing
    /// came in time.
    pub async fn claim(&self, worker: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>> {
        let secs = wait.as_secs().min(60);
        let r = self
            .req(Method::POST, &format!("/v1/workers/{worker}/claim"))
            .query(&[("max", max.to_string()), ("wait", secs.to_string())])
            .timeout(CALL_TIMEOUT + Duration::from_secs(secs));
        let resp = self.send(r).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let body: ClaimResponse = resp.json().await?;
        Ok(body.tasks)
    }

    pub async fn append_events(
        &self,
        worker: &WorkerId,
        task: TaskId,
        lease_token: LeaseToken,
        events: Vec<NewEvent>,
    ) -> Result<()> {
        let body = agentpool_core::protocol::AppendEventsRequest { lease_token, events };
        self.call_empty(
            Method::POST,
            &format!("/v1/workers/{worker}/tasks/{task}/events"),
            Some(&body),
        )
        .await
    }

    pub async fn complete(
        &self,
        worker: &WorkerId,
        task: TaskId,
        lease_token: LeaseToken,
        result: TaskResult,
    ) -> Result<()> {
        let body = agentpool_core::protocol::CompleteRequest { lease_token, result };
        self.call_empty(
            Method::POST,
            &format!("/v1/workers/{worker}/complete/{task}"),
            Some(&body),
        )
        .await
    }

    /// Complete several attempts in one call; one result per item, in order.
    pub async fn complete_batch(
        &self,
        worker: &WorkerId,
        items: Vec<CompleteItem>,
    ) -> Result<Vec<CompleteItemResult>> {
        let out: CompleteBatchResponse = self
            .call(
                Method::POST,
                &format!("/v1/workers/{worker}/complete"),
                &CompleteBatch { items },
            )
            .await?;
        Ok(out.results)
    }

    pub async fn fail(&self, worker: &WorkerId, task: TaskId, req: &FailRequest) -> Result<FailOutcome> {
        self.call(Method::POST, &format!("/v1/workers/{worker}/fail/{task}"), req)
            .await
    }

    pub async fn list_workers(&self) -> Result<Vec<Worker>> {
        let l: WorkerList = self.json(self.req(Method::GET, "/v1/workers")).await?;
        Ok(l.workers)
    }

    pub async fn get_worker(&self, id: &WorkerId) -> Result<Worker> {
        self.json(self.req(Method::GET, &format!("/v1/workers/{id}")))
            .await
    }

    pub async fn drain_worker(&self, id: &WorkerId) -> Result<Worker> {
        self.json(self.req(Method::POST, &format!("/v1/workers/{id}/drain")))
            .await
    }

    pub async fn deregister(&self, id: &WorkerId) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &format!("/v1/workers/{id}"), None)
            .await
    }

    // ---- projects, builds, credentials ----

    pub async fn put_project(&self, spec: &ProjectSpec) -> Result<Project> {
        self.call(Method::PUT, &format!("/v1/projects/{}", spec.name), spec)
            .await
    }

    pub async fn get_project(&self, name: &str) -> Result<Project> {
        self.json(self.req(Method::GET, &format!("/v1/projects/{name}")))
            .await
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        let l: ProjectList = self.json(self.req(Method::GET, "/v1/projects")).await?;
        Ok(l.projects)
    }

    pub async fn delete_project(&self, name: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &format!("/v1/projects/{name}"), None)
            .await
    }

    pub async fn submit_build(&self, project: &str, b: &BuildRequest) -> Result<Enqueued> {
        self.call(Method::POST, &format!("/v1/projects/{project}/builds"), b)
            .await
    }

    pub async fn list_builds(&self, project: &str) -> Result<TaskPage> {
        self.json(self.req(Method::GET, &format!("/v1/projects/{project}/builds")))
            .await
    }

    pub async fn put_credential(&self, name: &str, value: &str) -> Result<()> {
        let body = CredentialValue {
            value: value.to_string(),
        };
        self.call_empty(Method::PUT, &format!("/v1/credentials/{name}"), Some(&body))
            .await
    }

    pub async fn list_credentials(&self) -> Result<Vec<String>> {
        let l: CredentialList = self.json(self.req(Method::GET, "/v1/credentials")).await?;
        Ok(l.names)
    }

    pub async fn delete_credential(&self, name: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &format!("/v1/credentials/{name}"), None)
            .await
    }
}

/// Parse a server-sent-events byte stream into task events (the `data` of each message).
pub fn sse_events<S, B, E>(bytes: S) -> impl Stream<Item = Result<Event>>
where
    S: Stream<Item = std::result::Result<B, E>> + Send + 'static,
    B: AsRef<[u8]>,
    E: Into<ClientError>,
{
    struct St<S> {
        inner: std::pin::Pin<Box<S>>,
        buf: Vec<u8>,
        data: String,
    }
    let st = St {
        inner: Box::pin(bytes),
        buf: Vec::new(),
        data: String::new(),
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(pos) = st.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = st.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if st.data.is_empty() {
                        continue;
                    }
                    let data = std::mem::take(&mut st.data);
                    match serde_json::from_str::<Event>(&data) {
                        Ok(ev) => return Some((Ok(ev), st)),
                        // Not an event (a comment or keep-alive): skip it.
                        Err(_) => continue,
                    }
                } else if let Some(d) = line.strip_prefix("data:") {
                    if !st.data.is_empty() {
                        st.data.push('\n');
                    }
                    st.data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
                continue;
            }
            match st.inner.next().await {
                Some(Ok(chunk)) => st.buf.extend_from_slice(chunk.as_ref()),
                Some(Err(e)) => return Some((Err(e.into()), st)),
                None => return None,
            }
        }
    })
}
