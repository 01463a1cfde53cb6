//! Credentials minted for one attempt and revoked by the worker when the attempt ends: a
//! GitHub App installation token handed out with the claim as the `git-token`. The server
//! that minted it revokes it too, but only while it remembers it; the worker holds the token
//! whatever happened to that server, so the token ends with the attempt in every case but a
//! worker that died (its token then expires within GitHub's hour).

use std::time::Duration;

use agentpool_github::{ForgeError, GithubClient};

use crate::api::ClaimedWork;

/// How long the end of an attempt waits for GitHub to take the revocation back.
const REVOKE_WITHIN: Duration = Duration::from_secs(10);

/// Revoke the token minted for `work`'s claim, if one was; a failure is logged (the token then
/// lives out its hour) and never changes the attempt's outcome.
pub async fn revoke(work: &ClaimedWork) {
    let (Some(api), Some(token)) = (
        &work.revoke_git_token_at,
        work.credentials.get(crate::pipeline::GIT_TOKEN_CREDENTIALS[0]),
    ) else {
        return;
    };
    let task = work.claimed.task.id;
    let lives_on = "could not revoke the task's GitHub token; it expires within the hour";
    let gh = match GithubClient::new(api, token) {
        Ok(gh) => gh,
        Err(e) => return tracing::info!(%task, error = %e, "{lives_on}"),
    };
    match tokio::time::timeout(REVOKE_WITHIN, gh.revoke_installation_token()).await {
        Ok(Ok(())) => tracing::debug!(%task, "revoked the task's GitHub token"),
        // Already revoked (the server that minted it was first): nothing left to do.
        Ok(Err(ForgeError::Status { status: 401, .. })) => {}
        Ok(Err(e)) => tracing::info!(%task, error = %e, "{lives_on}"),
        Err(_) => tracing::info!(%task, "{lives_on} (GitHub did not answer in time)"),
    }
}
