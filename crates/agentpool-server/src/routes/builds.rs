//! `POST /v1/builds`: create or update a project and submit its first (or next) build in one
//! call, for a caller that has a repository and a prompt and no project yet.

use agentpool_store::github::GithubLink;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{CreateAndBuild, CreatedBuild};
use crate::auth::{Authorized, Submitters};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::prepare::{prepare_spec, prepare_spec_in};
use crate::routes::projects::{build_spec, validate_project};
use crate::routes::tasks::refuse_reserved_keys;
use crate::state::AppState;

#[utoipa::path(
    post, path = "/v1/builds", tag = "projects",
    request_body = CreateAndBuild,
    responses((status = 201, description = "Project saved and build queued", body = CreatedBuild),
        (status = 200, description = "Project saved; the build's idempotency key matched an earlier task", body = CreatedBuild))
)]
pub async fn create_and_build(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiJson(req): ApiJson<CreateAndBuild>,
) -> ApiResult<Response> {
    crate::routes::projects::may_change_projects(&by)?;
    validate_project(&state, &req.project).await?;
    if req.build.prompt.trim().is_empty() {
        return Err(ApiError::invalid_field("build.prompt", "must not be empty"));
    }
    // The build is checked against the project as it is about to be saved, and the project is
    // saved only once the build passed: a refused request leaves the project as it was.
    let spec = build_spec(req.project.name.clone(), req.build);
    refuse_reserved_keys([("build.".to_string(), &spec)])?;
    let spec = prepare_spec_in(&state, spec, Some(&req.project), "build.")
        .await
        .map_err(ApiError::validation)?;
    let project = state.store().put_project(req.project).await?;
    let build = enqueue(&state, &project, spec).await?;
    let status = if build.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(CreatedBuild { project, build })).into_response())
}

/// Submit a build of `project`; a project wired to GitHub or Forgejo gets a link, so the pull
/// request for the build's branch is opened once it succeeded.
pub(crate) async fn submit(
    state: &AppState,
    project: &agentpool_core::Project,
    b: agentpool_core::protocol::BuildRequest,
    prefix: &str,
) -> ApiResult<agentpool_store::Enqueued> {
    let spec = build_spec(project.spec.name.clone(), b);
    refuse_reserved_keys([(prefix.to_string(), &spec)])?;
    let spec = prepare_spec(state, spec, prefix)
        .await
        .map_err(ApiError::validation)?;
    enqueue(state, project, spec).await
}

/// Queue a prepared build of `project`, linked to its pull request.
async fn enqueue(
    state: &AppState,
    project: &agentpool_core::Project,
    spec: agentpool_core::TaskSpec,
) -> ApiResult<agentpool_store::Enqueued> {
    let build = state.store().enqueue(spec).await?;
    link_pull_request(state, &project.spec, build.task.id).await?;
    Ok(build)
}

/// When `project` is wired to GitHub or Forgejo with pull requests on, link task `id` to it,
/// so a pull request for the task's branch is opened once the task succeeded (builds and
/// scheduled tasks).
pub(crate) async fn link_pull_request(
    state: &AppState,
    project: &agentpool_core::project::ProjectSpec,
    id: agentpool_core::TaskId,
) -> agentpool_store::Result<()> {
    if let Some(repository) = project.pull_request_repository() {
        state
            .store()
            .github_insert_link(&GithubLink {
                task_id: id,
                project: project.name.clone(),
                repository: repository.to_string(),
                number: None,
                kind: "build".into(),
                comment_id: None,
                reported_state: None,
                pr_number: None,
                pr_url: None,
                pr_state: None,
                branch: None,
                done: false,
                failures: 0,
                next_try_at: 0,
                created_at: 0,
            })
            .await?;
    }
    Ok(())
}
