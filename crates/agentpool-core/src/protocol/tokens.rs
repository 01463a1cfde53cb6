//! Token management over the API (`/v1/tokens`, admin role): create (the value is in the
//! answer, once; optionally limited to projects and with an expiry), list, rotate and revoke.
//! Values are never listed.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// A name to recognise the token by (1-100 characters).
    pub name: String,
    /// `admin`, `submitter` or `worker`.
    pub role: String,
    /// A submitter token limited to these projects: it submits, sees and acts on only their
    /// tasks, builds and schedules, and reads and changes only them. Empty: every project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// When the token stops working; never when absent. Must be in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Timestamp>,
}

impl TokenCreate {
    /// A token of `role` for every project, that does not expire.
    pub fn new(name: impl Into<String>, role: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            role: role.into(),
            projects: Vec::new(),
            expires_at: None,
        }
    }
}

/// A token as listed: never its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    pub revoked: bool,
    /// The projects it is limited to; empty: every project.
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Timestamp>,
    /// When it was last used, to the minute (a server notes a use at most once a minute).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_used_at: Option<Timestamp>,
}

impl TokenInfo {
    /// Whether it has expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The answer to `POST /v1/tokens`: the only time the value is shown.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    pub id: String,
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Timestamp>,
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("projects", &self.projects)
            .field("expires_at", &self.expires_at)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `POST /v1/tokens/{id}/rotate` (the body is optional): the token's successor is created and
/// the token keeps working for `grace_secs` more, so its users can move to the successor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRotate {
    /// How long the token rotated keeps working, in seconds: 0 to 2,592,000 (30 days); one
    /// hour when absent. Never longer than it would have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2_592_000))]
    pub grace_secs: Option<u64>,
}

impl TokenRotate {
    /// The grace when none is given.
    pub const DEFAULT_GRACE_SECS: u64 = 3600;
    /// The longest grace.
    pub const MAX_GRACE_SECS: u64 = 30 * 86_400;
}

/// The answer to a rotation: the successor (same name, role and projects; as long a life as
/// the token had, counted from now), its value shown this once, and when the token rotated
/// stops working.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedToken {
    pub successor: CreatedToken,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub previous_expires_at: Timestamp,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}
