//! Escaping: a task whose prompt, branch and model are hostile, run by a "worker" whose agent
//! output, result files and PR link are hostile too (and another whose reason for being
//! unhealthy is), renders inert on every page and in the live stream.

use std::time::Duration;

use agentpool_core::{EventKind, EventPayload, FileChange, NewEvent, TaskId, TaskResult, TaskSpec};
use agentpool_store::{ClaimFilter, Store};
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;
use serde_json::json;

use super::{enc, get, register, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(
    hostile_prompt_branch_and_agent_output_are_escaped_everywhere,
    a_schedule_is_listed_with_when_it_runs_and_its_last_run_escaped,
);

const XSS: &str = "<script>alert(1)</script>";

/// A task with a hostile prompt and branch, run by a "worker" whose agent output is hostile too.
async fn hostile_task(store: &dyn Store) -> TaskId {
    let w = register(store, "w-x").await;
    let mut spec = TaskSpec::agent(
        "https://example.com/r.git",
        "claude-code",
        &format!("fix {XSS} \"quoted\" 'single'"),
    );
    spec.branch = Some("evil<script>alert(1)</script>".into());
    spec.labels.insert("team".into(), "a".into());
    spec.model = Some("m<b>x</b>".into());
    let id = store.enqueue(spec).await.expect("enqueue").task.id;
    let claimed = store
        .claim(&ClaimFilter {
            worker_id: w.id.clone(),
            agents: vec!["claude-code".into()],
            labels: [("team".to_string(), "a".to_string())].into_iter().collect(),
            projects: Vec::new(),
            max: 1,
            lease_ttl: Duration::from_secs(60),
        })
        .await
        .expect("claim");
    let lease = claimed.first().expect("claimed").lease;
    let events = vec![
        NewEvent::new(EventPayload::from_parts(
            EventKind::AssistantMessage,
            json!({ "text": format!("I will {XSS}") }),
        )),
        NewEvent::new(EventPayload::from_parts(
            EventKind::ToolCall,
            json!({ "id": "t1", "name": "Bash<img src=x onerror=alert(2)>", "input": { "command": "<img src=x onerror=alert(3)>" } }),
        )),
        NewEvent::new(EventPayload::from_parts(
            EventKind::ToolResult,
            json!({ "id": "t1", "ok": false, "output": format!("</pre>{XSS}") }),
        )),
        NewEvent::new(EventPayload::from_parts(
            EventKind::Raw,
            json!({ "line": format!("{{\"x\":\"{XSS}\"}}") }),
        )),
        NewEvent::new(EventPayload::from_parts(
            EventKind::Result,
            json!({ "text": format!("done {XSS}"), "is_error": false }),
        )),
    ];
    store
        .append_events(id, Some(lease), events)
        .await
        .expect("events");
    let result = TaskResult {
        commit_sha: Some("abc<script>".into()),
        branch: Some("evil<script>alert(1)</script>".into()),
        files: vec![FileChange {
            path: format!("src/{XSS}.rs"),
            added: Some(3),
            removed: Some(1),
            // A worker reports it: a hostile one can say anything.
            status: Some(agentpool_core::FileStatus::Modified),
            mode_change: Some(XSS.to_string()),
        }],
        pr_url: Some("javascript:alert(4)".into()),
        final_text: Some(format!("summary {XSS}")),
        ..TaskResult::default()
    };
    store.complete(&w.id, lease, result).await.expect("complete");
    let sick = register(store, "w-sick").await;
    store
        .mark_worker_unhealthy(&sick.id, Some(&format!("the last: {XSS}")))
        .await
        .expect("unhealthy");
    id
}

fn assert_inert(what: &str, html: &str) {
    for bad in [
        "<script>alert",
        "<img src=x",
        "href=\"javascript:",
        "<b>x</b>",
        "host<i>",
    ] {
        assert!(!html.contains(bad), "{what} contains {bad:?}:\n{html}");
    }
}

async fn hostile_prompt_branch_and_agent_output_are_escaped_everywhere(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let id = hostile_task(app.store.as_ref()).await;
    let cookie = session(&app.tokens.admin);
    let page = get(&app, &format!("/tasks/{id}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_inert("task page", &page.text);
    for shown in [
        "fix &lt;script&gt;alert(1)&lt;/script&gt; &quot;quoted&quot; &#39;single&#39;",
        "evil&lt;script&gt;alert(1)&lt;/script&gt;",
        "I will &lt;script&gt;",
        "&lt;img src=x onerror=alert(3)&gt;",
        "javascript:alert(4)",
        "src/&lt;script&gt;alert(1)&lt;/script&gt;.rs",
        "summary &lt;script&gt;",
    ] {
        assert!(page.text.contains(shown), "task page lacks {shown:?}");
    }
    for path in [
        "/".to_string(),
        "/tasks".to_string(),
        format!("/tasks?q={}", enc(XSS)),
        format!("/tasks?agent={}&label={}", enc(XSS), enc("a=<b>")),
        "/workers".to_string(),
    ] {
        let r = get(&app, &path, Some(&cookie)).await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
            "{path}: {}",
            r.status
        );
        assert_inert(&path, &r.text);
    }
    let workers = get(&app, "/workers", Some(&cookie)).await;
    assert!(
        workers
            .text
            .contains("the last: &lt;script&gt;alert(1)&lt;/script&gt;"),
        "the workers page says why a worker is unhealthy:\n{}",
        workers.text
    );
    // The live stream of the (finished) task sends the same events, escaped, then ends.
    let live = get(&app, &format!("/live/tasks/{id}?after=0"), Some(&cookie)).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(
        live.text.contains("event: append") && live.text.contains("event: end"),
        "{}",
        live.text
    );
    assert!(live.text.contains("I will &lt;script&gt;"), "{}", live.text);
    assert_inert("live stream", &live.text);
}

/// The projects page lists schedules: when each runs (in its zone), when next, and its last
/// run, whose message (here hostile: it can quote a refused task's fields) renders inert.
async fn a_schedule_is_listed_with_when_it_runs_and_its_last_run_escaped(backend: Backend) {
    use agentpool_core::schedule::ScheduleSpec;
    use agentpool_store::schedules::ScheduleRun;
    let Some(app) = router_app(backend).await else {
        return;
    };
    let cookie = session(&app.tokens.admin);
    let empty = get(&app, "/projects", Some(&cookie)).await;
    assert!(empty.text.contains("No schedules"), "{}", empty.text);

    let store = app.store.as_ref();
    let spec = ScheduleSpec {
        time_zone: Some("Europe/Berlin".into()),
        ..super::schedules::command_schedule("0 6 * * 1-5")
    };
    let next = store.time() + chrono::Duration::hours(3);
    store
        .put_schedule("weekdays", &spec, Some(next))
        .await
        .expect("put");
    let task = store
        .enqueue(TaskSpec {
            idempotency_key: Some(agentpool_core::schedule::run_key("weekdays", store.time())),
            ..TaskSpec::command("https://example.com/r.git", "make")
        })
        .await
        .expect("enqueue")
        .task
        .id;
    let other = store
        .enqueue(TaskSpec::command("https://example.com/r.git", "make"))
        .await
        .expect("enqueue")
        .task
        .id;
    let run = ScheduleRun {
        at: store.time(),
        task: Some(task),
        message: format!("could not submit its task: task.branch: {XSS}"),
    };
    store
        .record_schedule_run("weekdays", &run, None)
        .await
        .expect("record");

    let page = get(&app, "/projects", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_inert("projects page", &page.text);
    for shown in [
        r#"<th scope="row">weekdays</th><td><code>0 6 * * 1-5</code> Europe/Berlin</td>"#,
        "(in 3 h)",
        "could not submit its task: task.branch: &lt;script&gt;alert(1)&lt;/script&gt;",
        &format!(r#"<a href="/tasks/{task}""#),
        r#"<a href="/tasks?schedule=weekdays">tasks</a>"#,
    ] {
        assert!(
            page.text.contains(shown),
            "projects page lacks {shown:?}: {}",
            page.text
        );
    }
    // Its link lists the tasks it submitted, not the others.
    let listed = get(&app, "/tasks?schedule=weekdays", Some(&cookie)).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(listed.text.contains(&format!("/tasks/{task}")), "{}", listed.text);
    assert!(
        !listed.text.contains(&format!("/tasks/{other}")),
        "{}",
        listed.text
    );
    assert!(listed.text.contains(r#"name="schedule" value="weekdays""#));
}
