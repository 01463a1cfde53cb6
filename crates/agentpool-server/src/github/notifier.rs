//! The forge loop: works through the tasks' forge links (stored, so a restart resumes where it
//! stopped) and, for each, opens or reuses the pull request once the task succeeded with a
//! pushed branch and records it in the task's result; on GitHub it also keeps the one status
//! comment on the triggering issue or pull request in step with the task's state. Failed
//! calls are retried with backoff; a link is finished once its task ended and all of that is
//! written. The pull request matters more than the comment: a comment GitHub refuses is
//! passed over, and nothing gives a link up while its task has yet to end.

use std::time::Duration;

use agentpool_core::TaskState;
use agentpool_core::forgejo::ForgejoSettings;
use agentpool_core::github::{GithubSettings, PullRequestRef};
use agentpool_github::status::{self, StatusView};
use agentpool_github::{ForgeError, GithubClient, NewPull, PullRequests};
use agentpool_store::TaskDetail;
use agentpool_store::github::GithubLink;
use tokio_util::sync::CancellationToken;

use crate::github::{SecretError, client, forgejo_client};
use crate::state::AppState;

/// Links looked at per tick.
const BATCH: u32 = 50;
/// How long a replica holds a link it is working on before another may take it.
const LEASE_MS: i64 = 60_000;
/// Failed attempts in a row, once its task ended, after which a link is given up (logged).
const MAX_FAILURES: u32 = 10;

/// Run until `stop`: a pass every `interval`, or at once when a webhook queued a task.
pub async fn run(state: AppState, interval: Duration, stop: CancellationToken) {
    loop {
        match pass(&state, interval).await {
            // A database outage is said once, by the maintenance loop.
            Err(e) if e.is_unavailable() => tracing::debug!(error = %e, "pull request loop: pass failed"),
            Err(e) => tracing::warn!(error = %e, "pull request loop: pass failed"),
            Ok(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = state.inner.github_wake.notified() => {}
        }
    }
}

/// One pass over the links that are due. Public for tests that drive the loop themselves.
pub async fn pass(state: &AppState, interval: Duration) -> Result<usize, agentpool_store::StoreError> {
    let links = state.store().github_take_due(BATCH, LEASE_MS).await?;
    let n = links.len();
    for mut link in links {
        let now = chrono::Utc::now().timestamp_millis();
        let mut ended = false;
        match step(state, &mut link, &mut ended).await {
            Ok(()) => {
                link.failures = 0;
                link.next_try_at = now + i64::try_from(interval.as_millis()).unwrap_or(2000);
            }
            Err(e) => {
                link.failures += 1;
                let backoff = 1_000i64 << link.failures.min(8);
                link.next_try_at = now + backoff;
                // While the task is queued or running its pull request is still to come, and
                // an outage of GitHub's must not cost it: keep trying (at most every ~4 min).
                if ended && (link.failures >= MAX_FAILURES || !e.retryable()) {
                    tracing::warn!(task = %link.task_id, error = %e, "pull request loop: giving up on this task's status comment and pull request");
                    link.done = true;
                } else {
                    tracing::info!(task = %link.task_id, error = %e, failures = link.failures, "pull request loop: will retry");
                }
            }
        }
        state.store().github_update_link(&link).await?;
    }
    Ok(n)
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Forge(#[from] ForgeError),
    #[error(transparent)]
    Store(#[from] agentpool_store::StoreError),
}

impl StepError {
    fn retryable(&self) -> bool {
        match self {
            StepError::Forge(e) => e.is_transient(),
            StepError::Secret(SecretError::Client(e)) => e.is_transient(),
            // A credential stored later, or a database back up, fixes these.
            _ => true,
        }
    }
}

/// One step of `link`; `ended` is set once its task is known to have ended.
async fn step(state: &AppState, link: &mut GithubLink, ended: &mut bool) -> Result<(), StepError> {
    let Some(detail) = state.store().get_task(link.task_id).await? else {
        link.done = true; // purged
        return Ok(());
    };
    *ended = detail.task.state.is_finished();
    let Some(project) = state.store().get_project(&link.project).await? else {
        link.done = true; // the project is gone
        return Ok(());
    };
    match (project.spec.github, project.spec.forgejo) {
        (Some(settings), _) => github_step(state, link, &detail, &settings).await,
        (None, Some(settings)) => forgejo_step(state, link, &detail, &settings).await,
        (None, None) => {
            link.done = true; // its forge wiring is gone
            Ok(())
        }
    }
}

/// A Forgejo link: the pull request of a succeeded build (no status comment: Forgejo's
/// webhooks do not start tasks, so there is no issue to report to).
async fn forgejo_step(
    state: &AppState,
    link: &mut GithubLink,
    detail: &TaskDetail,
    settings: &ForgejoSettings,
) -> Result<(), StepError> {
    if detail.task.state == TaskState::Succeeded {
        let fj = forgejo_client(state, settings).await?;
        let wanted = Wanted {
            pull_requests: settings.pull_requests,
            draft: settings.draft,
        };
        match ensure_pull_request(state, &fj, wanted, link, detail).await {
            Ok(()) => {}
            // Refused as such (no commits between the branches, a base that does not
            // exist): nothing a retry changes.
            Err(StepError::Forge(e @ ForgeError::Status { status: 422, .. })) => {
                tracing::warn!(task = %detail.task.id, error = %e, "no pull request opened");
            }
            Err(e) => return Err(e),
        }
    }
    if detail.task.state.is_finished() {
        link.done = true;
    }
    Ok(())
}

/// What a project asks of its pull requests.
#[derive(Clone, Copy)]
struct Wanted {
    pull_requests: bool,
    draft: bool,
}

async fn github_step(
    state: &AppState,
    link: &mut GithubLink,
    detail: &TaskDetail,
    settings: &GithubSettings,
) -> Result<(), StepError> {
    let task = &detail.task;
    let terminal = task.state.is_finished();
    let gh = client(state, settings).await?;

    let mut note = None;
    if task.state == TaskState::Succeeded {
        let wanted = Wanted {
            pull_requests: settings.pull_requests,
            draft: settings.draft,
        };
        match ensure_pull_request(state, &gh, wanted, link, detail).await {
            Ok(()) => {}
            // GitHub refused the pull request itself (no commits between branches, a base
            // that does not exist): say so on the status comment instead of retrying forever.
            Err(StepError::Forge(ForgeError::Status {
                status: 422, message, ..
            })) => {
                note = Some(format!("no pull request opened: {message}"));
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(number) = link.number {
        let shown = format!(
            "{}{}",
            task.state.as_str(),
            link.pr_number.map(|n| format!("#{n}")).unwrap_or_default()
        );
        if link.reported_state.as_deref() != Some(shown.as_str()) {
            let pr = pr_ref(link);
            let body = status::render(&StatusView {
                task_id: &task.id.to_string(),
                state: task.state.as_str(),
                task_url: state.task_url(task.id),
                pull_request: pr.as_ref(),
                cost_usd: task.result.as_ref().and_then(|r| r.cost_usd),
                error_class: task.error_class.as_ref().map(|c| c.as_str()),
                note: note.as_deref(),
            });
            match write_comment(state, &gh, link, number, &body).await {
                Ok(()) => {}
                // Refused as such (no permission on issues, the issue gone): asking again
                // changes nothing, and the pull request does not depend on it.
                Err(StepError::Forge(e)) if !e.is_transient() => {
                    tracing::warn!(task = %task.id, error = %e, "cannot write the status comment; passed over until the task's state changes");
                }
                Err(e) => return Err(e),
            }
            link.reported_state = Some(shown);
        }
    }
    if terminal {
        link.done = true;
    }
    Ok(())
}

fn pr_ref(link: &GithubLink) -> Option<PullRequestRef> {
    Some(PullRequestRef {
        number: link.pr_number?,
        url: link.pr_url.clone()?,
        state: link.pr_state.clone().unwrap_or_else(|| "open".into()),
    })
}

/// Open the pull request for a succeeded task's pushed branch, or reuse the open one for the
/// same head, and record it in the link and the task's result.
async fn ensure_pull_request(
    state: &AppState,
    forge: &impl PullRequests,
    wanted: Wanted,
    link: &mut GithubLink,
    detail: &TaskDetail,
) -> Result<(), StepError> {
    let task = &detail.task;
    let Some(result) = &task.result else { return Ok(()) };
    if result.pull_request.is_some() {
        return Ok(());
    }
    if let Some(pr) = pr_ref(link) {
        // A follow-up on a known pull request: its work went there.
        state.store().github_set_pull_request(task.id, &pr).await?;
        return Ok(());
    }
    if !wanted.pull_requests || !result.pushed {
        return Ok(());
    }
    let Some(branch) = result.branch.clone() else {
        return Ok(());
    };
    let repo = &link.repository;
    // A follow-up works on a pull request agentpool opened before; if that one was closed
    // meanwhile, opening another for the same branch is not what anyone asked.
    let follow_up = link.pr_number.is_some();
    let pull = match forge.find_open_pull(repo, &branch).await? {
        Some(p) => p,
        None if follow_up => {
            tracing::info!(task = %task.id, pr = link.pr_number, "the pull request this follow-up worked on is closed; no other opened");
            return Ok(());
        }
        None => {
            let base = match &task.spec.base_ref {
                Some(b) => b.clone(),
                None => forge.default_branch(repo).await?,
            };
            let title = pr_title(detail);
            let body = pr_body(state, detail, link);
            let new = NewPull {
                title: &title,
                head: &branch,
                base: &base,
                body: &body,
                draft: wanted.draft,
            };
            match forge.create_pull(repo, &new).await {
                Ok(p) => p,
                // Opened meanwhile by another replica or an earlier pass that lost its answer
                // (GitHub says 422, Forgejo 409).
                Err(ForgeError::Status {
                    status: 409 | 422, ..
                }) if let Some(p) = forge.find_open_pull(repo, &branch).await? => p,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let pr = PullRequestRef {
        number: pull.number,
        url: pull.html_url.clone(),
        state: if pull.draft == Some(true) {
            "draft".into()
        } else {
            pull.state.clone()
        },
    };
    link.pr_number = Some(pr.number);
    link.pr_url = Some(pr.url.clone());
    link.pr_state = Some(pr.state.clone());
    link.branch = Some(branch);
    state.store().github_set_pull_request(task.id, &pr).await?;
    tracing::info!(task = %task.id, pr = pr.number, "pull request recorded");
    Ok(())
}

/// Create the status comment, or update the one this issue or pull request already has.
async fn write_comment(
    state: &AppState,
    gh: &GithubClient,
    link: &mut GithubLink,
    number: u64,
    body: &str,
) -> Result<(), StepError> {
    let existing = match link.comment_id {
        Some(id) => Some(id),
        None => state.store().github_comment_for(&link.repository, number).await?,
    };
    if let Some(id) = existing {
        match gh.update_comment(&link.repository, id, body).await {
            Ok(()) => {
                link.comment_id = Some(id);
                return Ok(());
            }
            // Deleted by someone: write a new one.
            Err(ForgeError::Status { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    link.comment_id = Some(gh.create_comment(&link.repository, number, body).await?);
    Ok(())
}

fn pr_title(detail: &TaskDetail) -> String {
    let prompt = detail.task.spec.prompt.as_deref().unwrap_or("agentpool task");
    let first = prompt
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("agentpool task");
    let mut t: String = first.trim().chars().take(72).collect();
    if first.trim().chars().count() > 72 {
        t.push('…');
    }
    t
}

fn pr_body(state: &AppState, detail: &TaskDetail, link: &GithubLink) -> String {
    let task = &detail.task;
    let mut body = String::new();
    if let Some(text) = task.result.as_ref().and_then(|r| r.final_text.as_deref()) {
        body.push_str(text.trim());
        body.push_str("\n\n");
    }
    if let Some(n) = link.number {
        body.push_str(&format!("Closes #{n}.\n\n"));
    }
    let task_ref = match state.task_url(task.id) {
        Some(url) => format!("[{}]({url})", task.id),
        None => format!("`{}`", task.id),
    };
    body.push_str(&format!("Opened by agentpool for task {task_ref}."));
    if let Some(files) = task.result.as_ref().map(|r| &r.files)
        && !files.is_empty()
    {
        body.push_str("\n\nFiles changed:\n");
        for f in files.iter().take(50) {
            match f.note() {
                Some(note) => body.push_str(&format!("- `{}` ({note})\n", f.path)),
                None => body.push_str(&format!("- `{}`\n", f.path)),
            }
        }
    }
    body
}
