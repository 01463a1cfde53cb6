//! A project's Forgejo (or Gitea) settings: which repository on which instance its tasks'
//! branches go to, and the stored credential holding the API token with which agentpool opens
//! their pull requests. Values only: the token is a named credential, never inline.

use serde::{Deserialize, Serialize};

use crate::github::{token_url_problem, valid_repository};
use crate::spec::ValidationError;

/// How a project is wired to a Forgejo or Gitea repository (`ProjectSpec::forgejo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgejoSettings {
    /// `owner/name` on that instance.
    pub repository: String,
    /// The instance's address, as in a browser (`https://codeberg.org`); the API is under
    /// `/api/v1`.
    pub url: String,
    /// Stored credential holding an access token with *repository: write* (pull requests).
    pub token: String,
    /// Open a pull request after a build's successful push (default true).
    #[serde(default = "yes")]
    pub pull_requests: bool,
    /// Open pull requests as work in progress (title `WIP: …`, Forgejo's drafts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draft: bool,
}

fn yes() -> bool {
    true
}

impl ForgejoSettings {
    /// Field errors, with paths under `prefix` (e.g. `forgejo`).
    pub fn validate(&self, prefix: &str) -> Vec<ValidationError> {
        let mut errs = Vec::new();
        let f = |name: &str| format!("{prefix}.{name}");
        if !valid_repository(&self.repository) {
            errs.push(ValidationError::new(f("repository"), "must be owner/name"));
        }
        if let Some(problem) = token_url_problem(&self.url) {
            errs.push(ValidationError::new(f("url"), problem));
        }
        if !crate::project::valid_credential_name(&self.token) {
            errs.push(ValidationError::new(f("token"), "must name a stored credential"));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_open_pull_requests_and_bad_values_name_their_fields() {
        let s: ForgejoSettings = serde_json::from_value(serde_json::json!({
            "repository": "acme/web", "url": "https://codeberg.org", "token": "fj-token"
        }))
        .unwrap();
        assert!(s.pull_requests && !s.draft);
        assert!(s.validate("forgejo").is_empty());
        let bad = ForgejoSettings {
            repository: "acme".into(),
            url: "codeberg.org".into(),
            token: "not a name".into(),
            ..s
        };
        let fields: Vec<String> = bad.validate("forgejo").into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["forgejo.repository", "forgejo.url", "forgejo.token"]);
    }
}
