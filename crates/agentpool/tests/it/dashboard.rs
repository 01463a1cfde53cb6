//! The dashboard in a real browser: a server with token auth over SQLite, a real worker (HTTP,
//! worker token) whose Claude Code talks to the scripted model endpoint, and
//! `tools/browser/e2e.mjs` (Playwright driving Debian's chromium) clicking through it — login,
//! live list and task pages, a real agent's tool call and text, cancel, roles, drain.
//! Screenshots of each page land in `target/screenshots/`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::{AgentConfig, Registry};
use agentpool_client::Client;
use agentpool_runner::{WorkerConfig, run_worker};
use agentpool_server::{Role, ServerConfig, create_token};
use agentpool_testkit::browser;
use agentpool_testkit::model::{ModelServer, Script, Step};
use tokio_util::sync::CancellationToken;

use crate::Env;

fn agent_bin_dir() -> PathBuf {
    std::env::var_os("AGENTPOOL_AGENT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| browser::root().join("tools/agents/node_modules/.bin"))
}

async fn token(store: &dyn agentpool_store::Store, role: Role) -> String {
    create_token(store, role, &format!("e2e-{role}"))
        .await
        .expect("create token")
        .plaintext
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_works_in_a_real_browser() {
    if !browser::ready()
        || (!agent_bin_dir().join("claude").exists() && browser::missing("the claude CLI (tools/agents)"))
    {
        return;
    }

    let env = Env::new();
    let repo = env.sample_repo();
    let scratch = env.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let db = format!("sqlite://{}", env.dir.path().join("e2e.db").display());
    let store = agentpool_store::open_store(&db).await.expect("open store");
    let admin = token(store.as_ref(), Role::Admin).await;
    let submitter = token(store.as_ref(), Role::Submitter).await;
    let worker_token = token(store.as_ref(), Role::Worker).await;

    let mut cfg = ServerConfig::new(db.clone(), "127.0.0.1:0".parse().expect("addr"));
    cfg.allow_local_repos = true;
    let server = agentpool_server::start_with_store(cfg, store.clone())
        .await
        .expect("start server");
    let url = format!("http://{}", server.addr);

    let model = ModelServer::start(Script::new([
        Step::shell("echo hello from claude > claude.txt"),
        Step::answer("I wrote claude.txt."),
    ]))
    .await
    .expect("model endpoint");
    let mut wcfg = WorkerConfig::new(env.dir.path().join("work"), 2);
    wcfg.agents = Registry::builtin(&AgentConfig {
        bin_dir: Some(agent_bin_dir()),
        session_dir: Some(env.dir.path().join("sessions")),
        ..AgentConfig::default()
    });
    wcfg.pipeline.allow_file_repos = true;
    wcfg.pipeline.extra_env = model.env_for("claude-code");
    // Beat often so a cancel from the page reaches the worker at once; short polls and grace
    // keep the stop quick.
    wcfg.heartbeat_interval = Duration::from_secs(1);
    wcfg.claim_wait = Duration::from_secs(2);
    wcfg.drain_grace = Duration::from_secs(5);
    let (registered_tx, mut registered) = tokio::sync::mpsc::unbounded_channel();
    wcfg.on_registered = Some(registered_tx);
    let api = Client::new(&url, Some(worker_token)).expect("worker api");
    let stop = CancellationToken::new();
    let worker = tokio::spawn(run_worker(wcfg, Arc::new(api), stop.clone()));
    tokio::time::timeout(Duration::from_secs(30), registered.recv())
        .await
        .expect("worker registers in time")
        .expect("worker registered");

    let stdout = browser::run_script(
        "e2e.mjs",
        vec![
            ("E2E_URL", url.clone().into()),
            ("E2E_ADMIN_TOKEN", admin.clone().into()),
            ("E2E_SUBMITTER_TOKEN", submitter.clone().into()),
            ("E2E_AGENTPOOL_BIN", env!("CARGO_BIN_EXE_agentpool").into()),
            ("E2E_REPO", repo.clone().into_os_string()),
            ("E2E_DIR", scratch.clone().into_os_string()),
            ("AGENTPOOL_DATA_DIR", env.data_dir().into_os_string()),
        ],
        Duration::from_secs(600),
    )
    .await;
    assert!(stdout.contains("ok: no page logged a console error"), "{stdout}");

    // What the browser did, seen from the store.
    let tasks = store
        .list_tasks(&agentpool_store::TaskFilter {
            limit: 50,
            ..Default::default()
        })
        .await
        .expect("list");
    let agent_task = tasks
        .iter()
        .find(|t| t.spec.agent.as_deref() == Some("claude-code"))
        .expect("the agent task");
    assert_eq!(agent_task.state, agentpool_core::TaskState::Succeeded);
    let sleeper = tasks
        .iter()
        .find(|t| {
            t.spec
                .command
                .as_deref()
                .is_some_and(|c| c.starts_with("sleep 600"))
        })
        .expect("the canceled task");
    assert_eq!(sleeper.state, agentpool_core::TaskState::Canceled);
    let shots = browser::root().join("target/screenshots");
    assert!(shots.join("task.png").exists() && shots.join("overview.png").exists());

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    server.shutdown().await.expect("server stops");
}
