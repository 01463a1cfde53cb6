//! What a server without auth answers: only requests a program on this machine makes to it
//! by a loopback name, never what a web page in a browser here sends on another site's behalf.
//!
//! Without auth every caller is admin, and admins can run commands. A page of another site
//! can make a browser send requests to 127.0.0.1: a DNS-rebinding page (evil.example resolving
//! to 127.0.0.1) sends its own name in `Host`; any other page posting here sends its own
//! `Origin` and `Sec-Fetch-Site: cross-site`. The CLI and the workers send neither.

use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// The host of an authority (`host:port`, `[::1]:port`, `host`).
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Whether `host` names this machine's loopback interface.
fn is_loopback_name(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request's `Host` is a loopback name (a missing one is not).
pub fn addressed_to_loopback(headers: &HeaderMap) -> bool {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name)
        .is_some_and(is_loopback_name)
}

/// The same for a request's parts, where an HTTP/2 request names its host in the URI's
/// authority instead of `Host`.
fn parts_addressed_to_loopback(parts: &Parts) -> bool {
    match parts.uri.authority() {
        Some(a) if !parts.headers.contains_key(header::HOST) => is_loopback_name(a.host()),
        _ => addressed_to_loopback(&parts.headers),
    }
}

/// Whether a browser says the request comes from a page of another origin than a loopback
/// one: an `Origin` that is not `scheme://loopback[:port]` (`null` included), or
/// `Sec-Fetch-Site` other than `same-origin` or `none` (typed in the address bar).
fn sent_by_another_site(headers: &HeaderMap) -> bool {
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|o| {
        let authority = o
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        !authority.map(host_name).is_some_and(is_loopback_name)
    });
    let foreign_fetch = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| !matches!(s, "same-origin" | "none"));
    foreign_origin || foreign_fetch
}

/// Refuse what a server without auth must not answer (see the module's doc).
pub fn check_no_auth_request(parts: &Parts) -> Result<(), ApiError> {
    let headers = &parts.headers;
    if !parts_addressed_to_loopback(parts) {
        return Err(ApiError::forbidden(
            "this server runs without auth and answers only requests addressed to a loopback name (127.0.0.1, localhost)",
        ));
    }
    if sent_by_another_site(headers) {
        return Err(ApiError::forbidden(
            "this server runs without auth and answers no request a web page of another site sends",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pairs: &[(&'static str, &str)]) -> Parts {
        let mut req = axum::http::Request::builder().uri("/v1/tasks");
        for (k, v) in pairs {
            req = req.header(*k, *v);
        }
        req.body(()).expect("request").into_parts().0
    }

    #[test]
    fn loopback_names_and_own_pages_only() {
        for (pairs, ok) in [
            (vec![("host", "127.0.0.1:7700")], true),
            (vec![("host", "localhost:7700")], true),
            (vec![("host", "LOCALHOST")], true),
            (vec![("host", "[::1]:7700")], true),
            (vec![("host", "app.localhost")], true),
            (
                vec![("host", "127.0.0.1:7700"), ("origin", "http://127.0.0.1:7700")],
                true,
            ),
            (
                vec![("host", "127.0.0.1:7700"), ("sec-fetch-site", "same-origin")],
                true,
            ),
            (vec![("host", "127.0.0.1:7700"), ("sec-fetch-site", "none")], true),
            (vec![], false),
            (vec![("host", "evil.example:7700")], false),
            (vec![("host", "127.0.0.1.evil.example")], false),
            (
                vec![("host", "127.0.0.1:7700"), ("origin", "https://evil.example")],
                false,
            ),
            (vec![("host", "127.0.0.1:7700"), ("origin", "null")], false),
            (
                vec![("host", "127.0.0.1:7700"), ("sec-fetch-site", "cross-site")],
                false,
            ),
            (
                vec![("host", "127.0.0.1:7700"), ("sec-fetch-site", "same-site")],
                false,
            ),
        ] {
            assert_eq!(check_no_auth_request(&parts(&pairs)).is_ok(), ok, "{pairs:?}");
        }
        // HTTP/2: the host is the URI's authority.
        let h2 = |uri: &str| {
            let req = axum::http::Request::builder().uri(uri).body(()).expect("request");
            check_no_auth_request(&req.into_parts().0).is_ok()
        };
        assert!(h2("http://127.0.0.1:7700/v1/tasks"));
        assert!(!h2("http://evil.example:7700/v1/tasks"));
    }
}
