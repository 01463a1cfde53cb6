//! The worker protocol as the worker loop sees it: one [`WorkerApi`] trait, implemented
//! in-process over a [`Store`] (embedded mode) and over HTTP (docs/architecture.md), so both deployment
//! modes share the same worker code.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentpool_core::protocol::{
    AppendEventsRequest, ClaimedTask, CompleteRequest, FailOutcome, FailRequest, HeartbeatReply,
    HeartbeatRequest,
};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{Labels, Lease, TaskId, Worker, WorkerId, WorkerStatus};
use agentpool_store::{ClaimFilter, Failure, Store, StoreError};
use async_trait::async_trait;
use serde::Deserialize;

use crate::git::Secret;

/// What a call to the queue can end in.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The lease is no longer ours (HTTP 409): stop working on the task, report nothing more.
    #[error("lease is stale: the task is no longer held by this worker")]
    StaleLease,
    #[error("not found: {0}")]
    NotFound(String),
    /// The server could not be reached or is temporarily unable to answer: try again later.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The server refused the request for good (auth, validation).
    #[error("request refused: {0}")]
    Rejected(String),
}

impl ApiError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A claimed task with the credentials the server hands to the worker for it (by name).
#[derive(Debug, Clone)]
pub struct ClaimedWork {
    pub claimed: ClaimedTask,
    pub credentials: BTreeMap<String, Secret>,
}

/// The worker protocol.
#[async_trait]
pub trait WorkerApi: Send + Sync + 'static {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError>;
    async fn heartbeat(&self, worker: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError>;
    /// Claim up to `max` tasks, waiting up to `wait` for one to come (long poll).
    async fn claim(&self, worker: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError>;
    async fn append_events(
        &self,
        worker: &WorkerId,
        task: TaskId,
        req: AppendEventsRequest,
    ) -> Result<(), ApiError>;
    async fn complete(&self, worker: &WorkerId, task: TaskId, req: CompleteRequest) -> Result<(), ApiError>;
    async fn fail(&self, worker: &WorkerId, task: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError>;
    async fn deregister(&self, worker: &WorkerId) -> Result<(), ApiError>;
}

// ---------------------------------------------------------------------------------------------
// In-process, over a store.

/// Embedded mode: the worker protocol straight over a [`Store`].
pub struct StoreWorkerApi {
    store: Arc<dyn Store>,
    lease_ttl: Duration,
    /// What each registered worker can run, for its claims (the store's claim takes a filter).
    workers: Mutex<HashMap<WorkerId, (Vec<String>, Labels)>>,
}

impl StoreWorkerApi {
    pub fn new(store: Arc<dyn Store>, lease_ttl: Duration) -> Self {
        Self {
            store,
            lease_ttl,
            workers: Mutex::new(HashMap::new()),
        }
    }

    fn filter(&self, worker: &WorkerId, max: u32) -> Result<ClaimFilter, ApiError> {
        let map = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let (agents, labels) = map
            .get(worker)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("worker {worker} is not registered here")))?;
        Ok(ClaimFilter {
            worker_id: worker.clone(),
            agents,
            labels,
            max,
            lease_ttl: self.lease_ttl,
        })
    }
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::StaleLease(_) => ApiError::StaleLease,
        StoreError::NotFound { what, id } => ApiError::NotFound(format!("{what} {id}")),
        StoreError::Database(e) => ApiError::Unavailable(e.to_string()),
        other => ApiError::Rejected(other.to_string()),
    }
}

#[async_trait]
impl WorkerApi for StoreWorkerApi {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError> {
        let agents = reg.agents.iter().map(|a| a.name.clone()).collect();
        let labels = reg.labels.clone();
        let w = self.store.register_worker(reg).await.map_err(store_err)?;
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w.id.clone(), (agents, labels));
        Ok(w)
    }

    async fn heartbeat(&self, worker: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError> {
        if req.status == Some(WorkerStatus::Draining) {
            self.store.drain_worker(worker).await.map_err(store_err)?;
        }
        self.store
            .heartbeat(worker, &req.leases, self.lease_ttl)
            .await
            .map_err(store_err)
    }

    async fn claim(&self, worker: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        let filter = self.filter(worker, max)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = self.store.claim(&filter).await.map_err(store_err)?;
            if !got.is_empty() {
                return Ok(got
                    .into_iter()
                    .map(|claimed| ClaimedWork {
                        claimed,
                        credentials: BTreeMap::new(),
                    })
                    .collect());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            self.store.wait_for_work(deadline - now).await;
        }
    }

    async fn append_events(
        &self,
        _worker: &WorkerId,
        task: TaskId,
        req: AppendEventsRequest,
    ) -> Result<(), ApiError> {
        let lease = Lease {
            task_id: task,
            token: req.lease_token,
        };
        self.store
            .append_events(task, Some(lease), req.events)
            .await
            .map_err(store_err)
    }

    async fn complete(&self, worker: &WorkerId, task: TaskId, req: CompleteRequest) -> Result<(), ApiError> {
        let lease = Lease {
            task_id: task,
            token: req.lease_token,
        };
        self.store
            .complete(worker, lease, req.result)
            .await
            .map_err(store_err)
    }

    async fn fail(&self, worker: &WorkerId, task: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError> {
        let lease = Lease {
            task_id: task,
            token: req.lease_token,
        };
        let failure = Failure {
            class: req.class,
            message: req.message,
            retry_after: req.retry_after_secs.map(Duration::from_secs),
            result: req.result,
        };
        self.store.fail(worker, lease, failure).await.map_err(store_err)
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<(), ApiError> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(worker);
        self.store.deregister_worker(worker).await.map_err(store_err)
    }
}

// ---------------------------------------------------------------------------------------------
// Over HTTP.

/// The worker protocol over HTTP (docs/architecture.md) with a bearer token.
///
/// A small client of its own rather than the server crate's, so that a worker-only build does
/// not pull in the server (axum, OpenAPI, metrics); the wire types are core's.
#[derive(Clone)]
pub struct HttpWorkerApi {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

impl std::fmt::Debug for HttpWorkerApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpWorkerApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct ClaimedWire {
    #[serde(flatten)]
    claimed: ClaimedTask,
    #[serde(default)]
    credentials: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ClaimReply {
    Wrapped { tasks: Vec<ClaimedWire> },
    List(Vec<ClaimedWire>),
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl HttpWorkerApi {
    /// `base` is the server's root URL (`http://host:7070`).
    pub fn new(base: &str, token: Option<Secret>) -> Result<Self, ApiError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ApiError::Rejected(format!(
                "server URL must be http(s)://…, got {base:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::Rejected(e.to_string()))?;
        Ok(Self { http, base, token })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t.expose());
        }
        r.timeout(CALL_TIMEOUT)
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        // Transport errors never carry the bearer token (it is a header, not in the URL).
        let resp = r.send().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (String::new(), text.chars().take(300).collect()),
        };
        let msg = format!("{status}: {message}");
        Err(match status.as_u16() {
            409 if code.is_empty() || code == "stale_lease" => ApiError::StaleLease,
            404 => ApiError::NotFound(msg),
            408 | 429 | 500..=599 => ApiError::Unavailable(msg),
            _ => ApiError::Rejected(msg),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, r: reqwest::RequestBuilder) -> Result<T, ApiError> {
        self.send(r)
            .await?
            .json()
            .await
            .map_err(|e| ApiError::Unavailable(format!("bad response: {e}")))
    }
}

#[async_trait]
impl WorkerApi for HttpWorkerApi {
    async fn register(&self, reg: WorkerRegistration) -> Result<Worker, ApiError> {
        self.json(self.req(reqwest::Method::POST, "/v1/workers/register").json(&reg))
            .await
    }

    async fn heartbeat(&self, worker: &WorkerId, req: HeartbeatRequest) -> Result<HeartbeatReply, ApiError> {
        self.json(
            self.req(reqwest::Method::POST, &format!("/v1/workers/{worker}/heartbeat"))
                .json(&req),
        )
        .await
    }

    async fn claim(&self, worker: &WorkerId, max: u32, wait: Duration) -> Result<Vec<ClaimedWork>, ApiError> {
        let secs = wait.as_secs().min(60);
        let r = self
            .req(reqwest::Method::POST, &format!("/v1/workers/{worker}/claim"))
            .query(&[("max", max.to_string()), ("wait", secs.to_string())])
            .timeout(CALL_TIMEOUT + Duration::from_secs(secs));
        let resp = self.send(r).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let reply: ClaimReply = resp
            .json()
            .await
            .map_err(|e| ApiError::Unavailable(format!("bad claim response: {e}")))?;
        let list = match reply {
            ClaimReply::Wrapped { tasks } => tasks,
            ClaimReply::List(l) => l,
        };
        Ok(list
            .into_iter()
            .map(|w| ClaimedWork {
                claimed: w.claimed,
                credentials: w
                    .credentials
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(v)))
                    .collect(),
            })
            .collect())
    }

    async fn append_events(
        &self,
        worker: &WorkerId,
        task: TaskId,
        req: AppendEventsRequest,
    ) -> Result<(), ApiError> {
        self.send(
            self.req(
                reqwest::Method::POST,
                &format!("/v1/workers/{worker}/tasks/{task}/events"),
            )
            .json(&req),
        )
        .await
        .map(|_| ())
    }

    async fn complete(&self, worker: &WorkerId, task: TaskId, req: CompleteRequest) -> Result<(), ApiError> {
        self.send(
            self.req(
                reqwest::Method::POST,
                &format!("/v1/workers/{worker}/complete/{task}"),
            )
            .json(&req),
        )
        .await
        .map(|_| ())
    }

    async fn fail(&self, worker: &WorkerId, task: TaskId, req: FailRequest) -> Result<FailOutcome, ApiError> {
        self.json(
            self.req(
                reqwest::Method::POST,
                &format!("/v1/workers/{worker}/fail/{task}"),
            )
            .json(&req),
        )
        .await
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<(), ApiError> {
        self.send(self.req(reqwest::Method::DELETE, &format!("/v1/workers/{worker}")))
            .await
            .map(|_| ())
    }
}
