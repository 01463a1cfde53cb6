//! The parts of a dashboard request read from its URL: path segments and query parameters.
//! They parse as the API's do (NUL characters refused), but a bad one is an HTML error page,
//! as everything else the dashboard answers, not the API's JSON.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::DashError;
use crate::extract::{ApiPath, ApiQuery};

/// A path segment, such as a task id. One that does not parse names no page: 404.
pub struct DashPath<T>(pub T);

impl<S, T> FromRequestParts<S> for DashPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match ApiPath::<T>::from_request_parts(parts, state).await {
            Ok(ApiPath(v)) => Ok(Self(v)),
            Err(e) => Err(DashError::not_found(format!(
                "there is no page at {}: {}",
                parts.uri.path(),
                e.message.trim_start_matches("Invalid URL: ")
            ))),
        }
    }
}

/// Query parameters. One that does not parse is a 400 naming it.
pub struct DashQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for DashQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        ApiQuery::<T>::from_request_parts(parts, state)
            .await
            .map(|ApiQuery(v)| Self(v))
            .map_err(DashError::from)
    }
}
