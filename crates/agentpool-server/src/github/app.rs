//! GitHub App tokens on the server: the App's key read from its credential, the installation
//! on a repository (configured, or looked up once and remembered), a fresh installation token
//! per claimed task for the worker (push only, this repository only, never stored), and the
//! server's own token for its REST calls, kept in memory until shortly before it expires. A
//! task's token is revoked when the attempt ends, by the worker (the claim tells it where)
//! and by the replica that minted it when it still remembers it; a token whose worker died
//! expires within GitHub's hour.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentpool_core::TaskId;
use agentpool_core::github::{GithubApp as AppSettings, GithubSettings};
use agentpool_github::{AppKey, GithubApp, InstallationToken, Permissions};

use crate::github::{SecretError, credential};
use crate::state::AppState;

/// A cached token is replaced this long before GitHub expires it, so a call never starts with
/// one about to lapse.
const REFRESH_BEFORE: Duration = Duration::from_secs(10 * 60);

/// Which App on which API, for which repository (lowercase `owner/name`).
type Key = (String, u64, String);

/// Installation ids and the server's own tokens, per App and repository. Memory only: a
/// restart mints anew.
#[derive(Default)]
pub(crate) struct AppTokens {
    installations: Mutex<HashMap<Key, u64>>,
    tokens: Mutex<HashMap<Key, (String, Instant)>>,
    /// Tokens handed out with claimed tasks (API base, token, when), to revoke at the end.
    task_tokens: Mutex<HashMap<TaskId, Vec<TaskToken>>>,
}

/// A token minted for a task's claim: API base, token, when.
type TaskToken = (String, String, Instant);

/// How long GitHub keeps an installation token valid; a task token older than this needs no
/// revoking.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

impl AppTokens {
    /// Forget task tokens GitHub has expired anyway.
    pub(crate) fn prune(&self) {
        if let Ok(mut m) = self.task_tokens.lock() {
            m.retain(|_, ts| {
                ts.retain(|(_, _, at)| at.elapsed() < TOKEN_LIFETIME);
                !ts.is_empty()
            });
        }
    }
}

/// Remember the token minted for `task`'s claim, to revoke it when the task ends.
pub(crate) fn remember_task_token(state: &AppState, task: TaskId, settings: &GithubSettings, token: &str) {
    if let Ok(mut m) = state.inner.github_apps.task_tokens.lock() {
        m.entry(task)
            .or_default()
            .push((settings.api_url().to_string(), token.to_string(), Instant::now()));
    }
}

/// The task ended: revoke the tokens this replica minted for it, in the background (a
/// failure only leaves the token to expire on its own).
pub(crate) fn revoke_task_tokens(state: &AppState, task: TaskId) {
    let Some(tokens) = state
        .inner
        .github_apps
        .task_tokens
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&task))
    else {
        return;
    };
    tokio::spawn(async move {
        for (api, token, at) in tokens {
            if at.elapsed() >= TOKEN_LIFETIME {
                continue;
            }
            let done = match agentpool_github::GithubClient::new(&api, &token) {
                Ok(gh) => gh.revoke_installation_token().await,
                Err(e) => Err(e),
            };
            // 401: the worker revoked it first.
            if let Err(e) = done
                && !matches!(e, agentpool_github::ForgeError::Status { status: 401, .. })
            {
                tracing::info!(%task, error = %e, "could not revoke the task's GitHub token; it expires within the hour");
            }
        }
    });
}

fn key(settings: &GithubSettings, app: &AppSettings) -> Key {
    (
        settings.api_url().to_string(),
        app.app_id,
        settings.repository.to_ascii_lowercase(),
    )
}

async fn app(
    state: &AppState,
    settings: &GithubSettings,
    app: &AppSettings,
) -> Result<GithubApp, SecretError> {
    let pem = credential(state, &app.private_key).await?;
    let key = AppKey::from_pem(&pem)?;
    Ok(GithubApp::new(settings.api_url(), app.app_id, key))
}

async fn installation(
    state: &AppState,
    settings: &GithubSettings,
    conf: &AppSettings,
    gh: &GithubApp,
) -> Result<u64, SecretError> {
    if let Some(id) = conf.installation_id {
        return Ok(id);
    }
    let k = key(settings, conf);
    let cached = state
        .inner
        .github_apps
        .installations
        .lock()
        .ok()
        .and_then(|m| m.get(&k).copied());
    if let Some(id) = cached {
        return Ok(id);
    }
    let id = gh.installation_for(&settings.repository).await?;
    if let Ok(mut m) = state.inner.github_apps.installations.lock() {
        m.insert(k, id);
    }
    Ok(id)
}

/// Mint an installation token for the project's repository with `permissions`.
pub(crate) async fn mint(
    state: &AppState,
    settings: &GithubSettings,
    permissions: Permissions,
) -> Result<InstallationToken, SecretError> {
    let conf = settings.app.as_ref().ok_or(SecretError::NoToken)?;
    let gh = app(state, settings, conf).await?;
    let id = installation(state, settings, conf, &gh).await?;
    match gh.installation_token(id, &settings.repository, permissions).await {
        // The App was reinstalled under a new id: look it up again next time.
        Err(e @ agentpool_github::ForgeError::Status { status: 404, .. }) => {
            if let Ok(mut m) = state.inner.github_apps.installations.lock() {
                m.remove(&key(settings, conf));
            }
            Err(e.into())
        }
        other => Ok(other?),
    }
}

/// The server's token for the repository's pull requests and comments, from the cache while
/// it has more than [`REFRESH_BEFORE`] left.
pub(crate) async fn server_token(state: &AppState, settings: &GithubSettings) -> Result<String, SecretError> {
    let conf = settings.app.as_ref().ok_or(SecretError::NoToken)?;
    let k = key(settings, conf);
    let now = Instant::now();
    let cached = state.inner.github_apps.tokens.lock().ok().and_then(|m| {
        m.get(&k)
            .filter(|(_, until)| *until > now)
            .map(|(t, _)| t.clone())
    });
    if let Some(t) = cached {
        return Ok(t);
    }
    let t = mint(state, settings, Permissions::REPORT).await?;
    let lifetime = chrono::DateTime::parse_from_rfc3339(&t.expires_at)
        .ok()
        .and_then(|at| {
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        })
        .unwrap_or_default();
    // An expiry already within the margin (or unreadable) is used once and not kept.
    if let Some(keep) = lifetime.checked_sub(REFRESH_BEFORE)
        && let Ok(mut m) = state.inner.github_apps.tokens.lock()
    {
        m.insert(k, (t.token.clone(), now + keep));
    }
    Ok(t.token)
}
