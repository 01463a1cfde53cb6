//! agentpool's HTTP client: the task API (submit, list, get, cancel, retry, events and their
//! live stream, workers, projects, builds, credentials) and the worker protocol, speaking the
//! wire types of `agentpool_core::protocol`. The CLI, the workers and the tests all go through
//! it, so there is one way to talk to a server.
//!
//! TLS is rustls: `https://` URLs are checked against the system's roots, plus an optional
//! extra CA certificate ([`ClientConfig::ca_pem`]) for a private CA.

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod notifications;
mod schedules;
mod sse;
mod tasks;
mod worker;

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use agentpool_core::protocol::{ErrorBody, ErrorDetail};

use error::Limit;
pub use error::{Error, Result};
pub use sse::sse_events;

/// Time allowed for an ordinary call by default; long polls get their wait on top.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server is and how to reach it.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's root URL (`http://127.0.0.1:7070`, `https://agentpool.example`).
    pub base_url: String,
    /// Bearer token sent with every call.
    pub token: Option<String>,
    /// PEM of an extra CA certificate to trust besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    /// Time allowed for an answer to an ordinary call (a long poll gets its wait on top).
    pub call_timeout: Duration,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            ca_pem: None,
            connect_timeout: Duration::from_secs(10),
            call_timeout: CALL_TIMEOUT,
        }
    }

    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Allow `limit` for an answer to an ordinary call.
    pub fn call_timeout(mut self, limit: Duration) -> Self {
        self.call_timeout = limit;
        self
    }

    /// Trust this CA (PEM) besides the system's roots.
    pub fn ca_pem(mut self, pem: Option<Vec<u8>>) -> Self {
        self.ca_pem = pem;
        self
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

/// An error answer that is not an agentpool server's (its error is JSON with a code): from a
/// proxy in front of it, or from another service the URL names. An HTML page is not repeated;
/// a line of plain text (a proxy's "upstream connect error") is.
fn foreign_answer(base: &str, status: reqwest::StatusCode, plain: Option<&str>) -> String {
    let said = plain
        .and_then(|t| t.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(|l| format!(": {}", agentpool_core::render::clip(l, 200)))
        .unwrap_or_default();
    format!(
        "{status} from {base}{said} (not an agentpool server's answer: a proxy in front of it, \
         or --server names another service)"
    )
}

/// Client of one agentpool server. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    connect_timeout: Duration,
    call_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client of the server at `base` (`http://host:7070`) with an optional bearer token.
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        Self::with_config(ClientConfig::new(base).token(token))
    }

    pub fn with_config(config: ClientConfig) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/').to_string();
        // Credentials in the URL would be printed wherever the URL is (errors, logs, a pod's
        // status), and agentpool authenticates with a bearer token anyway: refused, without
        // repeating the URL.
        if let Ok(url) = reqwest::Url::parse(&base)
            && (!url.username().is_empty() || url.password().is_some())
        {
            return Err(Error::Config(
                "the server URL must not hold a user name or password; give the token with \
                 --token (AGENTPOOL_TOKEN)"
                    .into(),
            ));
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!(
                "server URL {base:?} must start with http:// or https://"
            )));
        }
        // The API's paths start with /v1: a URL that ends in it would ask for /v1/v1/….
        if let Some(root) = base.strip_suffix("/v1") {
            return Err(Error::Config(format!(
                "server URL {base:?} ends in /v1: give the server's address without the API \
                 path ({root})"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true);
        if let Some(pem) = &config.ca_pem {
            // A PEM without a certificate in it parses to nothing: refuse it rather than
            // silently trusting no extra CA.
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("CA certificate is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config("the CA PEM holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            token: config.token,
            connect_timeout: config.connect_timeout,
            call_timeout: config.call_timeout,
        })
    }

    /// The server's root URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// How long a call may wait for its answer: the ordinary limit, plus `wait` for a long
    /// poll. `None` for a stream, which has no end to wait for.
    fn limit(&self, wait: Option<Duration>) -> Limit {
        Limit {
            connect: self.connect_timeout,
            answer: wait.map(|w| self.call_timeout + w),
        }
    }

    /// Send within `limit`, and turn a non-2xx answer into its [`Error`].
    async fn send(&self, mut r: RequestBuilder, limit: Limit) -> Result<reqwest::Response> {
        if let Some(answer) = limit.answer {
            r = r.timeout(answer);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| Error::transport(&self.base, e, limit))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let plain = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/plain"));
        let text = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| ErrorDetail {
                code: String::new(),
                message: foreign_answer(&self.base, status, plain.then_some(text.as_str())),
                details: serde_json::Value::Null,
            });
        Err(Error::from_answer(status.as_u16(), detail))
    }

    async fn json<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        let limit = self.limit(Some(Duration::ZERO));
        self.read_json(self.send(r, limit).await?, limit).await
    }

    /// The answer's body as JSON; `limit` is the one its request was sent with (it covers the
    /// body too).
    async fn read_json<T: DeserializeOwned>(&self, resp: reqwest::Response, limit: Limit) -> Result<T> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(&self.base, e, limit))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        m: Method,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.json(self.req(m, path).json(body)).await
    }

    /// `GET path`, its JSON answer.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.req(Method::GET, path)).await
    }

    /// `DELETE path`, answered with no body.
    async fn delete(&self, path: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, path, None).await
    }

    async fn call_empty<B: Serialize + ?Sized>(&self, m: Method, path: &str, body: Option<&B>) -> Result<()> {
        let mut r = self.req(m, path);
        if let Some(b) = body {
            r = r.json(b);
        }
        self.send(r, self.limit(Some(Duration::ZERO))).await.map(|_| ())
    }

    /// Is a server answering there, and not draining (`GET /readyz`)?
    pub async fn ready(&self) -> Result<()> {
        self.call_empty::<()>(Method::GET, "/readyz", None).await
    }
}

/// Whether a successful answer has no body to read (204).
fn is_no_content(resp: &reqwest::Response) -> bool {
    resp.status() == StatusCode::NO_CONTENT
}

/// What a path may carry of a name unencoded: letters, digits, `-`, `_` and `~`. The rest is
/// encoded, `.` too, so that a name of `..` is not taken as a step up the path.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// `name` as one path segment. A name a user typed (`web#2`, `a/b`, `web?x`) must reach the
/// server as that name, to be refused or not found, and never as another: unencoded,
/// `projects delete 'web#2'` would delete project `web`.
pub(crate) fn seg(name: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(name, SEGMENT)
}
