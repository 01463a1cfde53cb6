//! Test support: a real server on port 0 over a fresh database (SQLite or PostgreSQL), tokens
//! for every role, typed clients, and helpers for router-level (`oneshot`) requests.

use std::sync::Arc;
use std::time::Duration;

use agentpool_client::Client;
use agentpool_core::protocol::{ClaimedTask, FailOutcome, FailRequest, HeartbeatReply, HeartbeatRequest};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{ErrorClass, Lease, Task, TaskId, TaskResult, TaskSpec, Worker, WorkerId};
use agentpool_server::{AppState, AuthMode, Role, RunningServer, ServerConfig, ServerKey, create_token};
use agentpool_store::{Clock, Store, StoreConfig};
use agentpool_testkit::db::{Backend, TestDb};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Generate `#[tokio::test]`s named `<name>_sqlite` and `<name>_postgres` calling `name(backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod backends {
            $(
                pub mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn sqlite() {
                        super::super::$name(agentpool_testkit::db::Backend::Sqlite).await
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn postgres() {
                        super::super::$name(agentpool_testkit::db::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

pub struct Tokens {
    pub admin: String,
    pub submitter: String,
    pub worker: String,
}

impl Tokens {
    pub fn of(&self, role: Role) -> &str {
        match role {
            Role::Admin => &self.admin,
            Role::Submitter => &self.submitter,
            Role::Worker => &self.worker,
        }
    }
}

/// A server over a real socket and a fresh database.
pub struct TestApp {
    pub server: RunningServer,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub tokens: Tokens,
    pub base: String,
    // Dropped last: the database outlives the server using it.
    pub _db: TestDb,
}

impl TestApp {
    pub fn state(&self) -> &AppState {
        &self.server.state
    }

    pub fn client(&self, role: Role) -> Client {
        self.client_with(self.tokens.of(role))
    }

    /// A client presenting `token`, such as one an admin created during the test.
    pub fn client_with(&self, token: &str) -> Client {
        Client::new(&self.base, Some(token.to_string())).expect("client")
    }

    pub fn admin(&self) -> Client {
        self.client(Role::Admin)
    }

    pub fn submitter(&self) -> Client {
        self.client(Role::Submitter)
    }

    pub fn worker(&self) -> Client {
        self.client(Role::Worker)
    }
}

/// The Prometheus text the server at `base` serves on `/metrics`.
pub async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

pub fn test_config() -> ServerConfig {
    let mut c = ServerConfig::new("unused", "127.0.0.1:0".parse().expect("addr"));
    c.server_key = Some(ServerKey::generate());
    c.allow_local_repos = true;
    // Tests drive maintenance themselves (with the store's clock), never by waiting for it.
    c.maintenance_interval = None;
    c.notification_interval = None;
    c
}

pub async fn open_store(db: &TestDb, clock: &Clock) -> Arc<dyn Store> {
    let cfg = StoreConfig {
        clock: clock.clone(),
        ..StoreConfig::default()
    };
    agentpool_store::open_store_with(db.url(), cfg)
        .await
        .expect("open store")
}

pub async fn make_tokens(store: &dyn Store) -> Tokens {
    Tokens {
        admin: create_token(store, Role::Admin, "admin")
            .await
            .expect("token")
            .plaintext,
        submitter: create_token(store, Role::Submitter, "sub")
            .await
            .expect("token")
            .plaintext,
        worker: create_token(store, Role::Worker, "wrk")
            .await
            .expect("token")
            .plaintext,
    }
}

/// A server on 127.0.0.1:0 with a fresh database; `None` when the backend is unavailable and
/// not required (PostgreSQL without `AGENTPOOL_TEST_PG_URL`).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, test_config()).await
}

pub async fn spawn_app_with(backend: Backend, config: ServerConfig) -> Option<TestApp> {
    let db = TestDb::new(backend).await?;
    let clock = Clock::system();
    let store = open_store(&db, &clock).await;
    Some(spawn_on(db, store, clock, config).await)
}

pub async fn spawn_on(db: TestDb, store: Arc<dyn Store>, clock: Clock, config: ServerConfig) -> TestApp {
    let tokens = make_tokens(store.as_ref()).await;
    let server = agentpool_server::start_with_store(config, store.clone())
        .await
        .expect("start server");
    let base = format!("http://{}", server.addr);
    TestApp {
        server,
        store,
        clock,
        tokens,
        base,
        _db: db,
    }
}

/// A router (no socket) over a fresh database, for `oneshot` requests.
pub struct RouterApp {
    pub router: axum::Router,
    pub state: AppState,
    pub store: Arc<dyn Store>,
    pub tokens: Tokens,
    pub _db: TestDb,
}

pub async fn router_app(backend: Backend) -> Option<RouterApp> {
    let db = TestDb::new(backend).await?;
    let store = open_store(&db, &Clock::system()).await;
    let tokens = make_tokens(store.as_ref()).await;
    let config = test_config();
    let state = AppState::new(store.clone(), &config);
    let router = agentpool_server::router(state.clone(), 64 * 1024);
    Some(RouterApp {
        router,
        state,
        store,
        tokens,
        _db: db,
    })
}

/// A response read whole.
pub struct Resp {
    pub status: StatusCode,
    pub content_type: String,
    pub body: serde_json::Value,
    pub text: String,
}

impl RouterApp {
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some((ct, bytes)) => b.header("content-type", ct).body(Body::from(bytes)),
            None => b.body(Body::empty()),
        }
        .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Resp {
            status,
            content_type,
            body,
            text,
        }
    }

    pub async fn json(&self, method: &str, uri: &str, token: Option<&str>, body: serde_json::Value) -> Resp {
        self.call(
            method,
            uri,
            token,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }
}

/// Assert `r` carries the API error shape with `status`.
pub fn assert_error(r: &Resp, status: StatusCode) {
    assert_eq!(r.status, status, "body: {}", r.text);
    let e = &r.body["error"];
    assert!(e["code"].is_string(), "no error.code in {}", r.text);
    assert!(e["message"].is_string(), "no error.message in {}", r.text);
    assert!(
        e.as_object().is_some_and(|o| o.contains_key("details")),
        "no error.details in {}",
        r.text
    );
}

pub fn registration(agents: &[&str]) -> WorkerRegistration {
    agentpool_testkit::worker::registration(None, agents, 16)
}

pub async fn register(c: &Client) -> Worker {
    c.register(&registration(&["command", "claude-code"]))
        .await
        .expect("register")
}

pub fn command_task(cmd: &str) -> TaskSpec {
    TaskSpec::command("https://example.com/repo.git", cmd)
}

/// Claim one task for worker `w` without waiting; fails when none is claimable.
pub async fn claim_one(c: &Client, w: &WorkerId) -> ClaimedTask {
    c.claim(w, 1, Duration::ZERO)
        .await
        .expect("claim")
        .remove(0)
        .claimed
}

/// Heartbeat `leases` for worker `w` without reporting a status.
pub async fn heartbeat(c: &Client, w: &WorkerId, leases: Vec<Lease>) -> HeartbeatReply {
    c.heartbeat(
        w,
        &HeartbeatRequest {
            leases,
            ..HeartbeatRequest::default()
        },
    )
    .await
    .expect("heartbeat")
}

/// Report `claimed` succeeded with an empty result.
pub async fn complete(c: &Client, w: &WorkerId, claimed: &ClaimedTask) {
    c.complete(w, claimed.task.id, claimed.lease.token, TaskResult::default())
        .await
        .expect("complete");
}

/// Report `claimed` failed as `class`, with no retry hint and no result.
pub async fn fail(
    c: &Client,
    w: &WorkerId,
    claimed: &ClaimedTask,
    class: ErrorClass,
    message: &str,
) -> agentpool_client::Result<FailOutcome> {
    let req = FailRequest {
        lease_token: claimed.lease.token,
        class,
        message: message.into(),
        retry_after_secs: None,
        result: None,
    };
    c.fail(w, claimed.task.id, &req).await
}

/// Task `id` as `store` holds it.
pub async fn stored_task(store: &Arc<dyn Store>, id: TaskId) -> Task {
    store.get_task(id).await.expect("get").expect("task").task
}

/// Register a worker, submit command `cmd` and claim it: the submitter and worker clients, the
/// worker, the task and its claim.
pub async fn submit_and_claim(app: &TestApp, cmd: &str) -> (Client, Client, Worker, Task, ClaimedTask) {
    let sub = app.submitter();
    let wrk = app.worker();
    let worker = register(&wrk).await;
    let task = sub.submit(&command_task(cmd)).await.expect("submit").task;
    let claimed = claim_one(&wrk, &worker.id).await;
    (sub, wrk, worker, task, claimed)
}

/// Wait until `cond` holds, checking after each yield; fails after `limit`. For conditions
/// that have no event to await (a long poll having started waiting inside the server).
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn no_auth_config() -> ServerConfig {
    let mut c = test_config();
    c.auth = AuthMode::NoAuthLoopback;
    c
}

/// The field paths of a 422 refusal, in the server's order.
pub fn fields(e: agentpool_client::Error) -> Vec<String> {
    match e {
        agentpool_client::Error::Rejected {
            status: 422, fields, ..
        } => fields.into_iter().map(|f| f.field).collect(),
        other => panic!("expected a 422, got {other:?}"),
    }
}
