//! The error body every non-2xx answer carries, and the health answer.

use serde::{Deserialize, Serialize};

/// The error body of every non-2xx response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `not_found`, `stale_lease`, `invalid_body`.
    pub code: String,
    /// A sentence a person can act on.
    pub message: String,
    /// Field-level problems (validation), or other structured context; `null` when none.
    #[cfg_attr(feature = "openapi", schema(value_type = Object, nullable))]
    pub details: serde_json::Value,
}

impl ErrorDetail {
    /// The fields a validation refused (`details.fields`, each a path and a message), in order.
    pub fn fields(&self) -> Vec<crate::ValidationError> {
        self.details
            .get("fields")
            .and_then(|f| serde_json::from_value(f.clone()).ok())
            .unwrap_or_default()
    }
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
}
