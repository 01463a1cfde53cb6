//! Schedules (CRUD) and a run asked for by hand; the maintenance loop runs them when due
//! ([`crate::schedules`]).

use agentpool_core::schedule::{Schedule, ScheduleList, ScheduleSpec};
use agentpool_core::{TaskSpec, ValidationError};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::params::{SchedulePath, name_and_spec_problems};
use crate::auth::{Authorized, Caller, Submitters};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::routes::prepare::{prepare_spec, reach_before_prepare, within_reach};
use crate::schedules::{found, run_now, set_paused};
use crate::state::AppState;

#[utoipa::path(
    get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList))
)]
pub async fn list(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
) -> ApiResult<Json<ScheduleList>> {
    let mut schedules = state.store().list_schedules().await?;
    schedules.retain(|s| by.reaches(s.spec.task.project.as_deref()));
    Ok(Json(ScheduleList { schedules }))
}

/// Schedule `name`, or a 404 (also when its project is not one `by` reaches).
pub(crate) async fn reached(state: &AppState, by: &Caller, name: &str) -> ApiResult<Schedule> {
    let s = found(state, name).await?;
    if by.reaches(s.spec.task.project.as_deref()) {
        Ok(s)
    } else {
        Err(ApiError::not_found("schedule", name))
    }
}

#[utoipa::path(
    get, path = "/v1/schedules/{name}", tag = "schedules",
    params(SchedulePath),
    responses((status = 200, body = Schedule), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn get(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Schedule>> {
    Ok(Json(reached(&state, &by, &name).await?))
}

#[utoipa::path(
    put, path = "/v1/schedules/{name}", tag = "schedules",
    params(SchedulePath),
    request_body = ScheduleSpec,
    responses((status = 200, body = Schedule, description = "Stored (created or replaced); `next_run_at` says when it runs"))
)]
pub async fn put(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
    ApiJson(spec): ApiJson<ScheduleSpec>,
) -> ApiResult<Json<Schedule>> {
    let mut errs = name_and_spec_problems(&name, spec.validate());
    reach_before_prepare(&state, &by, &spec.task, "task.").await?;
    // The task is checked now as it will be at each run, so a mistake is found when the
    // schedule is set, not at 3 in the morning. Its stored form stays as given: the project's
    // defaults are applied at each run.
    let task = match check_task(&state, &spec.task).await {
        Ok(task) => Some(task),
        Err(e) => {
            errs.extend(e);
            None
        }
    };
    ApiError::unless_any(errs)?;
    if by.projects.is_some() {
        // A project token sets schedules of its projects only, and replaces only those.
        if let Some(old) = state.store().get_schedule(&name).await?
            && !by.reaches(old.spec.task.project.as_deref())
        {
            // Names are one namespace: say it is taken, not whose it is.
            return Err(ApiError::forbidden(format!(
                "schedule {name} is another project's; token {} may not replace it",
                by.name
            )));
        }
        if let Some(task) = &task {
            within_reach(&state, &by, task).await?;
        }
    }
    let next = spec.next_run_after(state.store().time());
    let s = state.store().put_schedule(&name, &spec, next).await?;
    tracing::info!(schedule = %name, cron = %spec.cron, paused = spec.paused, %by, "schedule stored");
    Ok(Json(s))
}

/// The schedule's task as a run would submit it, checked; `task.`-prefixed field errors.
async fn check_task(state: &AppState, task: &TaskSpec) -> Result<TaskSpec, Vec<ValidationError>> {
    let mut task = task.clone();
    // Fields the schedule refuses are reported by its own validation.
    task.idempotency_key = None;
    task.run_after = None;
    task.depends_on.clear();
    task.follow_up_of = None;
    prepare_spec(state, task, "task.").await
}

#[utoipa::path(
    post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(SchedulePath),
    responses((status = 200, body = Schedule, description = "Paused: it submits nothing until resumed"),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn pause(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Schedule>> {
    reached(&state, &by, &name).await?;
    set_paused(&state, &name, true, &by.to_string()).await.map(Json)
}

#[utoipa::path(
    post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(SchedulePath),
    responses((status = 200, body = Schedule, description = "Resumed: it runs next at its first run time after now"),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn resume(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Schedule>> {
    reached(&state, &by, &name).await?;
    set_paused(&state, &name, false, &by.to_string()).await.map(Json)
}

#[utoipa::path(
    delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(SchedulePath),
    responses((status = 204, description = "Deleted; tasks it submitted are not touched"),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if by.projects.is_some() {
        reached(&state, &by, &name).await?;
    }
    state.store().delete_schedule(&name).await?;
    tracing::info!(schedule = %name, %by, "schedule deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/schedules/{name}/run", tag = "schedules",
    params(SchedulePath),
    responses((status = 201, description = "Its task submitted now, paused or not and whatever its overlap policy; its next scheduled run is unchanged", body = crate::api::EnqueuedSchema),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn run(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    reached(&state, &by, &name).await?;
    let out = run_now(&state, &name, &by.to_string()).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
