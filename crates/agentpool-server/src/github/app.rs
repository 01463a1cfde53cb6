//! GitHub App tokens on the server: the App's key read from its credential, the installation
//! on a repository (configured, or looked up once and remembered), a fresh installation token
//! per claimed task for the worker (push only, this repository only, never stored), and the
//! server's own token for its REST calls, kept in memory until shortly before it expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        Err(e @ agentpool_github::GithubError::Status { status: 404, .. }) => {
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
