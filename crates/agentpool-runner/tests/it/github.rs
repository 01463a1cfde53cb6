//! End to end from GitHub to a pull request and back, with every part real except GitHub
//! itself: a signed `issues.labeled` delivery (GitHub's own example payload) → a task on a
//! real server → a worker running the real Claude Code CLI against the scripted model → the
//! branch pushed to the smart-HTTP git server with the GitHub App installation token the
//! server minted for the task (the only credential the git server accepts) → the pull request
//! opened and the status comment written through prism with the server's own installation
//! token (each call validated against GitHub's API description) → a review comment delivery →
//! a follow-up task on the same branch that resumes the agent's session.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::{AgentConfig, Registry};
use agentpool_client::Client;
use agentpool_core::github::{GithubSettings, PullRequestRef};
use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskId, TaskResult};
use agentpool_server::{AuthMode, ServerConfig, ServerKey};
use agentpool_testkit::github::{GithubStandIn, Prism, TEST_ONLY_APP_KEY_PEM, api_subset, webhook_examples};
use agentpool_testkit::model::{ModelServer, Script, Step};
use serde_json::Value;

use super::agents::{finished_within, installed};
use super::worker::{Env, RunningWorker, assert_succeeded, config, env, start, succeeded_result, until};

const SECRET: &str = "e2e webhook secret";

fn bin_dir() -> PathBuf {
    std::env::var_os("AGENTPOOL_AGENT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/agents/node_modules/.bin")
        })
}

async fn deliver(base: &str, event: &str, delivery: &str, payload: &Value) -> Value {
    let body = serde_json::to_vec(payload).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            agentpool_github::signature::sign(SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{event} was not queued");
    resp.json().await.unwrap()
}

fn task_id(v: &Value) -> TaskId {
    v["task_id"].as_str().expect("task id").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labeled_issue_to_pull_request_and_review_follow_up_on_the_same_branch() {
    if !installed("claude-code") {
        return;
    }
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let (spec_path, spec) = api_subset(dir.path()).expect("GitHub's API description (tools/github)");
    let gh = GithubStandIn::start(&spec, "main", 2).await.unwrap();
    // The App's installation tokens are what the git server takes, as GitHub does.
    gh.set_installation_token(env.server.token());
    let prism = Prism::start(&spec_path, &gh.url(), dir.path())
        .await
        .expect("prism");

    let server = forge_server(&env, Some("https://agentpool.example.com")).await;
    let base = server.url();
    let admin = Client::new(&base, None).unwrap();
    admin.put_credential("gh-webhook", SECRET).await.unwrap();
    admin
        .put_credential("gh-app-key", TEST_ONLY_APP_KEY_PEM)
        .await
        .unwrap();
    let settings: GithubSettings = serde_json::from_value(serde_json::json!({
        "repository": "Codertocat/Hello-World",
        "api_url": prism.url(),
        "webhook_secret": "gh-webhook",
        "app": {"app_id": 31337, "private_key": "gh-app-key"},
        "label": "bug",
    }))
    .unwrap();
    admin
        .put_project(&ProjectSpec {
            github: Some(settings),
            ..hello_project(&env)
        })
        .await
        .unwrap();

    let model = ModelServer::start(Script::new([
        Step::write_file("GREETING.md", "Hello\n"),
        Step::answer("Added GREETING.md."),
        // Through the shell, relative to the CLI's working directory: the resumed conversation
        // names the first task's directory, where a file tool's absolute path would point.
        Step::shell("printf 'wave\\n' > WAVE.md"),
        Step::answer("Used more emoji."),
    ]))
    .await
    .unwrap();
    // The worker's own git token is refused: only the minted one pushes.
    assert_ne!(env.server.token(), "no-access");
    let worker = claude_worker(&env, "no-access", &model, &base);

    // The labeled issue becomes a task; the worker runs it and pushes its branch.
    let labeled = webhook_examples("issues", Some("labeled")).unwrap().remove(0);
    let first = task_id(&deliver(&base, "issues", "e2e-1", &labeled).await);
    let (result, branch) = pushed_within(&env, first).await;
    let first_sha = env
        .server
        .branch_sha("app", &branch)
        .expect("branch pushed to the git server");
    let session = result.session_id.clone().expect("session id");

    // The server opens the pull request and records it in the task's result.
    let pr = pull_request_of(&env, first, "the pull request").await;
    assert_eq!(pr.number, 2);
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        (branch.as_str(), "main")
    );
    assert!(pulls[0].body.contains("Added GREETING.md."), "{}", pulls[0].body);
    let comment = until("the status comment to show the pull request", async || {
        gh.comments()
            .into_iter()
            .find(|c| c.issue == 1 && c.body.contains("**succeeded**") && c.body.contains("#2"))
    })
    .await;
    assert_eq!(
        gh.comments().iter().filter(|c| c.issue == 1).count(),
        1,
        "one comment, updated in place"
    );
    assert!(comment.updates >= 1);

    // A review comment on that pull request: a follow-up on the same branch, resuming the session.
    let review = webhook_examples("pull_request_review_comment", Some("created"))
        .unwrap()
        .remove(0);
    let follow = task_id(&deliver(&base, "pull_request_review_comment", "e2e-2", &review).await);
    let done = finished_within(&env.store, follow, Duration::from_secs(150)).await;
    worker.stop().await;
    assert_succeeded(&done);
    assert_eq!(done.task.spec.branch.as_deref(), Some(branch.as_str()));
    assert_eq!(done.task.spec.follow_up_of, Some(first));
    let result = done.task.result.unwrap();
    assert_eq!(
        result.session_id.as_deref(),
        Some(session.as_str()),
        "the session was resumed"
    );
    let second_sha = env.server.branch_sha("app", &branch).unwrap();
    let steps: Vec<_> = model.agent_requests().iter().map(|r| r.step).collect();
    assert_ne!(
        second_sha, first_sha,
        "the follow-up pushed onto the same branch: {result:?} steps {steps:?}"
    );
    assert_eq!(
        env.server.read_file("app", &branch, "WAVE.md").as_deref(),
        Some("wave\n")
    );
    assert_eq!(
        env.server.read_file("app", &branch, "GREETING.md").as_deref(),
        Some("Hello\n")
    );
    let last = model.agent_requests().last().cloned().unwrap();
    assert!(
        last.body.to_string().contains("more emoji"),
        "the review reached the agent"
    );
    until("the follow-up's status comment on the pull request", async || {
        gh.comments()
            .into_iter()
            .find(|c| c.issue == 2 && c.body.contains("**succeeded**"))
    })
    .await;
    pull_request_of(&env, follow, "the follow-up's result to name the pull request").await;
    assert_eq!(gh.pulls().len(), 1, "the open pull request was reused");
    // Pull requests and comments went out with the installation token; tokens were minted
    // with the App's JWT (once for the server, once per claimed task).
    let reqs = gh.requests();
    let bearer = format!("Bearer {}", env.server.token());
    for r in reqs
        .iter()
        .filter(|r| r.path.starts_with("/repos/") && !r.path.ends_with("/installation"))
    {
        assert_eq!(
            r.authorization.as_deref(),
            Some(bearer.as_str()),
            "{} {}",
            r.method,
            r.path
        );
    }
    assert!(gh.minted() >= 3, "minted {}", gh.minted());
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
    server.shutdown().await.unwrap();
}

/// The pull request task `id`'s result names, once it does.
pub(crate) async fn pull_request_of(env: &Env, id: TaskId, what: &str) -> PullRequestRef {
    until(what, async || {
        env.store.get_task(id).await.unwrap()?.task.result?.pull_request
    })
    .await
}

/// A real server on `env`'s database, without auth on loopback, taking local repositories,
/// its forge loop passing every 100 ms.
pub(crate) async fn forge_server(env: &Env, public_url: Option<&str>) -> agentpool_server::RunningServer {
    let mut sc = ServerConfig::new("", "127.0.0.1:0".parse().unwrap());
    sc.auth = AuthMode::NoAuthLoopback;
    sc.allow_local_repos = true;
    sc.server_key = Some(ServerKey::generate());
    sc.maintenance_interval = None;
    sc.github_interval = Some(Duration::from_millis(100));
    sc.public_url = public_url.map(str::to_string);
    agentpool_server::start_with_store(sc, env.store.clone())
        .await
        .unwrap()
}

/// Worker `w1` of the server at `base`, running the real Claude Code CLI against `model`, with
/// `git_token` for the git server.
pub(crate) fn claude_worker(env: &Env, git_token: &str, model: &ModelServer, base: &str) -> RunningWorker {
    claude_worker_with(env, git_token, model, base, None)
}

/// [`claude_worker`] with `agents` instead of every shipped one.
pub(crate) fn claude_worker_with(
    env: &Env,
    git_token: &str,
    model: &ModelServer,
    base: &str,
    agents: Option<Registry>,
) -> RunningWorker {
    let mut c = config(env, "w1", git_token);
    c.agents = agents.unwrap_or_else(|| {
        Registry::builtin(&AgentConfig {
            bin_dir: Some(bin_dir()),
            session_dir: Some(env.dir.path().join("agent-sessions")),
            ..Default::default()
        })
    });
    // Codex's too, for a task that names no agent and ends up with it.
    c.pipeline.extra_env = model.env_for("claude-code");
    c.pipeline.extra_env.extend(model.env_for("codex"));
    start(c, Arc::new(Client::new(base, None).unwrap()))
}

/// The result of task `id` once it finished, which it must have done successfully, pushing
/// its work branch; and that branch.
pub(crate) async fn pushed_within(env: &Env, id: TaskId) -> (TaskResult, String) {
    let done = finished_within(&env.store, id, Duration::from_secs(150)).await;
    let result = succeeded_result(&done);
    let branch = result.branch.clone().expect("branch");
    assert!(result.pushed);
    (result, branch)
}

/// Project `hello`: the git server's `app` repository, run by Claude Code.
pub(crate) fn hello_project(env: &Env) -> ProjectSpec {
    ProjectSpec {
        name: "hello".into(),
        repo: env.server.url("app"),
        default_agent: Some("claude-code".into()),
        default_model: Some("claude-sonnet-4-5".into()),
        ..ProjectSpec::default()
    }
}
