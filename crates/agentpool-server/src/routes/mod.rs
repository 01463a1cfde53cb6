//! The route table: every endpoint once, as (method, path, handler). The router is built from
//! it, and the OpenAPI test walks it to check that the document covers every route.

pub mod ops;
pub mod projects;
pub mod tasks;
pub mod workers;

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post, put};

use crate::state::AppState;

pub(crate) struct Route {
    pub method: Method,
    pub path: &'static str,
    pub handler: MethodRouter<AppState>,
}

fn r(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

pub(crate) fn table() -> Vec<Route> {
    use Method as M;
    vec![
        r(M::GET, "/healthz", get(ops::healthz)),
        r(M::GET, "/readyz", get(ops::readyz)),
        r(M::GET, "/metrics", get(ops::metrics)),
        r(M::GET, "/v1/openapi.json", get(ops::openapi)),
        r(M::POST, "/v1/tasks", post(tasks::submit)),
        r(M::GET, "/v1/tasks", get(tasks::list)),
        r(M::GET, "/v1/tasks/{id}", get(tasks::get)),
        r(M::POST, "/v1/tasks/{id}/cancel", post(tasks::cancel)),
        r(M::POST, "/v1/tasks/{id}/retry", post(tasks::retry)),
        r(M::GET, "/v1/tasks/{id}/events", get(tasks::events)),
        r(M::GET, "/v1/tasks/{id}/events/stream", get(tasks::stream)),
        r(M::POST, "/v1/workers/register", post(workers::register)),
        r(M::GET, "/v1/workers", get(workers::list)),
        r(M::GET, "/v1/workers/{id}", get(workers::get)),
        r(M::DELETE, "/v1/workers/{id}", delete(workers::deregister)),
        r(M::POST, "/v1/workers/{id}/heartbeat", post(workers::heartbeat)),
        r(M::POST, "/v1/workers/{id}/claim", post(workers::claim)),
        r(
            M::POST,
            "/v1/workers/{id}/tasks/{task}/events",
            post(workers::append_events),
        ),
        r(
            M::POST,
            "/v1/workers/{id}/complete/{task}",
            post(workers::complete),
        ),
        r(
            M::POST,
            "/v1/workers/{id}/complete",
            post(workers::complete_batch),
        ),
        r(M::POST, "/v1/workers/{id}/fail/{task}", post(workers::fail)),
        r(M::POST, "/v1/workers/{id}/drain", post(workers::drain)),
        r(M::GET, "/v1/projects", get(projects::list)),
        r(M::POST, "/v1/projects", post(projects::create)),
        r(M::GET, "/v1/projects/{name}", get(projects::get)),
        r(M::PUT, "/v1/projects/{name}", put(projects::put)),
        r(M::DELETE, "/v1/projects/{name}", delete(projects::delete)),
        r(
            M::POST,
            "/v1/projects/{name}/builds",
            post(projects::submit_build),
        ),
        r(M::GET, "/v1/projects/{name}/builds", get(projects::list_builds)),
        r(M::GET, "/v1/credentials", get(projects::list_credentials)),
        r(M::PUT, "/v1/credentials/{name}", put(projects::put_credential)),
        r(
            M::DELETE,
            "/v1/credentials/{name}",
            delete(projects::delete_credential),
        ),
    ]
}

/// Every (method, path) the router serves, in the axum path syntax (`{id}`), which is also the
/// OpenAPI path syntax.
pub fn route_list() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|r| (r.method, r.path)).collect()
}
