//! The server's side of the forge integrations: which project a GitHub repository belongs to,
//! the projects' forge secrets (decrypted only in memory, never logged or returned), the loop
//! that tells GitHub how tasks went and opens the pull requests of GitHub and Forgejo
//! projects ([`notifier`]), and GitHub App installation tokens ([`app`]). The webhook
//! endpoint is `routes::github`.

pub(crate) mod app;
pub mod notifier;

use agentpool_core::Project;
use agentpool_core::forgejo::ForgejoSettings;
use agentpool_core::github::GithubSettings;
use agentpool_github::{ForgejoClient, GithubClient};

use crate::state::AppState;

/// Why a project's GitHub secret or client is not available.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("this server has no server key, so it cannot read credentials")]
    NoServerKey,
    #[error("credential {0} is not stored")]
    Missing(String),
    #[error("credential {0} cannot be decrypted with this server's key")]
    Undecryptable(String),
    #[error("project has neither a GitHub token credential nor a GitHub App")]
    NoToken,
    #[error("GitHub did not answer in time")]
    Timeout,
    #[error("store: {0}")]
    Store(#[from] agentpool_store::StoreError),
    #[error(transparent)]
    Client(#[from] agentpool_github::ForgeError),
}

/// The plaintext of credential `name`.
pub(crate) async fn credential(state: &AppState, name: &str) -> Result<Vec<u8>, SecretError> {
    let cipher = state.inner.cipher.as_ref().ok_or(SecretError::NoServerKey)?;
    let ct = state
        .store()
        .get_credential(name)
        .await?
        .ok_or_else(|| SecretError::Missing(name.to_string()))?;
    cipher
        .decrypt(name, &ct)
        .map_err(|_| SecretError::Undecryptable(name.to_string()))
}

/// A REST client for a project's repository, authenticated with its token credential or, for
/// a GitHub App, with the server's installation token for the repository.
pub(crate) async fn client(state: &AppState, settings: &GithubSettings) -> Result<GithubClient, SecretError> {
    if let Some(name) = settings.token.as_deref() {
        let token = credential(state, name).await?;
        let token = String::from_utf8_lossy(&token);
        return Ok(GithubClient::new(settings.api_url(), token.trim())?);
    }
    let token = app::server_token(state, settings).await?;
    Ok(GithubClient::new(settings.api_url(), &token)?)
}

/// A REST client for a project's Forgejo instance, with its token credential.
pub(crate) async fn forgejo_client(
    state: &AppState,
    settings: &ForgejoSettings,
) -> Result<ForgejoClient, SecretError> {
    let token = credential(state, &settings.token).await?;
    let token = String::from_utf8_lossy(&token);
    Ok(ForgejoClient::new(&settings.url, token.trim())?)
}

/// Projects wired to `repository` (`owner/name`, compared case-insensitively as GitHub
/// does), or every project wired to GitHub when the event names no repository.
pub(crate) fn projects_for<'a>(
    projects: &'a [Project],
    repository: Option<&str>,
) -> Vec<(&'a Project, &'a GithubSettings)> {
    let mut wired: Vec<_> = projects
        .iter()
        .filter_map(|p| p.spec.github.as_ref().map(|g| (p, g)))
        .filter(|(_, g)| repository.is_none_or(|r| g.repository.eq_ignore_ascii_case(r)))
        .collect();
    // Oldest first: a delivery goes to the first whose secret signed it, so a project added
    // later with the same secret never takes deliveries from the one that had them.
    wired.sort_by(|(a, _), (b, _)| (a.created_at, &a.spec.name).cmp(&(b.created_at, &b.spec.name)));
    wired
}
