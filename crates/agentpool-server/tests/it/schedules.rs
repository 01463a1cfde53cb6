//! Schedules over a real socket: set and checked with field paths; when due, the task is
//! submitted once (two replicas racing), carries the run's idempotency key and says which
//! schedule submitted it; a run whose previous task is unfinished is skipped; missed runs are
//! run once; a paused schedule submits nothing until run by hand; a task that can no longer
//! be submitted leaves the reason on the schedule, which can still be paused and resumed.

use std::time::Duration;

use agentpool_client::Error;
use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::TaskListQuery;
use agentpool_core::schedule::{Overlap, Schedule, ScheduleSpec, When, run_key};
use agentpool_core::{EventPayload, TaskId, TaskSpec, TaskState};
use agentpool_server::schedules::run_due;
use agentpool_testkit::db::Backend;

use crate::support::{TestApp, fields, open_store, scrape, spawn_app, test_config};

crate::both_backends!(
    schedules_are_checked_stored_and_deleted,
    a_due_schedule_submits_its_task_once_and_moves_on,
);

fn nightly() -> ScheduleSpec {
    ScheduleSpec {
        cron: "0 3 * * *".into(),
        time_zone: Some("Europe/Berlin".into()),
        task: TaskSpec::command("https://example.com/r.git", "make update-deps"),
        overlap: Overlap::Skip,
        paused: false,
    }
}

/// [`nightly`], its task in `project` (which gives the repository).
fn nightly_in(project: &str) -> ScheduleSpec {
    ScheduleSpec {
        task: TaskSpec {
            project: Some(project.into()),
            repo: None,
            ..nightly().task
        },
        ..nightly()
    }
}

fn ms(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

async fn schedules_are_checked_stored_and_deleted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sub = app.submitter();
    let bad = ScheduleSpec {
        cron: "0 3 * *".into(),
        time_zone: Some("Mars/Olympus".into()),
        task: TaskSpec {
            idempotency_key: Some("k".into()),
            repo: None,
            ..TaskSpec::command("https://example.com/r.git", "make")
        },
        ..nightly()
    };
    assert_eq!(
        fields(sub.put_schedule("Nightly", &bad).await.unwrap_err()),
        ["name", "cron", "time_zone", "task.idempotency_key", "task.repo"]
    );
    let unknown_project = nightly_in("nope");
    assert_eq!(
        fields(sub.put_schedule("nightly", &unknown_project).await.unwrap_err()),
        ["task.project"]
    );
    assert!(
        sub.list_schedules().await.unwrap().is_empty(),
        "nothing stored by a refusal"
    );

    let s = sub.put_schedule("nightly", &nightly()).await.expect("put");
    let when = When::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(ms(s.next_run_at), ms(when.next_after(app.clock.now())));
    assert_eq!((s.spec.clone(), s.last_task), (nightly(), None));
    assert_eq!(sub.get_schedule("nightly").await.expect("get"), s);
    assert_eq!(sub.list_schedules().await.expect("list"), vec![s]);

    sub.delete_schedule("nightly").await.expect("delete");
    for e in [
        sub.get_schedule("nightly").await.unwrap_err(),
        sub.delete_schedule("nightly").await.unwrap_err(),
        sub.run_schedule("nightly").await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    }
}

async fn schedule(app: &TestApp) -> Schedule {
    app.submitter().get_schedule("nightly").await.expect("get")
}

/// Move the clock past the schedule's next run.
async fn pass_next_run(app: &TestApp) {
    let next = schedule(app).await.next_run_at.expect("scheduled");
    let wait = (next - app.clock.now()).to_std().unwrap_or_default();
    app.clock.advance(wait + Duration::from_secs(1));
}

async fn a_due_schedule_submits_its_task_once_and_moves_on(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sub = app.submitter();
    sub.put_project(&ProjectSpec {
        name: "deps".into(),
        repo: "https://example.com/r.git".into(),
        ..ProjectSpec::default()
    })
    .await
    .expect("project");
    let spec = nightly_in("deps");
    sub.put_schedule("nightly", &spec).await.expect("put");
    assert_eq!(run_due(app.state()).await.unwrap(), 0, "not due yet");

    // Due: two replicas run their pass at the same moment, and one task is submitted.
    pass_next_run(&app).await;
    let due = schedule(&app).await.next_run_at.expect("due");
    let replica_store = open_store(&app._db, &app.clock).await;
    let replica = agentpool_server::start_with_store(test_config(), replica_store)
        .await
        .expect("replica");
    let (a, b) = tokio::join!(run_due(app.state()), run_due(&replica.state));
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let s = schedule(&app).await;
    let first = s.last_task.expect("submitted");
    let d = sub.get_task(first).await.expect("task");
    assert_eq!(d.task.state, TaskState::Queued);
    assert_eq!(d.task.spec.idempotency_key, Some(run_key("nightly", due)));
    assert_eq!(
        d.task.spec.repo.as_deref(),
        Some("https://example.com/r.git"),
        "project applied"
    );
    assert_eq!(s.last_message, Some(format!("submitted task {first}")));
    assert_eq!(ms(s.last_run_at), ms(Some(due)));
    let when = When::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(ms(s.next_run_at), ms(when.next_after(app.clock.now())));
    let events = sub.events(first, 0, 100).await.expect("events").events;
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.payload, EventPayload::Log { stream, line }
            if stream == "agentpool" && line == "submitted by schedule nightly")),
        "{events:?}"
    );

    // The next day the first task is still queued: skipped, and the schedule moves on.
    pass_next_run(&app).await;
    assert_eq!(run_due(app.state()).await.unwrap(), 0);
    let s = schedule(&app).await;
    assert_eq!(s.last_task, Some(first));
    assert_eq!(
        s.last_message,
        Some(format!(
            "skipped: task {first} from the run before is still queued"
        ))
    );
    // Skipped after the server was down over a run time: the skip says it was missed too.
    pass_next_run(&app).await;
    app.clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(run_due(app.state()).await.unwrap(), 0);
    assert_eq!(
        schedule(&app).await.last_message,
        Some(format!(
            "skipped: task {first} from the run before is still queued; \
             1 later run time was missed and not run"
        ))
    );

    // It finished (canceled); the server was then down for three run times: one task.
    sub.cancel(first).await.expect("cancel");
    pass_next_run(&app).await;
    app.clock.advance(Duration::from_secs(2 * 24 * 3600));
    assert_eq!(run_due(app.state()).await.unwrap(), 1);
    let s = schedule(&app).await;
    let second = s.last_task.expect("submitted");
    assert_ne!(second, first);
    assert_eq!(
        s.last_message,
        Some(format!(
            "submitted task {second}; 2 later run times were missed and not run"
        ))
    );
    assert!(s.next_run_at.expect("next") > app.clock.now());

    // `allow` submits beside an unfinished task.
    sub.put_schedule(
        "nightly",
        &ScheduleSpec {
            overlap: Overlap::Allow,
            ..spec.clone()
        },
    )
    .await
    .expect("put");
    pass_next_run(&app).await;
    assert_eq!(run_due(app.state()).await.unwrap(), 1);
    let third = schedule(&app).await.last_task.expect("submitted");
    assert_ne!(third, second);

    // Paused: nothing when due; run by hand, it submits now and stays paused.
    let paused = sub
        .put_schedule(
            "nightly",
            &ScheduleSpec {
                paused: true,
                ..spec.clone()
            },
        )
        .await
        .expect("pause");
    assert_eq!(paused.next_run_at, None);
    app.clock.advance(Duration::from_secs(3 * 24 * 3600));
    assert_eq!(run_due(app.state()).await.unwrap(), 0);
    let by_hand = sub.run_schedule("nightly").await.expect("run");
    assert!(by_hand.created);
    let s = schedule(&app).await;
    assert_eq!(s.last_task, Some(by_hand.task.id));
    assert_eq!(s.next_run_at, None);
    assert!(s.last_message.expect("message").ends_with("(run by hand)"));

    // Its project deleted, the run submits nothing and says why; a run by hand is refused.
    sub.cancel(by_hand.task.id).await.expect("cancel");
    sub.put_schedule("nightly", &spec).await.expect("resume");
    sub.delete_project("deps").await.expect("delete project");
    pass_next_run(&app).await;
    let before = sub
        .list_tasks(&Default::default())
        .await
        .expect("list")
        .tasks
        .len();
    assert_eq!(run_due(app.state()).await.unwrap(), 0);
    let s = schedule(&app).await;
    assert_eq!(
        s.last_message.as_deref(),
        Some("could not submit its task: task.project: project deps does not exist")
    );
    assert!(
        s.next_run_at.expect("next") > app.clock.now(),
        "moves on all the same"
    );
    assert_eq!(
        fields(sub.run_schedule("nightly").await.unwrap_err()),
        ["task.project"]
    );
    let after = sub
        .list_tasks(&Default::default())
        .await
        .expect("list")
        .tasks
        .len();
    assert_eq!(before, after);

    // Its tasks are listed by its name: the four it submitted, newest first, none other.
    sub.submit(&TaskSpec::command("https://example.com/r.git", "make"))
        .await
        .expect("another task");
    let of_schedule = sub
        .list_tasks(&TaskListQuery {
            schedule: Some("nightly".into()),
            ..TaskListQuery::default()
        })
        .await
        .expect("list");
    let ids: Vec<TaskId> = of_schedule.tasks.iter().map(|t| t.id).collect();
    assert_eq!(ids, [by_hand.task.id, third, second, first]);
    let e = sub
        .list_tasks(&TaskListQuery {
            schedule: Some("Not a name".into()),
            ..TaskListQuery::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Rejected { status: 400, .. }), "{e:?}");

    // It can still be paused and resumed (the task is not checked again); set anew, it is
    // refused for its task.
    let paused = sub.pause_schedule("nightly").await.expect("pause");
    assert_eq!((paused.next_run_at, paused.spec.paused), (None, true));
    let resumed = sub.resume_schedule("nightly").await.expect("resume");
    assert!(!resumed.spec.paused);
    assert_eq!(ms(resumed.next_run_at), ms(when.next_after(app.clock.now())));
    assert_eq!(
        fields(sub.put_schedule("nightly", &spec).await.unwrap_err()),
        ["task.project"]
    );

    // What this server's runs did, for alerting on a schedule that cannot submit. (The first
    // run may have been the replica's.)
    let metrics = scrape(&app.base).await;
    for line in [
        r#"agentpool_schedule_runs_total{outcome="skipped"} 2"#,
        r#"agentpool_schedule_runs_total{outcome="refused"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in:\n{metrics}");
    }
}
