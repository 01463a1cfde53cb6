//! The dashboard in a real browser with very long and hostile values: `tools/browser/layout.mjs`
//! (Playwright driving Debian's chromium) checks that no page is wider than the window, that
//! every control's border stands out (light and dark), that direction controls are shown, that
//! a task's new state lands in a polite live region, that Revoke asks first, and that a link
//! from another site finds the session. Screenshots land in `target/screenshots/layout-*`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{AgentInfo, ErrorClass, Labels, TaskSpec};
use agentpool_store::Failure;
use agentpool_store::schedules::ScheduleRun;
use agentpool_testkit::db::Backend;

use super::claim_commands;
use crate::support::spawn_app;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> PathBuf {
    std::env::var_os("AGENTPOOL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `what` is missing: fail when the services are required (scripts/test, CI), else skip.
fn missing(what: &str) -> bool {
    assert!(
        !agentpool_testkit::services_required(),
        "{what} is missing; run scripts/test (it installs chromium, node and tools/browser)"
    );
    eprintln!("skipping the browser test: {what} is missing");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_holds_long_values_and_reads_well() {
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if (!node_ok && missing("node"))
        || (!chromium().exists() && missing("chromium"))
        || (!root().join("tools/browser/node_modules/playwright-core").exists()
            && missing("tools/browser/node_modules (npm install --prefix tools/browser)"))
    {
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
    let out = {
        let mut cmd = Command::new("node");
        cmd.arg(root().join("tools/browser/layout.mjs"))
            .current_dir(root().join("tools/browser"))
            .env("E2E_URL", &app.base)
            .env("E2E_ADMIN_TOKEN", &app.tokens.admin)
            .env("E2E_PAGES", pages.join(","))
            .env("E2E_QUEUED_TASK", queued.to_string())
            .env("E2E_BIDI_TASK", bidi.to_string())
            .env("E2E_SCREENSHOTS", root().join("target/screenshots"))
            .env("E2E_CHROMIUM", chromium());
        let run = tokio::task::spawn_blocking(move || cmd.output());
        tokio::time::timeout(Duration::from_secs(300), run)
            .await
            .expect("the browser test finishes in time")
            .expect("join")
            .expect("run node")
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}
