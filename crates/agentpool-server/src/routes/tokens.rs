//! Token management for admins over the API: create (the value is answered once), list
//! (never values), rotate (a successor, and the token kept for a grace) and revoke. A revoked
//! token stops working within the auth cache's lifetime.

use super::params::TokenPath;
use agentpool_core::ValidationError;
use agentpool_core::protocol::{CreatedToken, RotatedToken, TokenCreate, TokenInfo, TokenList, TokenRotate};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::auth::{Admins, Authorized, Role, TokenLimits};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, OptionalJson};
use crate::state::AppState;

#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = TokenCreate,
    responses((status = 201, description = "Created; the only time its value is shown", body = CreatedToken),
        (status = 409, description = "A valid token already has this name", body = crate::error::ErrorBody))
)]
pub async fn create(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiJson(req): ApiJson<TokenCreate>,
) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let name = req.name.trim();
    // Characters, not bytes: the OpenAPI document's maxLength counts characters.
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        errs.push(ValidationError::new(
            "name",
            "must be 1-100 characters, no control characters",
        ));
    }
    let role = req.role.parse::<Role>();
    if let Err(e) = &role {
        errs.push(ValidationError::new("role", e.to_string()));
    }
    let limits = TokenLimits {
        projects: req.projects,
        expires_at: req.expires_at,
    };
    // The limits are checked whatever the role says, so one answer names every problem.
    let store = state.store().as_ref();
    errs.extend(
        limits
            .problems(store, *role.as_ref().unwrap_or(&Role::Submitter))
            .await?,
    );
    let (true, Ok(role)) = (errs.is_empty(), role) else {
        return Err(ApiError::validation(errs));
    };
    let body = crate::create_unique_token(store, role, name, limits)
        .await?
        .shown();
    tracing::info!(token = %body.id, name, role = role.as_str(), projects = ?body.projects,
        expires_at = body.expires_at.map(tracing::field::display), %by, "token created");
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList))
)]
pub async fn list(State(state): State<AppState>, _auth: Authorized<Admins>) -> ApiResult<Json<TokenList>> {
    let tokens = state
        .store()
        .list_tokens()
        .await?
        .into_iter()
        .map(TokenInfo::from)
        .collect();
    Ok(Json(TokenList { tokens }))
}

#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(TokenPath),
    responses((status = 204, description = "Revoked"), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn revoke(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if !state.store().list_tokens().await?.iter().any(|t| t.id == id) {
        return Err(ApiError::not_found("token", &id));
    }
    state.store().revoke_token(&id).await?;
    tracing::info!(token = %id, %by, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a token: its successor is created (same name, role and projects; as long a life as
/// it had, from now) and answered with its value, shown this once; the token keeps working for
/// the grace (an hour unless given), so its users can move over.
#[utoipa::path(
    post, path = "/v1/tokens/{id}/rotate", tag = "tokens",
    params(TokenPath),
    request_body(content = Option<TokenRotate>, description = "Optional: how long the token rotated keeps working"),
    responses((status = 201, description = "The successor created; its value is shown this once", body = RotatedToken),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "The token is revoked or expired: create a new one", body = crate::error::ErrorBody),
        (status = 422, description = "A grace longer than 30 days", body = crate::error::ErrorBody))
)]
pub async fn rotate(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(req): OptionalJson<TokenRotate>,
) -> ApiResult<Response> {
    let grace = req
        .unwrap_or_default()
        .grace_secs
        .unwrap_or(TokenRotate::DEFAULT_GRACE_SECS);
    if grace > TokenRotate::MAX_GRACE_SECS {
        return Err(ApiError::invalid_field("grace_secs", "at most 2592000 (30 days)"));
    }
    let grace = std::time::Duration::from_secs(grace);
    let body = crate::auth::rotate_token(state.store().as_ref(), &id, grace).await?;
    let s = &body.successor;
    tracing::info!(token = %id, successor = %s.id, name = %s.name,
        until = %body.previous_expires_at, %by, "token rotated");
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
