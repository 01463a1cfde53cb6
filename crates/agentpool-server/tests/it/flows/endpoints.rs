//! Every endpoint through the typed client, project checks reaching tasks, and why a queued
//! task waits.

use std::time::Duration;

use agentpool_client::Client;
use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{FailOutcome, HeartbeatRequest};
use agentpool_core::{
    ErrorClass, EventKind, NewEvent, TaskId, TaskResult, TaskSpec, TaskState, Usage, WorkerStatus,
};
use agentpool_server::api::{BuildRequest, CompleteItem, TaskListQuery};
use agentpool_testkit::db::Backend;
use reqwest::StatusCode;

use crate::support::{command_task, fail, spawn_app};

/// The ids of the tasks `c` lists with `filter` set on an otherwise default query.
async fn listed(c: &Client, filter: impl FnOnce(&mut TaskListQuery)) -> Vec<TaskId> {
    let mut q = TaskListQuery::default();
    filter(&mut q);
    let page = c.list_tasks(&q).await.expect("list");
    page.tasks.iter().map(|t| t.id).collect()
}

async fn every_endpoint_works_through_the_client(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    let sub = app.submitter();
    let wrk = app.worker();

    // ops
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), StatusCode::OK);
    sub.ready().await.expect("ready");

    // credentials: write-only
    admin
        .put_credential("gh-token", "s3cr3t-value")
        .await
        .expect("put credential");
    assert_eq!(
        admin.list_credentials().await.expect("list"),
        vec!["gh-token".to_string()]
    );
    let raw = http
        .get(format!("{}/v1/credentials", app.base))
        .bearer_auth(&app.tokens.admin)
        .send()
        .await
        .expect("raw list")
        .text()
        .await
        .expect("text");
    assert!(!raw.contains("s3cr3t-value"));
    let stored = app
        .store
        .get_credential("gh-token")
        .await
        .expect("get")
        .expect("stored");
    assert!(
        !stored.windows(12).any(|w| w == b"s3cr3t-value"),
        "credential stored in plaintext"
    );
    // The limit counts characters, as the OpenAPI document's maxLength does: 65536 of them
    // fit even at four bytes each; one more is refused.
    let wide = "𝄞".repeat(65536);
    admin
        .put_credential("wide", &wide)
        .await
        .expect("65536 characters");
    let refused = admin
        .put_credential("wide", &format!("{wide}x"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("6 to 65536 characters"), "{refused}");
    // Nor one shorter than the workers mask in output.
    let refused = admin.put_credential("short", "Ab3x9").await.unwrap_err();
    assert!(refused.to_string().contains("could not be masked"), "{refused}");
    admin.delete_credential("wide").await.expect("delete wide");

    // projects and builds
    let spec = ProjectSpec {
        name: "demo".into(),
        repo: "https://example.com/demo.git".into(),
        default_base: Some("main".into()),
        slots: Some(2),
        default_agent: Some("claude-code".into()),
        credentials: vec!["gh-token".into()],
        checks: vec![agentpool_core::CheckSpec::command("cargo test")],
        max_rounds: Some(4),
        ..ProjectSpec::default()
    };
    let p = sub.put_project(&spec).await.expect("put project");
    assert_eq!(p.spec, spec);
    assert_eq!(sub.get_project("demo").await.expect("get").spec.repo, spec.repo);
    assert_eq!(sub.list_projects().await.expect("list").len(), 1);
    let build = sub
        .submit_build(
            "demo",
            &BuildRequest {
                prompt: "fix the bug".into(),
                ..BuildRequest::default()
            },
        )
        .await
        .expect("build");
    assert!(build.created);
    assert_eq!(
        build.task.spec.repo.as_deref(),
        Some("https://example.com/demo.git")
    );
    assert_eq!(build.task.spec.agent.as_deref(), Some("claude-code"));
    // The project's checks and round limit reach its tasks that name none.
    assert_eq!(build.task.spec.checks, Some(spec.checks.clone()));
    assert_eq!(build.task.spec.max_rounds, Some(4));
    let builds = sub.list_builds("demo").await.expect("builds");
    assert_eq!(builds.tasks.len(), 1);

    // tasks: single, batch, idempotency, list with filters and pagination
    let mut one = command_task("echo one");
    one.labels.insert("team".into(), "a".into());
    one.idempotency_key = Some("k1".into());
    let first = sub.submit(&one).await.expect("submit");
    assert!(first.created);
    let again = sub.submit(&one).await.expect("submit again");
    assert!(!again.created);
    assert_eq!(again.task.id, first.task.id);
    let batch = sub
        .submit_batch((0..3).map(|i| command_task(&format!("echo {i}"))).collect())
        .await
        .expect("batch");
    assert_eq!(batch.len(), 3);
    let labelled = listed(&sub, |q| q.label = Some("team=a".into())).await;
    assert_eq!(labelled, vec![first.task.id]);
    let by_project = listed(&sub, |q| q.project = Some("demo".into())).await;
    assert_eq!(by_project.len(), 1);
    // By the class the last attempt ended with: none has ended yet; an unknown class is refused.
    assert!(
        listed(&sub, |q| q.class = Some("AUTH_FAILED".into()))
            .await
            .is_empty()
    );
    let bad = TaskListQuery {
        class: Some("NOPE".into()),
        ..TaskListQuery::default()
    };
    let e = sub.list_tasks(&bad).await.expect_err("an unknown class");
    assert_eq!(e.status(), Some(reqwest::StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("class"), "{e}");
    // 5 tasks in pages of 2: 2 + 2 + 1, no repeats.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = sub
            .list_tasks(&TaskListQuery {
                limit: Some(2),
                cursor: cursor.map(|c: TaskId| c.to_string()),
                ..TaskListQuery::default()
            })
            .await
            .expect("page");
        seen.extend(page.tasks.iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);

    // worker protocol
    // Task labels are worker selectors: this worker carries the label the first task names.
    let mut reg = crate::support::registration(&["command", "claude-code"]);
    reg.labels.insert("team".into(), "a".into());
    let w = wrk.register(&reg).await.expect("register");
    assert_eq!(wrk.get_worker(&w.id).await.expect("get worker").id, w.id);
    assert!(
        sub.list_workers()
            .await
            .expect("workers")
            .iter()
            .any(|x| x.id == w.id)
    );
    let claimed = wrk.claim(&w.id, 10, Duration::ZERO).await.expect("claim");
    assert_eq!(claimed.len(), 5);
    let running = listed(&sub, |q| q.state = Some("running".into())).await;
    assert_eq!(running.len(), 5);
    let by_worker = listed(&sub, |q| q.worker = Some(w.id.to_string())).await;
    assert_eq!(by_worker.len(), 5);
    // The build needs the project's credential: it comes with the claim, decrypted.
    let b = claimed
        .iter()
        .find(|c| c.claimed.task.id == build.task.id)
        .expect("build claimed");
    assert_eq!(b.credentials.get("gh-token"), Some("s3cr3t-value"));
    assert!(
        !format!("{b:?}").contains("s3cr3t-value"),
        "credentials leak through Debug"
    );
    let other = claimed
        .iter()
        .find(|c| c.claimed.task.id == first.task.id)
        .expect("first claimed");
    assert!(other.credentials.is_empty());

    let hb = wrk
        .heartbeat(
            &w.id,
            &HeartbeatRequest {
                leases: claimed.iter().map(|c| c.claimed.lease).collect(),
                status: Some(WorkerStatus::Busy),
                status_message: None,
                cache: None,
            },
        )
        .await
        .expect("heartbeat");
    assert!(hb.cancel.is_empty() && hb.lost.is_empty());

    let c0 = &claimed[0].claimed;
    wrk.append_events(
        &w.id,
        c0.task.id,
        c0.lease.token,
        vec![
            NewEvent::log("stdout", "hello"),
            NewEvent::new(agentpool_core::EventPayload::AssistantMessage { text: "hi".into() }),
        ],
    )
    .await
    .expect("events");
    let page = sub.events(c0.task.id, 0, 100).await.expect("events page");
    assert!(
        page.events
            .iter()
            .any(|e| e.kind() == EventKind::Log && e.data()["line"] == "hello")
    );
    let later = sub
        .events(c0.task.id, page.next_after, 100)
        .await
        .expect("next page");
    assert!(later.events.is_empty());

    let result = TaskResult {
        usage: Usage {
            input_tokens: 100,
            output_tokens: 20,
            ..Usage::default()
        },
        cost_usd: Some(0.5),
        ..TaskResult::default()
    };
    wrk.complete(&w.id, c0.task.id, c0.lease.token, result.clone())
        .await
        .expect("complete");
    let items: Vec<CompleteItem> = claimed[1..3]
        .iter()
        .map(|c| CompleteItem::success(&c.claimed))
        .collect();
    let results = wrk.complete_batch(&w.id, items).await.expect("batch complete");
    assert!(results.iter().all(|r| r.ok), "{results:?}");
    let c3 = &claimed[3].claimed;
    let outcome = fail(&wrk, &w.id, c3, ErrorClass::AuthFailed, "invalid api key")
        .await
        .expect("fail");
    assert_eq!(
        outcome,
        FailOutcome::Finished {
            state: TaskState::Failed
        }
    );
    let detail = sub.get_task(c3.task.id).await.expect("get");
    assert_eq!(detail.task.state, TaskState::Failed);
    assert_eq!(detail.attempts_detail.len(), 1);
    let retried = sub.retry(c3.task.id).await.expect("retry");
    assert_eq!(retried.task.state, TaskState::Queued);
    assert!(retried.requeued_dependents.is_empty(), "nothing depends on it");
    let canceled = sub.cancel(c3.task.id).await.expect("cancel queued");
    assert_eq!(canceled.state, TaskState::Canceled);
    let err = sub.cancel(c3.task.id).await.expect_err("cancel twice");
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    let done = sub.get_task(c0.task.id).await.expect("get done");
    assert_eq!(done.task.state, TaskState::Succeeded);
    assert_eq!(done.task.result.as_ref().map(|r| r.usage.input_tokens), Some(100));

    // metrics reflect what happened
    let m = crate::support::scrape(&app.base).await;
    for needle in [
        "agentpool_tasks{state=\"succeeded\"} 3",
        "agentpool_tasks_claimed_total{agent=\"command\"} 4",
        "agentpool_tasks_claimed_total{agent=\"claude-code\"} 1",
        "class=\"AUTH_FAILED\"} 1",
        "agentpool_tokens_total{kind=\"input\"} 100",
        "agentpool_cost_usd_total",
        "agentpool_dispatch_latency_seconds_bucket",
        "agentpool_task_duration_seconds_bucket",
        "agentpool_workers{status=",
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
    let completed: f64 = m
        .lines()
        .filter(|l| l.starts_with("agentpool_tasks_completed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(completed, 3.0, "{m}");

    // drain and deregister
    let drained = wrk.drain_worker(&w.id).await.expect("drain");
    assert_eq!(drained.status, WorkerStatus::Draining);
    sub.submit(&command_task("after drain")).await.expect("submit");
    assert!(
        wrk.claim(&w.id, 1, Duration::ZERO)
            .await
            .expect("claim while draining")
            .is_empty()
    );
    wrk.deregister(&w.id).await.expect("deregister");
    sub.delete_project("demo").await.expect("delete project");
    assert_eq!(
        sub.get_project("demo").await.expect_err("gone").status(),
        Some(StatusCode::NOT_FOUND)
    );
    admin
        .delete_credential("gh-token")
        .await
        .expect("delete credential");
    assert!(admin.list_credentials().await.expect("list").is_empty());
    app.server.shutdown().await.expect("shutdown");
}

async fn project_checks_reach_tasks_that_name_none(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sub = app.submitter();
    let repo = "https://example.com/demo.git";
    let project = ProjectSpec {
        name: "checked".into(),
        repo: repo.into(),
        checks: vec![agentpool_core::CheckSpec::command("cargo test")],
        max_rounds: Some(4),
        ..ProjectSpec::default()
    };
    sub.put_project(&project).await.expect("put project");
    let mut named = TaskSpec::agent(repo, "claude-code", "fix it");
    named.project = Some("checked".into());
    let got = sub.submit(&named).await.expect("submit").task.spec;
    assert_eq!(got.checks, Some(project.checks.clone()));
    assert_eq!(got.max_rounds, Some(4));
    named.checks = Some(vec![]);
    let got = sub.submit(&named).await.expect("submit without checks").task.spec;
    assert_eq!(got.checks, Some(vec![]), "an explicit empty list wins");
    let mut bad = command_task("true");
    bad.checks = Some(vec![agentpool_core::CheckSpec::command(" ")]);
    let err = sub.submit(&bad).await.expect_err("an empty check is refused");
    assert!(err.to_string().contains("checks[0].command"), "{err}");
    let mut bad_project = project.clone();
    bad_project.max_rounds = Some(0);
    let err = sub
        .put_project(&bad_project)
        .await
        .expect_err("0 rounds is refused");
    assert!(err.to_string().contains("max_rounds"), "{err}");
}

async fn get_task_explains_why_a_queued_task_waits(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sub = app.submitter();
    let first = sub.submit(&command_task("first")).await.expect("submit").task;
    let mut second = command_task("second");
    second.depends_on = vec![first.id];
    let second = sub.submit(&second).await.expect("submit").task;
    let raw: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/tasks/{}", app.base, second.id))
        .bearer_auth(&app.tokens.submitter)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let reasons = raw["waiting"].as_array().expect("waiting reasons");
    let deps = reasons
        .iter()
        .find(|r| r["reason"] == "dependencies")
        .unwrap_or_else(|| panic!("no dependencies reason in {raw}"));
    assert_eq!(deps["pending"][0], serde_json::json!(first.id));
    assert_eq!(raw["state"], "queued");
    assert!(raw["attempts_detail"].is_array());
}

crate::both_backends!(
    get_task_explains_why_a_queued_task_waits,
    every_endpoint_works_through_the_client,
    project_checks_reach_tasks_that_name_none,
);
