//! What a claimed task is handed besides itself: the credentials its spec and project name,
//! decrypted, and for a GitHub App project a git token minted for this task alone.

use std::collections::BTreeSet;
use std::time::Duration;

use agentpool_core::protocol::ClaimedTask;

use crate::crypto::Secrets;
use crate::state::AppState;

/// The credential name a worker takes its git token from (the installation token of a GitHub
/// App project goes under it).
const GIT_TOKEN_CREDENTIAL: &str = "git-token";
/// How long a claim waits for GitHub to mint a task's token.
const MINT_TIMEOUT: Duration = Duration::from_secs(10);

/// Decrypt the credentials a claimed task needs: those its spec names plus its project's; for a
/// worker limited to projects, its project's only.
/// A credential that is missing or cannot be decrypted is left out (and said by name, in the
/// server's log and the task's): the task then fails on its own terms (e.g. AUTH_FAILED)
/// instead of being stuck, and one that runs without it says why. With them, the
/// GitHub API the task's minted git token is to be revoked at, when one was minted.
pub(super) async fn credentials_for(
    state: &AppState,
    c: &ClaimedTask,
    by: &agentpool_store::ClaimFilter,
) -> (Secrets, Option<String>) {
    let mut names: BTreeSet<String> = c.task.spec.credentials.iter().cloned().collect();
    let mut github = None;
    let mut project_names = BTreeSet::new();
    if let Some(p) = &c.task.spec.project {
        match state.store().get_project(p).await {
            Ok(Some(p)) => {
                project_names.extend(p.spec.credentials);
                github = p.spec.github.filter(|g| g.app.is_some());
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(task = %c.task.id, error = %e, "project lookup for credentials failed"),
        }
    }
    if !by.projects.is_empty() {
        // A worker limited to projects (a team's own machines) is handed its project's
        // credentials only: one a caller of every project named on the task stays on the
        // server, so another team's secrets never reach that team's machines.
        let withheld: Vec<&str> = names.difference(&project_names).map(String::as_str).collect();
        if !withheld.is_empty() {
            let line = format!(
                "credentials not handed to worker {} (limited to projects): {}; the task's project does not name them",
                by.worker_id,
                withheld.join(", ")
            );
            say_in_task(state, c.task.id, line).await;
        }
        names = project_names;
    } else {
        names.extend(project_names);
    }
    let mut out = Secrets::default();
    let mut revoke_at = None;
    if let Some(settings) = github {
        // A GitHub App project: a token of its own for this task, for this repository's
        // contents only; it reaches the worker as its git token and is stored nowhere.
        // Bounded: an unreachable GitHub must not hold up the claim (the task then fails on
        // its own terms, AUTH_FAILED at the clone).
        let mint = crate::github::app::mint(state, &settings, agentpool_github::Permissions::PUSH);
        match tokio::time::timeout(MINT_TIMEOUT, mint)
            .await
            .unwrap_or_else(|_| Err(crate::github::SecretError::Timeout))
        {
            Ok(t) => {
                crate::github::app::remember_task_token(state, c.task.id, &settings, &t.token);
                out.0.insert(GIT_TOKEN_CREDENTIAL.to_string(), t.token);
                revoke_at = Some(settings.api_url().to_string());
            }
            Err(e) => {
                tracing::warn!(task = %c.task.id, repository = %settings.repository, error = %e, "cannot mint a GitHub App installation token for the task")
            }
        }
    }
    if names.is_empty() {
        return (out, revoke_at);
    }
    let Some(cipher) = &state.inner.cipher else {
        let line = format!(
            "credentials not handed out: {}; the server has no key to read them (AGENTPOOL_SERVER_KEY)",
            names.into_iter().collect::<Vec<_>>().join(", ")
        );
        say_in_task(state, c.task.id, line).await;
        return (out, revoke_at);
    };
    for name in names {
        let missing = match state.store().get_credential(&name).await {
            Ok(Some(ct)) => match cipher.decrypt(&name, &ct).map(String::from_utf8) {
                Ok(Ok(v)) => {
                    out.0.entry(name).or_insert(v);
                    continue;
                }
                _ => "it cannot be decrypted with this server's key (was AGENTPOOL_SERVER_KEY changed?)",
            },
            Ok(None) => "no credential of that name is stored",
            Err(e) => {
                tracing::warn!(task = %c.task.id, credential = %name, error = %e, "credential lookup failed");
                "it could not be read from the database"
            }
        };
        let line = format!("credential {name} not handed out: {missing}; the task runs without it");
        say_in_task(state, c.task.id, line).await;
    }
    (out, revoke_at)
}

/// Say `line` in the server's log and in task `task`'s own (a `log` event), where whoever reads
/// the task sees why it lacks something.
async fn say_in_task(state: &AppState, task: agentpool_core::TaskId, line: String) {
    tracing::warn!(task = %task, "{line}");
    let event = vec![agentpool_core::NewEvent::log("agentpool", line)];
    if let Err(e) = state.store().append_events(task, None, event).await {
        tracing::warn!(task = %task, error = %e, "cannot record in the task's log what it was not handed");
    }
}
