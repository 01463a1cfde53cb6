//! The route list: every endpoint once, registered with its `#[utoipa::path]` description, so
//! the router and the OpenAPI document are built from the same list and cannot drift apart.

pub mod ops;
pub mod profiles;
pub mod projects;
pub mod queue;
pub mod tasks;
pub mod workers;

use std::sync::OnceLock;

use axum::http::Method;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Every endpoint with its handler and its OpenAPI operation. Handlers that share a path are
/// merged by axum into one method router.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(tasks::submit))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::retry))
        .routes(routes!(tasks::events))
        .routes(routes!(tasks::stream))
        .routes(routes!(workers::register))
        .routes(routes!(workers::list))
        .routes(routes!(workers::get))
        .routes(routes!(workers::deregister))
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::claim))
        .routes(routes!(workers::append_events))
        .routes(routes!(workers::complete))
        .routes(routes!(workers::complete_batch))
        .routes(routes!(workers::fail))
        .routes(routes!(workers::drain))
        .routes(routes!(queue::stats))
        .routes(routes!(projects::list))
        .routes(routes!(projects::create))
        .routes(routes!(projects::get))
        .routes(routes!(projects::put))
        .routes(routes!(projects::delete))
        .routes(routes!(projects::submit_build))
        .routes(routes!(projects::list_builds))
        .routes(routes!(projects::list_credentials))
        .routes(routes!(projects::put_credential))
        .routes(routes!(projects::delete_credential))
        .routes(routes!(profiles::list))
        .routes(routes!(profiles::get))
        .routes(routes!(profiles::put))
        .routes(routes!(profiles::delete))
}

/// The OpenAPI document as JSON, built once; `GET /v1/openapi.json` serves it.
pub(crate) fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        api()
            .into_openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_string())
    })
}

/// Every (method, path) the document lists, in the OpenAPI path syntax (`{id}`), which is also
/// axum's. The router serves exactly these: both come from [`api`].
pub fn route_list() -> Vec<(Method, &'static str)> {
    static LIST: OnceLock<Vec<(Method, String)>> = OnceLock::new();
    LIST.get_or_init(|| {
        let doc = api().into_openapi();
        let mut out = Vec::new();
        for (path, item) in doc.paths.paths {
            for (method, op) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ] {
                if op.is_some() {
                    out.push((method, path.clone()));
                }
            }
        }
        out
    })
    .iter()
    .map(|(m, p)| (m.clone(), p.as_str()))
    .collect()
}
