//! agentpool's HTTP server: the task API, the worker protocol with long-poll claims, bearer
//! auth, credentials encrypted at rest, live task events over SSE, the maintenance loop,
//! Prometheus metrics and the OpenAPI document (docs/architecture.md).
//!
//! Entry points for the binary: [`ServerConfig`] + [`serve`] (or [`start`] to learn the bound
//! address first), [`router`] for in-process use, and [`auth::create_token`] for
//! `agentpool tokens create`. Clients use the `agentpool-client` crate.

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod auth;
pub mod crypto;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod extract;
pub mod github;
pub mod loopback;
pub mod maintenance;
pub mod metrics;
pub mod notifications;
pub mod openapi;
mod openapi_rules;
pub mod routes;
pub mod schedules;
pub mod state;
mod strict_json;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentpool_store::{Store, StoreError};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::serve::ListenerExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use auth::{AuthMode, Role, create_token, create_unique_token, hash_token};
pub use crypto::{Secrets, ServerKey};
pub use error::{ApiError, ErrorBody};
pub use routes::route_list;
pub use state::AppState;

/// Everything `agentpool serve` configures. Build it with [`ServerConfig::new`] and adjust
/// fields; the defaults are those docs/guarantees.md describes.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `sqlite://path` (or a plain path) or `postgres://…`; used by [`serve`] and [`start`].
    pub database_url: String,
    pub listen: SocketAddr,
    pub auth: AuthMode,
    /// Key that encrypts credentials at rest; without one, credential writes answer 503.
    pub server_key: Option<ServerKey>,
    /// Lease length granted at claim and extended by each heartbeat (default 60 s).
    pub lease_ttl: Duration,
    /// A worker silent for this long is marked offline (default 60 s, the default lease TTL:
    /// by then its leases have expired).
    pub heartbeat_threshold: Duration,
    /// Finished tasks and their events are purged after this (default 7 days).
    pub retention: Duration,
    /// Largest request body accepted (default 2 MiB); larger ones get 413.
    pub body_limit: usize,
    /// Events one attempt may send to this server (default 250,000; 0: no limit); past it,
    /// appends get 413 `event_limit`. agentpool's own worker bounds its output far below this:
    /// the limit keeps a flooding worker (an old or a custom one) from filling the database.
    pub max_events_per_attempt: u64,
    /// Accept `file://` and path repositories (embedded mode).
    pub allow_local_repos: bool,
    /// Largest per-task timeout accepted at submit.
    pub max_timeout_secs: u64,
    /// Period of the maintenance loop (default 5 s); `None` disables the loop.
    pub maintenance_interval: Option<Duration>,
    /// Long-poll claims that may wait at once on this server; more get 429.
    pub max_waiting_claims: usize,
    /// Terminate TLS with this certificate and key (PEM); plain HTTP when absent.
    pub tls: Option<tls::TlsFiles>,
    /// The URL users reach this server at (links to tasks in GitHub status comments).
    pub public_url: Option<String>,
    /// Period of the GitHub loop (status comments, pull requests; default 2 s); `None`
    /// disables it.
    pub github_interval: Option<Duration>,
    /// Period of the notifications loop (default 2 s); `None` disables it.
    pub notification_interval: Option<Duration>,
}

/// How long finished tasks are kept by default: a week.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl ServerConfig {
    pub fn new(database_url: impl Into<String>, listen: SocketAddr) -> Self {
        Self {
            database_url: database_url.into(),
            listen,
            auth: AuthMode::Tokens,
            server_key: None,
            lease_ttl: Duration::from_secs(60),
            heartbeat_threshold: Duration::from_secs(60),
            retention: DEFAULT_RETENTION,
            body_limit: 2 * 1024 * 1024,
            max_events_per_attempt: 250_000,
            allow_local_repos: false,
            max_timeout_secs: agentpool_core::spec::MAX_TIMEOUT_SECS,
            maintenance_interval: Some(Duration::from_secs(5)),
            max_waiting_claims: 10_000,
            tls: None,
            public_url: None,
            github_interval: Some(Duration::from_secs(2)),
            notification_interval: Some(Duration::from_secs(2)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no-auth mode is only allowed on a loopback address, not {0}")]
    NoAuthOnNonLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server stopped with an I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The HTTP router for `state`, with the body limit and JSON fallbacks applied. Use it with
/// `tower::ServiceExt::oneshot` in tests, or nest it in a larger app (the dashboard).
pub fn router(state: AppState, body_limit: usize) -> Router {
    let (app, _doc) = routes::api().split_for_parts();
    app.method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    })
    // An API client gets the API's JSON; a person who mistyped a dashboard address, a page.
    .fallback(|uri: axum::http::Uri| async move {
        let path = uri.path();
        if path == "/v1" || path.starts_with("/v1/") {
            axum::response::IntoResponse::into_response(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            ))
        } else {
            dashboard::no_such_page().await
        }
    })
    .layer(DefaultBodyLimit::max(body_limit))
    .layer(axum::middleware::map_response(api_headers))
    .with_state(state.clone())
    .merge(dashboard::router(state))
}

/// Headers on every API answer: its JSON is never to be sniffed as something else, and never
/// kept by a cache (answers hold tasks, results and, once, a new token's value). An answer
/// that says how to cache itself keeps what it says.
async fn api_headers(mut r: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// A running server: where it listens, and how to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Whether it serves TLS (`https://`).
    pub tls: bool,
    pub state: AppState,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// Drain (claims 503, long-polls released, `/readyz` 503), stop accepting, finish in-flight
    /// requests, stop maintenance; resolves when the server has stopped.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.cancel();
        self.task.await?
    }

    /// Resolves when the server stops (after [`RunningServer::shutdown`] or an I/O error).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await?
    }

    /// The server's root URL, `http://ADDR` (or `https://ADDR` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A token that stops the server when cancelled (e.g. from a signal handler).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Open the database named in `config`, bind, and run in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServeError> {
    let store = agentpool_store::open_store(&config.database_url).await?;
    start_with_store(config, store).await
}

/// Bind and run in the background on an already-open store (embedded mode, tests). With
/// `listen` on port 0 the OS picks a port: read it from [`RunningServer::addr`].
pub async fn start_with_store(
    config: ServerConfig,
    store: Arc<dyn Store>,
) -> Result<RunningServer, ServeError> {
    if config.auth == AuthMode::NoAuthLoopback && !config.listen.ip().is_loopback() {
        return Err(ServeError::NoAuthOnNonLoopback(config.listen));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    serve_on(listener, config, store)
}

/// Serve `store` on an already-bound `listener` in the background (`config.listen` is not
/// used). Tests bind `127.0.0.1:0` and talk to [`RunningServer::url`] over HTTP, the path
/// production takes.
pub fn serve_on(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    store: Arc<dyn Store>,
) -> Result<RunningServer, ServeError> {
    let addr = listener.local_addr()?;
    if config.auth == AuthMode::NoAuthLoopback && !addr.ip().is_loopback() {
        return Err(ServeError::NoAuthOnNonLoopback(addr));
    }
    // Load the certificate before anything starts, so a bad file fails `serve` at once.
    let tls_config = match config.tls.as_ref().map(tls::load).transpose()? {
        Some(tls::Loaded { config, warning }) => {
            if let Some(w) = warning {
                tracing::warn!("{w}");
            }
            Some(config)
        }
        None => None,
    };
    let tls = tls_config.is_some();
    let state = AppState::new(store, &config);
    let app = router(state.clone(), config.body_limit);
    let stop = CancellationToken::new();

    let maint = config.maintenance_interval.map(|interval| {
        let cfg = maintenance::MaintenanceConfig {
            interval,
            heartbeat_threshold: config.heartbeat_threshold,
            retention: config.retention,
            purge_every: 12,
        };
        tokio::spawn(maintenance::run(state.clone(), cfg, stop.clone()))
    });

    let github = config
        .github_interval
        .map(|interval| tokio::spawn(github::notifier::run(state.clone(), interval, stop.clone())));

    let notify = config
        .notification_interval
        .map(|interval| tokio::spawn(notifications::run(state.clone(), interval, stop.clone())));

    let task = {
        let stop = stop.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let shutdown = {
                let stop = stop.clone();
                let state = state.clone();
                async move {
                    stop.cancelled().await;
                    state.drain();
                }
            };
            let r = match tls_config {
                Some(cfg) => match tls::TlsListener::new(listener, cfg) {
                    Ok(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
                    Err(e) => Err(e),
                },
                None => {
                    // Without TCP_NODELAY a response written in two segments waits for the
                    // client's delayed ACK (~40 ms): fatal for long-poll latency.
                    let listener = listener.tap_io(|tcp| {
                        if let Err(e) = tcp.set_nodelay(true) {
                            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                        }
                    });
                    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
                }
            };
            stop.cancel();
            if let Some(m) = maint {
                let _ = m.await;
            }
            if let Some(g) = github {
                let _ = g.await;
            }
            if let Some(n) = notify {
                let _ = n.await;
            }
            r.map_err(ServeError::from)
        })
    };
    tracing::info!(%addr, auth = ?config.auth, tls, "agentpool server listening");
    Ok(RunningServer {
        addr,
        tls,
        state,
        stop,
        task,
    })
}

/// Run until `shutdown` resolves, then drain and stop. `on_bound` is called with the bound
/// address once listening (so `--listen 127.0.0.1:0` can report its port).
pub async fn serve(
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let store = agentpool_store::open_store(&config.database_url).await?;
    let server = start_with_store(config, store.clone()).await?;
    on_bound(server.addr);
    let stop = server.stop_token();
    let addr = server.addr;
    let result = tokio::select! {
        _ = shutdown => {
            tracing::info!(%addr, "shutting down: finishing the requests under way");
            server.shutdown().await
        }
        _ = stop.cancelled() => server.wait().await,
    };
    match &result {
        Ok(()) => tracing::info!(%addr, "server stopped"),
        Err(e) => tracing::error!(%addr, error = %e, "server stopped on an error"),
    }
    store.close().await;
    result
}

/// A server on a free loopback port without auth, serving `store` with `lease_ttl` and no
/// maintenance loop (the caller drives maintenance when it wants it): what tests and tools
/// that need a real server next to a store they hold use.
pub async fn serve_loopback(store: Arc<dyn Store>, lease_ttl: Duration) -> Result<RunningServer, ServeError> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let mut config = ServerConfig::new("", listener.local_addr()?);
    config.auth = AuthMode::NoAuthLoopback;
    config.allow_local_repos = true;
    config.lease_ttl = lease_ttl;
    config.maintenance_interval = None;
    serve_on(listener, config, store)
}
