//! `POST /v1/webhooks/github`: GitHub's webhook deliveries. The signature is checked before
//! anything is stored; a delivery already handled answers 200 and does nothing; events that
//! match a project's trigger become tasks (one per event, by idempotency key, however often
//! or concurrently it arrives) and get a GitHub link the notifier reports through.

use std::time::Duration;

use agentpool_core::{TaskId, TaskSpec};
use agentpool_github::payload::{Envelope, RepositoryOnly};
use agentpool_github::{Decision, OpenedPr, signature, trigger};
use agentpool_store::StoreError;
use agentpool_store::github::GithubLink;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiBody;
use crate::github::{SecretError, credential, projects_for};
use crate::routes::prepare::prepare_spec;
use crate::state::{AppState, TaskChange};

/// The answer to a delivery GitHub shows in its "Recent deliveries".
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookReply {
    /// `queued`, `canceled`, `duplicate`, `ignored` or `pong`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Whether this delivery created the task (false: the event had already made it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// `canceled`: the tasks this event stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canceled: Option<Vec<String>>,
}

impl WebhookReply {
    fn status(status: &str, reason: Option<&str>) -> Self {
        Self {
            status: status.into(),
            reason: reason.map(str::to_string),
            task_id: None,
            created: None,
            canceled: None,
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

#[utoipa::path(
    post, path = "/v1/webhooks/github", tag = "github",
    request_body(content = String, description = "A GitHub webhook payload (JSON), signed with the project's webhook secret", content_type = "application/json"),
    params(
        ("X-GitHub-Event" = String, Header, description = "The event name"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's unique id"),
        ("X-Hub-Signature-256" = String, Header, description = "sha256=HMAC of the body under the webhook secret"),
    ),
    responses((status = 200, description = "Handled: tasks canceled (the issue or pull request was closed, its label removed, or `/agentpool cancel`), ignored, a duplicate delivery, or a ping", body = WebhookReply),
        (status = 202, description = "A task was queued (or had already been, for this event)", body = WebhookReply),
        (status = 401, description = "The signature matches no project wired to this repository; nothing was stored", body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    // Authenticated by the payload's signature, not a token.
    security(())
)]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    let event = header(&headers, "x-github-event")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Event header"))?
        .to_string();
    let delivery = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 100)
        .ok_or_else(|| ApiError::bad_request("missing or invalid X-GitHub-Delivery header"))?
        .to_string();
    let Some(sig) = header(&headers, "x-hub-signature-256") else {
        return Err(ApiError::unauthorized("missing X-Hub-Signature-256 header"));
    };
    let repo = serde_json::from_slice::<RepositoryOnly>(&body)
        .map_err(|_| ApiError::bad_request("the body is not a JSON webhook payload"))?
        .repository
        .map(|r| r.full_name);

    // Find the project whose secret signed this body; before that, nothing is stored.
    let projects = state.store().list_projects().await?;
    let mut matched = None;
    for (project, settings) in projects_for(&projects, repo.as_deref()) {
        let secret = match credential(&state, &settings.webhook_secret).await {
            Ok(s) => s,
            Err(SecretError::NoServerKey) => {
                return Err(ApiError::unavailable(
                    "no_server_key",
                    "this server has no key to read webhook secrets with: start it with --server-key (or AGENTPOOL_SERVER_KEY)",
                ));
            }
            Err(e) => {
                tracing::warn!(project = %project.spec.name, error = %e, "webhook secret unavailable");
                continue;
            }
        };
        if signature::verify(&secret, &body, sig) {
            matched = Some((project, settings));
            break;
        }
    }
    let Some((project, settings)) = matched else {
        tracing::info!(%event, %delivery, repository = repo.as_deref(), "webhook signature matches no project");
        return Err(ApiError::unauthorized(
            "the signature matches no project wired to this repository",
        ));
    };

    if state.store().github_delivery_seen(&delivery).await? {
        return Ok((StatusCode::OK, Json(WebhookReply::status("duplicate", None))).into_response());
    }
    if event == "ping" {
        state.store().github_record_delivery(&delivery, &event).await?;
        return Ok((StatusCode::OK, Json(WebhookReply::status("pong", None))).into_response());
    }
    let env: Envelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the {event} payload is not as GitHub sends it: {e}")))?;
    let repository = env
        .repository
        .as_ref()
        .map(|r| r.full_name.clone())
        .unwrap_or_else(|| settings.repository.clone());
    let opened = match trigger::pull_request_of(&event, &env) {
        Some(n) => state
            .store()
            .github_pr_tasks(&repository, n)
            .await?
            .map(|p| OpenedPr {
                branch: p.branch,
                last_task: p.last_task,
                automatic_follow_ups: p.automatic,
                closed: p.closed,
            }),
        None => None,
    };
    // A pull request agentpool opened takes no follow-ups once closed (a review or a failed
    // check afterwards would open a second pull request for its branch); reopened, it does.
    if let (Some(_), "pull_request", Some(pr)) = (&opened, event.as_str(), &env.pull_request) {
        let closed = match env.action.as_deref() {
            Some("closed") => Some(true),
            Some("reopened") => Some(false),
            _ => None,
        };
        if let Some(closed) = closed {
            state
                .store()
                .github_set_pr_closed(&repository, pr.number, closed)
                .await?;
        }
    }
    let review = match (&opened, trigger::review_of(&event, &env)) {
        (Some(_), Some((pr, review))) if settings.review_follow_ups => {
            review_comments(&state, settings, &repository, pr, review).await
        }
        _ => Vec::new(),
    };
    let t = match trigger::decide(&event, &env, settings, opened, &review) {
        Decision::Ignore(reason) => {
            tracing::debug!(%event, %delivery, reason, "webhook event ignored");
            state.store().github_record_delivery(&delivery, &event).await?;
            return Ok((
                StatusCode::OK,
                Json(WebhookReply::status("ignored", Some(reason))),
            )
                .into_response());
        }
        Decision::Stop { number, reason } => {
            let stopped = stop_tasks(&state, &repository, number, &reason).await?;
            state.store().github_record_delivery(&delivery, &event).await?;
            if stopped.is_empty() {
                return Ok((
                    StatusCode::OK,
                    Json(WebhookReply::status(
                        "ignored",
                        Some("no unfinished task to stop"),
                    )),
                )
                    .into_response());
            }
            // The status comments say `canceled` once the tasks end.
            state.wake_github();
            tracing::info!(%event, %delivery, number, reason, tasks = stopped.len(), "webhook event canceled tasks");
            let mut reply = WebhookReply::status("canceled", Some(&reason));
            reply.canceled = Some(stopped.iter().map(TaskId::to_string).collect());
            return Ok((StatusCode::OK, Json(reply)).into_response());
        }
        Decision::Start(t) => t,
    };

    let spec = TaskSpec {
        project: Some(project.spec.name.clone()),
        prompt: Some(t.prompt.clone()),
        // Keys are per project, so two projects wired to one repository each make their own
        // task of an event their webhooks both deliver; the project's name stays in the key,
        // as it was when keys were shared by all projects, so that a redelivery still finds
        // a task queued before.
        idempotency_key: Some(format!("{}/{}", project.spec.name, t.idempotency_key)),
        branch: t.follow_up.as_ref().map(|f| f.branch.clone()),
        follow_up_of: t.follow_up.as_ref().map(|f| f.last_task),
        ..TaskSpec::default()
    };
    let spec = prepare_spec(&state, spec, "")
        .await
        .map_err(ApiError::validation)?;
    let out = enqueue_retrying(&state, spec).await?;
    let link = GithubLink {
        task_id: out.task.id,
        project: project.spec.name.clone(),
        repository,
        number: Some(t.number),
        kind: t.kind.as_str().into(),
        comment_id: None,
        reported_state: None,
        pr_number: t.follow_up.as_ref().map(|_| t.number),
        pr_url: None,
        pr_state: None,
        branch: t.follow_up.as_ref().map(|f| f.branch.clone()),
        done: false,
        failures: 0,
        next_try_at: 0,
        created_at: 0,
    };
    // Inserted whether or not this delivery created the task: if an earlier one crashed
    // between the two writes, this one completes it.
    state.store().github_insert_link(&link).await?;
    state.store().github_record_delivery(&delivery, &event).await?;
    state.wake_github();
    tracing::info!(%event, %delivery, task = %out.task.id, created = out.created, kind = t.kind.as_str(), "webhook event queued a task");
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookReply {
            status: "queued".into(),
            reason: None,
            task_id: Some(out.task.id.to_string()),
            created: Some(out.created),
            canceled: None,
        }),
    )
        .into_response())
}

/// Cancel the unfinished tasks of issue or pull request `number`: queued ones at once, running
/// ones through their workers, saying why. A task that finished meanwhile is passed over.
async fn stop_tasks(state: &AppState, repository: &str, number: u64, reason: &str) -> ApiResult<Vec<TaskId>> {
    let mut stopped = Vec::new();
    let by = format!("GitHub {repository}#{number}");
    for id in state.store().github_unfinished_tasks(repository, number).await? {
        let change = TaskChange::Cancel { reason: Some(reason) };
        match state.change_task(id, change, &by).await {
            Ok(_) => stopped.push(id),
            Err(StoreError::Transition(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(stopped)
}

const REVIEW_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The comments of a review on a pull request agentpool opened, for the follow-up's prompt.
/// GitHub unreachable: the follow-up goes ahead with what the event itself carries (logged),
/// since dropping the request would be worse than a shorter prompt.
async fn review_comments(
    state: &AppState,
    settings: &agentpool_core::github::GithubSettings,
    repository: &str,
    pr: u64,
    review: u64,
) -> Vec<agentpool_github::ReviewComment> {
    let read = async {
        let gh = crate::github::client(state, settings).await?;
        Ok::<_, SecretError>(gh.review_comments(repository, pr, review).await?)
    };
    // GitHub waits ten seconds for a delivery's answer.
    match tokio::time::timeout(REVIEW_READ_TIMEOUT, read).await {
        Ok(Ok(comments)) => comments,
        Ok(Err(e)) => {
            tracing::warn!(%repository, pr, review, error = %e, "cannot read the review's comments; the follow-up gets the event's own text");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(%repository, pr, review, "reading the review's comments timed out; the follow-up gets the event's own text");
            Vec::new()
        }
    }
}

/// Enqueue; concurrent deliveries of one event race on its idempotency key, and the loser of
/// an in-flight insert is told to retry (the winner's task is then visible).
async fn enqueue_retrying(state: &AppState, spec: TaskSpec) -> ApiResult<agentpool_store::Enqueued> {
    let mut delay = Duration::from_millis(5);
    for _ in 0..8 {
        match state.store().enqueue(spec.clone()).await {
            Err(StoreError::Conflict(_)) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return Ok(other?),
        }
    }
    Ok(state.store().enqueue(spec).await?)
}
