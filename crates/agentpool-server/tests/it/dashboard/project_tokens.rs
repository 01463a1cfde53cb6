//! The dashboard as a token limited to a project sees it: its project's tasks, figures,
//! project and schedules, and nothing of another project's, whose pages and actions answer as
//! if they did not exist. A worker limited to projects is shown with them, and a task that only
//! workers of other projects could run says so.

use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskResult, TaskSpec, TaskState};
use agentpool_server::Role;
use agentpool_server::auth::{TokenLimits, create_limited_token};
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;

use super::schedules::command_schedule;
use super::{claim_commands, get, login, post_expecting, register, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(
    a_project_token_sees_its_projects_work_only,
    a_worker_limited_to_projects_is_shown_with_them,
);

async fn a_project_token_sees_its_projects_work_only(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let store = app.store.as_ref();
    let mut ids = Vec::new();
    for name in ["web", "api"] {
        store
            .put_project(ProjectSpec {
                name: name.into(),
                repo: format!("https://example.com/{name}-repo.git"),
                ..ProjectSpec::default()
            })
            .await
            .expect("project");
        let spec = TaskSpec {
            project: Some(name.into()),
            ..TaskSpec::command(
                &format!("https://example.com/{name}-repo.git"),
                &format!("make {name}-target"),
            )
        };
        ids.push(store.enqueue(spec.clone()).await.expect("enqueue").task.id);
        let mut schedule = command_schedule("@daily");
        schedule.task = spec;
        store
            .put_schedule(&format!("{name}-nightly"), &schedule, None)
            .await
            .expect("schedule");
    }
    let (web, api) = (ids[0], ids[1]);
    let limits = TokenLimits {
        projects: vec!["web".into()],
        expires_at: None,
    };
    let token = create_limited_token(store, Role::Submitter, "web-ci", limits)
        .await
        .expect("token")
        .plaintext;
    let ok = login(&app, &token, &[]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.text);
    let me = session(&token);

    let list = get(&app, "/tasks", Some(&me)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.text.contains(&web.to_string()), "{}", list.text);
    assert!(!list.text.contains(&api.to_string()) && !list.text.contains("api-target"));
    let asked = get(&app, "/tasks?project=api", Some(&me)).await;
    assert!(!asked.text.contains(&api.to_string()));

    assert_eq!(
        get(&app, &format!("/tasks/{web}"), Some(&me)).await.status,
        StatusCode::OK
    );
    for uri in [format!("/tasks/{api}"), format!("/live/tasks/{api}")] {
        let r = get(&app, &uri, Some(&me)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}: {}", r.text);
        assert!(!r.text.contains("api-target"));
    }

    // The overview counts its project's tasks; an admin's counts every one.
    let queued = |text: &str| {
        let at = text
            .find(r#"id="count-queued"><span class="n">"#)
            .expect("queued count");
        let rest = &text[at + r#"id="count-queued"><span class="n">"#.len()..];
        rest[..rest.find('<').expect("end")].to_string()
    };
    let overview = get(&app, "/", Some(&me)).await;
    assert_eq!(queued(&overview.text), "1");
    assert!(!overview.text.contains("api"), "{}", overview.text);
    let admin = get(&app, "/", Some(&session(&app.tokens.admin))).await;
    assert_eq!(queued(&admin.text), "2");

    let projects = get(&app, "/projects", Some(&me)).await;
    assert!(projects.text.contains("web-repo") && projects.text.contains("web-nightly"));
    assert!(!projects.text.contains("api-repo") && !projects.text.contains("api-nightly"));

    // Another project's task and schedule are not acted on.
    let csrf = projects.csrf();
    for (uri, form) in [
        (format!("/tasks/{api}/cancel"), format!("csrf={csrf}")),
        ("/schedules/api-nightly/run".into(), format!("csrf={csrf}")),
        (
            format!("/tasks/{api}/follow-up"),
            format!("csrf={csrf}&prompt=go"),
        ),
    ] {
        post_expecting(&app, &uri, &me, &form, StatusCode::NOT_FOUND).await;
    }
    let t = store.find_task(api).await.expect("find").expect("task");
    assert_eq!(t.state, TaskState::Queued, "untouched");
    assert!(
        store
            .get_schedule("api-nightly")
            .await
            .expect("get")
            .expect("kept")
            .last_task
            .is_none()
    );
    // Its own project's task it cancels.
    post_expecting(
        &app,
        &format!("/tasks/{web}/cancel"),
        &me,
        &format!("csrf={csrf}"),
        StatusCode::SEE_OTHER,
    )
    .await;

    // The last hour's chart counts its project's ends; an admin's counts every one. (The
    // canceled task is in neither figure.)
    let w = register(store, "w-1").await;
    let claimed = claim_commands(store, &w.id, 2).await;
    assert_eq!(claimed.len(), 1, "the api task");
    store
        .complete(&w.id, claimed[0].lease, TaskResult::default())
        .await
        .expect("complete");
    let throughput = |text: &str| {
        let at = text.find(r#"<p id="throughput">"#).expect("throughput");
        let rest = &text[at..];
        rest[..rest.find("</p>").expect("end")].to_string()
    };
    let mine = get(&app, "/", Some(&me)).await;
    assert_eq!(
        throughput(&mine.text),
        r#"<p id="throughput"><strong>0</strong> succeeded, <strong>0</strong> failed"#
    );
    let all = get(&app, "/", Some(&session(&app.tokens.admin))).await;
    assert_eq!(
        throughput(&all.text),
        r#"<p id="throughput"><strong>1</strong> succeeded, <strong>0</strong> failed"#
    );
}

async fn a_worker_limited_to_projects_is_shown_with_them(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let store = app.store.as_ref();
    register(store, "fleet-1").await;
    let mut reg = agentpool_testkit::worker::registration(
        Some(agentpool_core::WorkerId::parse("web-pod").expect("id")),
        &["command"],
        2,
    );
    reg.projects = vec!["web".into(), "docs".into()];
    store.register_worker(reg).await.expect("register");
    store
        .deregister_worker(&agentpool_core::WorkerId::parse("fleet-1").expect("id"))
        .await
        .expect("gone");
    let admin = session(&app.tokens.admin);
    let page = get(&app, "/workers", Some(&admin)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text
            .contains(r#"<span class="hint projects">projects web, docs</span>"#),
        "{}",
        page.text
    );
    assert_eq!(
        page.text.matches("hint projects").count(),
        1,
        "the unlimited worker has none"
    );
    // A task of another project: none online may take it, and the overview says why.
    store
        .enqueue(TaskSpec {
            project: Some("api".into()),
            ..TaskSpec::command("https://example.com/api-repo.git", "make")
        })
        .await
        .expect("enqueue");
    let overview = get(&app, "/", Some(&admin)).await;
    assert!(
        overview
            .text
            .contains("no worker online offers agent command for project api"),
        "{}",
        overview.text
    );
}
