//! The dashboard in a real browser with very long and hostile values: `tools/browser/layout.mjs`
//! (Playwright driving Debian's chromium) checks that no page is wider than the window, that
//! every control's border stands out (light and dark), that direction controls are shown, that
//! a task's new state lands in a polite live region, that Revoke asks first, and that a link
//! from another site finds the session. Screenshots land in `target/screenshots/layout-*`.

use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{AgentInfo, ErrorClass, Labels, TaskSpec};
use agentpool_store::Failure;
use agentpool_store::schedules::ScheduleRun;
use agentpool_testkit::browser;
use agentpool_testkit::db::Backend;

use super::claim_commands;
use crate::support::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_holds_long_values_and_reads_well() {
    if !browser::ready() {
        return;
    }
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let store = app.store.as_ref();
    let repo = "https://example.com/r.git";
    let long = |n: usize| "x".repeat(n);

    let failed = store
        .enqueue(TaskSpec::command(repo, "make"))
        .await
        .expect("enqueue")
        .task
        .id;
    let worker = store
        .register_worker(WorkerRegistration {
            id: Some(agentpool_core::WorkerId::parse(format!("w-{}", long(120))).expect("id")),
            hostname: long(255),
            version: long(100),
            // Registered before versions were bounded: the page copes with what is stored.
            agents: vec![AgentInfo {
                name: "command".into(),
                version: Some(long(5000)),
            }],
            labels: Labels::new(),
            slots: 3,
            projects: Vec::new(),
            fresh_start: false,
        })
        .await
        .expect("register");
    // The only task so far is claimed and fails with a long message; the others wait.
    let lease = claim_commands(store, &worker.id, 1).await.remove(0).lease;
    let failure = Failure {
        class: ErrorClass::InvalidTask,
        message: format!("the task is wrong: {}", long(2000)),
        retry_after: None,
        result: None,
    };
    store.fail(&worker.id, lease, failure).await.expect("fail");
    store
        .mark_worker_unhealthy(&worker.id, Some(&long(900)))
        .await
        .expect("unhealthy");
    let mut spec = TaskSpec::command(repo, &format!("echo {}", long(3000)));
    spec.labels.insert("team".into(), long(255));
    let command = store.enqueue(spec).await.expect("enqueue").task.id;
    let bidi = store
        .enqueue(TaskSpec::command(
            repo,
            "cat notes\u{202E}txt.sh\u{202C} \u{2066}x\u{2069}",
        ))
        .await
        .expect("enqueue")
        .task
        .id;
    let queued = store
        .enqueue(TaskSpec::command(repo, "true"))
        .await
        .expect("enqueue")
        .task
        .id;
    store
        .put_project(ProjectSpec {
            name: format!("p{}", long(90)),
            repo: format!("https://example.com/{}.git", long(3000)),
            credentials: vec![long(100)],
            ..ProjectSpec::default()
        })
        .await
        .expect("project");
    let schedule = super::schedules::command_schedule("@daily");
    store
        .put_schedule(
            "nightly",
            &schedule,
            Some(store.time() + chrono::Duration::hours(3)),
        )
        .await
        .expect("schedule");
    let run = ScheduleRun {
        at: store.time(),
        task: None,
        message: format!("could not submit its task: {}", long(2000)),
    };
    store
        .record_schedule_run("nightly", &run, None)
        .await
        .expect("record");

    let pages = [
        "/".to_string(),
        "/tasks".to_string(),
        format!("/tasks/{command}"),
        format!("/tasks/{failed}"),
        format!("/tasks/{bidi}"),
        "/workers".to_string(),
        "/projects".to_string(),
        "/tasks/not-a-task".to_string(),
    ];
    browser::run_script(
        "layout.mjs",
        vec![
            ("E2E_URL", app.base.clone().into()),
            ("E2E_ADMIN_TOKEN", app.tokens.admin.clone().into()),
            ("E2E_PAGES", pages.join(",").into()),
            ("E2E_QUEUED_TASK", queued.to_string().into()),
            ("E2E_BIDI_TASK", bidi.to_string().into()),
        ],
        Duration::from_secs(300),
    )
    .await;
}
