//! The OpenAPI 3.1 document's frame: title, the error schema, the bearer scheme and the tags.
//! The paths come from the route list (`routes::api`), each handler's `#[utoipa::path]`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
    // `DeliveryBody` and `PingBody` are what the server POSTs to a notification's URL, not
    // responses of its own: listed so a receiver can generate its types from this document.
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail,
        agentpool_core::notification::DeliveryBody, agentpool_core::notification::PingBody)),
    modifiers(&Security),
    // Every operation takes a bearer token unless it says otherwise (`security(())`: the probes,
    // the metrics, this document and the signed GitHub webhook).
    security(("bearer" = [])),
    tags((name = "tasks"), (name = "workers", description = "The worker protocol"), (name = "projects"),
        (name = "credentials", description = "Write-only secrets, encrypted at rest"),
        (name = "profiles", description = "Named, non-secret agent settings that tasks reference"),
        (name = "schedules", description = "Task templates submitted on a cron expression"),
        (name = "notifications", description = "HTTP endpoints told of tasks that end"),
        (name = "tokens", description = "Bearer tokens (admin): create, list, revoke"), (name = "ops"))
)]
pub struct ApiDoc;
