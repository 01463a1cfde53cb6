//! Which git credentials a task's clone and push use, and the refusal to send them in clear
//! text to another machine.

use agentpool_core::{ErrorClass, RepoUrl};

use super::{Failed, GIT_TOKEN_CREDENTIALS, Pipeline, failed};
use crate::api::ClaimedWork;
use crate::git::{GitCredentials, Secret};

impl Pipeline {
    /// The task's git token (its `git-token` credential, under the worker's user name, else
    /// `x-access-token`), or else the worker's own credentials. Refused (`INVALID_TASK`) when
    /// they would go to `repo` over plain `http://` on another machine and the worker was not
    /// started to allow that.
    pub(super) fn git_credentials(
        &self,
        work: &ClaimedWork,
        repo: &str,
    ) -> Result<Option<GitCredentials>, Failed> {
        let creds = GIT_TOKEN_CREDENTIALS
            .iter()
            .find_map(|n| work.credentials.get(n))
            .map(|token| GitCredentials {
                username: self
                    .cfg
                    .git_credentials
                    .as_ref()
                    .map(|c| c.username.clone())
                    .unwrap_or_else(|| "x-access-token".into()),
                token: Secret::new(token),
            })
            .or_else(|| self.cfg.git_credentials.clone());
        if creds.is_some()
            && !self.cfg.allow_http_credentials
            && let Some(host) = RepoUrl::clear_text_host(repo)
        {
            return Err(failed(
                ErrorClass::InvalidTask,
                format!(
                    "repo: refusing to send the git credential to {host} over plain http://, in \
                     clear text: use an https:// URL (or start the worker with \
                     --allow-http-credentials)"
                ),
            ));
        }
        Ok(creds)
    }
}
