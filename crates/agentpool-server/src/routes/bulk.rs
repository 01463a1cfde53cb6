//! Bulk task actions: cancel or retry up to 1000 named tasks in one request and one
//! transaction (what `agentpool tasks cancel` and `tasks retry` send for several tasks). A task
//! the action does not apply to is passed over and listed with why, as its single request
//! would have answered (`not_found`, `invalid_transition`, `conflict`); the request succeeds.

use agentpool_core::{Task, TaskId};
use axum::Json;
use axum::extract::State;

use crate::api::{BulkCancel, BulkCanceled, BulkRetried, BulkRetry, Retried, Skipped, checked_ids};
use crate::auth::{Authorized, Caller, Submitters};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::{AppState, TaskChange};

/// Cancel each named task as `POST /v1/tasks/{id}/cancel` would: a queued one at once, a
/// running one through its worker; with one reason for all. The tasks are taken in one
/// transaction.
#[utoipa::path(
    post, path = "/v1/tasks/cancel", tag = "tasks",
    request_body = BulkCancel,
    responses((status = 200, body = BulkCanceled),
        (status = 422, description = "No ids or more than 1000, or a reason that is not 1-500 characters without control characters",
            body = crate::error::ErrorBody))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiJson(req): ApiJson<BulkCancel>,
) -> ApiResult<Json<BulkCanceled>> {
    let reason = req
        .checked_reason()
        .map_err(|m| ApiError::invalid_field("reason", m))?;
    let named = checked_ids(&req.ids).map_err(|m| ApiError::invalid_field("ids", m))?;
    let ids = reached(&state, &by, &named).await?;
    let change = TaskChange::Cancel { reason };
    let out = state.change_tasks(&ids, change, &by.to_string()).await?;
    let (done, skipped) = split(&named, &ids, out);
    Ok(Json(BulkCanceled {
        canceled: done.into_iter().map(|(t, _)| t).collect(),
        skipped,
    }))
}

/// Retry each named task as `POST /v1/tasks/{id}/retry` would, with the dependents that
/// failed only because it did (a project token is told of those it reaches only). The tasks
/// are taken in one transaction; one named after a dependency of it that took it along is
/// passed over as queued.
#[utoipa::path(
    post, path = "/v1/tasks/retry", tag = "tasks",
    request_body = BulkRetry,
    responses((status = 200, body = BulkRetried),
        (status = 422, description = "No ids or more than 1000", body = crate::error::ErrorBody))
)]
pub async fn retry(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiJson(req): ApiJson<BulkRetry>,
) -> ApiResult<Json<BulkRetried>> {
    let named = checked_ids(&req.ids).map_err(|m| ApiError::invalid_field("ids", m))?;
    let ids = reached(&state, &by, &named).await?;
    let out = state
        .change_tasks(&ids, TaskChange::Retry, &by.to_string())
        .await?;
    let (done, skipped) = split(&named, &ids, out);
    let mut retried = Vec::with_capacity(done.len());
    for (task, dependents) in done {
        retried.push(Retried {
            task,
            requeued_dependents: reached(&state, &by, &dependents).await?,
        });
    }
    Ok(Json(BulkRetried { retried, skipped }))
}

type Outcome = agentpool_store::Result<(Task, Vec<TaskId>)>;

/// The named tasks `by` reaches: all of them, unless it is a project token (one lookup each
/// then, the cost of a limited token only).
pub(crate) async fn reached(state: &AppState, by: &Caller, named: &[TaskId]) -> ApiResult<Vec<TaskId>> {
    if by.projects.is_none() {
        return Ok(named.to_vec());
    }
    let mut ids = Vec::with_capacity(named.len());
    for id in named {
        if let Some(t) = state.store().find_task(*id).await?
            && by.reaches(t.spec.project.as_deref())
        {
            ids.push(*id);
        }
    }
    Ok(ids)
}

/// What was done and what was passed over (with the code and message its single request
/// would have answered), each in the order named. `out` is the outcome for each of `ids`, the
/// named tasks the caller reaches; the others are not found, as their single requests say.
fn split(named: &[TaskId], ids: &[TaskId], out: Vec<Outcome>) -> (Vec<(Task, Vec<TaskId>)>, Vec<Skipped>) {
    let mut outcomes: std::collections::HashMap<TaskId, Outcome> = ids.iter().copied().zip(out).collect();
    let mut done = Vec::new();
    let mut skipped = Vec::new();
    for id in named {
        let r = match outcomes.remove(id) {
            Some(r) => r.map_err(ApiError::from),
            None => Err(ApiError::not_found("task", id)),
        };
        match r {
            Ok(d) => done.push(d),
            Err(e) => {
                skipped.push(Skipped {
                    id: *id,
                    code: e.code.to_string(),
                    message: e.message,
                });
            }
        }
    }
    (done, skipped)
}
