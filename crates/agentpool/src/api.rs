//! The CLI's view of the agentpool HTTP API: the server crate's typed client, with its errors
//! turned into what a person (and an exit code) needs — "cannot reach the server at …",
//! the server's own message, the fields a validation refused.

use agentpool_core::project::ProjectSpec;
use agentpool_core::{Event, Project, Task, TaskId, TaskSpec, TaskState, Worker, WorkerId};
use agentpool_server::api::TaskListQuery;
use agentpool_server::client::{self, ClientError};
use futures::{Stream, StreamExt};
use reqwest::StatusCode;

use crate::exit::{Exit, ExitCode};

/// A task with its attempts and, while queued, why it waits (`GET /v1/tasks/{id}`).
pub type TaskView = agentpool_store::TaskDetail;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the agentpool server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{message}")]
    Status { status: StatusCode, message: String },
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
    inner: client::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let inner = client::Client::new(base, token).map_err(|e| match e {
            ClientError::BaseUrl(b) => Exit::new(
                ExitCode::Usage,
                format!("server URL {b:?} must start with http:// or https://"),
            ),
            other => Exit::new(ExitCode::Failed, other.to_string()),
        })?;
        Ok(Self { inner })
    }

    fn err(&self, e: ClientError) -> ApiError {
        match e {
            ClientError::Api { status, error } => {
                let mut message = error.message;
                // Validation failures list each field; keep them on the same line.
                let fields = error
                    .details
                    .get("fields")
                    .and_then(|f| f.as_array())
                    .map(|fields| {
                        fields
                            .iter()
                            .filter_map(|d| {
                                Some(format!(
                                    "{} {}",
                                    d.get("field")?.as_str()?,
                                    d.get("message")?.as_str()?
                                ))
                            })
                            .filter(|f| !message.contains(f.as_str()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                if !fields.is_empty() {
                    message = format!("{message} ({})", fields.join("; "));
                }
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    message = format!("{message} (check --token / AGENTPOOL_TOKEN)");
                }
                ApiError::Status { status, message }
            }
            ClientError::Http(e) if e.is_decode() => ApiError::Decode(e.to_string()),
            ClientError::Http(e) => {
                // reqwest says "error sending request for url (…)"; the innermost cause
                // ("Connection refused") is what a person needs.
                let mut reason = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    reason = s.to_string();
                    src = s.source();
                }
                ApiError::Connect {
                    url: self.inner.base_url().to_string(),
                    reason,
                }
            }
            ClientError::BaseUrl(b) => ApiError::Connect {
                url: b,
                reason: "not an http(s) URL".into(),
            },
        }
    }

    /// Is a server answering there (and not draining)?
    pub async fn health(&self) -> Result<()> {
        self.inner.ready().await.map_err(|e| self.err(e))
    }

    pub async fn submit(&self, spec: &TaskSpec) -> Result<Task> {
        self.inner
            .submit(spec)
            .await
            .map(|e| e.task)
            .map_err(|e| self.err(e))
    }

    pub async fn get_task(&self, id: TaskId) -> Result<TaskView> {
        self.inner.get_task(id).await.map_err(|e| self.err(e))
    }

    pub async fn list_tasks(&self, q: &ListTasks) -> Result<Vec<Task>> {
        let query = TaskListQuery {
            state: q.state.map(|s| s.to_string()),
            project: q.project.clone(),
            label: q.label.as_ref().map(|(k, v)| format!("{k}={v}")),
            worker: q.worker.clone(),
            cursor: None,
            limit: Some(q.limit),
        };
        self.inner
            .list_tasks(&query)
            .await
            .map(|p| p.tasks)
            .map_err(|e| self.err(e))
    }

    pub async fn cancel(&self, id: TaskId) -> Result<Task> {
        self.inner.cancel(id).await.map_err(|e| self.err(e))
    }

    pub async fn retry(&self, id: TaskId) -> Result<Task> {
        self.inner.retry(id).await.map_err(|e| self.err(e))
    }

    /// Events with `seq > after`.
    pub async fn events(&self, id: TaskId, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.inner
            .events(id, after, limit)
            .await
            .map(|p| p.events)
            .map_err(|e| self.err(e))
    }

    /// The live event stream (SSE) from `after`. It ends when the task has finished and its
    /// last events arrived, or when the connection drops; callers check the task's state.
    pub async fn event_stream(
        &self,
        id: TaskId,
        after: i64,
    ) -> Result<impl Stream<Item = Result<Event>> + use<>> {
        let this = self.clone();
        let stream = self
            .inner
            .stream_events(id, after)
            .await
            .map_err(|e| self.err(e))?;
        Ok(stream.map(move |r| r.map_err(|e| this.err(e))))
    }

    pub async fn list_workers(&self) -> Result<Vec<Worker>> {
        self.inner.list_workers().await.map_err(|e| self.err(e))
    }

    pub async fn get_worker(&self, id: &str) -> anyhow::Result<Worker> {
        let id = worker_id(id)?;
        Ok(self.inner.get_worker(&id).await.map_err(|e| self.err(e))?)
    }

    pub async fn drain_worker(&self, id: &str) -> anyhow::Result<Worker> {
        let id = worker_id(id)?;
        Ok(self.inner.drain_worker(&id).await.map_err(|e| self.err(e))?)
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        self.inner.list_projects().await.map_err(|e| self.err(e))
    }

    pub async fn get_project(&self, name: &str) -> Result<Project> {
        self.inner.get_project(name).await.map_err(|e| self.err(e))
    }

    pub async fn put_project(&self, spec: &ProjectSpec) -> Result<Project> {
        self.inner.put_project(spec).await.map_err(|e| self.err(e))
    }

    pub async fn delete_project(&self, name: &str) -> Result<()> {
        self.inner.delete_project(name).await.map_err(|e| self.err(e))
    }

    pub async fn put_credential(&self, name: &str, value: &str) -> Result<()> {
        self.inner
            .put_credential(name, value)
            .await
            .map_err(|e| self.err(e))
    }

    pub async fn list_credentials(&self) -> Result<Vec<String>> {
        self.inner.list_credentials().await.map_err(|e| self.err(e))
    }

    pub async fn delete_credential(&self, name: &str) -> Result<()> {
        self.inner.delete_credential(name).await.map_err(|e| self.err(e))
    }
}

fn worker_id(id: &str) -> anyhow::Result<WorkerId> {
    WorkerId::parse(id).map_err(|e| Exit::new(ExitCode::Usage, e.to_string()).into())
}
