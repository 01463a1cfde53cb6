//! The worker's local health probe (`agentpool worker --health-listen`): `/healthz` answers
//! while the process runs, `/readyz` only while the worker is registered and claiming — what a
//! Kubernetes liveness and readiness probe, or a supervisor, asks.

use std::net::SocketAddr;

use agentpool_runner::WorkerHealth;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn router(health: watch::Receiver<WorkerHealth>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route(
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
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router(health))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!("health probe stopped: {e}");
        }
    });
    Ok(bound)
}
