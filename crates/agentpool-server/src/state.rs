//! Shared server state: the store, settings, auth, the live-event hub, metrics, the drain
//! switch, and small caches that keep the worker hot path to one query per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpool_core::spec::SpecLimits;
use agentpool_core::{Labels, Lease, LeaseToken, Task, TaskId, TaskState, Worker, WorkerId, WorkerStatus};
use agentpool_store::Store;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::ServerConfig;
use crate::auth::Authenticator;
use crate::crypto::Cipher;
use crate::error::{ApiError, ApiResult};
use crate::events::EventHub;
use crate::metrics::Metrics;

/// A task this replica handed out: when, for which agent, and of which project.
pub struct HandedOut {
    pub at: Instant,
    pub agent: String,
    pub project: Option<String>,
}

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub cipher: Option<Cipher>,
    pub hub: EventHub,
    pub metrics: Metrics,
    pub limits: SpecLimits,
    pub lease_ttl: Duration,
    /// Set when the server drains: claims answer 503 and `/readyz` fails.
    pub draining: AtomicBool,
    /// Cancelled when the server drains, to release waiting long-polls at once.
    pub drain_token: CancellationToken,
    /// Bounds the number of long-polls waiting at once (beyond it: 429).
    pub waiting_claims: Arc<Semaphore>,
    pub max_waiting_claims: usize,
    pub workers: Mutex<HashMap<WorkerId, CachedWorker>>,
    /// When and for which agent this replica handed out each running task, for the duration
    /// histogram and per-agent counters at completion, and its project, so that the event
    /// appends of a worker token limited to projects are checked without a lookup.
    pub running: Mutex<HashMap<TaskId, HandedOut>>,
    /// Events each running attempt sent to this replica: task → its lease token, the count,
    /// and when the last came. Forgotten with the attempt's report, or when pruned.
    pub events_sent: Mutex<HashMap<TaskId, (LeaseToken, u64, Instant)>>,
    pub max_events_per_attempt: u64,
    /// Woken when a webhook queued a task, so the GitHub loop comments without waiting a tick.
    pub github_wake: tokio::sync::Notify,
    /// Where users reach this server (links in GitHub status comments).
    pub public_url: Option<String>,
    /// GitHub App installations and the server's own installation tokens.
    pub github_apps: crate::github::app::AppTokens,
    /// Sends notifications' deliveries.
    pub notify_http: reqwest::Client,
    /// The server terminates TLS itself (`serve --tls-cert/--tls-key`): browsers reach it over
    /// https whatever the request's headers say.
    pub tls: bool,
    /// The dashboard's secret without login (its CSRF tokens, its signed notices), derived
    /// from the server key so that open pages' forms outlive a restart; `None` without a key.
    pub dashboard_secret: Option<[u8; 32]>,
}

/// What a claim needs to know about a worker, cached briefly so claiming costs one query.
#[derive(Clone)]
pub(crate) struct CachedWorker {
    pub agents: Vec<String>,
    pub labels: Labels,
    pub projects: Vec<String>,
    pub status: WorkerStatus,
    pub at: Instant,
}

impl CachedWorker {
    /// What the claims of worker `w` need, read now.
    pub(crate) fn of(w: &agentpool_core::Worker) -> Self {
        Self {
            agents: w.agent_names(),
            labels: w.labels.clone(),
            projects: w.projects.clone(),
            status: w.status,
            at: Instant::now(),
        }
    }
}

/// How long a worker's capabilities and status are trusted from the cache. A drain started on
/// another replica reaches claims on this one within this time (the heartbeat tells the worker
/// at once anyway).
const WORKER_CACHE_TTL: Duration = Duration::from_secs(2);

impl AppState {
    /// State for `store` under `config`.
    pub fn new(store: Arc<dyn Store>, config: &ServerConfig) -> Self {
        let cipher = config.server_key.as_ref().map(Cipher::new);
        Self {
            inner: Arc::new(Inner {
                store,
                auth: Authenticator::new(config.auth),
                cipher,
                hub: EventHub::new(),
                metrics: Metrics::new(),
                limits: SpecLimits {
                    allow_local_repos: config.allow_local_repos,
                    max_timeout_secs: config.max_timeout_secs,
                },
                lease_ttl: config.lease_ttl,
                draining: AtomicBool::new(false),
                drain_token: CancellationToken::new(),
                waiting_claims: Arc::new(Semaphore::new(config.max_waiting_claims)),
                max_waiting_claims: config.max_waiting_claims,
                workers: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                events_sent: Mutex::new(HashMap::new()),
                max_events_per_attempt: config.max_events_per_attempt,
                github_wake: tokio::sync::Notify::new(),
                public_url: config.public_url.clone(),
                github_apps: Default::default(),
                notify_http: crate::notifications::http_client(),
                tls: config.tls.is_some(),
                dashboard_secret: config
                    .server_key
                    .as_ref()
                    .map(|k| k.derive("agentpool dashboard secret")),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Task `id`'s page on the dashboard, when the server knows the URL users reach it at.
    pub fn task_url(&self, id: TaskId) -> Option<String> {
        let base = self.inner.public_url.as_deref()?;
        Some(format!("{}/tasks/{id}", base.trim_end_matches('/')))
    }

    /// Stop handing out work: claims get 503, waiting long-polls return, `/readyz` fails.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.drain_token.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Long-poll claims waiting for work on this server right now.
    pub fn waiting_claims(&self) -> usize {
        self.inner
            .max_waiting_claims
            .saturating_sub(self.inner.waiting_claims.available_permits())
    }

    pub(crate) fn wake_github(&self) {
        self.inner.github_wake.notify_one();
    }

    pub(crate) async fn worker(&self, id: &WorkerId) -> ApiResult<CachedWorker> {
        if let Ok(cache) = self.inner.workers.lock()
            && let Some(w) = cache.get(id)
            && w.at.elapsed() < WORKER_CACHE_TTL
        {
            return Ok(w.clone());
        }
        let w = self
            .inner
            .store
            .get_worker(id)
            .await?
            .ok_or_else(|| ApiError::not_found("worker", id))?;
        let cached = CachedWorker::of(&w);
        self.remember_worker(id, cached.clone());
        Ok(cached)
    }

    /// 404 unless `by` reaches worker `id` (see [`crate::auth::Caller::reaches_worker`]); no lookup for a
    /// caller of every project.
    pub(crate) async fn reach_worker(&self, by: &crate::auth::Caller, id: &WorkerId) -> ApiResult<()> {
        if by.projects.is_none() || by.reaches_worker(&self.worker(id).await?.projects) {
            Ok(())
        } else {
            Err(ApiError::not_found("worker", id))
        }
    }

    pub(crate) fn remember_worker(&self, id: &WorkerId, w: CachedWorker) {
        if let Ok(mut cache) = self.inner.workers.lock() {
            cache.insert(id.clone(), w);
        }
    }

    /// Drain worker `id` for `by` (who asks, as the log names them): it takes nothing new, and
    /// its waiting heartbeat is answered with the news.
    pub(crate) async fn drain_worker(&self, id: &WorkerId, by: &str) -> agentpool_store::Result<Worker> {
        let w = self.store().drain_worker(id).await?;
        self.forget_worker(id);
        tracing::info!(worker = %id, by, "worker draining");
        Ok(w)
    }

    pub(crate) fn forget_worker(&self, id: &WorkerId) {
        if let Ok(mut cache) = self.inner.workers.lock() {
            cache.remove(id);
        }
    }

    pub(crate) fn note_claimed(&self, id: TaskId, agent: String, project: Option<String>) {
        if let Ok(mut m) = self.inner.running.lock() {
            m.insert(
                id,
                HandedOut {
                    at: Instant::now(),
                    agent,
                    project,
                },
            );
        }
    }

    /// The project of a task this replica handed out and has not heard the end of (`None`:
    /// not known here).
    pub(crate) fn claimed_project(&self, id: &TaskId) -> Option<Option<String>> {
        let m = self.inner.running.lock().ok()?;
        m.get(id).map(|h| h.project.clone())
    }

    /// Cancel or retry task `id` for `by` (who asks, as the log names them), and wake whoever
    /// follows the task. Returns the task and, for a retry, the dependents queued again with it
    /// (their followers are woken too).
    pub(crate) async fn change_task(
        &self,
        id: TaskId,
        change: TaskChange<'_>,
        by: &str,
    ) -> agentpool_store::Result<(Task, Vec<TaskId>)> {
        let (t, dependents) = agentpool_store::only(self.apply(&[id], change, by).await?)?;
        let what = match (change, t.state) {
            (TaskChange::Cancel { .. }, TaskState::Running) => "cancel requested",
            (TaskChange::Cancel { .. }, _) => "task canceled",
            (TaskChange::Retry, _) => "task retried",
        };
        if let TaskChange::Cancel { reason: Some(reason) } = change {
            tracing::info!(task = %id, by, reason, "{what}");
        } else if dependents.is_empty() {
            tracing::info!(task = %id, by, "{what}");
        } else {
            tracing::info!(task = %id, by, dependents = dependents.len(), "{what}, with the dependents that failed because of it");
        }
        Ok((t, dependents))
    }

    /// [`AppState::change_task`] on each of `ids` in one transaction: per id, in the order
    /// given, the task and the dependents re-queued with it, or why it was passed over (not
    /// found, finished, not failed). Said in the log in one line.
    pub(crate) async fn change_tasks(
        &self,
        ids: &[TaskId],
        change: TaskChange<'_>,
        by: &str,
    ) -> agentpool_store::Result<Vec<agentpool_store::Result<(Task, Vec<TaskId>)>>> {
        let out = self.apply(ids, change, by).await?;
        let done: Vec<&(Task, Vec<TaskId>)> = out.iter().flatten().collect();
        let running = done.iter().filter(|(t, _)| t.state == TaskState::Running).count();
        let dependents: usize = done.iter().map(|(_, d)| d.len()).sum();
        let (n, skipped) = (done.len(), out.len() - done.len());
        match change {
            TaskChange::Cancel { reason } => {
                tracing::info!(by, reason, tasks = n, running, skipped, "tasks canceled")
            }
            TaskChange::Retry => tracing::info!(by, tasks = n, dependents, skipped, "tasks retried"),
        }
        Ok(out)
    }

    /// `change` on each of `ids` in one transaction, and the followers of every task it
    /// changed (the dependents queued again with a retried one too) woken.
    async fn apply(
        &self,
        ids: &[TaskId],
        change: TaskChange<'_>,
        by: &str,
    ) -> agentpool_store::Result<Vec<agentpool_store::Result<(Task, Vec<TaskId>)>>> {
        let out: Vec<_> = match change {
            TaskChange::Cancel { reason } => self
                .store()
                .cancel_many(ids, Some(by), reason)
                .await?
                .into_iter()
                .map(|r| r.map(|t| (t, Vec::new())))
                .collect(),
            TaskChange::Retry => self.store().retry_many(ids).await?,
        };
        for (t, dependents) in out.iter().flatten() {
            for task in std::iter::once(&t.id).chain(dependents) {
                self.inner.hub.notify(*task);
            }
        }
        Ok(out)
    }

    pub(crate) fn take_claimed(&self, id: &TaskId) -> Option<(Instant, String)> {
        if let Ok(mut m) = self.inner.events_sent.lock() {
            m.remove(id);
        }
        let h = self.inner.running.lock().ok()?.remove(id)?;
        Some((h.at, h.agent))
    }

    /// Count `n` more events of `lease`'s attempt: `Err` with the count so far when they would
    /// pass the limit. Counted per replica: a worker whose appends several replicas share gets
    /// at most that many times the limit, still a bound. A stale lease is not counted (the
    /// store refuses it).
    pub(crate) fn take_events(&self, lease: Lease, n: u64) -> Result<(), u64> {
        let max = self.inner.max_events_per_attempt;
        if max == 0 {
            return Ok(());
        }
        let Ok(mut m) = self.inner.events_sent.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let e = m.entry(lease.task_id).or_insert((lease.token, 0, now));
        if lease.token < e.0 {
            return Ok(());
        }
        if lease.token > e.0 {
            *e = (lease.token, 0, now);
        }
        if e.1 + n > max {
            return Err(e.1);
        }
        e.1 += n;
        e.2 = now;
        Ok(())
    }

    /// Give back `n` events counted by [`Self::take_events`] that the store did not record.
    pub(crate) fn untake_events(&self, lease: Lease, n: u64) {
        if let Ok(mut m) = self.inner.events_sent.lock()
            && let Some(e) = m.get_mut(&lease.task_id)
            && e.0 == lease.token
        {
            e.1 = e.1.saturating_sub(n);
        }
    }

    /// Drop bookkeeping for tasks this replica handed out long ago and never heard back about
    /// (their worker died; another replica or the maintenance loop finished them).
    pub(crate) fn prune_claimed(&self, older_than: Duration) {
        if let Ok(mut m) = self.inner.running.lock() {
            m.retain(|_, h| h.at.elapsed() < older_than);
        }
        if let Ok(mut m) = self.inner.events_sent.lock() {
            m.retain(|_, (_, _, last)| last.elapsed() < older_than);
        }
        if let Ok(mut c) = self.inner.workers.lock() {
            c.retain(|_, w| w.at.elapsed() < WORKER_CACHE_TTL);
        }
        self.inner.github_apps.prune();
    }
}

/// What a submitter may ask of a task after submitting it (the API, a task's page, a bulk
/// action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskChange<'a> {
    /// Cancel a queued or running task (a running one through its worker's waiting heartbeat),
    /// saying why when the one who asks did.
    Cancel { reason: Option<&'a str> },
    /// Queue a failed or canceled task again.
    Retry,
}

impl TaskChange<'_> {
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Self::Cancel { .. } => "cancel",
            Self::Retry => "retry",
        }
    }
}
