//! Forgejo pull requests: a build (or a scheduled task) of a project wired to Forgejo gets its
//! pull request once it succeeded with a pushed branch, recorded in its result. Every call
//! goes through prism, which checks request and answer against Forgejo's own API
//! description, to the recording stand-in behind it.

use agentpool_core::forgejo::ForgejoSettings;
use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::BuildRequest;
use agentpool_core::{TaskId, TaskResult};
use agentpool_testkit::db::Backend;
use agentpool_testkit::forgejo::{ForgejoStandIn, api_description};
use agentpool_testkit::github::Prism;

use super::{finish, pass};
use crate::support::{TestApp, spawn_app_with, stored_task, test_config};

const TOKEN: &str = "forgejo-test-token-never-logged";
const REPO: &str = "acme/hello";

struct Forgejo {
    fj: ForgejoStandIn,
    prism: Prism,
    _dir: tempfile::TempDir,
}

async fn forgejo() -> Forgejo {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = api_description(dir.path()).expect("Forgejo's API description (tools/forgejo)");
    let fj = ForgejoStandIn::start("main").await.expect("stand-in");
    let prism = Prism::start(&spec, &fj.url(), dir.path()).await.expect("prism");
    Forgejo { fj, prism, _dir: dir }
}

fn settings(url: &str, draft: bool) -> ForgejoSettings {
    ForgejoSettings {
        repository: REPO.into(),
        url: url.into(),
        token: "fj-token".into(),
        pull_requests: true,
        draft,
    }
}

/// A server (its forge loop off: tests run passes themselves) with project `hello` wired to
/// Forgejo at `url`, its token stored.
async fn fj_app(backend: Backend, url: &str, draft: bool) -> Option<TestApp> {
    let mut config = test_config();
    config.github_interval = None;
    let app = spawn_app_with(backend, config).await?;
    app.admin()
        .put_credential("fj-token", TOKEN)
        .await
        .expect("token");
    app.admin()
        .put_project(&ProjectSpec {
            name: "hello".into(),
            repo: "https://example.com/hello.git".into(),
            default_agent: Some("claude-code".into()),
            forgejo: Some(settings(url, draft)),
            ..ProjectSpec::default()
        })
        .await
        .expect("project");
    Some(app)
}

async fn build(app: &TestApp, prompt: &str, branch: &str) -> TaskId {
    let b = BuildRequest {
        prompt: prompt.into(),
        branch: Some(branch.into()),
        ..BuildRequest::default()
    };
    let out = app.submitter().submit_build("hello", &b).await.expect("build");
    out.task.id
}

async fn result(app: &TestApp, id: TaskId) -> TaskResult {
    stored_task(&app.store, id).await.result.expect("result")
}

async fn a_build_opens_its_pull_request_once_and_the_next_build_reuses_it(backend: Backend) {
    let Forgejo { fj, prism, _dir } = forgejo().await;
    let app = fj_app(backend, &prism.url(), false).await.expect("database");

    let id = build(&app, "Fix the greeting\n\nIt says helo.", "agentpool/greeting").await;
    pass(&app).await;
    assert!(fj.requests().is_empty(), "called Forgejo for a queued build");

    // The worker pushed: the pull request opens against the repository's default branch.
    finish(&app, id, "agentpool/greeting", "s-1").await;
    pass(&app).await;
    let pulls = fj.pulls();
    assert_eq!(pulls.len(), 1, "{}", prism.log());
    assert_eq!(
        (
            pulls[0].head.as_str(),
            pulls[0].base.as_str(),
            pulls[0].title.as_str()
        ),
        ("agentpool/greeting", "main", "Fix the greeting")
    );
    assert!(
        pulls[0].body.contains("Fixed the greeting.") && pulls[0].body.contains(&id.to_string()),
        "{}",
        pulls[0].body
    );
    let r = result(&app, id).await;
    let pr = r.pull_request.expect("pull request recorded");
    assert_eq!((pr.number, pr.state.as_str()), (1, "open"));
    assert!(pr.url.ends_with("/acme/hello/pulls/1"), "{}", pr.url);
    assert_eq!(r.pr_url.as_deref(), Some(pr.url.as_str()));
    // Done: another pass calls Forgejo no more.
    let calls = fj.requests().len();
    pass(&app).await;
    assert_eq!(fj.requests().len(), calls);

    // The next build on the same branch finds the open pull request instead of a second.
    let next = build(&app, "And the farewell", "agentpool/greeting").await;
    finish(&app, next, "agentpool/greeting", "s-2").await;
    pass(&app).await;
    assert_eq!(fj.pulls().len(), 1, "a second pull request was opened");
    assert_eq!(result(&app, next).await.pull_request.map(|p| p.number), Some(1));

    // Once that one is closed, a build on the branch opens a new one.
    fj.close(1);
    let after = build(&app, "Once more", "agentpool/greeting").await;
    finish(&app, after, "agentpool/greeting", "s-3").await;
    pass(&app).await;
    assert_eq!(fj.pulls().len(), 2);
    assert_eq!(result(&app, after).await.pull_request.map(|p| p.number), Some(2));

    // Every call went under /api/v1 with the token as Forgejo wants it, and each one, request
    // and answer, matched Forgejo's description.
    let reqs = fj.requests();
    assert!(
        reqs.iter().all(|r| r.path.starts_with("/api/v1/repos/acme/hello")
            && r.authorization.as_deref() == Some(&format!("token {TOKEN}"))),
        "{reqs:?}"
    );
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

async fn a_draft_is_titled_wip_and_a_pull_request_opened_elsewhere_is_used(backend: Backend) {
    let Forgejo { fj, prism, _dir } = forgejo().await;
    let app = fj_app(backend, &prism.url(), true).await.expect("database");

    let id = build(&app, "Try something", "agentpool/try").await;
    finish(&app, id, "agentpool/try", "s-1").await;
    pass(&app).await;
    let pulls = fj.pulls();
    assert_eq!(pulls.len(), 1, "{}", prism.log());
    assert_eq!(pulls[0].title, "WIP: Try something");
    assert_eq!(
        result(&app, id).await.pull_request.map(|p| p.state),
        Some("draft".into())
    );

    let by_hand = fj.open_by_hand("agentpool/mine", "main");
    let id = build(&app, "Help with mine", "agentpool/mine").await;
    finish(&app, id, "agentpool/mine", "s-2").await;
    pass(&app).await;
    assert_eq!(fj.pulls().len(), 2, "opened a second pull request for the branch");
    assert_eq!(
        result(&app, id).await.pull_request.map(|p| p.number),
        Some(by_hand)
    );

    // Opened elsewhere a moment ago, not yet listed: Forgejo's 409 sends the loop to look
    // again, and it records that one instead of failing.
    let raced = fj.open_by_hand("agentpool/raced", "main");
    fj.lag_lists(1);
    let id = build(&app, "Race", "agentpool/raced").await;
    finish(&app, id, "agentpool/raced", "s-3").await;
    let before = fj.requests().len();
    pass(&app).await;
    let calls: Vec<String> = fj.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /api/v1/repos/acme/hello/pulls",
            "GET /api/v1/repos/acme/hello",
            "POST /api/v1/repos/acme/hello/pulls",
            "GET /api/v1/repos/acme/hello/pulls"
        ]
    );
    assert_eq!(fj.pulls().len(), 3);
    assert_eq!(result(&app, id).await.pull_request.map(|p| p.number), Some(raced));
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

/// A schedule's task for the project is a build like any other: once it succeeded with a
/// pushed branch, its pull request opens.
async fn a_scheduled_task_of_the_project_opens_its_pull_request(backend: Backend) {
    use agentpool_core::TaskSpec;
    use agentpool_core::schedule::{Overlap, ScheduleSpec};
    let Forgejo { fj, prism, _dir } = forgejo().await;
    let app = fj_app(backend, &prism.url(), false).await.expect("database");
    let spec = ScheduleSpec {
        cron: "@weekly".into(),
        time_zone: None,
        task: TaskSpec {
            project: Some("hello".into()),
            prompt: Some("Update the dependencies".into()),
            branch: Some("agentpool/deps".into()),
            ..TaskSpec::default()
        },
        overlap: Overlap::Skip,
        paused: false,
    };
    let s = app
        .submitter()
        .put_schedule("deps", &spec)
        .await
        .expect("schedule");
    let wait = s.next_run_at.expect("next run") - app.clock.now();
    app.clock
        .advance(wait.to_std().expect("ahead") + std::time::Duration::from_secs(1));
    assert_eq!(
        agentpool_server::schedules::run_due(app.state())
            .await
            .expect("run"),
        1
    );
    let id = app
        .submitter()
        .get_schedule("deps")
        .await
        .expect("get")
        .last_task
        .expect("task");

    finish(&app, id, "agentpool/deps", "s-1").await;
    pass(&app).await;
    let pulls = fj.pulls();
    assert_eq!(pulls.len(), 1, "{}", prism.log());
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].title.as_str()),
        ("agentpool/deps", "Update the dependencies")
    );
    assert_eq!(result(&app, id).await.pull_request.map(|p| p.number), Some(1));
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

crate::both_backends!(
    a_build_opens_its_pull_request_once_and_the_next_build_reuses_it,
    a_draft_is_titled_wip_and_a_pull_request_opened_elsewhere_is_used,
    a_scheduled_task_of_the_project_opens_its_pull_request,
);

/// A project names one forge, and its Forgejo settings are checked field by field.
#[tokio::test]
async fn forgejo_settings_are_validated() {
    let app = spawn_app_with(Backend::Sqlite, test_config())
        .await
        .expect("database");
    let mut bad = settings("codeberg.org", false);
    bad.repository = "acme".into();
    let spec = ProjectSpec {
        name: "hello".into(),
        repo: "https://example.com/hello.git".into(),
        github: Some(super::settings(None)),
        forgejo: Some(bad),
        ..ProjectSpec::default()
    };
    let err = app.admin().put_project(&spec).await.expect_err("refused");
    let text = err.to_string();
    for field in ["forgejo.repository", "forgejo.url", "one forge"] {
        assert!(text.contains(field), "{text}");
    }
}

/// The guard is live: a call without the token, or with a body Forgejo's description does
/// not allow, is answered by prism and never reaches the stand-in.
#[tokio::test]
async fn prism_refuses_calls_that_do_not_match_forgejo() {
    let Forgejo { fj, prism, _dir } = forgejo().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/repos/{REPO}/pulls", prism.url());
    let anonymous = http.get(&url).send().await.expect("send");
    assert_eq!(anonymous.status().as_u16(), 401);
    let bad = http
        .post(&url)
        .header("authorization", format!("token {TOKEN}"))
        .json(&serde_json::json!({ "title": 5, "head": "x", "base": "main" }))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status().as_u16(), 422);
    assert!(fj.requests().is_empty(), "an invalid call reached the stand-in");
}
