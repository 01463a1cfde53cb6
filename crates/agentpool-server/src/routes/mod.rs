//! The route list: every endpoint once, registered with its `#[utoipa::path]` description, so
//! the router and the OpenAPI document are built from the same list and cannot drift apart.

pub mod builds;
pub mod bulk;
pub mod github;
mod handout;
pub mod notifications;
pub mod ops;
mod params;
pub(crate) mod prepare;
pub mod profiles;
pub mod projects;
pub mod queue;
mod registration;
pub mod schedules;
pub mod tasks;
pub mod tokens;
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
        .routes(routes!(bulk::cancel))
        .routes(routes!(bulk::retry))
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
        .routes(routes!(schedules::list))
        .routes(routes!(schedules::get))
        .routes(routes!(schedules::put))
        .routes(routes!(schedules::delete))
        .routes(routes!(schedules::run))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(notifications::list))
        .routes(routes!(notifications::get))
        .routes(routes!(notifications::put))
        .routes(routes!(notifications::delete))
        .routes(routes!(notifications::deliveries))
        .routes(routes!(notifications::test))
        .routes(routes!(builds::create_and_build))
        .routes(routes!(github::webhook))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(tokens::rotate))
}

/// The OpenAPI document as JSON, built once; `GET /v1/openapi.json` serves it.
pub(crate) fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = api().into_openapi();
        add_common_responses(&mut doc);
        describe_profile(&mut doc);
        let Ok(mut doc) = serde_json::to_value(&doc) else {
            return "{}".to_string();
        };
        crate::openapi_rules::describe(&mut doc);
        doc.to_string()
    })
}

/// A stored profile is its name plus the settings, flattened into one object. The derived
/// schema combines `{name}` with the settings' schema, which refuses unknown properties (as the
/// server refuses them in a request) and so refuses `name`: describe the answer as one object.
fn describe_profile(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(settings))) = components.schemas.get("AgentProfile") else {
        return;
    };
    let mut profile = settings.clone();
    profile.additional_properties = None;
    profile.description = Some("A stored profile: its name and its settings (AgentProfile).".into());
    profile.properties.insert(
        "name".into(),
        ObjectBuilder::new().schema_type(Type::String).into(),
    );
    profile.required.push("name".into());
    components
        .schemas
        .insert("Profile".into(), RefOr::T(Schema::Object(profile)));
}

/// Answers every operation can give for reasons outside its handler, added where its own
/// description does not list them: refusals by the extractors (a malformed path or query 400;
/// a body that is not JSON 400, too large 413, not `application/json` 415, the wrong shape
/// 422), by auth (401, 403), and 503 while the database cannot be reached.
fn add_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let has_body = op.request_body.is_some();
            // No list of its own: the document's (a bearer token). `security(())` lists the
            // empty requirement, which any request meets.
            let secured = op.security.as_ref().is_none_or(|reqs| {
                !reqs.is_empty()
                    && reqs.iter().all(|r| {
                        serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                    })
            });
            let mut add = |code: &str, description: &str| {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| error(description));
            };
            if has_params || has_body {
                add("400", "A malformed path, query or JSON body");
            }
            if has_body {
                add("413", "The body is larger than the server accepts");
                add("415", "The body is not sent as application/json");
                add(
                    "422",
                    "The body does not have the expected shape or fails validation",
                );
            }
            if secured {
                add("401", "Missing, unknown or revoked token");
                add("403", "The token's role may not do this");
            }
            add(
                "503",
                "The database cannot be reached, or the server is draining (see Retry-After)",
            );
        }
    }
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
