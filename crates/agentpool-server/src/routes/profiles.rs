//! Agent profiles (CRUD), and resolving the one a task names into its spec at submit.

use super::params::{ProfilePath, name_and_spec_problems};
use agentpool_core::profile::{self, AgentProfile, Profile, ProfileList};
use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskSpec, ValidationError};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::auth::{Admins, Authorized, Submitters};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// Copy the settings of the profile `spec` names into it (`profile_settings`), with its model
/// and turn limit as defaults: the task runs with, and shows, the profile as it was at submit.
/// An unknown profile is a validation error on `field("profile")`.
pub(crate) async fn resolve(
    state: &AppState,
    spec: &mut TaskSpec,
    field: &impl Fn(&str) -> String,
) -> Result<(), Vec<ValidationError>> {
    spec.profile_settings = None;
    let Some(name) = spec.profile.clone() else {
        return Ok(());
    };
    if !profile::valid_name(&name) {
        // Reported by the spec's own validation.
        return Ok(());
    }
    match state.store().get_profile(&name).await {
        Ok(Some(p)) => {
            if spec.kind == agentpool_core::TaskKind::Agent {
                spec.model = spec.model.take().or_else(|| p.settings.model.clone());
                spec.max_turns = spec.max_turns.or(p.settings.max_turns);
            }
            spec.profile_settings = Some(p.settings);
            Ok(())
        }
        Ok(None) => Err(vec![ValidationError::new(
            field("profile"),
            format!("profile {name} does not exist (see `agentpool profiles list`)"),
        )]),
        Err(e) => {
            tracing::error!(error = %e, "profile lookup failed");
            Err(vec![ValidationError::new(
                field("profile"),
                "could not be looked up",
            )])
        }
    }
}

/// The default profile of project `p`, for its agent task that names none. One that no longer
/// exists is refused on `field("project")`: the task names no profile, its project does, and
/// it is the project that needs mending (a refusal on `profile` would blame a flag the
/// submitter never gave).
pub(crate) async fn project_default(
    state: &AppState,
    p: &ProjectSpec,
    field: &impl Fn(&str) -> String,
) -> Result<Option<String>, Vec<ValidationError>> {
    let Some(name) = p.default_profile.clone() else {
        return Ok(None);
    };
    match state.store().get_profile(&name).await {
        Ok(Some(_)) => Ok(Some(name)),
        Ok(None) => Err(vec![ValidationError::new(
            field("project"),
            format!(
                "project {project}'s default profile {name} does not exist: store the profile again \
                 (`agentpool profiles put {name}`), or put the project again with another \
                 (`agentpool projects put {project} --repo URL --profile NAME`) or none",
                project = p.name
            ),
        )]),
        Err(e) => {
            tracing::error!(error = %e, "profile lookup failed");
            Err(vec![ValidationError::new(
                field("project"),
                "its default profile could not be looked up",
            )])
        }
    }
}

#[utoipa::path(
    get, path = "/v1/profiles", tag = "profiles",
    responses((status = 200, body = ProfileList))
)]
pub async fn list(
    State(state): State<AppState>,
    _auth: Authorized<Submitters>,
) -> ApiResult<Json<ProfileList>> {
    Ok(Json(ProfileList {
        profiles: state.store().list_profiles().await?,
    }))
}

#[utoipa::path(
    get, path = "/v1/profiles/{name}", tag = "profiles",
    params(ProfilePath),
    responses((status = 200, body = Profile), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn get(
    State(state): State<AppState>,
    _auth: Authorized<Submitters>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Profile>> {
    match state.store().get_profile(&name).await? {
        Some(p) => Ok(Json(p)),
        None => Err(ApiError::not_found("profile", &name)),
    }
}

#[utoipa::path(
    put, path = "/v1/profiles/{name}", tag = "profiles",
    params(ProfilePath),
    request_body = AgentProfile,
    responses((status = 200, body = Profile, description = "Stored (created or replaced)"))
)]
pub async fn put(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
    ApiJson(settings): ApiJson<AgentProfile>,
) -> ApiResult<Json<Profile>> {
    ApiError::unless_any(name_and_spec_problems(&name, settings.validate()))?;
    let p = Profile { name, settings };
    state.store().put_profile(&p).await?;
    tracing::info!(profile = %p.name, %by, "profile stored");
    Ok(Json(p))
}

#[utoipa::path(
    delete, path = "/v1/profiles/{name}", tag = "profiles",
    params(ProfilePath),
    responses((status = 204, description = "Deleted; tasks already submitted keep its settings"),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "Projects name it as their default profile (profile_in_use)", body = crate::error::ErrorBody))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if state.store().get_profile(&name).await?.is_none() {
        return Err(ApiError::not_found("profile", &name));
    }
    // Every agent task of a project naming it as its default would be refused until the
    // project is put again: the projects go first, as a project's limited tokens do.
    let mut using: Vec<String> = state
        .store()
        .list_projects()
        .await?
        .into_iter()
        .filter(|p| p.spec.default_profile.as_deref() == Some(name.as_str()))
        .map(|p| p.spec.name)
        .collect();
    using.sort();
    if !using.is_empty() {
        let (projects, them) = match using.as_slice() {
            [_] => ("project", "it"),
            _ => ("projects", "them"),
        };
        return Err(ApiError::conflict(
            "profile_in_use",
            format!(
                "profile {name} is the default profile of {projects} {}; put {them} again with another profile or none first (`agentpool projects put NAME --repo URL --profile OTHER`)",
                using.join(", ")
            ),
        ));
    }
    state.store().delete_profile(&name).await?;
    tracing::info!(profile = %name, %by, "profile deleted");
    Ok(StatusCode::NO_CONTENT)
}
