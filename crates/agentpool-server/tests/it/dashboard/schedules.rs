//! The projects page's schedule actions: run now (then the new task's page), pause and resume,
//! each a CSRF-guarded form.

use agentpool_core::TaskSpec;
use agentpool_core::schedule::{Overlap, ScheduleSpec};
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;

use super::{get, post, post_expecting, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(a_schedule_is_run_paused_and_resumed_from_the_projects_page);

/// A schedule of `make` on a sample repository at `cron`, in UTC.
pub(super) fn command_schedule(cron: &str) -> ScheduleSpec {
    ScheduleSpec {
        cron: cron.into(),
        time_zone: None,
        task: TaskSpec::command("https://example.com/r.git", "make"),
        overlap: Overlap::Skip,
        paused: false,
    }
}

async fn a_schedule_is_run_paused_and_resumed_from_the_projects_page(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let store = app.store.as_ref();
    let spec = command_schedule("@daily");
    let next = store.time() + chrono::Duration::hours(5);
    store
        .put_schedule("nightly", &spec, Some(next))
        .await
        .expect("put");

    let sub = session(&app.tokens.submitter);
    let page = get(&app, "/projects", Some(&sub)).await;
    assert!(
        page.text.contains(r#"action="/schedules/nightly/run""#),
        "{}",
        page.text
    );
    assert!(page.text.contains(r#"action="/schedules/nightly/pause""#));
    let csrf = page.csrf();

    // Run now: the task is submitted and its page shown; the schedule's next run stays.
    let r = post_expecting(
        &app,
        "/schedules/nightly/run",
        &sub,
        &format!("csrf={csrf}"),
        StatusCode::SEE_OTHER,
    )
    .await;
    let s = store.get_schedule("nightly").await.expect("get").expect("stored");
    let task = s.last_task.expect("submitted");
    assert_eq!(r.location(), format!("/tasks/{task}"));
    assert_eq!(
        s.next_run_at.map(|t| t.timestamp_millis()),
        Some(next.timestamp_millis())
    );
    let t = store.find_task(task).await.expect("find").expect("task");
    assert!(
        t.spec
            .idempotency_key
            .expect("key")
            .starts_with("schedule:nightly:manual:")
    );

    // Pause: no next run, and the page offers Resume; resume: a next run again.
    let r = post(&app, "/schedules/nightly/pause", &sub, &format!("csrf={csrf}")).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/projects#sched-h")
    );
    let s = store.get_schedule("nightly").await.expect("get").expect("stored");
    assert_eq!((s.spec.paused, s.next_run_at), (true, None));
    let page = get(&app, "/projects", Some(&sub)).await;
    assert!(page.text.contains(r#"action="/schedules/nightly/resume""#) && page.text.contains("paused"));
    post_expecting(
        &app,
        "/schedules/nightly/resume",
        &sub,
        &format!("csrf={csrf}"),
        StatusCode::SEE_OTHER,
    )
    .await;
    let s = store.get_schedule("nightly").await.expect("get").expect("stored");
    assert!(!s.spec.paused && s.next_run_at.is_some());

    // Without the CSRF token, or for an unknown schedule, nothing is done.
    post_expecting(
        &app,
        "/schedules/nightly/pause",
        &sub,
        "csrf=wrong",
        StatusCode::FORBIDDEN,
    )
    .await;
    post_expecting(
        &app,
        "/schedules/nope/run",
        &sub,
        &format!("csrf={csrf}"),
        StatusCode::NOT_FOUND,
    )
    .await;
}
