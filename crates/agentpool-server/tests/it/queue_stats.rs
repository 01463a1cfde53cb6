//! `GET /v1/queue/stats` over a real socket on both backends: queued tasks counted when their
//! labels fit the pool's and their agent is offered (and as runnable when nothing holds them
//! back, and as having no worker when none of the pool's that take tasks could), the pool's
//! workers by status with their running tasks, a drained worker counted as draining,
//! everything when no selector is given, and a malformed selector refused; a pool limited to
//! projects counts their tasks only.

use std::time::Duration;

use agentpool_core::{Labels, TaskSpec, WorkerId};
use agentpool_testkit::db::Backend;
use reqwest::StatusCode;

use crate::both_backends;
use crate::support::{TestApp, command_task, registration, spawn_app};
use crate::tokens::{in_project, two_projects};

both_backends!(
    stats_count_what_a_pool_could_run,
    a_pool_limited_to_projects_counts_their_tasks_only,
);

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `GET /v1/queue/stats?{query}` with the worker token, sent as given: the typed client
/// cannot send a malformed selector.
async fn stats_sent_raw(app: &TestApp, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/v1/queue/stats?{query}", app.base))
        .bearer_auth(app.tokens.of(agentpool_server::Role::Worker))
        .send()
        .await
        .unwrap()
}

async fn stats_count_what_a_pool_could_run(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sub = app.submitter();
    let wrk = app.worker();
    let pool = labels(&[("agentpool.dev/pool", "web"), ("team", "web")]);

    // Fits: no labels; a subset of the pool's; an offered agent. Does not fit: another team;
    // an agent the pool lacks.
    sub.submit(&command_task("true")).await.unwrap();
    let mut t = command_task("true");
    t.labels = labels(&[("team", "web")]);
    sub.submit(&t).await.unwrap();
    let mut t = command_task("true");
    t.labels = labels(&[("team", "data")]);
    sub.submit(&t).await.unwrap();
    let agent = TaskSpec::agent("https://example.com/repo.git", "codex", "fix it");
    sub.submit(&agent).await.unwrap();
    let agent = TaskSpec::agent("https://example.com/repo.git", "claude-code", "fix it");
    sub.submit(&agent).await.unwrap();

    let s = wrk
        .queue_stats(Some(&pool), &["claude-code".to_string()], &[])
        .await
        .unwrap();
    assert_eq!((s.queued, s.queued_due, s.running), (3, 3, 0), "{s:#?}");
    assert_eq!(s.queued_runnable, Some(3));
    assert!(s.workers.is_empty());

    // A task waiting for another is queued and due, but no worker could run it now: it does
    // not count towards the pool's size.
    let first = sub.submit(&command_task("first")).await.unwrap().task.id;
    let mut then = command_task("then");
    then.depends_on = vec![first];
    sub.submit(&then).await.unwrap();
    let s = wrk
        .queue_stats(Some(&pool), &["claude-code".to_string()], &[])
        .await
        .unwrap();
    assert_eq!(
        (s.queued, s.queued_due, s.queued_runnable),
        (5, 5, Some(4)),
        "{s:#?}"
    );
    sub.cancel(first).await.unwrap();

    // Two pool workers and one outside it; one pool worker claims a task.
    let mut reg = registration(&["command"]);
    reg.id = Some(WorkerId::parse("web-0").unwrap());
    reg.labels = pool.clone();
    reg.slots = 1;
    let w0 = wrk.register(&reg).await.unwrap();
    reg.id = Some(WorkerId::parse("web-1").unwrap());
    let w1 = wrk.register(&reg).await.unwrap();
    let mut other = registration(&["command"]);
    other.labels = labels(&[("team", "web")]);
    wrk.register(&other).await.unwrap();
    let claimed = wrk.claim(&w0.id, 1, Duration::ZERO).await.unwrap();
    assert_eq!(claimed.len(), 1);
    wrk.drain_worker(&w1.id).await.unwrap();

    let s = wrk
        .queue_stats(Some(&pool), &["claude-code".to_string()], &[])
        .await
        .unwrap();
    assert_eq!(s.queued, 2, "{s:#?}");
    // The pool's one worker taking tasks runs commands: the Claude Code task has none.
    assert_eq!(s.runnable_no_worker, Some(1), "{s:#?}");
    assert_eq!(s.running, 1);
    let c = &s.worker_counts;
    assert_eq!((c.online, c.draining, c.slots), (2, 1, 2), "{c:?}");
    let mut ids: Vec<&str> = s.workers.iter().map(|w| w.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["web-0", "web-1"]);

    // No selector at all: every queued task and every worker, whatever their labels (an
    // empty one means workers with no labels).
    let s = wrk.queue_stats(None, &[], &[]).await.unwrap();
    assert_eq!((s.queued, s.running, s.worker_counts.online), (4, 1, 3), "{s:#?}");
    // Only the team=web command task has a worker (web-1 drains): not team=data, nor the agents.
    assert_eq!(s.runnable_no_worker, Some(3), "{s:#?}");
    let s = wrk.queue_stats(Some(&Labels::new()), &[], &[]).await.unwrap();
    assert_eq!(s.queued, 2, "the tasks without labels: {s:#?}");

    // A malformed selector is refused with a code, not a count of everything.
    let r = stats_sent_raw(&app, "labels=team").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// A pool limited to projects (a WorkerPool's `projects`) is scaled on their queued tasks
/// alone; a project token's count stays within its projects whatever it asks.
async fn a_pool_limited_to_projects_counts_their_tasks_only(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (web_ci, _) = two_projects(&app).await;
    let admin = app.admin();
    for spec in [
        in_project("web", "make"),
        in_project("api", "make"),
        command_task("true"),
    ] {
        admin.submit(&spec).await.unwrap();
    }
    let wrk = app.worker();
    let queued = async |c: &agentpool_client::Client, projects: &[&str]| {
        let projects: Vec<String> = projects.iter().map(|p| p.to_string()).collect();
        c.queue_stats(Some(&Labels::new()), &[], &projects)
            .await
            .unwrap()
            .queued
    };
    assert_eq!(queued(&wrk, &[]).await, 3);
    assert_eq!(queued(&wrk, &["web"]).await, 1);
    assert_eq!(queued(&wrk, &["web", "api"]).await, 2);
    assert_eq!(queued(&wrk, &["docs"]).await, 0);
    // The web-ci token reaches web only.
    assert_eq!(queued(&web_ci, &[]).await, 1);
    assert_eq!(queued(&web_ci, &["api"]).await, 0);
    assert_eq!(queued(&web_ci, &["web", "api"]).await, 1);

    let r = stats_sent_raw(&app, "projects=web,not%20one").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["details"]["fields"][0]["field"], "projects",
        "{body}"
    );
}
