//! Task endpoints: submit (single and batch), list, get, cancel, retry, events (paged and live).

use super::params::TaskPath;
use agentpool_core::spec::parse_label;
use agentpool_core::{ErrorClass, TaskId, TaskSpec, TaskState, ValidationError, WorkerId};
use agentpool_store::TaskFilter;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use crate::api::{
    BatchSubmit, BatchSubmitted, CancelRequest, EventPage, EventsQuery, Retried, TaskListQuery, TaskPage,
};
use crate::auth::{Authorized, Caller, Submitters};
use crate::error::{ApiError, ApiResult};
use crate::events::task_event_stream;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson, parse_json};
use crate::routes::prepare::{prepare_spec, reach_before_prepare, within_reach};
use crate::state::{AppState, TaskChange};

/// The largest batch accepted in one submit.
const MAX_BATCH: usize = 1000;

/// The body of `POST /v1/tasks`: one TaskSpec, or `{ "tasks": [TaskSpec, …] }` (untagged:
/// the document must show the two shapes the server reads, not an enum wrapper).
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SubmitBody {
    Single(crate::api::TaskSpecSchema),
    Batch(crate::api::BatchSubmit),
}

/// The answer of `POST /v1/tasks`: an Enqueued for one task, `{ "tasks": [Enqueued, …] }` for
/// a batch.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SubmitReply {
    Single(crate::api::EnqueuedSchema),
    Batch(crate::api::BatchSubmitted),
}

#[utoipa::path(
    post, path = "/v1/tasks", tag = "tasks",
    request_body(content = inline(SubmitBody), description = "One TaskSpec, or `{ \"tasks\": [TaskSpec, …] }`"),
    responses((status = 201, description = "Created (single: Enqueued; batch: BatchSubmitted)", body = inline(SubmitReply)),
        (status = 200, description = "An idempotency key matched an earlier task (a batch whose tasks all matched)", body = inline(SubmitReply)),
        (status = 422, description = "A field fails validation, among them an idempotency key starting with a prefix agentpool keeps for the tasks it submits itself (`schedule:`, `PROJECT/github:`)",
            body = crate::error::ErrorBody))
)]
pub async fn submit(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    body: ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    let value = body.0;
    let is_batch = value.as_object().is_some_and(|o| o.contains_key("tasks"));
    if is_batch {
        let bytes = serde_json::to_vec(&value).map_err(|_| ApiError::bad_request("unreadable body"))?;
        let batch: BatchSubmit = parse_json(&bytes)?;
        if batch.tasks.is_empty() || batch.tasks.len() > MAX_BATCH {
            return Err(ApiError::invalid_field(
                "tasks",
                format!("give 1 to {MAX_BATCH} tasks"),
            ));
        }
        refuse_reserved_keys(
            batch
                .tasks
                .iter()
                .enumerate()
                .map(|(i, spec)| (format!("tasks[{i}]."), spec)),
        )?;
        for (i, spec) in batch.tasks.iter().enumerate() {
            reach_before_prepare(&state, &by, spec, &format!("tasks[{i}].")).await?;
        }
        let mut specs = Vec::with_capacity(batch.tasks.len());
        let mut errs = Vec::new();
        for (i, spec) in batch.tasks.into_iter().enumerate() {
            match prepare_spec(&state, spec, &format!("tasks[{i}].")).await {
                Ok(s) => specs.push(s),
                Err(e) => errs.extend(e),
            }
        }
        for spec in &specs {
            within_reach(&state, &by, spec).await?;
        }
        if !errs.is_empty() {
            return Err(ApiError::validation(errs));
        }
        let out = state.store().enqueue_batch(specs).await?;
        // As for one task: 200 when nothing was created, every key having matched.
        let status = if out.iter().any(|e| e.created) {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, Json(BatchSubmitted { tasks: out })).into_response())
    } else {
        let bytes = serde_json::to_vec(&value).map_err(|_| ApiError::bad_request("unreadable body"))?;
        let spec: TaskSpec = parse_json(&bytes)?;
        refuse_reserved_keys([(String::new(), &spec)])?;
        submit_one(&state, &by, spec).await
    }
}

/// 422 when a caller names an idempotency key of the form agentpool gives the tasks it submits
/// itself ([`TaskSpec::reserved_key_problem`]), on each such key's field (under its prefix):
/// the key is the caller's mistake, whatever else the spec says, so it is told before the
/// rest is checked. The scheduler and the webhook route do not come this way.
pub(crate) fn refuse_reserved_keys<'a>(
    specs: impl IntoIterator<Item = (String, &'a TaskSpec)>,
) -> ApiResult<()> {
    let errs: Vec<ValidationError> = specs
        .into_iter()
        .filter_map(|(prefix, spec)| {
            spec.reserved_key_problem()
                .map(|e| ValidationError::new(format!("{prefix}{}", e.field), e.message))
        })
        .collect();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errs))
    }
}

/// Validate, enqueue and announce one task: 201 when created, 200 when its idempotency key
/// matched an earlier task. Shared by `POST /v1/tasks` and project builds.
pub(crate) async fn submit_one(state: &AppState, by: &Caller, spec: TaskSpec) -> ApiResult<Response> {
    reach_before_prepare(state, by, &spec, "").await?;
    let spec = prepare_spec(state, spec, "")
        .await
        .map_err(ApiError::validation)?;
    within_reach(state, by, &spec).await?;
    let out = state.store().enqueue(spec).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)).into_response())
}

#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks", params(TaskListQuery),
    responses((status = 200, body = TaskPage))
)]
pub async fn list(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiQuery(q): ApiQuery<TaskListQuery>,
) -> ApiResult<Json<TaskPage>> {
    list_page(&state, &by, q).await.map(Json)
}

/// One page of the tasks matching `q` that `by` reaches, with the cursor of the next page when
/// there is one: a task more than the page is read to know.
pub(crate) async fn list_page(state: &AppState, by: &Caller, q: TaskListQuery) -> ApiResult<TaskPage> {
    let mut filter = task_filter(q)?;
    by.limit(&mut filter);
    let limit = filter.limit as usize;
    filter.limit += 1;
    let mut tasks = state.store().list_tasks(&filter).await?;
    let more = tasks.len() > limit;
    tasks.truncate(limit);
    let next_cursor = more.then(|| tasks.last().map(|t| t.id)).flatten();
    Ok(TaskPage { tasks, next_cursor })
}

pub(crate) fn task_filter(q: TaskListQuery) -> ApiResult<TaskFilter> {
    let mut errs = Vec::new();
    let state = q.state.as_deref().and_then(|s| match s.parse::<TaskState>() {
        Ok(s) => Some(s),
        Err(_) => {
            errs.push(ValidationError::new(
                "state",
                format!("use {}", TaskState::expected()),
            ));
            None
        }
    });
    let label = q.label.as_deref().and_then(|l| match parse_label(l) {
        Ok(kv) => Some(kv),
        Err(e) => {
            errs.push(ValidationError::new("label", e.message));
            None
        }
    });
    let worker = q.worker.and_then(|w| match WorkerId::parse(w) {
        Ok(w) => Some(w),
        Err(e) => {
            errs.push(ValidationError::new("worker", e.to_string()));
            None
        }
    });
    let agent = q.agent.and_then(|a| {
        if agentpool_core::spec::valid_agent_name(&a) {
            Some(a)
        } else {
            errs.push(ValidationError::new(
                "agent",
                "must be an agent name like claude-code (command: command tasks)",
            ));
            None
        }
    });
    let error_class = q.class.as_deref().and_then(|c| match c.parse::<ErrorClass>() {
        Ok(c) => Some(c),
        Err(_) => {
            errs.push(ValidationError::new(
                "class",
                format!("use one of {}", ErrorClass::ALL.map(|c| c.as_str()).join(", ")),
            ));
            None
        }
    });
    let before = q.cursor.as_deref().and_then(|c| match c.parse::<TaskId>() {
        Ok(id) => Some(id),
        Err(_) => {
            errs.push(ValidationError::new(
                "cursor",
                "is not a cursor returned by this API",
            ));
            None
        }
    });
    let key_prefix = q.schedule.as_deref().and_then(|name| {
        if agentpool_core::profile::valid_name(name) {
            Some(agentpool_core::schedule::key_prefix(name))
        } else {
            errs.push(ValidationError::new("schedule", "is not a schedule name"));
            None
        }
    });
    if let Some(p) = &q.project
        && !agentpool_core::project::valid_name(p)
    {
        errs.push(ValidationError::new("project", "is not a project name"));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        errs.push(ValidationError::new("limit", "must be between 1 and 500"));
    }
    if !errs.is_empty() {
        return Err(ApiError::validation(errs).with_status(StatusCode::BAD_REQUEST));
    }
    Ok(TaskFilter {
        state,
        project: q.project,
        projects: None,
        label,
        worker,
        agent,
        error_class,
        key_prefix,
        before,
        limit,
    })
}

#[utoipa::path(
    get, path = "/v1/tasks/{id}", tag = "tasks",
    params(TaskPath),
    responses((status = 200, body = crate::api::TaskDetailSchema),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn get(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Response> {
    let t = state
        .store()
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", id))?;
    by.sees_task(&t.task)?;
    Ok(Json(t).into_response())
}

/// Cancel a queued task at once, or ask a running one's worker to stop it. The body is
/// optional; its `reason` goes into the task's message and events.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(TaskPath),
    request_body(content = Option<CancelRequest>, description = "Optional: why the task is canceled"),
    responses((status = 200, body = crate::api::TaskSchema), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "The task has already finished", body = crate::error::ErrorBody),
        (status = 422, description = "The reason is not 1-500 characters, or has control characters",
            body = crate::error::ErrorBody))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(id): ApiPath<TaskId>,
    OptionalJson(req): OptionalJson<CancelRequest>,
) -> ApiResult<Response> {
    let req = req.unwrap_or_default();
    let reason = req
        .checked_reason()
        .map_err(|m| ApiError::invalid_field("reason", m))?;
    reach(&state, &by, id).await?;
    let change = TaskChange::Cancel { reason };
    Ok(Json(state.change_task(id, change, &by.to_string()).await?.0).into_response())
}

/// Queue a failed or canceled task again, with as many more attempts as it allows (their
/// numbers count on from the attempts it had), and with it, transitively, the dependents that
/// failed only because it did (`DEPENDENCY_FAILED`). A project token is told of the dependents
/// it reaches only: another project's (an admin wired it so) go back to the queue as well, as
/// they failed with this task, but their ids are not that token's to learn.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/retry", tag = "tasks",
    params(TaskPath),
    responses((status = 200, body = crate::api::RetriedSchema), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "Only failed or canceled tasks can be retried", body = crate::error::ErrorBody))
)]
pub async fn retry(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Response> {
    reach(&state, &by, id).await?;
    let (task, dependents) = state.change_task(id, TaskChange::Retry, &by.to_string()).await?;
    Ok(Json(Retried {
        task,
        requeued_dependents: crate::routes::bulk::reached(&state, &by, &dependents).await?,
    })
    .into_response())
}

#[utoipa::path(
    get, path = "/v1/tasks/{id}/events", tag = "tasks",
    params(TaskPath, EventsQuery),
    responses((status = 200, body = EventPage), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn events(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(id): ApiPath<TaskId>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Json<EventPage>> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if after < 0 {
        return Err(ApiError::invalid_param("after", "must not be negative"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_param("limit", "must be between 1 and 1000"));
    }
    ensure_task(&state, &by, id).await?;
    let events = state.store().list_events(id, after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Json(EventPage { events, next_after }))
}

/// 404 unless the task exists and `by` reaches it.
async fn ensure_task(state: &AppState, by: &Caller, id: TaskId) -> ApiResult<()> {
    match state.store().find_task(id).await? {
        Some(t) => by.sees_task(&t),
        None => Err(ApiError::not_found("task", id)),
    }
}

/// 404 for a task a project token does not reach; nothing to look up for other tokens (a
/// missing task is then told by the change itself).
pub(crate) async fn reach(state: &AppState, by: &Caller, id: TaskId) -> ApiResult<()> {
    if by.projects.is_none() {
        return Ok(());
    }
    ensure_task(state, by, id).await
}

#[utoipa::path(
    get, path = "/v1/tasks/{id}/events/stream", tag = "tasks",
    params(TaskPath,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event seq"),
        ("after" = Option<i64>, Query, description = "Start after this seq (when no Last-Event-ID)")),
    responses((status = 200, description = "Server-sent events: `id` = seq, `event` = kind, `data` = the Event as JSON; ends when the task has finished and its last events were sent", content_type = "text/event-stream", body = String),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn stream(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(id): ApiPath<TaskId>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let from_header = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be an event seq (a non-negative integer)")
                })?,
        ),
        None => None,
    };
    let after = from_header.or(q.after).unwrap_or(0).max(0);
    ensure_task(&state, &by, id).await?;
    let s = task_event_stream(state.store().clone(), &state.inner.hub, id, after);
    Ok(Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
