//! The worker's local health probe (`agentpool worker --health-listen`): `/healthz` answers
//! while the process runs, `/readyz` only while the worker is registered and claiming — what a
//! Kubernetes liveness and readiness probe, or a supervisor, asks — and `/metrics` gives the
//! worker's mirror cache (hits, misses, size) to a Prometheus scrape.

use std::net::SocketAddr;

use agentpool_runner::{HealthReporter, WorkerHealth};
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The cache's figures in the Prometheus text format (nothing before the first measure, or
/// without a cache).
fn metrics(cache: Option<agentpool_core::CacheStats>) -> String {
    let Some(c) = cache else {
        return String::new();
    };
    let mut out = String::new();
    for (name, kind, help, v) in [
        (
            "hits_total",
            "counter",
            "Tasks that found their repository's mirror",
            c.hits,
        ),
        (
            "misses_total",
            "counter",
            "Tasks that had to create their repository's mirror",
            c.misses,
        ),
        ("bytes", "gauge", "Bytes the mirrors take on disk", c.bytes),
        ("mirrors", "gauge", "Mirrors in the cache", u64::from(c.mirrors)),
    ] {
        let m = format!("agentpool_worker_mirror_cache_{name}");
        out.push_str(&format!("# HELP {m} {help}\n# TYPE {m} {kind}\n{m} {v}\n"));
    }
    out
}

fn router(health: watch::Receiver<WorkerHealth>, reporter: HealthReporter) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let body = metrics(reporter.cache());
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let h = *health.borrow();
                async move {
                    let status = if h.is_ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, format!("{}\n", h.as_str())).into_response()
                }
            }),
        )
}

/// Bind `addr` and serve the probe until `stop`; returns the address bound (port 0 resolved).
pub async fn serve(
    addr: SocketAddr,
    health: watch::Receiver<WorkerHealth>,
    reporter: HealthReporter,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router(health, reporter))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!("health probe stopped: {e}");
        }
    });
    Ok(bound)
}
