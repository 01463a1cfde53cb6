//! Queue statistics for one set of workers: what an autoscaler needs to size a pool (matching
//! queued and running work, the pool's workers by status).

use agentpool_core::protocol::{QueueStats, QueueStatsQuery, QueuedTask, parse_label_list};
use agentpool_core::worker::Needs;
use std::collections::HashSet;

use agentpool_core::{TaskId, ValidationError};
use agentpool_store::TaskFilter;
use axum::Json;
use axum::extract::State;

use crate::auth::{Authorized, Readers};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// The most queued tasks read: past that the count is a floor, which is still far beyond what
/// any pool scales to.
const MAX_QUEUED: u32 = 20_000;

#[utoipa::path(
    get, path = "/v1/queue/stats", tag = "workers", params(QueueStatsQuery),
    responses((status = 200, body = QueueStats), (status = 422, body = crate::error::ErrorBody))
)]
pub async fn stats(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Readers>,
    ApiQuery(q): ApiQuery<QueueStatsQuery>,
) -> ApiResult<Json<QueueStats>> {
    let selector = q
        .labels
        .as_deref()
        .map(parse_label_list)
        .transpose()
        .map_err(|e| ApiError::validation(vec![ValidationError::new("labels", e)]))?;
    let agents = comma_list(q.agents.as_deref());
    let projects = comma_list(q.projects.as_deref());
    if let Some(bad) = projects.iter().find(|p| !agentpool_core::project::valid_name(p)) {
        return Err(ApiError::validation(vec![ValidationError::new(
            "projects",
            format!("{bad:?} is not a project name"),
        )]));
    }
    // A project token counts its projects' tasks only; a pool limited to projects, theirs
    // within what the token reaches.
    let mut only = TaskFilter::default();
    by.limit(&mut only);
    if !projects.is_empty() {
        let reach = only.projects.take();
        only.projects = Some(
            projects
                .into_iter()
                .filter(|p| reach.as_ref().is_none_or(|r| r.contains(p)))
                .collect(),
        );
    }
    let store = state.store();
    // Only the columns a pool is matched on, in one read each: a backlog's specs (prompts)
    // are never read for statistics an autoscaler asks for every few seconds.
    let queued = store.queued_shapes(only.projects.as_deref(), MAX_QUEUED).await?;
    let runnable: HashSet<TaskId> = store
        .runnable_now(only.projects.as_deref(), MAX_QUEUED)
        .await?
        .into_iter()
        .collect();
    let now = store.time();
    let workers = store.list_workers().await?;
    Ok(Json(QueueStats::compute(
        selector.as_ref(),
        &agents,
        queued.iter().map(|t| QueuedTask {
            needs: Needs {
                agent: t.agent.as_deref(),
                labels: &t.labels,
                project: t.project.as_deref(),
            },
            due: t.run_after <= now,
            runnable: runnable.contains(&t.id),
        }),
        workers,
    )))
}

/// `a, b,,c` → `[a, b, c]`.
fn comma_list(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}
