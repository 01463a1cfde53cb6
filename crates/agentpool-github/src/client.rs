//! The REST calls agentpool makes to GitHub (or GitHub Enterprise at another base URL): the
//! repository's default branch, pull requests (find the open one for a head, open one), and
//! issue comments (create, update in place). The token is sent only in the `Authorization`
//! header and never appears in an error or a log line.

use serde::{Deserialize, Serialize};

use crate::http::{self, Forge, Result, Token};

/// API version header GitHub documents for the REST API.
const API_VERSION: &str = "2022-11-28";

/// A pull request as agentpool records it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullInfo {
    pub number: u64,
    pub html_url: String,
    pub state: String,
    pub draft: Option<bool>,
}

/// A comment of a pull request review, with where it points.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReviewComment {
    pub id: u64,
    #[serde(default)]
    pub body: String,
    pub path: Option<String>,
    pub line: Option<u64>,
    pub original_line: Option<u64>,
}

/// `POST /repos/{owner}/{repo}/pulls`.
#[derive(Debug, Clone, Serialize)]
pub struct NewPull<'a> {
    pub title: &'a str,
    pub head: &'a str,
    pub base: &'a str,
    pub body: &'a str,
    pub draft: bool,
}

#[derive(Deserialize)]
struct Id {
    id: u64,
}

#[derive(Deserialize)]
struct RepoInfo {
    default_branch: String,
}

/// What opening (or finding) the pull request of a pushed branch needs of a forge; GitHub
/// and Forgejo both answer it, so the server's loop is written once.
pub trait PullRequests: Send + Sync {
    /// The repository's default branch.
    fn default_branch(&self, repo: &str) -> impl Future<Output = Result<String>> + Send;
    /// The open pull request whose head is `branch`, if there is one.
    fn find_open_pull(
        &self,
        repo: &str,
        branch: &str,
    ) -> impl Future<Output = Result<Option<PullInfo>>> + Send;
    /// Open a pull request.
    fn create_pull(&self, repo: &str, pull: &NewPull<'_>) -> impl Future<Output = Result<PullInfo>> + Send;
}

/// A client for one API base URL with one token.
#[derive(Debug, Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    base: String,
    token: Token,
}

impl GithubClient {
    /// A client for `base` (`https://api.github.com`, or `https://HOST/api/v3`) with `token`.
    pub fn new(base: &str, token: &str) -> Result<Self> {
        Ok(Self {
            http: http::client()?,
            base: base.trim_end_matches('/').to_string(),
            token: Token(token.to_string()),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
            .bearer_auth(&self.token.0)
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        what: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<T> {
        http::send(Forge::Github, what, req).await
    }

    /// `GET path`, decoded.
    pub(crate) async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        what: &'static str,
        path: &str,
    ) -> Result<T> {
        self.send(what, self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body, decoded.
    pub(crate) async fn post<T: for<'de> Deserialize<'de>, B: Serialize + ?Sized>(
        &self,
        what: &'static str,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(what, self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// The comments of review `review` on pull request `number` (the first 100: a follow-up
    /// prompt has no use for more).
    pub async fn review_comments(&self, repo: &str, number: u64, review: u64) -> Result<Vec<ReviewComment>> {
        let req = self
            .request(
                reqwest::Method::GET,
                &format!("/repos/{repo}/pulls/{number}/reviews/{review}/comments"),
            )
            .query(&[("per_page", "100")]);
        self.send("list review comments", req).await
    }

    /// Revoke the installation token this client holds (`DELETE /installation/token`): a
    /// task's token ends with the task instead of living out its hour.
    pub async fn revoke_installation_token(&self) -> Result<()> {
        let req = self.request(reqwest::Method::DELETE, "/installation/token");
        http::send_raw(Forge::Github, "revoke installation token", req)
            .await
            .map(|_| ())
    }

    /// Comment on an issue or pull request; returns the comment's id.
    pub async fn create_comment(&self, repo: &str, number: u64, body: &str) -> Result<u64> {
        let path = format!("/repos/{repo}/issues/{number}/comments");
        self.send_comment("create comment", reqwest::Method::POST, &path, body)
            .await
    }

    /// Replace the text of a comment agentpool made.
    pub async fn update_comment(&self, repo: &str, comment_id: u64, body: &str) -> Result<()> {
        let path = format!("/repos/{repo}/issues/comments/{comment_id}");
        self.send_comment("update comment", reqwest::Method::PATCH, &path, body)
            .await
            .map(|_| ())
    }

    /// Send a comment's text to `path`; the comment's id from the answer.
    async fn send_comment(
        &self,
        what: &'static str,
        method: reqwest::Method,
        path: &str,
        body: &str,
    ) -> Result<u64> {
        let req = self
            .request(method, path)
            .json(&serde_json::json!({ "body": body }));
        let c: Id = self.send(what, req).await?;
        Ok(c.id)
    }
}

impl PullRequests for GithubClient {
    /// The repository's default branch (the base of a pull request when the task names none).
    async fn default_branch(&self, repo: &str) -> Result<String> {
        let r: RepoInfo = self
            .send(
                "get repository",
                self.request(reqwest::Method::GET, &format!("/repos/{repo}")),
            )
            .await?;
        Ok(r.default_branch)
    }

    /// The open pull request whose head is `branch` of `repo`'s owner, if there is one.
    async fn find_open_pull(&self, repo: &str, branch: &str) -> Result<Option<PullInfo>> {
        let owner = repo.split('/').next().unwrap_or_default();
        let req = self
            .request(reqwest::Method::GET, &format!("/repos/{repo}/pulls"))
            .query(&[("head", format!("{owner}:{branch}")), ("state", "open".into())]);
        let pulls: Vec<PullInfo> = self.send("list pull requests", req).await?;
        Ok(pulls.into_iter().next())
    }

    /// Open a pull request.
    async fn create_pull(&self, repo: &str, pull: &NewPull<'_>) -> Result<PullInfo> {
        let req = self
            .request(reqwest::Method::POST, &format!("/repos/{repo}/pulls"))
            .json(pull);
        self.send("create pull request", req).await
    }
}
