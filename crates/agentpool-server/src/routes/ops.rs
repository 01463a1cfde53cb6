//! Operations endpoints: liveness, readiness, Prometheus metrics, and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::Health;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)), security(()))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health),
        (status = 503, description = "Draining, or the database cannot be reached", body = crate::error::ErrorBody)),
    security(())
)]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    if state.is_draining() {
        return Err(ApiError::unavailable("draining", "this server is draining"));
    }
    if let Err(e) = state.store().ping().await {
        tracing::warn!(error = %e, "readiness: database ping failed");
        return Err(ApiError::unavailable(
            "database_unavailable",
            "the database cannot be reached",
        ));
    }
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)),
    security(())
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.inner.metrics.render(state.store().as_ref()).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)),
    security(())
)]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::document_json(),
    )
        .into_response()
}
