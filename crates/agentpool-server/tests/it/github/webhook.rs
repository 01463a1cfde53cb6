//! Webhook deliveries: signature, redelivery, unknown events, size limit, who may command,
//! and one task per event under concurrent deliveries.

use agentpool_testkit::db::Backend;
use serde_json::json;

use super::{REPO, SECRET, deliver, deliver_raw, deliver_task, example, gh_app, task_count};
use crate::support::stored_task;

async fn app(backend: Backend) -> crate::support::TestApp {
    gh_app(backend, None, "https://example.com/hello.git")
        .await
        .expect("database (set AGENTPOOL_TEST_PG_URL or run scripts/services.sh)")
}

async fn labeled_issue_becomes_one_task_and_redelivery_creates_nothing(backend: Backend) {
    let app = app(backend).await;
    let payload = example("issues", Some("labeled"));
    let (status, body) = deliver(&app, "issues", "d-1", &payload, SECRET).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["created"], true);
    let id: agentpool_core::TaskId = body["task_id"].as_str().expect("id").parse().expect("task id");
    let task = stored_task(&app.store, id).await;
    assert_eq!(task.spec.project.as_deref(), Some("hello"));
    let prompt = task.spec.prompt.clone().expect("prompt");
    assert!(
        prompt.contains(payload["issue"]["title"].as_str().expect("title")),
        "{prompt}"
    );
    assert!(
        prompt.contains(&format!("#{} of {REPO}", payload["issue"]["number"])),
        "{prompt}"
    );
    let link = app.store.github_link(id).await.expect("link").expect("linked");
    assert_eq!(link.number, Some(1));
    assert_eq!(link.kind, "label");

    // GitHub's "Redeliver": same delivery id, same body.
    let (status, body) = deliver(&app, "issues", "d-1", &payload, SECRET).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(task_count(&app).await, 1);
}

async fn wrong_signature_is_refused_and_stores_nothing(backend: Backend) {
    let app = app(backend).await;
    let payload = example("issues", Some("labeled"));
    let (status, body) = deliver(&app, "issues", "d-2", &payload, "not the secret").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(task_count(&app).await, 0);
    assert!(
        !app.store.github_delivery_seen("d-2").await.expect("seen"),
        "refused delivery was recorded"
    );

    // A body changed after signing fails the same way.
    let body_bytes = serde_json::to_vec(&payload).expect("json");
    let sig = agentpool_github::signature::sign(SECRET.as_bytes(), &body_bytes);
    let mut tampered = body_bytes.clone();
    tampered.extend_from_slice(b" ");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/github", app.base))
        .header("x-github-event", "issues")
        .header("x-github-delivery", "d-2")
        .header("x-hub-signature-256", sig)
        .body(tampered)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    // Without any signature header.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/github", app.base))
        .header("x-github-event", "issues")
        .header("x-github-delivery", "d-2")
        .body(body_bytes)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);

    // The same delivery, correctly signed, is then handled: nothing of the refusal stuck.
    let (status, _) = deliver(&app, "issues", "d-2", &payload, SECRET).await;
    assert_eq!(status, 202);
    assert_eq!(task_count(&app).await, 1);
}

/// A delivery goes to the oldest project of its repository whose secret signed it: a project
/// added later with the same secret (here one whose name sorts first) takes nothing from the
/// one that had the deliveries; with a webhook and secret of its own it gets that webhook's.
async fn a_later_project_on_the_repository_takes_no_deliveries_from_the_first(backend: Backend) {
    let app = app(backend).await;
    let admin = app.admin();
    app.clock.advance(std::time::Duration::from_secs(60));
    let mut later = admin.get_project("hello").await.expect("project").spec;
    later.name = "a-later-one".into();
    admin.put_project(&later).await.expect("project");
    let payload = example("issues", Some("labeled"));
    let id = deliver_task(&app, "issues", "s-1", &payload).await;
    assert_eq!(
        stored_task(&app.store, id).await.spec.project.as_deref(),
        Some("hello")
    );

    admin
        .put_credential("gh-webhook-later", "the later webhook's secret")
        .await
        .expect("secret");
    if let Some(g) = later.github.as_mut() {
        g.webhook_secret = "gh-webhook-later".into();
    }
    admin.put_project(&later).await.expect("project");
    // Another label event (each has its own key), through the later project's own webhook.
    let mut payload = payload;
    payload["issue"]["updated_at"] = json!("2026-11-02T00:00:00Z");
    let (status, body) = deliver(&app, "issues", "s-2", &payload, "the later webhook's secret").await;
    assert_eq!(status, 202, "{body}");
    let id = body["task_id"].as_str().expect("id").parse().expect("task id");
    assert_eq!(
        stored_task(&app.store, id).await.spec.project.as_deref(),
        Some("a-later-one")
    );
}

async fn unknown_and_unconfigured_events_are_acknowledged(backend: Backend) {
    let app = app(backend).await;
    let (status, body) = deliver(&app, "star", "d-3", &example("star", Some("created")), SECRET).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ignored")),
        "{body}"
    );
    let mut ping = example("ping", None);
    ping["repository"]["full_name"] = json!(REPO);
    let (status, body) = deliver(&app, "ping", "d-4", &ping, SECRET).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pong")), "{body}");
    // Another label than the configured one.
    let mut other = example("issues", Some("labeled"));
    other["label"]["name"] = json!("wontfix");
    let (status, body) = deliver(&app, "issues", "d-5", &other, SECRET).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ignored")),
        "{body}"
    );
    // A review on a pull request agentpool did not open.
    let review = example("pull_request_review_comment", Some("created"));
    let (status, body) = deliver(&app, "pull_request_review_comment", "d-6", &review, SECRET).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (200, Some("not a pull request agentpool opened"))
    );
    assert_eq!(task_count(&app).await, 0);
}

async fn oversize_body_is_refused(backend: Backend) {
    let app = app(backend).await;
    let mut payload = example("issues", Some("labeled"));
    payload["issue"]["body"] = json!("x".repeat(3 * 1024 * 1024));
    let body = serde_json::to_vec(&payload).expect("json");
    let (status, body) = deliver_raw(&app, "issues", "d-7", body, SECRET).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(task_count(&app).await, 0);
}

async fn commands_only_from_allowed_authors(backend: Backend) {
    let app = app(backend).await;
    let mut comment = example("issue_comment", Some("created"));
    comment["comment"]["body"] = json!("/agentpool add a README section about emoji");
    comment["comment"]["author_association"] = json!("NONE");
    let (status, body) = deliver(&app, "issue_comment", "d-8", &comment, SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["reason"],
        "the commenter is not allowed to command agentpool"
    );
    assert_eq!(task_count(&app).await, 0);

    comment["comment"]["author_association"] = json!("COLLABORATOR");
    comment["comment"]["id"] = json!(492700401u64);
    let id = deliver_task(&app, "issue_comment", "d-9", &comment).await;
    let prompt = stored_task(&app.store, id).await.spec.prompt.expect("prompt");
    assert!(prompt.starts_with("add a README section about emoji"), "{prompt}");

    // A comment that is not a command.
    let mut chat = example("issue_comment", Some("created"));
    chat["comment"]["id"] = json!(492700402u64);
    let (status, body) = deliver(&app, "issue_comment", "d-10", &chat, SECRET).await;
    assert_eq!((status, body["reason"].as_str()), (200, Some("not a command")));
    assert_eq!(task_count(&app).await, 1);
}

async fn fifty_concurrent_deliveries_of_one_event_make_one_task(backend: Backend) {
    let app = std::sync::Arc::new(app(backend).await);
    let mut comment = example("issue_comment", Some("created"));
    comment["comment"]["body"] = json!("/agentpool fix the greeting");
    let mut joins = Vec::new();
    for i in 0..50 {
        let app = app.clone();
        let comment = comment.clone();
        // Half are redeliveries of one delivery, half the same event under other ids (as a
        // second webhook on the same repository would send it).
        let delivery = if i % 2 == 0 {
            "d-same".to_string()
        } else {
            format!("d-{i}")
        };
        joins.push(tokio::spawn(async move {
            deliver(&app, "issue_comment", &delivery, &comment, SECRET).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for j in joins {
        let (status, body) = j.await.expect("join");
        assert!(status == 200 || status == 202, "{status} {body}");
        if let Some(id) = body["task_id"].as_str() {
            ids.insert(id.to_string());
        }
        if body["created"] == true {
            created += 1;
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(created, 1);
    assert_eq!(task_count(&app).await, 1);
}

crate::both_backends!(
    labeled_issue_becomes_one_task_and_redelivery_creates_nothing,
    wrong_signature_is_refused_and_stores_nothing,
    unknown_and_unconfigured_events_are_acknowledged,
    oversize_body_is_refused,
    commands_only_from_allowed_authors,
    fifty_concurrent_deliveries_of_one_event_make_one_task,
    create_and_build_saves_the_project_and_queues_its_build,
    delivery_ids_are_forgotten_after_retention,
    a_later_project_on_the_repository_takes_no_deliveries_from_the_first,
);

/// The maintenance purge forgets delivery ids older than the retention, and only those.
async fn delivery_ids_are_forgotten_after_retention(backend: Backend) {
    use agentpool_server::maintenance::{GITHUB_DELIVERY_RETENTION, MaintenanceConfig, run_once};
    let app = app(backend).await;
    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 1, "repository": {"full_name": REPO}});
    let (status, _) = deliver(&app, "ping", "old-1", &ping, SECRET).await;
    assert_eq!(status, 200);
    app.clock
        .advance(GITHUB_DELIVERY_RETENTION + std::time::Duration::from_secs(60));
    let (status, _) = deliver(&app, "ping", "new-1", &ping, SECRET).await;
    assert_eq!(status, 200);
    let cfg = MaintenanceConfig {
        interval: std::time::Duration::from_secs(5),
        heartbeat_threshold: std::time::Duration::from_secs(90),
        retention: std::time::Duration::from_secs(30 * 24 * 3600),
        purge_every: 1,
    };
    run_once(app.state(), &cfg, true).await;
    assert!(!app.store.github_delivery_seen("old-1").await.expect("seen"));
    assert!(app.store.github_delivery_seen("new-1").await.expect("seen"));
    // A redelivery of the kept one is still a duplicate.
    let (status, body) = deliver(&app, "ping", "new-1", &ping, SECRET).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
}

async fn create_and_build_saves_the_project_and_queues_its_build(backend: Backend) {
    use agentpool_core::protocol::{BuildRequest, CreateAndBuild};
    let app = app(backend).await;
    let mut project = app.admin().get_project("hello").await.expect("project").spec;
    project.name = "fresh".into();
    project.default_base = Some("main".into());
    let req = CreateAndBuild {
        project: project.clone(),
        build: BuildRequest {
            prompt: "add a changelog".into(),
            idempotency_key: Some("first-build".into()),
            ..BuildRequest::default()
        },
    };
    let out = app
        .submitter()
        .create_and_build(&req)
        .await
        .expect("create and build");
    assert!(out.build.created);
    assert_eq!(out.project.spec, project);
    let t = &out.build.task;
    assert_eq!(
        (t.spec.project.as_deref(), t.spec.base_ref.as_deref()),
        (Some("fresh"), Some("main"))
    );
    // Wired to GitHub: the build will get its pull request.
    let link = app.store.github_link(t.id).await.expect("link").expect("linked");
    assert_eq!((link.kind.as_str(), link.number), ("build", None));
    // The same call again updates the project and finds the build by its key.
    let again = app.submitter().create_and_build(&req).await.expect("again");
    assert!(!again.build.created);
    assert_eq!(again.build.task.id, t.id);
    // A bad project is refused before anything is stored.
    let mut bad = req.clone();
    bad.project.name = "bad name".into();
    let err = app.submitter().create_and_build(&bad).await.expect_err("refused");
    assert!(err.to_string().contains("name"), "{err}");
    assert_eq!(task_count(&app).await, 1);
}
