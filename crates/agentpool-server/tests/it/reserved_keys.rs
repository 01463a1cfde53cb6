//! The idempotency keys agentpool gives the tasks it submits itself (`schedule:NAME:TIME`,
//! `PROJECT/github:…`) are refused when a caller names them — one task, a batch, a project's
//! build, a build with its project — with a 422 on the key's field; so a task submitted ahead
//! of a schedule's run under the run's key cannot take the run over, and the schedule still
//! submits its own task under that key.

use std::time::Duration;

use agentpool_client::{Client, Error};
use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{BuildRequest, CreateAndBuild};
use agentpool_core::schedule::{Overlap, ScheduleSpec, run_key};
use agentpool_core::{TaskSpec, TaskState};
use agentpool_server::schedules::run_due;
use agentpool_testkit::db::Backend;

use crate::support::spawn_app;

crate::both_backends!(
    a_submitted_task_cannot_take_over_a_schedule_run,
    keys_of_agentpools_own_form_are_refused_wherever_a_caller_names_a_key,
);

/// The 422 `e` is, as (field, message) pairs.
fn refused_fields(e: Error) -> Vec<(String, String)> {
    match e {
        Error::Rejected {
            status: 422, fields, ..
        } => fields.into_iter().map(|f| (f.field, f.message)).collect(),
        other => panic!("expected a 422, got {other:?}"),
    }
}

fn project() -> ProjectSpec {
    ProjectSpec {
        name: "web".into(),
        repo: "https://example.com/web.git".into(),
        default_agent: Some("claude-code".into()),
        ..ProjectSpec::default()
    }
}

fn in_project(key: &str) -> TaskSpec {
    TaskSpec {
        project: Some("web".into()),
        repo: None,
        idempotency_key: Some(key.into()),
        ..TaskSpec::command("https://example.com/web.git", "make")
    }
}

async fn a_submitted_task_cannot_take_over_a_schedule_run(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sub = app.submitter();
    sub.put_project(&project()).await.expect("project");
    let schedule = ScheduleSpec {
        cron: "*/5 * * * *".into(),
        time_zone: None,
        task: TaskSpec {
            idempotency_key: None,
            ..in_project("")
        },
        overlap: Overlap::Skip,
        paused: false,
    };
    let s = sub.put_schedule("victim", &schedule).await.expect("schedule");
    let due = s.next_run_at.expect("scheduled");

    // The run's key, delayed to the run's time: refused, nothing queued.
    let mut impostor = in_project(&run_key("victim", due));
    impostor.run_after = Some(due);
    let refused = refused_fields(sub.submit(&impostor).await.unwrap_err());
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "idempotency_key");
    assert!(
        refused[0].1.contains("\"schedule:\" is agentpool's own"),
        "{refused:?}"
    );
    let queued = sub.list_tasks(&Default::default()).await.expect("list").tasks;
    assert!(queued.is_empty(), "{queued:?}");

    // At the run's time the schedule submits its own task under the key.
    let wait = (due - app.clock.now()).to_std().unwrap_or_default();
    app.clock.advance(wait + Duration::from_secs(1));
    assert_eq!(run_due(app.state()).await.expect("run"), 1);
    let s = sub.get_schedule("victim").await.expect("schedule");
    let task = s.last_task.expect("submitted");
    assert_eq!(s.last_message, Some(format!("submitted task {task}")));
    let t = sub.get_task(task).await.expect("task").task;
    assert_eq!(t.spec.idempotency_key, Some(run_key("victim", due)));
    assert_eq!(t.spec.command.as_deref(), Some("make"));
    assert_eq!(t.state, TaskState::Queued);
}

async fn keys_of_agentpools_own_form_are_refused_wherever_a_caller_names_a_key(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sub = app.submitter();
    sub.put_project(&project()).await.expect("project");
    let github = "web/github:acme/web:comment:42";

    for key in ["schedule:nightly:2026-12-07T10:36Z", "schedule:", github] {
        let refused = refused_fields(sub.submit(&in_project(key)).await.unwrap_err());
        assert_eq!(
            refused.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
            ["idempotency_key"],
            "{key}"
        );
    }
    let refused = refused_fields(sub.submit(&in_project(github)).await.unwrap_err());
    assert!(
        refused[0].1.contains("\"web/github:\" is agentpool's own"),
        "{refused:?}"
    );

    // A batch: every such key named, and nothing of the batch queued.
    let batch = vec![
        in_project("mine-1"),
        in_project(github),
        in_project("schedule:x:y"),
    ];
    let refused = refused_fields(sub.submit_batch(batch).await.unwrap_err());
    assert_eq!(
        refused.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["tasks[1].idempotency_key", "tasks[2].idempotency_key"]
    );

    // A project's build, and a build with its project.
    let build = BuildRequest {
        prompt: "fix it".into(),
        idempotency_key: Some(github.into()),
        ..BuildRequest::default()
    };
    let refused = refused_fields(sub.submit_build("web", &build).await.unwrap_err());
    assert_eq!(refused[0].0, "idempotency_key");
    let both = CreateAndBuild {
        project: ProjectSpec {
            name: "docs".into(),
            ..project()
        },
        build: BuildRequest {
            idempotency_key: Some("docs/github:acme/docs:issue:7:label:go:1".into()),
            ..build.clone()
        },
    };
    let refused = refused_fields(sub.create_and_build(&both).await.unwrap_err());
    assert_eq!(refused[0].0, "build.idempotency_key");
    assert!(
        matches!(sub.get_project("docs").await, Err(Error::NotFound(_))),
        "a refused build leaves no project"
    );
    assert!(
        sub.list_tasks(&Default::default())
            .await
            .expect("list")
            .tasks
            .is_empty()
    );

    // Keys that merely look alike are the caller's to use.
    for key in [
        "mine-1",
        "github:acme/web:comment:42",
        "my schedule:nightly",
        "web/github",
        "not a project/github:x",
    ] {
        assert!(sub.submit(&in_project(key)).await.expect(key).created, "{key}");
    }
    let built = sub
        .submit_build(
            "web",
            &BuildRequest {
                idempotency_key: Some("release-1".into()),
                ..build
            },
        )
        .await
        .expect("build");
    assert!(built.created);
    assert_submitted(&sub, 6).await;
}

async fn assert_submitted(sub: &Client, n: usize) {
    let tasks = sub.list_tasks(&Default::default()).await.expect("list").tasks;
    assert_eq!(tasks.len(), n, "{tasks:?}");
}
