//! Wire types of the project and credential API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Project;

/// `GET /v1/projects`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectList {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::ProjectSchema>))]
    pub projects: Vec<Project>,
}

/// `POST /v1/projects/{name}/builds`: an agent task on the project's repository, with the
/// project's defaults for what is left out.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    pub prompt: String,
    pub agent: Option<String>,
    pub model: Option<String>,
    pub base_ref: Option<String>,
    pub branch: Option<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
}

/// `POST /v1/builds`: create or update a project and submit its build, in one call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAndBuild {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::protocol::openapi::ProjectSpecSchema))]
    pub project: crate::project::ProjectSpec,
    pub build: BuildRequest,
}

/// The answer to `POST /v1/builds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedBuild {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::protocol::openapi::ProjectSchema))]
    pub project: Project,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::protocol::openapi::EnqueuedSchema))]
    pub build: crate::protocol::Enqueued,
}

/// `PUT /v1/credentials/{name}`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialValue {
    pub value: String,
}

impl std::fmt::Debug for CredentialValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialValue(<redacted>)")
    }
}

/// `GET /v1/credentials`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialList {
    /// Names only: values are never returned.
    pub names: Vec<String>,
}
