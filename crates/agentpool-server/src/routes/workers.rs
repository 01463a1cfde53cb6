//! The worker protocol: register, heartbeat, long-poll claim, events, complete, fail, list,
//! get, drain, deregister. Every call about a task presents its lease; a stale one is a 409.

use super::params::{WorkerPath, WorkerTaskPath};
use std::time::Duration;

use agentpool_core::protocol::{
    AppendEventsRequest, ClaimRequest, ClaimedTask, CompleteRequest, FailRequest, HeartbeatQuery,
    HeartbeatReply, HeartbeatRequest, MAX_STATUS_MESSAGE,
};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{Lease, TaskId, ValidationError, WorkerId, WorkerStatus};
use agentpool_store::{ClaimFilter, Failure, Wake};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{
    ClaimQuery, ClaimResponse, ClaimedWork, CompleteBatch, CompleteBatchResponse, CompleteItemResult,
    WorkerList,
};
use crate::auth::{Authorized, Readers, Workers};
use crate::error::{ApiError, ApiResult, ErrorDetail};
use crate::extract::{ApiJson, ApiPath, OptionalJson};
use crate::state::{AppState, CachedWorker};

use super::handout;
use super::registration::validate_registration;

/// Upper bound of a long poll (docs/architecture.md).
const MAX_WAIT_SECS: u32 = 60;
const MAX_CLAIM: u32 = 1000;
const MAX_EVENTS_PER_CALL: usize = 1000;

#[utoipa::path(
    post, path = "/v1/workers/register", tag = "workers",
    request_body = crate::api::WorkerRegistrationSchema,
    responses((status = 201, body = crate::api::WorkerSchema))
)]
pub async fn register(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiJson(mut reg): ApiJson<WorkerRegistration>,
) -> ApiResult<Response> {
    validate_registration(&reg)?;
    if let Some(ps) = &by.projects {
        // A worker of a project token takes only its projects' tasks: the ones it names, or
        // all of the token's.
        if reg.projects.is_empty() {
            reg.projects = ps.to_vec();
        }
        for p in &reg.projects {
            by.may_use(Some(p))?;
        }
        // Nor may it take over a worker that takes other tasks (its leases, its drain).
        if let Some(id) = &reg.id
            && let Some(w) = state.store().get_worker(id).await?
            && !by.reaches_worker(&w.projects)
        {
            return Err(ApiError::conflict(
                "worker_taken",
                format!(
                    "worker {id} is registered for tasks token {} may not take; register under another id",
                    by.name
                ),
            ));
        }
    }
    let w = state.store().register_worker(reg).await?;
    state.remember_worker(&w.id, CachedWorker::of(&w));
    Ok((StatusCode::CREATED, Json(w)).into_response())
}

#[utoipa::path(
    post, path = "/v1/workers/{id}/heartbeat", tag = "workers",
    params(WorkerPath, HeartbeatQuery),
    request_body = crate::api::HeartbeatRequestSchema,
    responses((status = 200, body = crate::api::HeartbeatReplySchema),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiPath(id): ApiPath<WorkerId>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<HeartbeatQuery>,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> ApiResult<Response> {
    state.reach_worker(&by, &id).await?;
    if req.leases.len() > 10_000 {
        return Err(ApiError::invalid_field("leases", "at most 10000 leases"));
    }
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::invalid_field(
            "wait",
            format!("must be at most {MAX_WAIT_SECS} seconds"),
        ));
    }
    // Taken before the beat reads the worker's state, so a cancel committed in between rings it.
    let mut bell = (wait > 0).then(|| state.store().worker_bell());
    if req
        .status_message
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_STATUS_MESSAGE)
    {
        return Err(ApiError::invalid_field(
            "status_message",
            format!("at most {MAX_STATUS_MESSAGE} characters"),
        ));
    }
    if req.status == Some(WorkerStatus::Unhealthy) {
        // Sticky until the worker registers again: heartbeats keep it unhealthy.
        let message = req.status_message.as_deref().filter(|m| !m.trim().is_empty());
        state.store().mark_worker_unhealthy(&id, message).await?;
    } else if let Some(m) = req.status_message.as_deref().filter(|m| !m.trim().is_empty()) {
        // Which agent the worker no longer runs (its key was refused): shown with the worker.
        state.store().note_worker(&id, m).await?;
    }
    // A draining *server* does not ask workers to drain: they may claim from other replicas.
    let mut reply = state
        .store()
        .heartbeat(&id, &req.leases, state.inner.lease_ttl)
        .await?;
    // Sent only when the cache changed, so this write is rare.
    if let Some(cache) = &req.cache {
        state.store().report_worker_cache(&id, cache).await?;
    }
    let Some(bell) = bell.as_mut().filter(|_| reply == HeartbeatReply::default()) else {
        return Ok(Json(reply).into_response());
    };
    // Nothing to tell yet: wait for a cancel of one of these tasks or a drain of this worker,
    // so it hears at once rather than at its next beat. A draining server answers now, so
    // that it is not held up by a worker's wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(wait));
    let _counted = state.inner.metrics.waiting_beat();
    while reply == HeartbeatReply::default() && !state.is_draining() {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let rung = tokio::select! {
            rung = bell.wait_for(&id, remaining) => rung,
            _ = state.inner.drain_token.cancelled() => false,
        };
        if !rung {
            break;
        }
        // Rung for this worker (perhaps for a task claimed after this beat was sent, which
        // the next beat covers): read its state again.
        reply = state
            .store()
            .heartbeat(&id, &req.leases, state.inner.lease_ttl)
            .await?;
    }
    Ok(Json(reply).into_response())
}

#[utoipa::path(
    post, path = "/v1/workers/{id}/claim", tag = "workers",
    params(WorkerPath, ClaimQuery),
    request_body(content = Option<crate::api::ClaimRequestSchema>, description = "Optional; query parameters work too"),
    responses((status = 200, body = ClaimResponse),
        (status = 204, description = "Nothing came within `wait`"),
        (status = 404, body = crate::error::ErrorBody),
        (status = 429, description = "Too many long polls waiting on this server", body = crate::error::ErrorBody),
        (status = 503, description = "The server is draining", body = crate::error::ErrorBody))
)]
pub async fn claim(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiPath(id): ApiPath<WorkerId>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<ClaimQuery>,
    OptionalJson(body_req): OptionalJson<ClaimRequest>,
) -> ApiResult<Response> {
    let max = q.max.or(body_req.as_ref().map(|r| r.max)).unwrap_or(1);
    let wait = q.wait.or(body_req.as_ref().map(|r| r.wait_secs)).unwrap_or(0);
    let mut errs = Vec::new();
    if !(1..=MAX_CLAIM).contains(&max) {
        errs.push(ValidationError::new(
            "max",
            format!("must be between 1 and {MAX_CLAIM}"),
        ));
    }
    if wait > MAX_WAIT_SECS {
        errs.push(ValidationError::new(
            "wait",
            format!("must be at most {MAX_WAIT_SECS} seconds"),
        ));
    }
    if !errs.is_empty() {
        return Err(ApiError::validation(errs));
    }
    if state.is_draining() {
        return Err(ApiError::unavailable(
            "draining",
            "this server is draining; claim from another",
        ));
    }
    let worker = state.worker(&id).await?;
    if !by.reaches_worker(&worker.projects) {
        return Err(ApiError::not_found("worker", &id));
    }
    if matches!(worker.status, WorkerStatus::Draining | WorkerStatus::Unhealthy) {
        // A draining worker finishes what it has and takes nothing new; an unhealthy one
        // would only hand tasks back.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let filter = ClaimFilter {
        worker_id: id,
        agents: worker.agents,
        labels: worker.labels,
        projects: worker.projects,
        max,
        lease_ttl: state.inner.lease_ttl,
    };
    let _permit = if wait > 0 {
        match state.inner.waiting_claims.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_waiting",
                    "too many long polls are waiting on this server; retry shortly",
                );
                e.retry_after = Some(1);
                return Err(e);
            }
        }
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(wait));
    // Wait as one of the claimers that a new task can wake (one per task and kind of worker,
    // not all of them), registered *before* the claim so that work arriving between an empty
    // claim and the wait is not missed. Dropping it on any return passes on a wake-up it was
    // handed and did not use.
    let mut waiter = (wait > 0).then(|| state.store().claim_waiter(&filter));
    // A drain of this worker ends its wait at once: a worker that stops claiming awaits the
    // answer of the claim it has under way (which may hand it a task), rather than drop it.
    let mut bell = (wait > 0).then(|| state.store().worker_bell());
    loop {
        let claimed = state.store().claim(&filter).await?;
        if !claimed.is_empty() {
            if let Some(w) = waiter {
                w.finish(claimed.len() >= max as usize);
            }
            return Ok(Json(claim_response(&state, claimed, &filter).await).into_response());
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (Some(w), Some(bell)) = (waiter.as_mut(), bell.as_mut()) else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        if remaining.is_zero() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            // Outlasts the waiter's own timeout, which decides when the wait is over.
            rung = bell.wait_for(&filter.worker_id, remaining + Duration::from_secs(60)) => {
                // From the store, not this replica's cache of workers: the drain just changed it.
                let status = state.store().get_worker(&filter.worker_id).await?.map(|w| w.status);
                if rung && !matches!(status, Some(WorkerStatus::Idle | WorkerStatus::Busy)) {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
                // Rung for something else (a cancel of a task it runs): claim again, wait on.
            }
            wake = w.wait(remaining) => match wake {
                Wake::Claim => {}
                // A task submitted while this poll waited, handed over already claimed for
                // this worker: one commit instead of the submit's and this claim's.
                Wake::Handed(claimed) => {
                    state.inner.metrics.handed_over(claimed.len());
                    return Ok(Json(claim_response(&state, claimed, &filter).await).into_response());
                }
                Wake::TimedOut => return Ok(StatusCode::NO_CONTENT.into_response()),
            },
            _ = state.inner.drain_token.cancelled() => {
                return Err(ApiError::unavailable("draining", "this server is draining; claim from another"));
            }
        }
    }
}

async fn claim_response(state: &AppState, claimed: Vec<ClaimedTask>, by: &ClaimFilter) -> ClaimResponse {
    let now = chrono::Utc::now();
    let mut tasks = Vec::with_capacity(claimed.len());
    for c in claimed {
        let agent = c.task.spec.required_agent().unwrap_or("default").to_string();
        let ready_at = c.task.run_after.max(c.task.created_at);
        let latency = (now - ready_at).to_std().unwrap_or_default();
        state.inner.metrics.claimed(&agent, latency);
        state.note_claimed(c.task.id, agent, c.task.spec.project.clone());
        state.inner.hub.notify(c.task.id);
        let (credentials, revoke_git_token_at) = handout::credentials_for(state, &c, by).await;
        tasks.push(ClaimedWork {
            claimed: c,
            credentials,
            revoke_git_token_at,
        });
    }
    ClaimResponse { tasks }
}

#[utoipa::path(
    post, path = "/v1/workers/{id}/tasks/{task}/events", tag = "workers",
    params(WorkerTaskPath),
    request_body = crate::api::AppendEventsRequestSchema,
    responses((status = 204, description = "Appended"), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "Stale lease", body = crate::error::ErrorBody),
        (status = 413, description = "The attempt sent the most events this server records for one (event_limit)", body = crate::error::ErrorBody))
)]
pub async fn append_events(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiPath((worker, task)): ApiPath<(WorkerId, TaskId)>,
    ApiJson(req): ApiJson<AppendEventsRequest>,
) -> ApiResult<StatusCode> {
    state.reach_worker(&by, &worker).await?;
    if by.projects.is_some() {
        // The append is fenced by the lease alone, not by the worker: a project token's is
        // also kept to its projects' tasks. The task's project is known here when this replica
        // handed it out; otherwise it is looked up.
        let project = match state.claimed_project(&task) {
            Some(p) => p,
            None => match state.store().find_task(task).await? {
                Some(t) => t.spec.project,
                None => return Err(ApiError::not_found("task", task)),
            },
        };
        if !by.reaches(project.as_deref()) {
            return Err(ApiError::not_found("task", task));
        }
    }
    if req.events.len() > MAX_EVENTS_PER_CALL {
        return Err(ApiError::invalid_field(
            "events",
            format!("at most {MAX_EVENTS_PER_CALL} events per call"),
        ));
    }
    let lease = Lease {
        task_id: task,
        token: req.lease_token,
    };
    let n = req.events.len() as u64;
    if let Err(sent) = state.take_events(lease, n) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_limit",
            format!(
                "this attempt of task {task} already sent {sent} events, the most this server records \
                 for one attempt (serve --max-events-per-attempt {}); these {n} were not recorded",
                state.inner.max_events_per_attempt
            ),
        ));
    }
    if let Err(e) = state.store().append_events(task, Some(lease), req.events).await {
        state.untake_events(lease, n);
        return Err(e.into());
    }
    state.inner.hub.notify(task);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/workers/{id}/complete/{task}", tag = "workers",
    params(WorkerTaskPath),
    request_body = crate::api::CompleteRequestSchema,
    responses((status = 204, description = "Completed"), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "Stale lease", body = crate::error::ErrorBody))
)]
pub async fn complete(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiPath((worker, task)): ApiPath<(WorkerId, TaskId)>,
    ApiJson(req): ApiJson<CompleteRequest>,
) -> ApiResult<StatusCode> {
    state.reach_worker(&by, &worker).await?;
    ApiError::unless_any(req.result.validate("result"))?;
    let lease = Lease {
        task_id: task,
        token: req.lease_token,
    };
    state.store().complete(&worker, lease, req.result.clone()).await?;
    finished_ok(&state, task, &req.result);
    Ok(StatusCode::NO_CONTENT)
}

fn finished_ok(state: &AppState, task: TaskId, result: &agentpool_core::TaskResult) {
    attempt_over(state, task, |m, agent, took| m.completed(agent, took, result));
}

/// The attempt on `task` is over (completed, or failed for good or to be retried): `record` it
/// in the metrics with its agent and how long it ran since its claim (when this replica saw
/// the claim), wake whoever follows the task, and revoke its GitHub tokens (a retry's claim
/// mints its own).
fn attempt_over(
    state: &AppState,
    task: TaskId,
    record: impl FnOnce(&crate::metrics::Metrics, &str, Option<Duration>),
) {
    let (took, agent) = match state.take_claimed(&task) {
        Some((at, agent)) => (Some(at.elapsed()), agent),
        None => (None, "unknown".to_string()),
    };
    record(&state.inner.metrics, &agent, took);
    state.inner.hub.notify(task);
    crate::github::app::revoke_task_tokens(state, task);
}

#[utoipa::path(
    post, path = "/v1/workers/{id}/complete", tag = "workers",
    params(WorkerPath),
    request_body = CompleteBatch,
    responses((status = 200, description = "One result per item, in order", body = CompleteBatchResponse))
)]
pub async fn complete_batch(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiPath(worker): ApiPath<WorkerId>,
    ApiJson(req): ApiJson<CompleteBatch>,
) -> ApiResult<Json<CompleteBatchResponse>> {
    state.reach_worker(&by, &worker).await?;
    if req.items.is_empty() || req.items.len() > MAX_CLAIM as usize {
        return Err(ApiError::invalid_field(
            "items",
            format!("give 1 to {MAX_CLAIM} items"),
        ));
    }
    ApiError::unless_any(
        req.items
            .iter()
            .enumerate()
            .flat_map(|(n, i)| i.result.validate(&format!("items[{n}].result")))
            .collect(),
    )?;
    let ids: Vec<TaskId> = req.items.iter().map(|i| i.task_id).collect();
    let results: Vec<agentpool_core::TaskResult> = req.items.iter().map(|i| i.result.clone()).collect();
    let items = req
        .items
        .into_iter()
        .map(|i| {
            (
                Lease {
                    task_id: i.task_id,
                    token: i.lease_token,
                },
                i.result,
            )
        })
        .collect();
    let outcomes = state.store().complete_batch(&worker, items).await?;
    let mut out = Vec::with_capacity(outcomes.len());
    for ((id, result), r) in ids.into_iter().zip(results.iter()).zip(outcomes) {
        match r {
            Ok(()) => {
                finished_ok(&state, id, result);
                out.push(CompleteItemResult {
                    task_id: id,
                    ok: true,
                    error: None,
                });
            }
            Err(e) => {
                let e = ApiError::from(e);
                out.push(CompleteItemResult {
                    task_id: id,
                    ok: false,
                    error: Some(ErrorDetail {
                        code: e.code.to_string(),
                        message: e.message,
                        details: e.details,
                    }),
                });
            }
        }
    }
    Ok(Json(CompleteBatchResponse { results: out }))
}

#[utoipa::path(
    post, path = "/v1/workers/{id}/fail/{task}", tag = "workers",
    params(WorkerTaskPath),
    request_body = crate::api::FailRequestSchema,
    responses((status = 200, body = crate::api::FailOutcomeSchema),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "Stale lease", body = crate::error::ErrorBody))
)]
pub async fn fail(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiPath((worker, task)): ApiPath<(WorkerId, TaskId)>,
    ApiJson(req): ApiJson<FailRequest>,
) -> ApiResult<Response> {
    state.reach_worker(&by, &worker).await?;
    if req.message.len() > 64 * 1024 {
        return Err(ApiError::invalid_field("message", "at most 64 KiB"));
    }
    if let Some(r) = &req.result {
        ApiError::unless_any(r.validate("result"))?;
    }
    let lease = Lease {
        task_id: task,
        token: req.lease_token,
    };
    let failure = Failure {
        class: req.class,
        message: req.message,
        retry_after: req.retry_after_secs.map(Duration::from_secs),
        result: req.result.clone(),
    };
    let outcome = state.store().fail(&worker, lease, failure).await?;
    attempt_over(&state, task, |m, agent, took| {
        m.failed(agent, req.class, took, req.result.as_ref())
    });
    Ok(Json(outcome).into_response())
}

#[utoipa::path(
    get, path = "/v1/workers", tag = "workers",
    responses((status = 200, body = WorkerList))
)]
pub async fn list(State(state): State<AppState>, _auth: Authorized<Readers>) -> ApiResult<Json<WorkerList>> {
    Ok(Json(WorkerList {
        workers: state.store().list_workers().await?,
    }))
}

#[utoipa::path(
    get, path = "/v1/workers/{id}", tag = "workers",
    params(WorkerPath),
    responses((status = 200, body = crate::api::WorkerSchema), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn get(
    State(state): State<AppState>,
    _auth: Authorized<Readers>,
    ApiPath(id): ApiPath<WorkerId>,
) -> ApiResult<Response> {
    let w = state
        .store()
        .get_worker(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("worker", &id))?;
    Ok(Json(w).into_response())
}

#[utoipa::path(
    post, path = "/v1/workers/{id}/drain", tag = "workers",
    params(WorkerPath),
    responses((status = 200, body = crate::api::WorkerSchema), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn drain(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiPath(id): ApiPath<WorkerId>,
) -> ApiResult<Response> {
    state.reach_worker(&by, &id).await?;
    Ok(Json(state.drain_worker(&id, &by.to_string()).await?).into_response())
}

#[utoipa::path(
    delete, path = "/v1/workers/{id}", tag = "workers",
    params(WorkerPath),
    responses((status = 204, description = "Deregistered"), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn deregister(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Workers>,
    ApiPath(id): ApiPath<WorkerId>,
) -> ApiResult<StatusCode> {
    state.reach_worker(&by, &id).await?;
    state.store().deregister_worker(&id).await?;
    state.forget_worker(&id);
    Ok(StatusCode::NO_CONTENT)
}
