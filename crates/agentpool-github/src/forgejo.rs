//! The REST calls agentpool makes to Forgejo (and Gitea, whose API Forgejo keeps): the
//! repository's default branch and pull requests (find the open one for a head, open one).
//! Paths follow Forgejo's own API description (`/api/v1` under the instance's URL); the token
//! is sent only in the `Authorization` header (`token …`, as Forgejo documents it).

use serde::Deserialize;

use crate::client::{NewPull, PullInfo, PullRequests};
use crate::http::{self, Forge, Result, Token};

/// Open pull requests looked through for a head, 50 a page: a repository with more open pull
/// requests than this has bigger problems than a second one.
const MAX_PAGES: u32 = 20;
const PAGE: u32 = 50;
/// The title prefix Forgejo and Gitea read as "work in progress" (their drafts).
const WIP_PREFIX: &str = "WIP: ";

/// A client for one Forgejo instance with one token.
#[derive(Debug, Clone)]
pub struct ForgejoClient {
    http: reqwest::Client,
    api: String,
    token: Token,
}

#[derive(Deserialize)]
struct Repo {
    default_branch: String,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    name: String,
}

#[derive(Deserialize)]
struct Pull {
    number: u64,
    html_url: String,
    state: String,
    #[serde(default)]
    draft: Option<bool>,
    head: Branch,
}

impl From<Pull> for PullInfo {
    fn from(p: Pull) -> Self {
        PullInfo {
            number: p.number,
            html_url: p.html_url,
            state: p.state,
            draft: p.draft,
        }
    }
}

impl ForgejoClient {
    /// A client for the instance at `url` (`https://codeberg.org`, the address of its web
    /// pages; the API is under `/api/v1`) with `token`.
    pub fn new(url: &str, token: &str) -> Result<Self> {
        Ok(Self {
            http: http::client()?,
            api: format!("{}/api/v1", url.trim_end_matches('/')),
            token: Token(token.to_string()),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .header("accept", "application/json")
            .header("authorization", format!("token {}", self.token.0))
    }
}

impl PullRequests for ForgejoClient {
    /// The repository's default branch (the base of a pull request when the task names none).
    async fn default_branch(&self, repo: &str) -> Result<String> {
        let req = self.request(reqwest::Method::GET, &format!("/repos/{repo}"));
        let r: Repo = http::send(Forge::Forgejo, "get repository", req).await?;
        Ok(r.default_branch)
    }

    /// The open pull request whose head is `branch`, if there is one. The list is asked
    /// filtered by head, and filtered here too: an older server ignores the filter.
    async fn find_open_pull(&self, repo: &str, branch: &str) -> Result<Option<PullInfo>> {
        for page in 1..=MAX_PAGES {
            let req = self
                .request(reqwest::Method::GET, &format!("/repos/{repo}/pulls"))
                .query(&[
                    ("state", "open".to_string()),
                    ("head", branch.to_string()),
                    ("limit", PAGE.to_string()),
                    ("page", page.to_string()),
                ]);
            let pulls: Vec<Pull> = http::send(Forge::Forgejo, "list pull requests", req).await?;
            let last = pulls.len() < PAGE as usize;
            if let Some(p) = pulls.into_iter().find(|p| p.head.name == branch) {
                return Ok(Some(p.into()));
            }
            if last {
                break;
            }
        }
        Ok(None)
    }

    /// Open a pull request; a draft is titled `WIP: …`, which is how Forgejo marks one.
    async fn create_pull(&self, repo: &str, pull: &NewPull<'_>) -> Result<PullInfo> {
        let title = if pull.draft {
            format!("{WIP_PREFIX}{}", pull.title)
        } else {
            pull.title.to_string()
        };
        let req = self
            .request(reqwest::Method::POST, &format!("/repos/{repo}/pulls"))
            .json(&serde_json::json!({
                "title": title,
                "head": pull.head,
                "base": pull.base,
                "body": pull.body,
            }));
        let p: Pull = http::send(Forge::Forgejo, "create pull request", req).await?;
        Ok(p.into())
    }
}
