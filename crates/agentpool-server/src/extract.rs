//! Request extractors that turn every malformed input into our error shape: a JSON body that
//! is too large (413), not JSON (400/415), or the wrong shape (422 naming the field), and path
//! or query parameters that do not parse (400). Nothing malformed reaches a handler or a 500.
//! Also the caller's identity from its bearer token (401/403), before any body is read.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::auth::{Allowed, AuthMode, Authorized, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body, parsed strictly (the target types refuse unknown fields), with the path of the
/// offending field in the error.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(&req)?;
        let ApiBody(bytes) = ApiBody::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out: no body (or only white space) is `None`; any other is
/// read as [`ApiJson`] reads it (JSON content type, strict shape).
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Only a body that is there must be JSON: checked once it is read.
        let typed = require_json(&req);
        let ApiBody(bytes) = ApiBody::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        typed?;
        parse_json(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

/// Requiring the JSON content type keeps a browser from posting a "simple" cross-site form
/// (text/plain) to a server running without auth on loopback.
fn require_json(req: &Request) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    Ok(())
}

/// Parse `bytes` as `T`, mapping syntax errors to 400 and shape errors to 422 with the field path.
/// Every body is first checked for duplicate keys and NUL characters (`strict_json`), and must
/// be an object: every request body of the API is one, and serde would otherwise read a struct
/// from an array by position (`[]` as a task with every field left out).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if !parse_as::<crate::strict_json::Strict>(bytes)?.is_object {
        return Err(field_refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "invalid body: expected a JSON object".into(),
            "",
            "expected a JSON object",
        ));
    }
    parse_as::<T>(bytes)
}

fn parse_as<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Data => {
                    let (field, message) = plain_error(&path, &inner.to_string());
                    let said = if field.is_empty() {
                        format!("invalid body: {message}")
                    } else {
                        format!("invalid field {field}: {message}")
                    };
                    Err(field_refusal(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_body",
                        said,
                        &field,
                        &message,
                    ))
                }
                Category::Syntax | Category::Eof | Category::Io => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("body is not valid JSON: {inner}"),
                )),
            }
        }
    }
}

/// serde's message for a body of the wrong shape, told as the API names things: the field a
/// `missing field` error is about (not its parent), no position in the body, and JSON's
/// words for the expected type rather than Rust's (`a whole number`, not `u32`).
fn plain_error(path: &str, serde_message: &str) -> (String, String) {
    let parent = if path == "." { "" } else { path };
    let mut message = serde_message;
    if let Some(i) = message.rfind(" at line ")
        && message[i + 9..].split(" column ").count() == 2
    {
        message = &message[..i];
    }
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        let field = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        };
        return (field, "is required".to_string());
    }
    let mut message = message.to_string();
    if let Some(i) = message.rfind(", expected ") {
        let expected = &message[i + 11..];
        let plain = match expected {
            "u8" | "u16" | "u32" | "u64" | "usize" => Some("a whole number, 0 or more"),
            "i8" | "i16" | "i32" | "i64" | "isize" => Some("a whole number"),
            "f32" | "f64" => Some("a number"),
            e if e.starts_with("struct ") || e.starts_with("a map") => Some("an object"),
            _ => None,
        };
        if let Some(plain) = plain {
            message = format!("{}, expected {plain}", &message[..i]);
        }
    }
    (parent.to_string(), message)
}

/// A 400 (`code`, `message`) when a raw (percent-encoded) path or query holds an encoded NUL,
/// which no stored name can contain and PostgreSQL cannot even compare with.
fn refuse_nul(raw: &str, code: &'static str, message: &str) -> Result<(), ApiError> {
    if raw.contains("%00") {
        Err(ApiError::new(StatusCode::BAD_REQUEST, code, message))
    } else {
        Ok(())
    }
}

/// A raw body whose read errors (too large) use our error shape.
pub struct ApiBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(ApiBody)
            .map_err(bytes_rejection)
    }
}

fn bytes_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body is larger than the server accepts",
        )
    } else {
        ApiError::bad_request(format!("could not read the body: {}", r.body_text()))
    }
}

/// Path parameters; a value that does not parse (a bad task id) is a 400, not a 500 or 404.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul(
            parts.uri.path(),
            "invalid_path",
            "the path must not contain NUL characters",
        )?;
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text()))
    }
}

/// Query parameters, strictly parsed (the target types refuse unknown parameters).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul(
            parts.uri.query().unwrap_or(""),
            "invalid_query",
            "query parameters must not contain NUL characters",
        )?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r| query_error(&r.body_text()))
    }
}

/// axum's text for a query it could not read (`Failed to deserialize query string: limit:
/// invalid digit found in string`), as our error: the parameter named in `details.fields`.
fn query_error(text: &str) -> ApiError {
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    let (field, message) = match text.split_once(": ") {
        Some((f, m)) if !f.is_empty() && !f.contains(' ') => (f, m),
        _ => ("", text),
    };
    let (field, message) = plain_error(if field.is_empty() { "." } else { field }, message);
    let said = if field.is_empty() {
        format!("invalid query: {message}")
    } else {
        format!("invalid query parameter {field}: {message}")
    };
    field_refusal(StatusCode::BAD_REQUEST, "invalid_query", said, &field, &message)
}

/// A refusal about one `field` (empty for the whole body or query), which `details.fields`
/// names as a validation failure names its fields, so a client reads both the same way.
fn field_refusal(
    status: StatusCode,
    code: &'static str,
    said: String,
    field: &str,
    message: &str,
) -> ApiError {
    ApiError::new(status, code, said)
        .with_details(serde_json::json!({ "fields": [{ "field": field, "message": message }] }))
}

// ---------------------------------------------------------------------------------------------
// Who is calling.

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let auth = &state.inner.auth;
        if auth.mode() == AuthMode::NoAuthLoopback {
            crate::loopback::check_no_auth_request(parts)?;
            return Ok(Caller::loopback());
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing bearer token (Authorization: Bearer …)",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty() && t.len() <= 512)
            .ok_or_else(|| ApiError::unauthorized("malformed Authorization header; use Bearer <token>"))?;
        auth.authenticate(state.inner.store.as_ref(), token).await
    }
}

impl<A: Allowed> FromRequestParts<AppState> for Authorized<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(A::ROLES)?;
        Ok(Authorized(caller, std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::{plain_error, query_error};

    #[test]
    fn shape_errors_name_the_field_in_json_words() {
        assert_eq!(
            plain_error(".", "missing field `name` at line 1 column 2"),
            ("name".to_string(), "is required".to_string())
        );
        assert_eq!(
            plain_error("github", "missing field `webhook_secret` at line 1 column 40"),
            ("github.webhook_secret".to_string(), "is required".to_string())
        );
        assert_eq!(
            plain_error(
                "slots",
                "invalid type: string \"x\", expected u32 at line 1 column 12"
            ),
            (
                "slots".to_string(),
                "invalid type: string \"x\", expected a whole number, 0 or more".to_string()
            )
        );
        assert_eq!(
            plain_error(
                "agents[0]",
                "invalid type: string \"a\", expected struct AgentInfo at line 1 column 9"
            ),
            (
                "agents[0]".to_string(),
                "invalid type: string \"a\", expected an object".to_string()
            )
        );
        let e = query_error("Failed to deserialize query string: limit: invalid digit found in string");
        assert_eq!(
            e.message,
            "invalid query parameter limit: invalid digit found in string"
        );
        let e = query_error("Failed to deserialize query string: unknown field `x`, expected `a`");
        assert_eq!(e.message, "invalid query: unknown field `x`, expected `a`");
        // A message that merely contains the words is kept whole.
        assert_eq!(
            plain_error("x", "unknown variant `at line 3`, expected one of `a`, `b`").1,
            "unknown variant `at line 3`, expected one of `a`, `b`"
        );
    }
}
