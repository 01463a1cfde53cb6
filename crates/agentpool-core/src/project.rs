//! Projects: named repository configurations with defaults, credentials and a slot limit.

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::check::CheckSpec;

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    pub name: String,
    pub repo: String,
    pub default_base: Option<String>,
    /// Max tasks of this project running at once; unlimited when absent.
    pub slots: Option<u32>,
    pub default_agent: Option<String>,
    pub default_model: Option<String>,
    /// Agents tasks of this project may use; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_agents: Vec<String>,
    /// Names of stored credentials handed to this project's tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
    /// Checks of this project's tasks that name none (docs/checks.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
    /// Round limit of this project's agent tasks that name none.
    pub max_rounds: Option<u32>,
    /// Default `max_cost_usd` for this project's tasks that set none.
    pub max_cost_usd: Option<f64>,
    /// Spend allowed per UTC day (the sum of the reported cost of the project's tasks); once
    /// reached, its queued tasks wait for the next day.
    pub daily_budget_usd: Option<f64>,
    /// Agent profile of this project's tasks that name none.
    pub default_profile: Option<String>,
    /// The GitHub repository this project answers webhooks for, and how (docs/github.md).
    pub github: Option<crate::github::GithubSettings>,
    /// The Forgejo or Gitea repository this project's builds open pull requests on
    /// (docs/forgejo.md).
    pub forgejo: Option<crate::forgejo::ForgejoSettings>,
}

impl ProjectSpec {
    /// The forge repository (`owner/name`) this project's builds open pull requests on, if
    /// it is wired to one with pull requests on.
    pub fn pull_request_repository(&self) -> Option<&str> {
        match (&self.github, &self.forgejo) {
            (Some(g), _) if g.pull_requests => Some(&g.repository),
            (_, Some(f)) if f.pull_requests => Some(&f.repository),
            _ => None,
        }
    }
}

/// Whether `s` can name a project: 1-100 characters from `[A-Za-z0-9._-]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `s` can name a stored credential: the rule of project names.
pub fn valid_credential_name(s: &str) -> bool {
    valid_name(s)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    #[serde(flatten)]
    pub spec: ProjectSpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// What its tasks' attempts reported costing today (since midnight UTC), the sum its
    /// daily budget is checked against; absent when none reported a cost today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_today_usd: Option<f64>,
}
