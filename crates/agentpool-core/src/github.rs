//! A project's GitHub settings (which repository it answers for, which events become tasks, how
//! agentpool authenticates to GitHub) and the pull request a task's result records. Values only:
//! secrets are named credentials, never inline.

use serde::{Deserialize, Serialize};

use crate::spec::ValidationError;

/// The `author_association` values allowed to command agentpool when a project names none.
pub const DEFAULT_ALLOWED_ASSOCIATIONS: [&str; 3] = ["OWNER", "MEMBER", "COLLABORATOR"];
/// Every `author_association` GitHub sends.
pub const ASSOCIATIONS: [&str; 8] = [
    "COLLABORATOR",
    "CONTRIBUTOR",
    "FIRST_TIMER",
    "FIRST_TIME_CONTRIBUTOR",
    "MANNEQUIN",
    "MEMBER",
    "NONE",
    "OWNER",
];
pub const DEFAULT_API_URL: &str = "https://api.github.com";
pub const DEFAULT_LABEL: &str = "agentpool";
pub const DEFAULT_COMMAND: &str = "/agentpool";
pub const DEFAULT_MAX_FOLLOW_UPS: u32 = 3;

/// How a project is wired to a GitHub repository (`ProjectSpec::github`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubSettings {
    /// `owner/name`: webhook events of this repository go to this project.
    pub repository: String,
    /// REST API root; `https://api.github.com` when absent (GitHub Enterprise:
    /// `https://HOST/api/v3`).
    pub api_url: Option<String>,
    /// Stored credential holding the webhook secret (HMAC key of `X-Hub-Signature-256`).
    pub webhook_secret: String,
    /// Stored credential holding a token for the REST API (pull requests, comments).
    pub token: Option<String>,
    /// Authenticate as a GitHub App instead of with a token: the server mints short-lived
    /// installation tokens scoped to this repository (one per task for the worker's clone
    /// and push, and a cached one for its own REST calls).
    pub app: Option<GithubApp>,
    /// An issue labeled with this label becomes a task (default `agentpool`).
    pub label: Option<String>,
    /// A comment starting with this word becomes a task with the rest as its prompt (default
    /// `/agentpool`).
    pub command: Option<String>,
    /// Who may command agentpool by comment or review (`author_association`); OWNER, MEMBER and
    /// COLLABORATOR when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_associations: Vec<String>,
    /// Open a pull request after a successful push (default true).
    #[serde(default = "yes")]
    pub pull_requests: bool,
    /// Open pull requests as drafts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draft: bool,
    /// A review or review comment on a pull request agentpool opened starts a follow-up task on
    /// its branch (default true).
    #[serde(default = "yes")]
    pub review_follow_ups: bool,
    /// A failed check run on such a pull request starts a follow-up fix task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_run_follow_ups: bool,
    /// The most automatic follow-ups (reviews and check runs) per pull request (default 3).
    pub max_follow_ups: Option<u32>,
    /// Prompt template of new tasks; placeholders `{{title}}`, `{{body}}`, `{{comment}}`,
    /// `{{number}}`, `{{url}}`, `{{repository}}`.
    pub prompt_template: Option<String>,
    /// Prompt template of follow-up tasks; adds `{{review}}` (the review and its comments with
    /// file and line) and `{{check}}` (the failed check run).
    pub follow_up_template: Option<String>,
}

/// A GitHub App agentpool authenticates as (`GithubSettings::app`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubApp {
    /// The App's id (its settings page, "App ID"); the `iss` of the JWTs the server signs.
    pub app_id: u64,
    /// Stored credential holding the App's private key (PEM, as GitHub hands it out).
    pub private_key: String,
    /// The installation on the repository's account; looked up from the repository when
    /// absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<u64>,
}

fn yes() -> bool {
    true
}

impl GithubSettings {
    pub fn api_url(&self) -> &str {
        self.api_url
            .as_deref()
            .unwrap_or(DEFAULT_API_URL)
            .trim_end_matches('/')
    }

    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(DEFAULT_LABEL)
    }

    pub fn command(&self) -> &str {
        self.command.as_deref().unwrap_or(DEFAULT_COMMAND)
    }

    pub fn max_follow_ups(&self) -> u32 {
        self.max_follow_ups.unwrap_or(DEFAULT_MAX_FOLLOW_UPS)
    }

    /// Whether a user with this `author_association` may command agentpool.
    pub fn allows(&self, association: &str) -> bool {
        if self.allowed_associations.is_empty() {
            DEFAULT_ALLOWED_ASSOCIATIONS.contains(&association)
        } else {
            self.allowed_associations.iter().any(|a| a == association)
        }
    }

    /// Field errors, with paths under `prefix` (e.g. `github`).
    pub fn validate(&self, prefix: &str) -> Vec<ValidationError> {
        let mut errs = Vec::new();
        let f = |name: &str| format!("{prefix}.{name}");
        if !valid_repository(&self.repository) {
            errs.push(ValidationError::new(f("repository"), "must be owner/name"));
        }
        if let Some(u) = &self.api_url
            && let Some(problem) = token_url_problem(u)
        {
            errs.push(ValidationError::new(f("api_url"), problem));
        }
        for (name, v) in [
            ("webhook_secret", Some(&self.webhook_secret)),
            ("token", self.token.as_ref()),
            ("app.private_key", self.app.as_ref().map(|a| &a.private_key)),
        ] {
            if let Some(v) = v
                && !crate::project::valid_credential_name(v)
            {
                errs.push(ValidationError::new(f(name), "must name a stored credential"));
            }
        }
        if let Some(app) = &self.app {
            if self.token.is_some() {
                errs.push(ValidationError::new(
                    f("app"),
                    "name either a token or an app, not both",
                ));
            }
            if app.app_id == 0 {
                errs.push(ValidationError::new(f("app.app_id"), "must be the App's id"));
            }
            if app.installation_id == Some(0) {
                errs.push(ValidationError::new(
                    f("app.installation_id"),
                    "must be an installation id",
                ));
            }
        }
        for (name, v) in [("label", &self.label), ("command", &self.command)] {
            if let Some(v) = v
                && (v.trim().is_empty() || v.len() > 100 || v.chars().any(char::is_whitespace))
            {
                errs.push(ValidationError::new(
                    f(name),
                    "must be 1-100 characters without spaces",
                ));
            }
        }
        for a in &self.allowed_associations {
            if !ASSOCIATIONS.contains(&a.as_str()) {
                errs.push(ValidationError::new(
                    f("allowed_associations"),
                    format!("{a:?} is not one of {}", ASSOCIATIONS.join(", ")),
                ));
            }
        }
        if self.max_follow_ups.is_some_and(|n| n > 100) {
            errs.push(ValidationError::new(f("max_follow_ups"), "must be at most 100"));
        }
        for (name, v) in [
            ("prompt_template", &self.prompt_template),
            ("follow_up_template", &self.follow_up_template),
        ] {
            if v.as_ref()
                .is_some_and(|t| t.trim().is_empty() || t.len() > 64 * 1024)
            {
                errs.push(ValidationError::new(f(name), "must be 1 byte to 64 KiB"));
            }
        }
        errs
    }
}

/// Whether `s` is `owner/name` as forges spell them (letters, digits, `.`, `_`, `-`).
pub(crate) fn valid_repository(s: &str) -> bool {
    let ok_part = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.len() <= 100
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
    };
    let mut parts = s.split('/');
    ok_part(parts.next()) && ok_part(parts.next()) && parts.next().is_none()
}

/// What is wrong with `u` as the base URL of an API a token is sent to: not an http(s) URL,
/// or plain http:// to another machine, which would carry the token in clear text (a local
/// stand-in or proxy on a loopback address may use http://).
pub(crate) fn token_url_problem(u: &str) -> Option<String> {
    if !(u.starts_with("https://") || u.starts_with("http://")) {
        return Some("must be an http(s) URL".into());
    }
    crate::RepoUrl::clear_text_host(u)
        .map(|host| format!("must be https://: the token would go to {host} in clear text over http://"))
}

/// The pull request a task's work branch went into (`TaskResult::pull_request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestRef {
    pub number: u64,
    pub url: String,
    /// `open`, `closed` (GitHub's `state`); `draft` when opened as a draft.
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GithubSettings {
        serde_json::from_value(serde_json::json!({
            "repository": "octo/hello", "webhook_secret": "gh-hook"
        }))
        .unwrap()
    }

    #[test]
    fn defaults_allow_members_and_open_pull_requests() {
        let s = settings();
        assert!(s.pull_requests && s.review_follow_ups && !s.check_run_follow_ups);
        assert!(s.allows("OWNER") && s.allows("COLLABORATOR") && !s.allows("NONE"));
        assert_eq!(s.label(), "agentpool");
        assert_eq!(s.api_url(), "https://api.github.com");
        assert!(s.validate("github").is_empty());
    }

    #[test]
    fn bad_settings_name_their_fields() {
        let mut s = settings();
        s.repository = "no-slash".into();
        s.allowed_associations = vec!["ADMIN".into()];
        s.api_url = Some("ftp://x".into());
        s.token = Some("gh-token".into());
        s.app = Some(GithubApp {
            app_id: 0,
            private_key: "bad name!".into(),
            installation_id: None,
        });
        let fields: Vec<String> = s.validate("github").into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "github.repository",
                "github.api_url",
                "github.app.private_key",
                "github.app",
                "github.app.app_id",
                "github.allowed_associations"
            ]
        );
    }

    #[test]
    fn a_token_goes_over_http_only_to_this_machine() {
        let mut s = settings();
        for (url, ok) in [
            ("https://ghe.example.com/api/v3", true),
            ("http://127.0.0.1:8080", true),
            ("http://localhost:8080/api", true),
            ("http://[::1]:8080", true),
            ("http://ghe.example.com/api/v3", false),
            ("HTTP://ghe.example.com", false),
        ] {
            s.api_url = Some(url.into());
            let errs = s.validate("github");
            assert_eq!(errs.is_empty(), ok, "{url}: {errs:?}");
        }
        s.api_url = Some("http://ghe.example.com/api/v3".into());
        assert!(
            s.validate("github")[0]
                .message
                .contains("ghe.example.com in clear text")
        );
    }
}
