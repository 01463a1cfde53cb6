//! What pages show and to whom: credential names to admins only, times that say their zone
//! and round to the nearest unit, direction controls made visible, a confirmation before a
//! token is revoked, and a task's state announced as it changes.

use agentpool_core::project::ProjectSpec;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{AgentInfo, Labels, TaskSpec};
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;
use chrono::TimeZone;

use super::{enqueue_true, get, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(
    credential_names_are_shown_to_admins_only,
    times_say_their_zone_and_round_to_the_nearest_unit,
    direction_controls_show_as_what_they_are,
    revoking_a_token_asks_first_and_state_changes_are_announced,
);

async fn credential_names_are_shown_to_admins_only(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    app.store
        .put_project(ProjectSpec {
            name: "web".into(),
            repo: "https://example.com/web.git".into(),
            credentials: vec!["gh-deploy-token".into()],
            ..ProjectSpec::default()
        })
        .await
        .expect("project");
    let admin = get(&app, "/projects", Some(&session(&app.tokens.admin))).await;
    assert_eq!(admin.status, StatusCode::OK);
    assert!(
        admin.text.contains(r#"<th scope="col">credentials</th>"#)
            && admin.text.contains("<td>gh-deploy-token</td>"),
        "{}",
        admin.text
    );
    let sub = get(&app, "/projects", Some(&session(&app.tokens.submitter))).await;
    assert_eq!(sub.status, StatusCode::OK);
    assert!(sub.text.contains(r#"<th scope="row">web</th>"#), "{}", sub.text);
    assert!(!sub.text.contains("gh-deploy-token"), "{}", sub.text);
    assert!(!sub.text.contains(r#"<th scope="col">credentials</th>"#));
    assert!(sub.text.contains("Credential names are shown to admins."));
}

async fn times_say_their_zone_and_round_to_the_nearest_unit(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let store = app.store.as_ref();
    let admin = session(&app.tokens.admin);
    // A schedule read in Europe/Berlin whose next run is 07:00 UTC, 08:00 there.
    let spec = agentpool_core::schedule::ScheduleSpec {
        time_zone: Some("Europe/Berlin".into()),
        ..super::schedules::command_schedule("0 8 * * *")
    };
    let at = chrono::Utc
        .with_ymd_and_hms(2036, 12, 7, 7, 0, 0)
        .single()
        .expect("time");
    store.put_schedule("morning", &spec, Some(at)).await.expect("put");
    let page = get(&app, "/projects", Some(&admin)).await;
    assert!(
        page.text
            .contains(">2036-12-07 07:00:00 UTC</time> = 08:00 Europe/Berlin ("),
        "{}",
        page.text
    );

    // A task that waits a minute short of two hours: "in 2 h", not "in 1 h".
    let mut spec = TaskSpec::command("https://example.com/r.git", "true");
    spec.run_after = Some(store.time() + chrono::Duration::seconds(2 * 3600 - 60));
    let id = store.enqueue(spec).await.expect("enqueue").task.id;
    let page = get(&app, &format!("/tasks/{id}"), Some(&admin)).await;
    assert!(page.text.contains("scheduled: runs in 2 h ("), "{}", page.text);
    let created = page
        .text
        .split(r#"<dt>created</dt><dd>"#)
        .nth(1)
        .and_then(|rest| rest.split("</dd>").next())
        .expect("created");
    assert!(created.ends_with(" UTC</time>"), "{created}");
    // Every time on the task list says its zone too.
    let list = get(&app, "/tasks", Some(&admin)).await;
    let times: Vec<&str> = list.text.split("<time ").skip(1).collect();
    assert!(!times.is_empty());
    for t in times {
        let shown = t.split("</time>").next().unwrap_or("");
        assert!(shown.ends_with(" UTC"), "{shown}");
    }
}

/// Text with each direction control (and a prompt that would show reversed).
const BIDI: &str = "ls \u{202E}gnp.exe\u{202C} \u{2066}a\u{2069} \u{200F}\u{200E}\u{061C}";

fn assert_no_bidi(what: &str, html: &str) {
    for c in [
        '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
        '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    ] {
        assert!(!html.contains(c), "{what} holds U+{:04X}:\n{html}", u32::from(c));
    }
}

async fn direction_controls_show_as_what_they_are(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let store = app.store.as_ref();
    let command = store
        .enqueue(TaskSpec::command("https://example.com/r.git", BIDI))
        .await
        .expect("enqueue")
        .task
        .id;
    let prompt = store
        .enqueue(TaskSpec::agent("https://example.com/r.git", "claude-code", BIDI))
        .await
        .expect("enqueue")
        .task
        .id;
    store
        .register_worker(WorkerRegistration {
            id: Some(agentpool_core::WorkerId::parse("w-b").expect("id")),
            hostname: format!("host{BIDI}"),
            version: "1.0".into(),
            agents: vec![AgentInfo {
                name: "command".into(),
                version: Some(BIDI.into()),
            }],
            labels: Labels::new(),
            slots: 1,
            projects: Vec::new(),
            fresh_start: false,
        })
        .await
        .expect("register");
    let admin = session(&app.tokens.admin);
    for path in [
        format!("/tasks/{command}"),
        format!("/tasks/{prompt}"),
        "/tasks".to_string(),
        "/".to_string(),
        "/workers".to_string(),
    ] {
        let page = get(&app, &path, Some(&admin)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.text);
        assert_no_bidi(&path, &page.text);
        assert!(
            page.text
                .contains("<span class=bidi>&lt;U+202E&gt;</span>gnp.exe"),
            "{path}: {}",
            page.text
        );
    }
    let page = get(&app, &format!("/tasks/{command}"), Some(&admin)).await;
    for code in ["202C", "2066", "2069", "200F", "200E", "061C"] {
        assert!(
            page.text.contains(&format!("&lt;U+{code}&gt;")),
            "U+{code} is not shown"
        );
    }
    // The filter field keeps what was typed (it is sent back as is), and the list says it.
    let q = super::enc("\u{202E}gnp");
    let list = get(&app, &format!("/tasks?q={q}"), Some(&admin)).await;
    assert!(
        list.text.contains("name=\"q\" value=\"\u{202E}gnp\""),
        "{}",
        list.text
    );
}

async fn revoking_a_token_asks_first_and_state_changes_are_announced(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let page = get(&app, "/projects", Some(&session(&app.tokens.admin))).await;
    let revoke = page
        .text
        .split(r#"action="/tokens/"#)
        .nth(1)
        .and_then(|rest| rest.split("</form>").next())
        .expect("a revoke form");
    assert!(revoke.contains(r#"data-confirm="Revoke token "#), "{revoke}");
    let id = enqueue_true(app.store.as_ref()).await;
    let page = get(&app, &format!("/tasks/{id}"), Some(&session(&app.tokens.admin))).await;
    let region = page
        .text
        .split(r#"<div id="task-state""#)
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .expect("the state region");
    assert!(region.contains(r#"aria-live="polite""#), "{region}");
    assert!(
        page.text
            .contains(r#"<span id="task-state-badge" data-state="queued">"#),
        "{}",
        page.text
    );
}
