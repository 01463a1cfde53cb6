//! The recording stand-in behind the mock server: keeps the pull requests and comments
//! agentpool's calls create, answers with GitHub's own example responses patched with that
//! state, and mints installation tokens for requests signed as a GitHub App.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

/// The installation the stand-in reports on every repository.
pub const INSTALLATION_ID: u64 = 4242;
/// The installation token the stand-in mints unless told another
/// ([`GithubStandIn::set_installation_token`]).
pub const INSTALLATION_TOKEN: &str = "ghs_stand-in-installation-token";
/// A TEST-ONLY GitHub App private key (PKCS#1 PEM), registered with no App.
pub const TEST_ONLY_APP_KEY_PEM: &str =
    include_str!("../../../agentpool-github/tests/fixtures/TEST-ONLY-github-app-key.pem");

/// One request the stand-in received (after the mock server validated it).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
    pub authorization: Option<String>,
}

/// A pull request a stand-in (GitHub's or Forgejo's) holds.
#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
    /// Not yet closed or merged.
    pub open: bool,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub issue: u64,
    pub body: String,
    /// How many times it was rewritten.
    pub updates: u32,
}

/// The requests a stand-in received, in order (shared with its recording middleware).
#[derive(Clone, Default)]
pub(crate) struct Recorder(Arc<Mutex<Vec<Recorded>>>);

impl Recorder {
    pub(crate) fn all(&self) -> Vec<Recorded> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    pulls: Vec<Pull>,
    comments: Vec<Comment>,
    next_id: u64,
    installation_token: String,
    minted: u32,
    /// Answer every comment call with this status ([`GithubStandIn::refuse_comments`]).
    refuse_comments: Option<u16>,
}

struct StandInState {
    inner: Mutex<Inner>,
    recorder: Recorder,
    examples: BTreeMap<String, Value>,
    default_branch: String,
    first_pr_number: u64,
}

impl StandInState {
    /// The state a comment call changes, or the answer it gets instead: the status comments
    /// are refused with, or a server error when the state cannot be read.
    fn for_comment(&self) -> Result<MutexGuard<'_, Inner>, Box<Response>> {
        let i = self
            .inner
            .lock()
            .map_err(|_| Box::new(StatusCode::INTERNAL_SERVER_ERROR.into_response()))?;
        match i.refuse_comments {
            Some(status) => Err(Box::new(refused(status))),
            None => Ok(i),
        }
    }
}

/// The recording stand-in: an axum server keeping pull requests and comments.
pub struct GithubStandIn {
    addr: SocketAddr,
    state: Arc<StandInState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GithubStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GithubStandIn {
    /// Start on 127.0.0.1:0; pull requests it opens are numbered from `first_pr_number`.
    pub async fn start(spec: &Value, default_branch: &str, first_pr_number: u64) -> io::Result<Self> {
        let mut examples = BTreeMap::new();
        for name in [
            "installation",
            "installation-token",
            "review-comment-items",
            "pull-request",
            "pull-request-simple-items",
            "issue-comment",
            "full-repository-default-response",
        ] {
            let v = spec["components"]["examples"][name]["value"].clone();
            if v.is_null() {
                return Err(io::Error::other(format!(
                    "GitHub's document has no example {name}"
                )));
            }
            examples.insert(name.to_string(), v);
        }
        let state = Arc::new(StandInState {
            inner: Mutex::new(Inner {
                next_id: 1000,
                installation_token: INSTALLATION_TOKEN.into(),
                ..Inner::default()
            }),
            examples,
            recorder: Recorder::default(),
            default_branch: default_branch.to_string(),
            first_pr_number,
        });
        let app = Router::new()
            .route("/repos/{owner}/{repo}", get(get_repo))
            .route("/repos/{owner}/{repo}/pulls", get(list_pulls).post(create_pull))
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                post(create_comment),
            )
            .route(
                "/repos/{owner}/{repo}/issues/comments/{id}",
                patch(update_comment),
            )
            .route("/repos/{owner}/{repo}/installation", get(get_installation))
            .route("/installation/token", axum::routing::delete(revoke_token))
            .route(
                "/app/installations/{id}/access_tokens",
                post(create_installation_token),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/{number}/reviews/{review}/comments",
                get(list_review_comments),
            )
            .route_layer(middleware::from_fn_with_state(state.recorder.clone(), record))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.recorder.all()
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.state
            .inner
            .lock()
            .map(|i| i.pulls.clone())
            .unwrap_or_default()
    }

    /// The token minted from now on.
    pub fn set_installation_token(&self, token: &str) {
        if let Ok(mut i) = self.state.inner.lock() {
            i.installation_token = token.to_string();
        }
    }

    /// How many installation tokens were minted.
    pub fn minted(&self) -> u32 {
        self.state.inner.lock().map(|i| i.minted).unwrap_or_default()
    }

    /// Close (or merge) pull request `number`, as someone on GitHub would.
    pub fn close_pull(&self, number: u64) {
        if let Ok(mut i) = self.state.inner.lock()
            && let Some(p) = i.pulls.iter_mut().find(|p| p.number == number)
        {
            p.open = false;
        }
    }

    /// From now on answer every comment call (create, update) with `status` and GitHub's
    /// words for it (403: the token may not write issues), or as usual again with `None`.
    pub fn refuse_comments(&self, status: Option<u16>) {
        if let Ok(mut i) = self.state.inner.lock() {
            i.refuse_comments = status;
        }
    }

    pub fn comments(&self) -> Vec<Comment> {
        self.state
            .inner
            .lock()
            .map(|i| i.comments.clone())
            .unwrap_or_default()
    }
}

/// Record each request a route answers, before its handler runs.
pub(crate) async fn record(State(r): State<Recorder>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let query = Query::<BTreeMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    if let Ok(mut all) = r.0.lock() {
        all.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            authorization: parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

fn pull_json(s: &StandInState, owner: &str, repo: &str, p: &Pull, simple: bool) -> Value {
    let mut v = if simple {
        s.examples["pull-request-simple-items"][0].clone()
    } else {
        s.examples["pull-request"].clone()
    };
    let url = format!("https://github.com/{owner}/{repo}/pull/{}", p.number);
    v["number"] = json!(p.number);
    v["id"] = json!(p.number + 1_000_000);
    v["html_url"] = json!(url);
    v["state"] = json!(if p.open { "open" } else { "closed" });
    v["title"] = json!(p.title);
    v["body"] = json!(p.body);
    v["draft"] = json!(p.draft);
    v["head"]["ref"] = json!(p.head);
    // GitHub's example teams lack `type`, which its own schema requires.
    v["requested_teams"] = json!([]);
    v["base"]["ref"] = json!(p.base);
    v
}

async fn get_repo(
    State(s): State<Arc<StandInState>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
) -> Response {
    let mut v = s.examples["full-repository-default-response"].clone();
    v["default_branch"] = json!(s.default_branch);
    // GitHub's example omits `language`, which its own schema requires (nullable).
    for key in ["source", "parent"] {
        if let Some(o) = v[key].as_object_mut() {
            o.entry("language").or_insert(Value::Null);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.entry("language").or_insert(Value::Null);
    }
    v["full_name"] = json!(format!("{owner}/{repo}"));
    axum::Json(v).into_response()
}

async fn list_pulls(
    State(s): State<Arc<StandInState>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let head = q.get("head").cloned().unwrap_or_default();
    // GitHub lists open pull requests unless asked for others.
    let open_only = q.get("state").is_none_or(|s| s == "open");
    let pulls = s.inner.lock().map(|i| i.pulls.clone()).unwrap_or_default();
    let out: Vec<Value> = pulls
        .iter()
        .filter(|p| head.is_empty() || head == format!("{owner}:{}", p.head))
        .filter(|p| p.open || !open_only)
        .map(|p| pull_json(&s, &owner, &repo, p, true))
        .collect();
    axum::Json(out).into_response()
}

async fn create_pull(
    State(s): State<Arc<StandInState>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let Ok(mut i) = s.inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let head = body["head"].as_str().unwrap_or_default().to_string();
    if i.pulls.iter().any(|p| p.open && p.head == head) {
        let v = json!({"message": "Validation Failed", "documentation_url": "https://docs.github.com/rest",
            "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {owner}:{head}.")}]});
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(v)).into_response();
    }
    let p = Pull {
        number: s.first_pr_number + i.pulls.len() as u64,
        head,
        base: body["base"].as_str().unwrap_or_default().to_string(),
        title: body["title"].as_str().unwrap_or_default().to_string(),
        body: body["body"].as_str().unwrap_or_default().to_string(),
        draft: body["draft"].as_bool().unwrap_or(false),
        open: true,
    };
    i.pulls.push(p.clone());
    drop(i);
    (
        StatusCode::CREATED,
        axum::Json(pull_json(&s, &owner, &repo, &p, false)),
    )
        .into_response()
}

fn comment_json(s: &StandInState, owner: &str, repo: &str, c: &Comment) -> Value {
    let mut v = s.examples["issue-comment"].clone();
    v["id"] = json!(c.id);
    v["body"] = json!(c.body);
    v["html_url"] = json!(format!(
        "https://github.com/{owner}/{repo}/issues/{}#issuecomment-{}",
        c.issue, c.id
    ));
    v
}

async fn create_comment(
    State(s): State<Arc<StandInState>>,
    UrlPath((owner, repo, number)): UrlPath<(String, String, u64)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut i = match s.for_comment() {
        Ok(i) => i,
        Err(answer) => return *answer,
    };
    i.next_id += 1;
    let c = Comment {
        id: i.next_id,
        issue: number,
        body: body["body"].as_str().unwrap_or_default().to_string(),
        updates: 0,
    };
    i.comments.push(c.clone());
    drop(i);
    (
        StatusCode::CREATED,
        axum::Json(comment_json(&s, &owner, &repo, &c)),
    )
        .into_response()
}

async fn update_comment(
    State(s): State<Arc<StandInState>>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, u64)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut i = match s.for_comment() {
        Ok(i) => i,
        Err(answer) => return *answer,
    };
    let Some(c) = i.comments.iter_mut().find(|c| c.id == id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})),
        )
            .into_response();
    };
    c.body = body["body"].as_str().unwrap_or_default().to_string();
    c.updates += 1;
    let c = c.clone();
    drop(i);
    axum::Json(comment_json(&s, &owner, &repo, &c)).into_response()
}

/// Whether the request is signed as a GitHub App would sign it: `Bearer` and a three-part
/// JWT whose claims name an issuer (the signature is checked by the tests that own the key).
fn app_jwt(headers: &HeaderMap) -> bool {
    use base64::Engine;
    let Some(jwt) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    parts.len() == 3
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .ok()
            .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
            .is_some_and(|c| c["iss"].is_string() && c["exp"].is_u64() && c["iat"].is_u64())
}

/// A refusal as GitHub words it (a 403 is the one a token without `issues: write` gets).
fn refused(status: u16) -> Response {
    let message = match status {
        403 => "Resource not accessible by integration",
        404 => "Not Found",
        _ => "Refused",
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
        axum::Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "A JSON web token could not be decoded", "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

async fn get_installation(State(s): State<Arc<StandInState>>, headers: HeaderMap) -> Response {
    if !app_jwt(&headers) {
        return unauthorized();
    }
    let mut v = s.examples["installation"].clone();
    v["id"] = json!(INSTALLATION_ID);
    v["access_tokens_url"] = json!(format!(
        "https://api.github.com/app/installations/{INSTALLATION_ID}/access_tokens"
    ));
    axum::Json(v).into_response()
}

async fn create_installation_token(
    State(s): State<Arc<StandInState>>,
    headers: HeaderMap,
    body: Option<axum::Json<Value>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    if !app_jwt(&headers) {
        return unauthorized();
    }
    let Ok(mut i) = s.inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    i.minted += 1;
    let token = i.installation_token.clone();
    drop(i);
    let mut v = s.examples["installation-token"].clone();
    v["token"] = json!(token);
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    v["expires_at"] = json!(expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if body["permissions"].is_object() {
        v["permissions"] = body["permissions"].clone();
    }
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

async fn revoke_token() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn list_review_comments(
    State(s): State<Arc<StandInState>>,
    UrlPath((_, _, _, review)): UrlPath<(String, String, u64, u64)>,
) -> Response {
    let mut v = s.examples["review-comment-items"].clone();
    for c in v.as_array_mut().into_iter().flatten() {
        c["pull_request_review_id"] = json!(review);
    }
    axum::Json(v).into_response()
}
