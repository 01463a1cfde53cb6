//! Notifications (CRUD) and their deliveries; the notifications loop sends them
//! ([`crate::notifications`]). Admin only: a notification sends every task it matches, result
//! and all, to a URL of its setter's choosing.

use agentpool_core::ValidationError;
use agentpool_core::notification::{
    DeliveryList, DeliveryQuery, Notification, NotificationList, NotificationSpec, PingResult,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::params::{NotificationPath, name_and_spec_problems};
use crate::auth::{Admins, Authorized};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

#[utoipa::path(
    get, path = "/v1/notifications", tag = "notifications",
    responses((status = 200, body = NotificationList))
)]
pub async fn list(
    State(state): State<AppState>,
    _auth: Authorized<Admins>,
) -> ApiResult<Json<NotificationList>> {
    Ok(Json(NotificationList {
        notifications: state.store().list_notifications().await?,
    }))
}

#[utoipa::path(
    get, path = "/v1/notifications/{name}", tag = "notifications",
    params(NotificationPath),
    responses((status = 200, body = Notification), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn get(
    State(state): State<AppState>,
    _auth: Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Notification>> {
    Ok(Json(found(&state, &name).await?))
}

#[utoipa::path(
    put, path = "/v1/notifications/{name}", tag = "notifications",
    params(NotificationPath),
    request_body = NotificationSpec,
    responses((status = 200, body = Notification, description = "Stored (created or replaced); it is told of tasks that end from now on"))
)]
pub async fn put(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
    ApiJson(spec): ApiJson<NotificationSpec>,
) -> ApiResult<Json<Notification>> {
    // Every problem at once: what the spec names is looked up even when its shape is wrong.
    let mut errs = name_and_spec_problems(&name, spec.validate());
    let url_shaped = !errs.iter().any(|e| e.field == "url");
    errs.extend(check_references(&state, &spec, url_shaped).await?);
    ApiError::unless_any(errs)?;
    let n = state.store().put_notification(&name, &spec).await?;
    // The URL is not logged: its path or query may be the endpoint's secret.
    tracing::info!(notification = %name, project = spec.project.as_deref(), %by, "notification stored");
    Ok(Json(n))
}

/// What the spec names that must exist: the URL as a whole (when its shape was right), its
/// project and its credential.
async fn check_references(
    state: &AppState,
    spec: &NotificationSpec,
    url_shaped: bool,
) -> ApiResult<Vec<ValidationError>> {
    let mut errs = Vec::new();
    if let Err(e) = reqwest::Url::parse(&spec.url)
        && url_shaped
    {
        errs.push(ValidationError::new("url", format!("not a URL: {e}")));
    }
    if let Some(p) = &spec.project
        && state.store().get_project(p).await?.is_none()
    {
        errs.push(ValidationError::new(
            "project",
            format!("project {p} does not exist"),
        ));
    }
    if let Some(c) = &spec.secret_credential
        && state.store().get_credential(c).await?.is_none()
    {
        errs.push(ValidationError::new(
            "secret_credential",
            // Read by API and CLI users alike: name both ways to store it.
            format!(
                "credential {c} does not exist: store it first (`agentpool credentials put {c}`, \
                 or PUT /v1/credentials/{c})"
            ),
        ));
    }
    Ok(errs)
}

#[utoipa::path(
    delete, path = "/v1/notifications/{name}", tag = "notifications",
    params(NotificationPath),
    responses((status = 204, description = "Deleted, with its deliveries (pending ones are not sent)"),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.store().delete_notification(&name).await?;
    tracing::info!(notification = %name, %by, "notification deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/notifications/{name}/deliveries", tag = "notifications",
    params(NotificationPath, DeliveryQuery),
    responses((status = 200, body = DeliveryList, description = "Its deliveries, newest first: pending, delivered and failed ones of the past 7 days"),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    _auth: Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<DeliveryList>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_param("limit", "must be between 1 and 1000"));
    }
    found(&state, &name).await?;
    Ok(Json(DeliveryList {
        deliveries: state.store().list_deliveries(&name, limit).await?,
    }))
}

#[utoipa::path(
    post, path = "/v1/notifications/{name}/test", tag = "notifications",
    params(NotificationPath),
    responses((status = 200, body = PingResult, description = "A ping sent now (`X-Agentpool-Event: ping`, signed like a delivery, body `PingBody`), and how it went; 200 whether or not it was delivered"),
        (status = 404, body = crate::error::ErrorBody))
)]
pub async fn test(
    State(state): State<AppState>,
    Authorized(by, _): Authorized<Admins>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<PingResult>> {
    let n = found(&state, &name).await?;
    let result = crate::notifications::ping(&state, &name, &n.spec).await;
    tracing::info!(notification = %name, delivered = result.delivered, status = result.status, %by, "notification pinged");
    Ok(Json(result))
}

/// Notification `name`, or a 404.
async fn found(state: &AppState, name: &str) -> ApiResult<Notification> {
    state
        .store()
        .get_notification(name)
        .await?
        .ok_or_else(|| ApiError::not_found("notification", name))
}
