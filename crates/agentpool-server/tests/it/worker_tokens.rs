//! Worker tokens limited to projects, through the API: their workers take only those
//! projects' tasks (and so receive only those tasks' credentials), and they cannot act as,
//! take over or drain another worker, nor report on another project's task. A worker may
//! also limit itself to projects with any worker token.

use std::time::Duration;

use agentpool_core::{NewEvent, TaskResult, TaskSpec, WorkerId};
use agentpool_testkit::db::Backend;

use crate::both_backends;
use crate::support::{fields, registration, spawn_app};
use crate::tokens::{in_project, limited_to, refused, submitted, two_projects};

both_backends!(
    a_worker_token_limited_to_projects_takes_and_touches_only_their_tasks,
    a_worker_limits_itself_to_projects,
    a_credential_its_project_does_not_name_is_not_handed_to_a_limited_worker,
    a_credential_the_server_cannot_read_is_said_in_the_task_s_log,
);

fn named(id: &str) -> agentpool_core::worker::WorkerRegistration {
    agentpool_core::worker::WorkerRegistration {
        id: Some(WorkerId::parse(id).expect("worker id")),
        ..registration(&["command"])
    }
}

/// [`named`], registered for `projects`' tasks only.
fn named_for(id: &str, projects: &[&str]) -> agentpool_core::worker::WorkerRegistration {
    agentpool_core::worker::WorkerRegistration {
        projects: projects.iter().map(|p| p.to_string()).collect(),
        ..named(id)
    }
}

async fn a_worker_token_limited_to_projects_takes_and_touches_only_their_tasks(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    two_projects(&app).await;
    let t = admin
        .create_token(&limited_to(&["web"], "web-pods", "worker"))
        .await
        .expect("a worker token may be limited");
    assert_eq!(t.projects, ["web"]);
    let pods = app.client_with(&t.token);

    // The fleet's worker (any task), and the web pod's, limited by its token.
    let fleet = app.client(agentpool_server::Role::Worker);
    let shared = fleet.register(&named("fleet")).await.expect("register");
    assert!(shared.projects.is_empty());
    let pod = pods.register(&named("web-pod")).await.expect("register");
    assert_eq!(pod.projects, ["web"]);
    assert_eq!(admin.get_worker(&pod.id).await.expect("worker").projects, ["web"]);
    // It may not register for another project, nor take over the fleet's worker.
    let e = pods.register(&named_for("api-pod", &["api"])).await.unwrap_err();
    assert_eq!(refused(e), (403, "forbidden".into()));
    let e = pods.register(&named("fleet")).await.unwrap_err();
    assert_eq!(refused(e), (409, "worker_taken".into()));
    assert!(
        admin
            .get_worker(&shared.id)
            .await
            .expect("worker")
            .projects
            .is_empty()
    );

    let web = submitted(&admin, in_project("web", "make web")).await;
    let api = submitted(&admin, in_project("api", "make api")).await;
    let loose = submitted(&admin, TaskSpec::command("https://example.com/x.git", "make")).await;
    // Its claim takes the web task only, with the web project's credential alone.
    let got = pods.claim(&pod.id, 10, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].claimed.task.id, web);
    let creds: Vec<&String> = got[0].credentials.0.keys().collect();
    assert_eq!(creds, ["web-token"]);
    assert!(
        pods.claim(&pod.id, 10, Duration::ZERO)
            .await
            .expect("claim")
            .is_empty()
    );
    // The fleet takes the others.
    let rest = fleet.claim(&shared.id, 10, Duration::ZERO).await.expect("claim");
    let mut ids: Vec<_> = rest.iter().map(|w| w.claimed.task.id).collect();
    ids.sort();
    let mut want = vec![api, loose];
    want.sort();
    assert_eq!(ids, want);
    let api_lease = rest
        .iter()
        .find(|w| w.claimed.task.id == api)
        .map(|w| w.claimed.lease.token)
        .expect("api claimed");

    // As the fleet's worker, nothing: not its heartbeat, claim, events, reports or drain.
    let not_found = |r: Result<(), agentpool_client::Error>| refused(r.expect_err("refused")).0;
    let beat = agentpool_core::protocol::HeartbeatRequest::default();
    assert_eq!(not_found(pods.heartbeat(&shared.id, &beat).await.map(drop)), 404);
    assert_eq!(
        not_found(pods.claim(&shared.id, 1, Duration::ZERO).await.map(drop)),
        404
    );
    let log = || vec![NewEvent::log("stdout", "forged")];
    assert_eq!(
        not_found(pods.append_events(&shared.id, api, api_lease, log()).await),
        404
    );
    assert_eq!(
        not_found(
            pods.complete(&shared.id, api, api_lease, TaskResult::default())
                .await
        ),
        404
    );
    assert_eq!(not_found(pods.drain_worker(&shared.id).await.map(drop)), 404);
    assert_eq!(not_found(pods.deregister(&shared.id).await), 404);
    // Nor, as its own worker, on the api task (events are fenced by the lease alone).
    assert_eq!(
        not_found(pods.append_events(&pod.id, api, api_lease, log()).await),
        404
    );
    // Nor on a task this server did not hand out (looked up): another project's still queued,
    // or none at all.
    let queued_api = submitted(&admin, in_project("api", "make api again")).await;
    for t in [queued_api, agentpool_core::TaskId::new()] {
        assert_eq!(
            not_found(pods.append_events(&pod.id, t, api_lease, log()).await),
            404
        );
    }
    let api_task = admin.get_task(api).await.expect("task");
    assert_eq!(api_task.task.state, agentpool_core::TaskState::Running);
    assert_eq!(api_task.task.worker_id.as_ref(), Some(&shared.id));
    let events = admin.events(api, 0, 1000).await.expect("events");
    assert!(!format!("{events:?}").contains("forged"));

    // Its own task it reports as any worker does.
    let lease = got[0].claimed.lease.token;
    pods.append_events(&pod.id, web, lease, vec![NewEvent::log("stdout", "built")])
        .await
        .expect("events");
    pods.complete(&pod.id, web, lease, TaskResult::default())
        .await
        .expect("complete");
    assert_eq!(
        admin.get_task(web).await.expect("task").task.state,
        agentpool_core::TaskState::Succeeded
    );
    pods.drain_worker(&pod.id).await.expect("its own drain");
}

async fn a_worker_limits_itself_to_projects(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    two_projects(&app).await;
    let fleet = app.client(agentpool_server::Role::Worker);
    let e = fleet
        .register(&named_for("docs-pod", &["web", "not a name", "web"]))
        .await
        .unwrap_err();
    assert_eq!(fields(e), ["projects[1]", "projects[2]"]);
    let w = fleet
        .register(&named_for("api-pod", &["api"]))
        .await
        .expect("register");
    assert_eq!(w.projects, ["api"]);
    submitted(&admin, in_project("web", "make web")).await;
    let api = submitted(&admin, in_project("api", "make api")).await;
    let got = fleet.claim(&w.id, 10, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].claimed.task.id, api);
    assert_eq!(got[0].credentials.0.keys().collect::<Vec<_>>(), ["api-token"]);
}

/// A caller of every project may name on a project's task a credential the project does not
/// name. A worker limited to projects (a team's own machine) is still handed the project's
/// credentials only, and the task's events say what was withheld; any other worker gets them
/// all.
async fn a_credential_its_project_does_not_name_is_not_handed_to_a_limited_worker(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    two_projects(&app).await;
    let fleet = app.client(agentpool_server::Role::Worker);
    let web_pod = fleet
        .register(&named_for("web-pod", &["web"]))
        .await
        .expect("register");
    let borrowing = || TaskSpec {
        credentials: vec!["api-token".into()],
        ..in_project("web", "make web")
    };
    let first = submitted(&admin, borrowing()).await;
    let got = fleet.claim(&web_pod.id, 1, Duration::ZERO).await.expect("claim");
    assert_eq!(got[0].claimed.task.id, first);
    assert_eq!(got[0].credentials.0.keys().collect::<Vec<_>>(), ["web-token"]);
    let events = admin.events(first, 0, 1000).await.expect("events");
    let said: Vec<String> = events
        .events
        .iter()
        .filter_map(|e| match &e.payload {
            agentpool_core::EventPayload::Log { stream, line } if stream == "agentpool" => Some(line.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        [
            "credentials not handed to worker web-pod (limited to projects): api-token; \
          the task's project does not name them"
        ]
    );
    assert!(!format!("{events:?}").contains("s3cret-value"));

    let anyone = fleet.register(&named("anyone")).await.expect("register");
    let second = submitted(&admin, borrowing()).await;
    let got = fleet.claim(&anyone.id, 1, Duration::ZERO).await.expect("claim");
    assert_eq!(got[0].claimed.task.id, second);
    assert_eq!(
        got[0].credentials.0.keys().collect::<Vec<_>>(),
        ["api-token", "web-token"]
    );
}

/// The lines of the task's log that the server wrote (stream `agentpool`).
async fn said_by_the_server(admin: &agentpool_client::Client, task: agentpool_core::TaskId) -> Vec<String> {
    let events = admin.events(task, 0, 1000).await.expect("events");
    events
        .events
        .iter()
        .filter_map(|e| match &e.payload {
            agentpool_core::EventPayload::Log { stream, line } if stream == "agentpool" => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// A credential stored under another server key (the key was changed) is not handed out, and
/// the task's own log says so, not only the server's: a task that runs without it would
/// otherwise succeed with nothing said.
async fn a_credential_the_server_cannot_read_is_said_in_the_task_s_log(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.admin();
    two_projects(&app).await;
    // What another key wrote: this server's key cannot open it.
    app.store
        .put_credential("api-token", vec![7; 64])
        .await
        .expect("a credential of another key");
    let fleet = app.client(agentpool_server::Role::Worker);
    let w = fleet.register(&named("anyone")).await.expect("register");
    let task = submitted(&admin, in_project("api", "make api")).await;
    let got = fleet.claim(&w.id, 1, Duration::ZERO).await.expect("claim");
    assert_eq!(got[0].claimed.task.id, task);
    assert!(
        got[0].credentials.0.is_empty(),
        "{:?}",
        got[0].credentials.0.keys()
    );
    assert_eq!(
        said_by_the_server(&admin, task).await,
        [
            "credential api-token not handed out: it cannot be decrypted with this server's key \
             (was AGENTPOOL_SERVER_KEY changed?); the task runs without it"
        ]
    );
}
