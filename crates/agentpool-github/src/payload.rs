//! The parts of GitHub's webhook payloads agentpool reads. Everything else in a payload is
//! ignored, so GitHub adding fields never breaks a delivery; an `Option` field GitHub leaves out
//! reads as `None` (serde's rule for `Option`), so only lists need `#[serde(default)]`.

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
    pub body: Option<String>,
    pub html_url: Option<String>,
    pub updated_at: Option<String>,
    /// `open` or `closed`.
    pub state: Option<String>,
    /// Present when the "issue" is a pull request (comments on PRs arrive as issue comments).
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub body: Option<String>,
    pub author_association: String,
    pub user: Option<User>,
    /// Review comments: the file and line they are on.
    pub path: Option<String>,
    pub line: Option<u64>,
    pub original_line: Option<u64>,
    pub html_url: Option<String>,
    /// Review comments: the review they were submitted with.
    pub pull_request_review_id: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Review {
    pub id: u64,
    pub body: Option<String>,
    pub state: String,
    pub author_association: String,
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
    pub body: Option<String>,
    pub html_url: Option<String>,
    pub head: Ref,
    /// `open` or `closed` (merged ones too).
    pub state: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRunPr {
    pub number: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckOutput {
    pub title: Option<String>,
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub conclusion: Option<String>,
    pub html_url: Option<String>,
    pub output: Option<CheckOutput>,
    #[serde(default)]
    pub pull_requests: Vec<CheckRunPr>,
}

/// The fields of any event agentpool may act on; which are present depends on the event.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub action: Option<String>,
    pub repository: Option<Repository>,
    pub issue: Option<Issue>,
    pub label: Option<Label>,
    pub comment: Option<Comment>,
    pub review: Option<Review>,
    pub pull_request: Option<PullRequest>,
    pub check_run: Option<CheckRun>,
    /// Who did what the event tells (closed the issue, removed the label, commented).
    pub sender: Option<User>,
}

/// Only the repository, read before the signature is checked to find whose secret to check it
/// with.
#[derive(Debug, Clone, Deserialize)]
pub struct RepositoryOnly {
    pub repository: Option<Repository>,
}
