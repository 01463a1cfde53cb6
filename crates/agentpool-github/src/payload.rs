//! The parts of GitHub's webhook payloads agentpool reads. Everything else in a payload is
//! ignored, so GitHub adding fields never breaks a delivery.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Label {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Present when the "issue" is a pull request (comments on PRs arrive as issue comments).
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    pub author_association: String,
    #[serde(default)]
    pub user: Option<User>,
    /// Review comments: the file and line they are on.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub line: Option<u64>,
    #[serde(default)]
    pub original_line: Option<u64>,
    #[serde(default)]
    pub html_url: Option<String>,
    /// Review comments: the review they were submitted with.
    #[serde(default)]
    pub pull_request_review_id: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Review {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    pub state: String,
    pub author_association: String,
    #[serde(default)]
    pub html_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ref {
    #[serde(rename = "ref")]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    pub head: Ref,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRunPr {
    pub number: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckOutput {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub output: Option<CheckOutput>,
    #[serde(default)]
    pub pull_requests: Vec<CheckRunPr>,
}

/// The fields of any event agentpool may act on; which are present depends on the event.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub repository: Option<Repository>,
    #[serde(default)]
    pub issue: Option<Issue>,
    #[serde(default)]
    pub label: Option<Label>,
    #[serde(default)]
    pub comment: Option<Comment>,
    #[serde(default)]
    pub review: Option<Review>,
    #[serde(default)]
    pub pull_request: Option<PullRequest>,
    #[serde(default)]
    pub check_run: Option<CheckRun>,
}

/// Only the repository, read before the signature is checked to find whose secret to check it
/// with.
#[derive(Debug, Clone, Deserialize)]
pub struct RepositoryOnly {
    #[serde(default)]
    pub repository: Option<Repository>,
}
