//! Projects (CRUD), project-scoped builds, and write-only credentials.

use super::params::{CredentialPath, ProjectPath};
use agentpool_core::project::{ProjectSpec, valid_name};
use agentpool_core::{Project, RepoUrl, TaskKind, TaskSpec, ValidationError};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{BuildRequest, CredentialList, CredentialValue, ProjectList, TaskListQuery, TaskPage};
use crate::auth::{Admins, Authorized, Caller, Submitters};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::tasks::list_page;
use crate::state::AppState;

/// The longest credential value, in characters.
pub(crate) const MAX_CREDENTIAL_CHARS: usize = 65536;

/// What a project or credential name may be (`agentpool_core::project::valid_name`).
const NAME_RULE: &str = "use 1-100 characters from [A-Za-z0-9._-]";

/// Every problem of `p` at once, including what it names that does not exist: a project whose
/// defaults would make each of its tasks fail at submit is refused when it is saved.
pub(crate) async fn validate_project(state: &AppState, p: &ProjectSpec) -> ApiResult<()> {
    let mut errs = Vec::new();
    if !valid_name(&p.name) {
        errs.push(ValidationError::new("name", NAME_RULE));
    }
    if let Err(e) = RepoUrl::parse(&p.repo, state.inner.limits.allow_local_repos) {
        errs.push(e);
    }
    for (field, v) in [
        ("max_cost_usd", p.max_cost_usd),
        ("daily_budget_usd", p.daily_budget_usd),
    ] {
        if let Some(v) = v
            && !agentpool_core::spec::valid_usd(v)
        {
            errs.push(ValidationError::new(field, agentpool_core::spec::USD_RULE));
        }
    }
    if let Some(name) = &p.default_profile {
        if !agentpool_core::profile::valid_name(name) {
            errs.push(ValidationError::new(
                "default_profile",
                format!("{name:?} is not a profile name"),
            ));
        } else if state.store().get_profile(name).await?.is_none() {
            errs.push(ValidationError::new(
                "default_profile",
                format!("profile {name} does not exist: store it first (PUT /v1/profiles/{name})"),
            ));
        }
    }
    if let Some(m) = &p.default_model
        && !agentpool_core::profile::valid_model(m)
    {
        errs.push(ValidationError::new(
            "default_model",
            agentpool_core::profile::MODEL_RULE,
        ));
    }
    if let Some(a) = &p.default_agent
        && !p.allowed_agents.is_empty()
        && !p.allowed_agents.contains(a)
    {
        errs.push(ValidationError::new(
            "default_agent",
            format!(
                "{a} is not among the project's allowed_agents ({})",
                p.allowed_agents.join(", ")
            ),
        ));
    }
    if p.slots == Some(0) {
        errs.push(ValidationError::new(
            "slots",
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    for c in &p.credentials {
        if !valid_name(c) {
            errs.push(ValidationError::new(
                "credentials",
                format!("{c:?} is not a credential name"),
            ));
        }
    }
    if let Some(b) = &p.default_base
        && (b.is_empty()
            || b.starts_with('-')
            || b.len() > 255
            || b.chars().any(|c| c.is_control() || c == ' '))
    {
        errs.push(ValidationError::new("default_base", "is not a valid git ref"));
    }
    if let Some(g) = &p.github {
        errs.extend(g.validate("github"));
    }
    if let Some(f) = &p.forgejo {
        errs.extend(f.validate("forgejo"));
        if p.github.is_some() {
            errs.push(ValidationError::new(
                "forgejo",
                "a project has one forge: set github or forgejo, not both",
            ));
        }
    }
    errs.extend(agentpool_core::check::validate_checks(
        &p.checks,
        "checks",
        state.inner.limits.max_timeout_secs,
    ));
    errs.extend(agentpool_core::check::validate_max_rounds(
        p.max_rounds,
        "max_rounds",
    ));
    ApiError::unless_any(errs)
}

/// Project `name`, or a 404 (also when `by` does not reach it).
async fn project(state: &AppState, by: &Caller, name: &str) -> ApiResult<Project> {
    if !by.reaches(Some(name)) {
        return Err(ApiError::not_found("project", name));
    }
    state
        .store()
        .get_project(name)
        .await?
        .ok_or_else(|| ApiError::not_found("project", name))
}

/// A project token uses its projects as they are set up: changing one could point it at
/// another repository or give its tasks another team's credentials.
pub(crate) fn may_change_projects(by: &Caller) -> ApiResult<()> {
    match by.projects {
        None => Ok(()),
        Some(_) => Err(ApiError::forbidden(format!(
            "token {} is limited to projects; it may not create, change or delete projects",
            by.name
        ))),
    }
}

#[utoipa::path(
    get, path = "/v1/projects", tag = "projects",
    responses((status = 200, body = ProjectList))
)]
pub async fn list(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
) -> ApiResult<Json<ProjectList>> {
    let mut projects = state.store().list_projects().await?;
    projects.retain(|p| by.reaches(Some(&p.spec.name)));
    Ok(Json(ProjectList { projects }))
}

#[utoipa::path(
    post, path = "/v1/projects", tag = "projects",
    request_body = crate::api::ProjectSpecSchema,
    responses((status = 201, body = crate::api::ProjectSchema),
        (status = 409, description = "A project with this name exists", body = crate::error::ErrorBody))
)]
pub async fn create(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiJson(spec): ApiJson<ProjectSpec>,
) -> ApiResult<Response> {
    may_change_projects(&by)?;
    validate_project(&state, &spec).await?;
    if state.store().get_project(&spec.name).await?.is_some() {
        return Err(ApiError::conflict(
            "already_exists",
            format!(
                "project {} exists; PUT /v1/projects/{} to update it",
                spec.name, spec.name
            ),
        ));
    }
    let p = state.store().put_project(spec).await?;
    tracing::info!(project = %p.spec.name, %by, "project created");
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

#[utoipa::path(
    put, path = "/v1/projects/{name}", tag = "projects",
    params(ProjectPath),
    request_body = crate::api::ProjectSpecSchema,
    responses((status = 200, body = crate::api::ProjectSchema))
)]
pub async fn put(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
    ApiJson(spec): ApiJson<ProjectSpec>,
) -> ApiResult<Response> {
    may_change_projects(&by)?;
    if spec.name != name {
        return Err(ApiError::invalid_field("name", "must match the name in the path"));
    }
    validate_project(&state, &spec).await?;
    let p = state.store().put_project(spec).await?;
    tracing::info!(project = %name, %by, "project stored");
    Ok(Json(p).into_response())
}

#[utoipa::path(
    get, path = "/v1/projects/{name}", tag = "projects",
    params(ProjectPath),
    responses((status = 200, body = crate::api::ProjectSchema), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn get(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(project(&state, &by, &name).await?).into_response())
}

#[utoipa::path(
    delete, path = "/v1/projects/{name}", tag = "projects",
    params(ProjectPath),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "Tokens still limited to it (project_in_use)", body = crate::error::ErrorBody))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    project(&state, &by, &name).await?;
    may_change_projects(&by)?;
    // Tokens name their projects by name: one limited to this project would reach a project
    // created again under the name, someone else's perhaps. So they go first.
    let now = state.store().time();
    let mut limited: Vec<String> = state
        .store()
        .list_tokens()
        .await?
        .into_iter()
        .map(agentpool_core::protocol::TokenInfo::from)
        .filter(|t| !t.revoked && !t.expired(now) && t.projects.contains(&name))
        .map(|t| t.name)
        .collect();
    // A token rotated within its grace and its successor share the name.
    limited.sort();
    limited.dedup();
    if !limited.is_empty() {
        return Err(ApiError::conflict(
            "project_in_use",
            format!(
                "tokens {} are limited to project {name}; revoke them first (a project created again under this name would be theirs)",
                limited.join(", ")
            ),
        ));
    }
    state.store().delete_project(&name).await?;
    tracing::info!(project = %name, %by, "project deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/projects/{name}/builds", tag = "projects",
    params(ProjectPath),
    request_body = BuildRequest,
    responses((status = 201, body = crate::api::EnqueuedSchema),
        (status = 200, description = "Idempotency key matched", body = crate::api::EnqueuedSchema),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn submit_build(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<BuildRequest>,
) -> ApiResult<Response> {
    let out = crate::routes::builds::submit(&state, &project(&state, &by, &name).await?, b, "").await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)).into_response())
}

/// The task a build of project `name` submits.
pub(crate) fn build_spec(name: String, b: BuildRequest) -> TaskSpec {
    TaskSpec {
        kind: TaskKind::Agent,
        project: Some(name),
        prompt: Some(b.prompt),
        agent: b.agent,
        model: b.model,
        base_ref: b.base_ref,
        branch: b.branch,
        priority: b.priority,
        labels: b.labels,
        idempotency_key: b.idempotency_key,
        ..TaskSpec::default()
    }
}

#[utoipa::path(
    get, path = "/v1/projects/{name}/builds", tag = "projects",
    params(ProjectPath, TaskListQuery),
    responses((status = 200, body = TaskPage), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn list_builds(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(mut q): ApiQuery<TaskListQuery>,
) -> ApiResult<Json<TaskPage>> {
    project(&state, &by, &name).await?;
    q.project = Some(name);
    list_page(&state, &by, q).await.map(Json)
}

#[utoipa::path(
    put, path = "/v1/credentials/{name}", tag = "credentials",
    params(CredentialPath),
    request_body = CredentialValue,
    responses((status = 204, description = "Stored (encrypted); the value is never returned"),
        (status = 503, description = "No server key configured", body = crate::error::ErrorBody))
)]
pub async fn put_credential(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
    ApiJson(v): ApiJson<CredentialValue>,
) -> ApiResult<StatusCode> {
    if !valid_name(&name) {
        return Err(ApiError::invalid_field("name", NAME_RULE));
    }
    // Counted in characters, as the OpenAPI document's `maxLength` counts: a client that
    // checks the schema is never refused a value it allows.
    // At least as long as the shortest value the workers mask in output: a shorter one
    // would reach events and logs in the clear.
    let min = agentpool_core::redact::Redactor::MIN_LEN;
    if v.value.chars().count() < min || v.value.chars().count() > MAX_CREDENTIAL_CHARS {
        return Err(ApiError::invalid_field(
            "value",
            format!(
                "must be {min} to {MAX_CREDENTIAL_CHARS} characters (a shorter value could not be masked in output)"
            ),
        ));
    }
    let Some(cipher) = &state.inner.cipher else {
        return Err(ApiError::unavailable(
            "no_server_key",
            "this server has no key to encrypt credentials with: start it with --server-key (or AGENTPOOL_SERVER_KEY)",
        ));
    };
    let ct = cipher
        .encrypt(&name, v.value.as_bytes())
        .map_err(|_| ApiError::internal())?;
    state.store().put_credential(&name, ct).await?;
    tracing::info!(credential = %name, %by, "credential stored");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/credentials", tag = "credentials",
    responses((status = 200, body = CredentialList))
)]
pub async fn list_credentials(
    State(state): State<AppState>,
    _auth: Authorized<Admins>,
) -> ApiResult<Json<CredentialList>> {
    Ok(Json(CredentialList {
        names: state.store().list_credentials().await?,
    }))
}

#[utoipa::path(
    delete, path = "/v1/credentials/{name}", tag = "credentials",
    params(CredentialPath),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn delete_credential(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if state.store().get_credential(&name).await?.is_none() {
        return Err(ApiError::not_found("credential", &name));
    }
    state.store().delete_credential(&name).await?;
    tracing::info!(credential = %name, %by, "credential deleted");
    Ok(StatusCode::NO_CONTENT)
}
