//! Delivering notifications: a loop that finds the task ends each notification wants (into the
//! store's outbox) and POSTs each delivery to its URL, signed, retried with backoff until the
//! endpoint answers 2xx or the attempts run out (docs/notifications.md).
//!
//! Safe with several replicas: finding an end twice adds one delivery (the outbox's unique
//! key), and a due delivery is leased to one replica while it is sent. A replica that dies
//! mid-send leaves the lease to run out and another sends it again, under the same delivery
//! id — delivery is at least once, and receivers dedupe by `X-Agentpool-Delivery`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentpool_core::Timestamp;
use agentpool_core::notification::{
    Delivery, DeliveryBody, DeliveryState, Format, NotificationSpec, PingBody, PingResult, chat_text,
};
use agentpool_store::Result;
use agentpool_store::notifications::DeliveryAttempt;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How far before the last scan each scan looks again: an end written with an earlier time
/// (a transaction that committed late, a replica whose clock is behind) is still found.
pub const LOOKBACK_MS: i64 = 30_000;
/// How long one request may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// How long delivered and failed deliveries stay listed.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Deliveries taken per query and sent at once.
const BATCH: u32 = 32;
const PARALLEL: usize = 8;
/// A batch is sent within `BATCH / PARALLEL` rounds of at most [`TIMEOUT`]; the lease is
/// longer, so no other replica sends the same one meanwhile.
const LEASE_MS: i64 = 120_000;
/// A pass stops taking more deliveries after this long, so that a slow endpoint with many
/// due deliveries does not keep the next pass from finding new task ends.
const PASS_BUDGET: Duration = Duration::from_secs(15);
/// The first retry's delay; each next one is three times longer, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The HTTP client deliveries are sent with: no redirects (a delivery goes where it was set
/// to go), a timeout, agentpool's user agent.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("agentpool/", env!("CARGO_PKG_VERSION")))
        .build()
        // Only a TLS backend that cannot start fails here; without one no client works.
        .unwrap_or_default()
}

/// Run until `stop`: a pass every `interval`.
pub async fn run(state: AppState, interval: Duration, stop: CancellationToken) {
    loop {
        match pass(&state).await {
            // A database outage is said once, by the maintenance loop.
            Err(e) if e.is_unavailable() => {
                tracing::debug!(error = %e, "notifications: pass failed; the next one tries again")
            }
            Err(e) => tracing::warn!(error = %e, "notifications: pass failed; the next one tries again"),
            Ok(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Task ends found for a notification.
    pub found: u64,
    pub delivered: u32,
    /// Attempts that failed and will be tried again.
    pub retried: u32,
    /// Deliveries given up.
    pub failed: u32,
}

/// Find new task ends for every notification, then send every due delivery. Public for tests
/// that drive the loop themselves.
pub async fn pass(state: &AppState) -> Result<PassReport> {
    let store = state.store();
    let mut report = PassReport::default();
    let mut specs: HashMap<String, NotificationSpec> = HashMap::new();
    for n in store.list_notifications().await? {
        match store.find_deliveries(&n.name, &n.spec, LOOKBACK_MS).await {
            Ok(found) => report.found += found,
            Err(e) => {
                tracing::warn!(notification = %n.name, error = %e, "notifications: finding task ends failed")
            }
        }
        specs.insert(n.name, n.spec);
    }
    let started = Instant::now();
    loop {
        let due = store.take_due_deliveries(BATCH, LEASE_MS).await?;
        let full = due.len() == BATCH as usize;
        let specs = &specs;
        let sent: Vec<(i64, Option<DeliveryAttempt>)> = futures::stream::iter(due)
            .map(|d| async move { (d.id, attempt(state, specs, d).await) })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (id, attempt) in sent {
            // A delivery of a notification deleted meanwhile is gone with it.
            let Some(attempt) = attempt else { continue };
            match attempt.state {
                DeliveryState::Delivered => report.delivered += 1,
                DeliveryState::Pending => report.retried += 1,
                DeliveryState::Failed => report.failed += 1,
            }
            state.inner.metrics.notification_delivery(attempt.state);
            if let Err(e) = store.record_delivery(id, &attempt).await
                && !matches!(e, agentpool_store::StoreError::NotFound { .. })
            {
                return Err(e);
            }
        }
        if !full || started.elapsed() > PASS_BUDGET {
            return Ok(report);
        }
    }
}

/// Send `d` once; what came of it, or `None` when its notification is gone or cannot be read
/// now (then its lease runs out and a later pass takes it again).
async fn attempt(
    state: &AppState,
    specs: &HashMap<String, NotificationSpec>,
    d: Delivery,
) -> Option<DeliveryAttempt> {
    let spec = match specs.get(&d.notification) {
        Some(s) => Cow::Borrowed(s),
        // Set on another replica after this pass listed them.
        None => Cow::Owned(state.store().get_notification(&d.notification).await.ok()??.spec),
    };
    let number = d.attempts + 1;
    let outcome = send(state, &spec, &d).await;
    let now = state.store().time();
    let attempt = match outcome {
        Ok(status) => DeliveryAttempt {
            state: DeliveryState::Delivered,
            status: Some(status),
            error: None,
            next_attempt_at: None,
        },
        Err(failure) => {
            let last = failure.permanent || number >= MAX_ATTEMPTS;
            if last {
                tracing::warn!(notification = %d.notification, delivery = d.id, task = %d.task_id,
                    attempts = number, error = %failure.message, "notification: giving up on a delivery");
            } else {
                tracing::info!(notification = %d.notification, delivery = d.id, task = %d.task_id,
                    attempts = number, error = %failure.message, "notification: delivery failed; will retry");
            }
            DeliveryAttempt {
                state: if last {
                    DeliveryState::Failed
                } else {
                    DeliveryState::Pending
                },
                status: failure.status,
                error: Some(failure.message),
                next_attempt_at: (!last).then(|| retry_at(now, number, failure.retry_after)),
            }
        }
    };
    Some(attempt)
}

/// Why an attempt failed.
struct Failure {
    status: Option<u16>,
    message: String,
    /// No later attempt can do better (the task is gone).
    permanent: bool,
    /// What the endpoint asked for (`Retry-After` in seconds).
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            status: None,
            message: message.into(),
            permanent: false,
            retry_after: None,
        }
    }
}

/// POST delivery `d` to `spec.url`: the task's end, read now.
async fn send(state: &AppState, spec: &NotificationSpec, d: &Delivery) -> std::result::Result<u16, Failure> {
    let detail = match state.store().get_task(d.task_id).await {
        Ok(Some(detail)) => detail,
        Ok(None) => {
            return Err(Failure {
                permanent: true,
                ..Failure::new("the task no longer exists (purged)")
            });
        }
        Err(e) => return Err(Failure::new(format!("reading the task: {e}"))),
    };
    let url = state.task_url(d.task_id);
    let body = match spec.format {
        Format::Json => encode(&DeliveryBody {
            event: d.event.clone(),
            delivery: d.id,
            notification: d.notification.clone(),
            url,
            task: detail,
        }),
        Format::Slack => encode(&serde_json::json!({ "text": chat_text(&detail.task, url.as_deref()) })),
    }?;
    post(state, spec, &d.event, Some(d.id), body).await
}

/// `body` as the bytes sent (and signed).
fn encode(body: &impl serde::Serialize) -> std::result::Result<Vec<u8>, Failure> {
    serde_json::to_vec(body).map_err(|e| Failure::new(format!("encoding the body: {e}")))
}

/// Send a `ping` to notification `name` now, outside the outbox, and say how it went: what
/// `notifications test` shows when a notification is set up.
pub async fn ping(state: &AppState, name: &str, spec: &NotificationSpec) -> PingResult {
    let started = Instant::now();
    let body = match spec.format {
        Format::Json => encode(&PingBody {
            event: "ping".into(),
            notification: name.into(),
        }),
        Format::Slack => {
            encode(&serde_json::json!({ "text": format!("agentpool: ping from notification {name}") }))
        }
    };
    let outcome = match body {
        Ok(body) => post(state, spec, "ping", None, body).await,
        Err(f) => Err(f),
    };
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(status) => PingResult {
            delivered: true,
            status: Some(status),
            error: None,
            took_ms,
        },
        Err(f) => PingResult {
            delivered: false,
            status: f.status,
            error: Some(f.message),
            took_ms,
        },
    }
}

/// POST the encoded `body` to `spec.url` as event `event` (delivery `delivery`, absent for a ping),
/// signed when the spec says; the 2xx status, or why not. Nothing of the URL (its path or
/// query may hold a token) or the secret goes into the failure.
async fn post(
    state: &AppState,
    spec: &NotificationSpec,
    event: &str,
    delivery: Option<i64>,
    body: Vec<u8>,
) -> std::result::Result<u16, Failure> {
    let mut req = state
        .inner
        .notify_http
        .post(&spec.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Agentpool-Event", event);
    if let Some(id) = delivery {
        req = req.header("X-Agentpool-Delivery", id.to_string());
    }
    if let Some(name) = &spec.secret_credential {
        let secret = crate::github::credential(state, name)
            .await
            .map_err(|e| Failure::new(format!("signing: {e}")))?;
        req = req.header(
            "X-Agentpool-Signature-256",
            agentpool_github::signature::sign(&secret, &body),
        );
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::new(describe(e.without_url())))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Err(Failure {
        status: Some(status.as_u16()),
        retry_after,
        ..Failure::new(format!("HTTP {status}"))
    })
}

/// A request error in words (without its URL, taken off by the caller): "timed out after
/// 10 s", or the chain of causes ("error sending request: … tcp connect error: Connection
/// refused").
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("timed out after {} s", TIMEOUT.as_secs());
    }
    let mut words = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        words.push_str(": ");
        words.push_str(&s.to_string());
        source = s.source();
    }
    words
}

/// When attempt `number + 1` is made: 15 s after the first, three times longer each time, at
/// most an hour, and not before the endpoint's `Retry-After` (capped at an hour too).
fn retry_at(now: Timestamp, number: u32, retry_after: Option<Duration>) -> Timestamp {
    let backoff = FIRST_BACKOFF
        .saturating_mul(3u32.saturating_pow(number.saturating_sub(1)))
        .min(MAX_BACKOFF);
    let wait = retry_after.map_or(backoff, |r| r.min(MAX_BACKOFF).max(backoff));
    now + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour_and_honour_retry_after() {
        let now = Timestamp::default();
        let waits: Vec<i64> = (1..MAX_ATTEMPTS)
            .map(|n| (retry_at(now, n, None) - now).num_seconds())
            .collect();
        assert_eq!(waits, [15, 45, 135, 405, 1215, 3600, 3600]);
        assert_eq!(
            (retry_at(now, 1, Some(Duration::from_secs(120))) - now).num_seconds(),
            120
        );
        assert_eq!(
            (retry_at(now, 1, Some(Duration::from_secs(1))) - now).num_seconds(),
            15
        );
        assert_eq!(
            (retry_at(now, 1, Some(Duration::from_secs(86_400))) - now).num_seconds(),
            3600
        );
    }
}
