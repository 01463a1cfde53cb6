//! Tokens limited to projects and with an expiry, through the API: what a project token
//! reaches (its projects' tasks, builds and schedules), what it is refused, how an expired
//! token is answered, and the last use noted.

use std::time::Duration;

use agentpool_client::{Client, Error};
use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{BuildRequest, BulkCancel, TaskListQuery, TokenCreate, TokenRotate};
use agentpool_core::schedule::{Overlap, ScheduleSpec};
use agentpool_core::{TaskId, TaskSpec};
use agentpool_testkit::db::Backend;

use crate::both_backends;
use crate::support::{TestApp, fields, spawn_app};

both_backends!(
    a_token_s_limits_are_checked_when_it_is_created,
    a_project_token_sees_and_acts_on_its_projects_tasks_only,
    a_project_token_submits_to_its_projects_as_they_are_set_up,
    a_project_tokens_retry_names_the_dependents_it_reaches_only,
    a_project_token_reads_its_projects_and_schedules_only,
    an_expired_token_is_refused_saying_so_and_uses_are_noted,
    a_token_rotated_has_a_successor_and_works_for_its_grace,
    a_project_a_token_is_limited_to_is_deleted_only_once_the_token_is_revoked,
    an_idempotency_key_is_its_project_s_own,
    api_answers_are_neither_cached_nor_sniffed,
);

/// The answer that carries a new token's value, an error and a list alike: no cache keeps
/// them, and no browser reads them as anything but what they say they are.
async fn api_answers_are_neither_cached_nor_sniffed(backend: Backend) {
    let app = spawn_app(backend).await.expect("database");
    let http = reqwest::Client::new();
    let create = http
        .post(format!("{}/v1/tokens", app.base))
        .bearer_auth(&app.tokens.admin)
        .json(&serde_json::json!({"name": "ci", "role": "submitter"}));
    let list = http
        .get(format!("{}/v1/tasks", app.base))
        .bearer_auth(&app.tokens.admin);
    let refused = http.get(format!("{}/v1/tasks", app.base));
    let unknown = http.get(format!("{}/v1/nothing-here", app.base));
    for (what, req, status) in [
        ("a new token", create, 201),
        ("a list", list, 200),
        ("a refusal", refused, 401),
        ("an unknown path", unknown, 404),
    ] {
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["cache-control"], "no-store", "{what}");
    }
}

/// A key names one submission within its project: a key that is already another project's task
/// gets this project its own task (and says nothing of the other), for a project token and for
/// one that reaches both; within one project a key still finds its task.
async fn an_idempotency_key_is_its_project_s_own(backend: Backend) {
    let app = spawn_app(backend).await.expect("database");
    let (web, _) = two_projects(&app).await;
    let keyed = |project: &str, cmd: &str| TaskSpec {
        idempotency_key: Some("deploy-1".into()),
        ..in_project(project, cmd)
    };
    let api_task = submitted(&app.submitter(), keyed("api", "echo api work")).await;
    let web_task = web
        .submit(&keyed("web", "echo web work"))
        .await
        .expect("web's own");
    assert!(web_task.created);
    assert_ne!(web_task.task.id, api_task);
    assert_eq!(web_task.task.spec.command.as_deref(), Some("echo web work"));
    // The same key in the same project is the same submission, whoever sends it.
    for client in [app.submitter(), web.clone()] {
        let again = client
            .submit(&keyed("web", "echo web work"))
            .await
            .expect("again");
        assert_eq!((again.task.id, again.created), (web_task.task.id, false));
    }
    let again = app
        .submitter()
        .submit(&keyed("api", "echo api work"))
        .await
        .expect("again");
    assert_eq!((again.task.id, again.created), (api_task, false));
    let tasks = app
        .admin()
        .list_tasks(&TaskListQuery::default())
        .await
        .expect("list")
        .tasks;
    assert_eq!(tasks.len(), 2);
}

/// The status and error code of a refused call.
pub(crate) fn refused(e: Error) -> (u16, String) {
    match e {
        Error::Rejected { status, code, .. } => (status, code),
        Error::NotFound(_) => (404, "not_found".into()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Projects `web` and `api` (each with its own credential), and a client of a submitter
/// token limited to `web` with the token's value.
pub(crate) async fn two_projects(app: &TestApp) -> (Client, String) {
    let admin = app.admin();
    for (name, credential) in [("web", "web-token"), ("api", "api-token")] {
        admin
            .put_credential(credential, "s3cret-value")
            .await
            .expect("credential");
        admin
            .put_project(&ProjectSpec {
                name: name.into(),
                repo: format!("https://example.com/{name}.git"),
                credentials: vec![credential.into()],
                allowed_agents: vec!["codex".into()],
                ..ProjectSpec::default()
            })
            .await
            .expect("project");
    }
    let t = admin
        .create_token(&limited_to(&["web"], "web-ci", "submitter"))
        .await
        .expect("token");
    assert_eq!(t.projects, vec!["web".to_string()]);
    (app.client_with(&t.token), t.token)
}

/// A request for a `role` token named `name`, limited to `projects`.
pub(crate) fn limited_to(projects: &[&str], name: &str, role: &str) -> TokenCreate {
    TokenCreate {
        projects: projects.iter().map(|p| p.to_string()).collect(),
        ..TokenCreate::new(name, role)
    }
}

pub(crate) fn in_project(project: &str, cmd: &str) -> TaskSpec {
    TaskSpec {
        project: Some(project.into()),
        repo: None,
        ..TaskSpec::command("https://example.com/x.git", cmd)
    }
}

pub(crate) async fn submitted(c: &Client, spec: TaskSpec) -> TaskId {
    c.submit(&spec).await.expect("submit").task.id
}

async fn a_token_s_limits_are_checked_when_it_is_created(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    two_projects(&app).await;
    let before = admin.list_tokens().await.expect("list").len();
    // Every problem at once, by field: projects on an admin token, a project named twice, one
    // that does not exist, an expiry in the past.
    let e = admin
        .create_token(&TokenCreate {
            expires_at: Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
            ..limited_to(&["web", "nope", "web"], "root", "admin")
        })
        .await
        .unwrap_err();
    assert_eq!(
        fields(e),
        ["projects", "projects[1]", "projects[2]", "expires_at"]
    );
    assert_eq!(
        admin.list_tokens().await.expect("list").len(),
        before,
        "nothing stored"
    );
    // A submitter token may be limited; its limits are listed (never its value).
    let in_a_month = chrono::Utc::now() + chrono::Duration::days(30);
    let t = admin
        .create_token(&TokenCreate {
            expires_at: Some(in_a_month),
            ..limited_to(&["web", "api"], "ci", "submitter")
        })
        .await
        .expect("token");
    let listed = admin.list_tokens().await.expect("list");
    let info = listed.iter().find(|i| i.id == t.id).expect("listed");
    assert_eq!(info.projects, ["web", "api"]);
    assert_eq!(
        info.expires_at.map(|t| t.timestamp_millis()),
        Some(in_a_month.timestamp_millis())
    );
    assert!(!info.expired(chrono::Utc::now()));
    let body = serde_json::to_string(&listed).expect("json");
    assert!(!body.contains(&t.token));
    // Any project name may be a limit, capitals and all.
    admin
        .put_project(&ProjectSpec {
            name: "Web_App".into(),
            repo: "https://example.com/web-app.git".into(),
            ..ProjectSpec::default()
        })
        .await
        .expect("project");
    let t = admin
        .create_token(&limited_to(&["Web_App"], "web-app-ci", "submitter"))
        .await
        .expect("a token for a project named with capitals");
    assert_eq!(t.projects, ["Web_App"]);
    // Only an admin manages tokens.
    let e = app
        .submitter()
        .create_token(&TokenCreate::new("x", "admin"))
        .await;
    assert_eq!(refused(e.unwrap_err()).0, 403);
}

async fn a_project_token_sees_and_acts_on_its_projects_tasks_only(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (web_ci, web_token) = two_projects(&app).await;
    let admin = app.admin();
    let web = submitted(&admin, in_project("web", "make")).await;
    let api = submitted(&admin, in_project("api", "make")).await;
    let loose = submitted(&admin, TaskSpec::command("https://example.com/x.git", "true")).await;

    // Listed: only web's, also when asking for another project by name.
    let page = web_ci.list_tasks(&TaskListQuery::default()).await.expect("list");
    assert_eq!(page.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [web]);
    let q = TaskListQuery {
        project: Some("api".into()),
        ..TaskListQuery::default()
    };
    assert!(web_ci.list_tasks(&q).await.expect("list").tasks.is_empty());
    let page = admin.list_tasks(&TaskListQuery::default()).await.expect("list");
    assert_eq!(page.tasks.len(), 3, "an admin token lists every task");

    // Another project's task, and one of no project, do not exist for it.
    assert_eq!(web_ci.get_task(web).await.expect("get").task.id, web);
    for id in [api, loose] {
        assert_eq!(
            refused(web_ci.get_task(id).await.unwrap_err()),
            (404, "not_found".into())
        );
        assert_eq!(refused(web_ci.events(id, 0, 10).await.unwrap_err()).0, 404);
        assert_eq!(refused(web_ci.cancel(id).await.unwrap_err()).0, 404);
        assert_eq!(refused(web_ci.retry(id).await.unwrap_err()).0, 404);
    }
    let stream = reqwest::Client::new()
        .get(format!("{}/v1/tasks/{api}/events/stream", app.base))
        .bearer_auth(&web_token)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 404);

    // A bulk cancel passes over what it does not reach, as not found, in the order named.
    let out = web_ci
        .cancel_many(&BulkCancel {
            ids: vec![api, web, loose],
            reason: Some("superseded".into()),
        })
        .await
        .expect("bulk cancel");
    assert_eq!(out.canceled.iter().map(|t| t.id).collect::<Vec<_>>(), [web]);
    let skipped: Vec<_> = out.skipped.iter().map(|s| (s.id, s.code.as_str())).collect();
    assert_eq!(skipped, [(api, "not_found"), (loose, "not_found")]);
    for id in [api, loose] {
        let t = admin.get_task(id).await.expect("get").task;
        assert_eq!(t.state, agentpool_core::TaskState::Queued, "untouched");
    }

    // The queue's figures count its projects' tasks only.
    let stats = web_ci
        .queue_stats(Some(&Default::default()), &[], &[])
        .await
        .expect("stats");
    assert_eq!(stats.queued, 0, "web's one task was canceled");
    assert_eq!(
        admin
            .queue_stats(Some(&Default::default()), &[], &[])
            .await
            .expect("stats")
            .queued,
        2
    );
}

async fn a_project_token_submits_to_its_projects_as_they_are_set_up(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (web_ci, _) = two_projects(&app).await;
    let admin = app.admin();
    let api = submitted(&admin, in_project("api", "make")).await;

    // Its project, with the project's own credential: submitted, the repository filled in.
    let spec = TaskSpec {
        credentials: vec!["web-token".into()],
        ..in_project("web", "make")
    };
    let t = web_ci.submit(&spec).await.expect("submit").task;
    assert_eq!(t.spec.repo.as_deref(), Some("https://example.com/web.git"));
    let b = web_ci
        .submit_build(
            "web",
            &BuildRequest {
                prompt: "add a changelog".into(),
                ..BuildRequest::default()
            },
        )
        .await
        .expect("build");
    assert_eq!(b.task.spec.project.as_deref(), Some("web"));

    // Refused: another project, no project, another repository, another project's
    // credential; the message says what it is limited to.
    let forbidden = |e: Error| match e {
        Error::Rejected {
            status: 403, message, ..
        } => message,
        other => panic!("expected 403, got {other:?}"),
    };
    let e = web_ci.submit(&in_project("api", "make")).await.unwrap_err();
    assert_eq!(
        forbidden(e),
        "token web-ci is limited to projects web; it may not use project api"
    );
    // Refused before the task is checked against the project: nothing of api's set-up (its
    // allowed agents) is told.
    let agent_task = TaskSpec {
        kind: agentpool_core::TaskKind::Agent,
        agent: Some("claude-code".into()),
        prompt: Some("fix it".into()),
        command: None,
        ..in_project("api", "")
    };
    let e = web_ci.submit(&agent_task).await.unwrap_err();
    assert!(!forbidden(e).contains("codex"));
    let e = web_ci
        .submit(&TaskSpec::command("https://example.com/x.git", "true"))
        .await
        .unwrap_err();
    assert!(forbidden(e).ends_with("it may not use tasks without a project"));
    let elsewhere = TaskSpec {
        repo: Some("https://example.com/elsewhere.git".into()),
        ..in_project("web", "make")
    };
    let e = web_ci.submit(&elsewhere).await.unwrap_err();
    assert!(forbidden(e).contains("project web's repository only"));
    let borrowed = TaskSpec {
        credentials: vec!["api-token".into()],
        ..in_project("web", "make")
    };
    let e = web_ci.submit(&borrowed).await.unwrap_err();
    assert!(forbidden(e).contains("not api-token"));
    // A follow-up of a task it does not reach: that task does not exist for it.
    let follow = TaskSpec {
        follow_up_of: Some(api),
        project: None,
        ..in_project("web", "go on")
    };
    assert_eq!(refused(web_ci.submit(&follow).await.unwrap_err()).0, 404);
    // A dependency on a task it does not reach: refused as one that does not exist, so it
    // neither waits on another project's task nor learns how that ended; in a batch too.
    let after = |dep: TaskId| TaskSpec {
        depends_on: vec![dep],
        ..in_project("web", "after it")
    };
    let said = |e: Error| match e {
        Error::Rejected {
            status: 422, fields, ..
        } => fields
            .into_iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>(),
        other => panic!("expected a 422, got {other:?}"),
    };
    let nowhere = TaskId::new();
    assert_eq!(
        said(web_ci.submit(&after(api)).await.unwrap_err()),
        [format!("depends_on[0]: task {api} does not exist")]
    );
    assert_eq!(
        said(web_ci.submit(&after(nowhere)).await.unwrap_err()),
        [format!("depends_on[0]: task {nowhere} does not exist")]
    );
    let e = web_ci
        .submit_batch(vec![in_project("web", "a"), after(api)])
        .await
        .unwrap_err();
    assert_eq!(
        said(e),
        [format!("tasks[1].depends_on[0]: task {api} does not exist")]
    );
    // On a task of its own project it may depend.
    let own = web_ci
        .submit(&after(t.id))
        .await
        .expect("a dependent of its own task");
    assert_eq!(own.task.spec.depends_on, vec![t.id]);
    // A batch with one task it may not submit submits none.
    let e = web_ci
        .submit_batch(vec![in_project("web", "a"), in_project("api", "b")])
        .await
        .unwrap_err();
    assert_eq!(refused(e).0, 403);
    let e = web_ci
        .submit_build(
            "api",
            &BuildRequest {
                prompt: "x".into(),
                ..BuildRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused(e).0, 404);
    let page = admin.list_tasks(&TaskListQuery::default()).await.expect("list");
    assert_eq!(
        page.tasks.len(),
        4,
        "the api task, and web's task, build and dependent"
    );
}

/// A retry re-queues the dependents that failed with its task — another project's too, which
/// an admin made depend on it — and a project token is told of those it reaches only.
async fn a_project_tokens_retry_names_the_dependents_it_reaches_only(backend: Backend) {
    use agentpool_core::TaskState;
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (web_ci, _) = two_projects(&app).await;
    let admin = app.admin();
    let first = submitted(&web_ci, in_project("web", "make")).await;
    let after = |project: &str| TaskSpec {
        depends_on: vec![first],
        ..in_project(project, "after it")
    };
    let ours = submitted(&web_ci, after("web")).await;
    let theirs = submitted(&admin, after("api")).await;
    let state = async |id: TaskId| admin.get_task(id).await.expect("get").task.state;

    web_ci.cancel(first).await.expect("cancel");
    assert_eq!(state(ours).await, TaskState::Failed, "failed with its dependency");
    assert_eq!(state(theirs).await, TaskState::Failed);
    let r = web_ci.retry(first).await.expect("retry");
    assert_eq!(r.requeued_dependents, [ours]);
    assert_eq!(state(ours).await, TaskState::Queued);
    assert_eq!(
        state(theirs).await,
        TaskState::Queued,
        "it failed with it, and waits again"
    );

    // The same in a bulk retry; an admin is told of both.
    web_ci.cancel(first).await.expect("cancel");
    let r = web_ci.retry_many(&[first]).await.expect("bulk retry");
    assert_eq!(r.retried[0].requeued_dependents, [ours]);
    web_ci.cancel(first).await.expect("cancel");
    let mut told = admin.retry(first).await.expect("retry").requeued_dependents;
    told.sort();
    let mut both = vec![ours, theirs];
    both.sort();
    assert_eq!(told, both);
}

async fn a_project_token_reads_its_projects_and_schedules_only(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (web_ci, _) = two_projects(&app).await;
    let admin = app.admin();
    let names = |ps: Vec<agentpool_core::Project>| ps.into_iter().map(|p| p.spec.name).collect::<Vec<_>>();
    assert_eq!(names(web_ci.list_projects().await.expect("list")), ["web"]);
    assert_eq!(names(admin.list_projects().await.expect("list")).len(), 2);
    assert_eq!(web_ci.get_project("web").await.expect("get").spec.name, "web");
    assert_eq!(refused(web_ci.get_project("api").await.unwrap_err()).0, 404);
    assert_eq!(refused(web_ci.list_builds("api").await.unwrap_err()).0, 404);
    // It uses its projects as they are set up: no creating, changing or deleting.
    let mut web = web_ci.get_project("web").await.expect("get").spec;
    web.credentials.push("api-token".into());
    assert_eq!(refused(web_ci.put_project(&web).await.unwrap_err()).0, 403);
    let new = ProjectSpec {
        name: "mine".into(),
        repo: "https://example.com/mine.git".into(),
        ..ProjectSpec::default()
    };
    assert_eq!(refused(web_ci.put_project(&new).await.unwrap_err()).0, 403);
    assert_eq!(refused(web_ci.delete_project("web").await.unwrap_err()).0, 403);
    assert_eq!(refused(web_ci.delete_project("api").await.unwrap_err()).0, 404);
    let stored = admin.get_project("web").await.expect("get").spec;
    assert_eq!(stored.credentials, ["web-token"], "unchanged");

    // Schedules: another project's are not there for it; its own it sets and runs.
    let nightly = |project: &str| ScheduleSpec {
        cron: "0 3 * * *".into(),
        time_zone: None,
        task: in_project(project, "make update-deps"),
        overlap: Overlap::Skip,
        paused: false,
    };
    admin
        .put_schedule("api-deps", &nightly("api"))
        .await
        .expect("put");
    web_ci
        .put_schedule("web-deps", &nightly("web"))
        .await
        .expect("put");
    let listed: Vec<_> = web_ci
        .list_schedules()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, ["web-deps"]);
    assert_eq!(refused(web_ci.get_schedule("api-deps").await.unwrap_err()).0, 404);
    assert_eq!(refused(web_ci.run_schedule("api-deps").await.unwrap_err()).0, 404);
    assert_eq!(
        refused(web_ci.pause_schedule("api-deps").await.unwrap_err()).0,
        404
    );
    assert_eq!(
        refused(web_ci.delete_schedule("api-deps").await.unwrap_err()).0,
        404
    );
    let e = web_ci
        .put_schedule("api-deps", &nightly("web"))
        .await
        .unwrap_err();
    assert_eq!(refused(e).0, 403, "another project's schedule is not replaced");
    let e = web_ci.put_schedule("mine", &nightly("api")).await.unwrap_err();
    assert_eq!(refused(e).0, 403);
    let run = web_ci.run_schedule("web-deps").await.expect("run");
    assert_eq!(run.task.spec.project.as_deref(), Some("web"));
    let api_deps = admin.get_schedule("api-deps").await.expect("get");
    assert_eq!(api_deps.spec.task.project.as_deref(), Some("api"), "unchanged");
}

async fn an_expired_token_is_refused_saying_so_and_uses_are_noted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    let t = admin
        .create_token(&TokenCreate {
            expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            ..TokenCreate::new("temp", "submitter")
        })
        .await
        .expect("token");
    let temp = app.client_with(&t.token);
    let unused = admin
        .create_token(&TokenCreate::new("spare", "submitter"))
        .await
        .expect("token");
    temp.list_tasks(&TaskListQuery::default())
        .await
        .expect("works until it expires");
    let listed = admin.list_tokens().await.expect("list");
    let used = |id: &str| listed.iter().find(|i| i.id == id).expect("listed").last_used_at;
    assert!(used(&t.id).is_some(), "its use is noted");
    assert_eq!(used(&unused.id), None);

    // Two hours on (the store's clock): refused at once, though its lookup is still cached.
    app.clock.advance(Duration::from_secs(2 * 3600));
    let e = temp.list_tasks(&TaskListQuery::default()).await.unwrap_err();
    match e {
        Error::Rejected {
            status: 401,
            code,
            message,
            ..
        } => {
            assert_eq!(code, "unauthorized");
            assert!(message.starts_with("token temp expired at "), "{message}");
            assert!(message.ends_with("; ask an admin for a new one"), "{message}");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let listed = admin.list_tokens().await.expect("list");
    let info = listed.iter().find(|i| i.id == t.id).expect("listed");
    assert!(info.expired(app.clock.now()));
}

async fn a_token_rotated_has_a_successor_and_works_for_its_grace(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (_, _) = two_projects(&app).await;
    let admin = app.admin();
    let month = chrono::Duration::days(30);
    let old = admin
        .create_token(&TokenCreate {
            expires_at: Some(app.clock.now() + month),
            ..limited_to(&["web"], "ci", "submitter")
        })
        .await
        .expect("token");
    let ten_minutes = TokenRotate {
        grace_secs: Some(600),
    };
    let out = admin.rotate_token(&old.id, &ten_minutes).await.expect("rotate");
    let s = &out.successor;
    assert_ne!(s.id, old.id);
    assert_eq!((s.name.as_str(), s.role.as_str()), ("ci", "submitter"));
    assert_eq!(s.projects, ["web"]);
    let near =
        |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| (a - b).num_seconds().abs() < 60;
    assert!(
        near(s.expires_at.expect("an expiry"), app.clock.now() + month),
        "as long a life"
    );
    assert!(near(
        out.previous_expires_at,
        app.clock.now() + chrono::Duration::minutes(10)
    ));
    // Both work during the grace, with the same reach.
    for t in [&old.token, &s.token] {
        let listed = app.client_with(t).list_projects().await.expect("works");
        assert_eq!(listed.len(), 1);
    }
    // Past it, the old one is expired; the successor goes on.
    app.clock.advance(Duration::from_secs(601));
    let e = app.client_with(&old.token).list_projects().await.unwrap_err();
    assert_eq!(refused(e).0, 401);
    app.client_with(&s.token)
        .list_projects()
        .await
        .expect("the successor works");
    // An expired, revoked or unknown token is not rotated; a grace past 30 days is refused.
    let e = admin.rotate_token(&old.id, &ten_minutes).await.unwrap_err();
    assert_eq!(refused(e), (409, "conflict".into()));
    admin.revoke_token(&s.id).await.expect("revoke");
    let e = admin.rotate_token(&s.id, &ten_minutes).await.unwrap_err();
    assert_eq!(refused(e).0, 409);
    let e = admin.rotate_token("nope", &ten_minutes).await.unwrap_err();
    assert_eq!(refused(e).0, 404);
    let long = TokenRotate {
        grace_secs: Some(31 * 86_400),
    };
    let e = admin.rotate_token(&old.id, &long).await.unwrap_err();
    assert_eq!(fields(e), ["grace_secs"]);
    // A token that never expires: its successor neither, and it keeps an hour by default.
    let forever = admin
        .create_token(&TokenCreate::new("pool", "worker"))
        .await
        .expect("token");
    let out = admin
        .rotate_token(&forever.id, &TokenRotate::default())
        .await
        .expect("rotate");
    assert_eq!(out.successor.expires_at, None);
    assert!(near(
        out.previous_expires_at,
        app.clock.now() + chrono::Duration::hours(1)
    ));
}

/// Tokens name their projects by name: a project a valid token is limited to is not deleted,
/// since a project created again under the name would be that token's. Once the tokens are
/// revoked, it is.
async fn a_project_a_token_is_limited_to_is_deleted_only_once_the_token_is_revoked(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    two_projects(&app).await;
    admin
        .create_token(&limited_to(&["web"], "web-pods", "worker"))
        .await
        .expect("token");
    match admin.delete_project("web").await {
        Err(Error::Rejected {
            status,
            code,
            message,
            ..
        }) => {
            assert_eq!((status, code.as_str()), (409, "project_in_use"));
            assert!(
                message.starts_with("tokens web-ci, web-pods are limited to project web; revoke them first"),
                "{message}"
            );
        }
        other => panic!("expected project_in_use, got {other:?}"),
    }
    admin.get_project("web").await.expect("still there");
    // No token is limited to api.
    admin.delete_project("api").await.expect("deleted");
    for t in admin.list_tokens().await.expect("list") {
        if t.projects == ["web"] {
            admin.revoke_token(&t.id).await.expect("revoke");
        }
    }
    admin
        .delete_project("web")
        .await
        .expect("deleted once its tokens are revoked");
    assert!(matches!(admin.get_project("web").await, Err(Error::NotFound(_))));
}
