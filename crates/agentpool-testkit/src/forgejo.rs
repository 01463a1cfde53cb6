//! Forgejo for tests, where no Forgejo instance runs: Forgejo's own REST API description
//! (`swagger.v1.json`, as the pinned crate `forgejo-api` ships it; `scripts/test` fetches it into
//! `tools/forgejo`), served by the request-validating mock server the GitHub tests use
//! ([`crate::github::Prism`]), and behind it a small recording stand-in that keeps the pull
//! requests agentpool's calls open and answers as Forgejo does: a list filtered by state and
//! head, 201 for a new pull request, 409 for a second one on the same branches.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::github::{Pull, Recorded, Recorder, record};

/// Where the stand-in says its pages are: Forgejo's description wants a `url` there, which
/// a loopback address is not.
const WEB: &str = "https://forgejo.example.com";

/// `tools/forgejo/swagger.v1.json` in this repository.
pub fn description_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/forgejo/swagger.v1.json")
}

/// Forgejo's API description written to `dir` with each path under its `basePath`
/// (`/api/v1/repos/…`): Swagger 2.0 puts the two together, prism serves paths as written.
pub fn api_description(dir: &Path) -> io::Result<PathBuf> {
    let file = description_file();
    let text = std::fs::read_to_string(&file).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: {e} (fetch Forgejo's API description as scripts/test does)",
                file.display()
            ),
        )
    })?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let base = doc["basePath"].as_str().unwrap_or_default().to_string();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    doc["paths"] = paths
        .into_iter()
        .map(|(p, v)| (format!("{base}{p}"), v))
        .collect::<serde_json::Map<_, _>>()
        .into();
    if let Some(d) = doc.as_object_mut() {
        d.remove("basePath");
    }
    let out = dir.join("forgejo-api.json");
    std::fs::write(&out, serde_json::to_vec(&doc)?)?;
    Ok(out)
}

struct Inner {
    pulls: Vec<Pull>,
    default_branch: String,
    /// List calls still to be answered empty (a list that has not caught up yet).
    lagging_lists: u32,
}

#[derive(Clone)]
struct StandIn {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
}

/// The recording stand-in: an axum server keeping pull requests.
pub struct ForgejoStandIn {
    state: StandIn,
    recorder: Recorder,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ForgejoStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ForgejoStandIn {
    /// Start on 127.0.0.1:0, every repository's default branch `default_branch`.
    pub async fn start(default_branch: &str) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let state = StandIn {
            inner: Arc::new(Mutex::new(Inner {
                pulls: Vec::new(),
                default_branch: default_branch.to_string(),
                lagging_lists: 0,
            })),
            addr: listener.local_addr()?,
        };
        let recorder = Recorder::default();
        let app = Router::new()
            .route("/api/v1/repos/{owner}/{repo}", get(get_repo))
            .route(
                "/api/v1/repos/{owner}/{repo}/pulls",
                get(list_pulls).post(create_pull),
            )
            .route_layer(middleware::from_fn_with_state(recorder.clone(), record))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            state,
            recorder,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorder.all()
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.state
            .inner
            .lock()
            .map(|i| i.pulls.clone())
            .unwrap_or_default()
    }

    /// A pull request someone opened by hand; its number.
    pub fn open_by_hand(&self, head: &str, base: &str) -> u64 {
        let Ok(mut i) = self.state.inner.lock() else {
            return 0;
        };
        let number = i.pulls.len() as u64 + 1;
        i.pulls.push(Pull {
            number,
            head: head.into(),
            base: base.into(),
            title: "by hand".into(),
            body: String::new(),
            draft: false,
            open: true,
        });
        number
    }

    /// Answer the next `n` list calls with no pull request, as a list that has not caught up
    /// with one just opened elsewhere.
    pub fn lag_lists(&self, n: u32) {
        if let Ok(mut i) = self.state.inner.lock() {
            i.lagging_lists = n;
        }
    }

    /// Close pull request `number` (merged or not: it is no longer open).
    pub fn close(&self, number: u64) {
        if let Ok(mut i) = self.state.inner.lock() {
            i.pulls
                .iter_mut()
                .filter(|p| p.number == number)
                .for_each(|p| p.open = false);
        }
    }
}

fn repo_json(owner: &str, repo: &str, default_branch: &str) -> Value {
    json!({
        "id": 7,
        "name": repo,
        "full_name": format!("{owner}/{repo}"),
        "default_branch": default_branch,
        "html_url": format!("{WEB}/{owner}/{repo}"),
        "owner": { "id": 3, "login": owner },
    })
}

fn pull_json(owner: &str, repo: &str, p: &Pull) -> Value {
    let branch = |name: &str| json!({ "label": name, "ref": name, "sha": "0123456789abcdef0123456789abcdef01234567", "repo_id": 7 });
    json!({
        "id": p.number + 500,
        "number": p.number,
        "title": p.title,
        "body": p.body,
        "state": if p.open { "open" } else { "closed" },
        "draft": p.draft,
        "html_url": format!("{WEB}/{owner}/{repo}/pulls/{}", p.number),
        "head": branch(&p.head),
        "base": branch(&p.base),
        "created_at": "2026-12-01T10:00:00Z",
    })
}

async fn get_repo(State(s): State<StandIn>, UrlPath((owner, repo)): UrlPath<(String, String)>) -> Response {
    let branch = s
        .inner
        .lock()
        .map(|i| i.default_branch.clone())
        .unwrap_or_default();
    Json(repo_json(&owner, &repo, &branch)).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    head: Option<String>,
    limit: Option<usize>,
    page: Option<usize>,
}

async fn list_pulls(
    State(s): State<StandIn>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Response {
    let Ok(mut i) = s.inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if i.lagging_lists > 0 {
        i.lagging_lists -= 1;
        return Json(Vec::<Value>::new()).into_response();
    }
    let limit = q.limit.unwrap_or(30).max(1);
    let page = q.page.unwrap_or(1).max(1);
    let want_open = q.state.as_deref() != Some("closed");
    let all = q.state.as_deref() == Some("all");
    let out: Vec<Value> = i
        .pulls
        .iter()
        .filter(|p| all || p.open == want_open)
        .filter(|p| q.head.as_ref().is_none_or(|h| *h == p.head))
        .skip((page - 1) * limit)
        .take(limit)
        .map(|p| pull_json(&owner, &repo, p))
        .collect();
    Json(out).into_response()
}

#[derive(Deserialize)]
struct NewPull {
    title: String,
    head: String,
    base: String,
    #[serde(default)]
    body: String,
}

async fn create_pull(
    State(s): State<StandIn>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Json(n): Json<NewPull>,
) -> Response {
    let Ok(mut i) = s.inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if i.pulls
        .iter()
        .any(|p| p.open && p.head == n.head && p.base == n.base)
    {
        // Forgejo's answer to a second pull request on the same branches.
        let message = "pull request already exists for these targets";
        return (StatusCode::CONFLICT, Json(json!({ "message": message }))).into_response();
    }
    let p = Pull {
        number: i.pulls.len() as u64 + 1,
        head: n.head,
        base: n.base,
        // Forgejo's drafts are the pull requests titled as work in progress.
        draft: n.title.starts_with("WIP:"),
        title: n.title,
        body: n.body,
        open: true,
    };
    let v = pull_json(&owner, &repo, &p);
    i.pulls.push(p);
    (StatusCode::CREATED, Json(v)).into_response()
}
