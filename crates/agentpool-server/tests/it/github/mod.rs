//! The GitHub integration: webhook deliveries of GitHub's own example payloads, signed as
//! GitHub signs them ([`webhook`]), and every REST call agentpool makes validated against
//! GitHub's own API description ([`rest`]), GitHub App tokens ([`app`]), and the events that
//! stop work ([`stop`]); what goes wrong around a pull request ([`follow_ups`]); and the pull requests of Forgejo projects, validated against Forgejo's
//! own API description ([`forgejo`]).

mod app;
mod follow_ups;
mod forgejo;
mod rest;
mod stop;
mod webhook;

use std::time::Duration;

use agentpool_core::github::GithubSettings;
use agentpool_core::project::ProjectSpec;
use agentpool_core::{Lease, TaskId, TaskResult};
use agentpool_github::signature;
use agentpool_testkit::db::Backend;
use agentpool_testkit::github::{GithubStandIn, Prism, api_subset};
use serde_json::Value;

use agentpool_server::github::notifier;
use agentpool_store::ClaimFilter;

use crate::support::{TestApp, registration, spawn_app_with, test_config};

pub const SECRET: &str = "webhook secret of the test project";
pub const TOKEN: &str = "ghp_test-token-never-logged";
/// The repository GitHub's example payloads come from.
pub const REPO: &str = "Codertocat/Hello-World";

pub fn settings(api_url: Option<String>) -> GithubSettings {
    GithubSettings {
        repository: REPO.into(),
        api_url,
        webhook_secret: "gh-webhook".into(),
        token: Some("gh-token".into()),
        app: None,
        label: Some("bug".into()), // the label of GitHub's issues.labeled examples
        command: None,
        allowed_associations: vec![],
        pull_requests: true,
        draft: false,
        review_follow_ups: true,
        check_run_follow_ups: true,
        max_follow_ups: Some(1),
        prompt_template: None,
        follow_up_template: None,
    }
}

/// GitHub for a test: the recording stand-in (its first pull request numbered `first_pr`)
/// behind prism, which checks every call, request and answer, against GitHub's own API
/// description.
pub struct Github {
    pub gh: GithubStandIn,
    pub prism: Prism,
    pub _dir: tempfile::TempDir,
}

pub async fn github(first_pr: u64) -> Github {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec_path, spec) = api_subset(dir.path()).expect("GitHub's API description (tools/github)");
    let gh = GithubStandIn::start(&spec, "main", first_pr)
        .await
        .expect("stand-in");
    let prism = Prism::start(&spec_path, &gh.url(), dir.path())
        .await
        .expect("prism");
    Github { gh, prism, _dir: dir }
}

/// A server (its GitHub loop off: tests run passes themselves) with project `hello` wired to
/// the example repository, its webhook secret and token stored.
pub async fn gh_app(backend: Backend, api_url: Option<String>, repo_url: &str) -> Option<TestApp> {
    let mut config = test_config();
    config.github_interval = None;
    config.public_url = Some("https://agentpool.example.com".into());
    let app = spawn_app_with(backend, config).await?;
    let admin = app.admin();
    admin.put_credential("gh-webhook", SECRET).await.expect("secret");
    admin.put_credential("gh-token", TOKEN).await.expect("token");
    admin
        .put_project(&ProjectSpec {
            name: "hello".into(),
            repo: repo_url.into(),
            default_agent: Some("claude-code".into()),
            github: Some(settings(api_url)),
            ..ProjectSpec::default()
        })
        .await
        .expect("project");
    Some(app)
}

/// [`gh_app`] behind `prism`, its project taking up to `max_follow_ups` automatic follow-ups,
/// once the task of GitHub's labeled issue succeeded and opened a pull request (the
/// stand-in's first) for its branch `agentpool/issue-1`.
pub async fn with_pull_request(
    backend: Backend,
    gh: &GithubStandIn,
    prism: &Prism,
    max_follow_ups: u32,
) -> TestApp {
    let app = gh_app(backend, Some(prism.url()), "https://example.com/hello.git")
        .await
        .expect("database");
    let mut project = app.admin().get_project("hello").await.expect("project").spec;
    if let Some(g) = project.github.as_mut() {
        g.max_follow_ups = Some(max_follow_ups);
    }
    app.admin().put_project(&project).await.expect("project");
    let id = deliver_task(&app, "issues", "opening", &example("issues", Some("labeled"))).await;
    finish(&app, id, "agentpool/issue-1", "session-1").await;
    pass(&app).await;
    assert_eq!(gh.pulls().len(), 1, "{}", prism.log());
    app
}

/// One delivery as GitHub makes it: the body, its event and delivery headers, and the
/// signature under `secret`.
pub async fn deliver(
    app: &TestApp,
    event: &str,
    delivery: &str,
    payload: &Value,
    secret: &str,
) -> (u16, Value) {
    let body = serde_json::to_vec(payload).expect("json");
    deliver_raw(app, event, delivery, body, secret).await
}

/// Deliver `payload` signed with the project's secret; the task it was accepted (202) as.
pub async fn deliver_task(app: &TestApp, event: &str, delivery: &str, payload: &Value) -> TaskId {
    let (status, body) = deliver(app, event, delivery, payload, SECRET).await;
    assert_eq!(status, 202, "{body}");
    body["task_id"].as_str().expect("id").parse().expect("id")
}

pub async fn deliver_raw(
    app: &TestApp,
    event: &str,
    delivery: &str,
    body: Vec<u8>,
    secret: &str,
) -> (u16, Value) {
    let sig = signature::sign(secret.as_bytes(), &body);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/github", app.base))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/test")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .expect("deliver");
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

/// GitHub's first example of `event`/`action`.
pub fn example(event: &str, action: Option<&str>) -> Value {
    agentpool_testkit::github::webhook_examples(event, action)
        .expect("GitHub's example payloads (tools/github)")
        .remove(0)
}

pub async fn task_count(app: &TestApp) -> usize {
    app.store
        .list_tasks(&agentpool_store::TaskFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .len()
}

/// Claim `id` as a worker would and complete it with a pushed branch.
pub async fn finish(app: &TestApp, id: TaskId, branch: &str, session: &str) {
    let w = app
        .store
        .register_worker(registration(&["claude-code"]))
        .await
        .expect("worker");
    let claimed = app
        .store
        .claim(&ClaimFilter {
            worker_id: w.id.clone(),
            agents: vec!["claude-code".into()],
            labels: Default::default(),
            projects: Vec::new(),
            max: 1,
            lease_ttl: Duration::from_secs(60),
        })
        .await
        .expect("claim");
    let c = claimed
        .into_iter()
        .find(|c| c.task.id == id)
        .expect("claimed the task");
    let result = TaskResult {
        commit_sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
        branch: Some(branch.into()),
        pushed: true,
        session_id: Some(session.into()),
        final_text: Some("Fixed the greeting.".into()),
        cost_usd: Some(0.25),
        ..TaskResult::default()
    };
    app.store
        .complete(
            &w.id,
            Lease {
                task_id: id,
                token: c.lease.token,
            },
            result,
        )
        .await
        .expect("complete");
}

/// One pass of the forge loop.
pub async fn pass(app: &TestApp) {
    notifier::pass(app.state(), Duration::from_millis(1))
        .await
        .expect("pass");
}
