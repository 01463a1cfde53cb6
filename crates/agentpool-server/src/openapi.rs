//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes::{ops, projects, tasks, workers};

/// The body of `POST /v1/tasks`: one TaskSpec, or `{ "tasks": [TaskSpec, …] }`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum SubmitBody {
    #[schema(value_type = crate::api::TaskSpecSchema)]
    Single(crate::api::TaskSpecSchema),
    Batch(crate::api::BatchSubmit),
}

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token with role admin, submitter or worker (agentpool tokens create --role R)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "agentpool", description = "Task API and worker protocol of agentpool. Every error is `{ \"error\": { \"code\", \"message\", \"details\" } }`."),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        tasks::submit, tasks::list, tasks::get, tasks::cancel, tasks::retry, tasks::events, tasks::stream,
        workers::register, workers::list, workers::get, workers::deregister, workers::heartbeat, workers::claim,
        workers::append_events, workers::complete, workers::complete_batch, workers::fail, workers::drain,
        projects::list, projects::create, projects::get, projects::put, projects::delete,
        projects::submit_build, projects::list_builds,
        projects::list_credentials, projects::put_credential, projects::delete_credential,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&Security),
    tags((name = "tasks"), (name = "workers", description = "The worker protocol"), (name = "projects"),
        (name = "credentials", description = "Write-only secrets, encrypted at rest"), (name = "ops"))
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".to_string()))
        .clone()
}
