//! The task list's filters (in the store, and the text scanned) and cursor paging, what the
//! overview says about the queue, and the task page's follow-up and retry.

use agentpool_core::TaskSpec;
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;

use super::{enqueue_true, get, post_expecting, session};
use crate::both_backends;
use crate::support::{router_app, stored_task};

both_backends!(
    task_list_filters_and_pages_with_a_cursor,
    a_list_of_exactly_full_pages_offers_no_empty_one,
    overview_counts_the_queue_and_says_why_the_oldest_waits,
    follow_up_and_retry_from_the_task_page,
);

fn rows(html: &str) -> usize {
    html.matches(r#"<tr id="task-"#).count()
}

/// The `href` of the "older" link, unescaped.
fn older(html: &str) -> Option<String> {
    let end = html.find(r#"" rel="next""#)?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(html[start..end].replace("&amp;", "&"))
}

async fn task_list_filters_and_pages_with_a_cursor(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    for i in 0..60 {
        app.store
            .enqueue(TaskSpec::command(
                "https://example.com/r.git",
                &format!("echo {i}"),
            ))
            .await
            .expect("enqueue");
    }
    for i in 0..3 {
        let mut s = TaskSpec::agent(
            "https://example.com/r.git",
            "codex",
            &format!("find the Needle {i}"),
        );
        s.labels.insert("team".into(), "x".into());
        app.store.enqueue(s).await.expect("enqueue");
    }
    let cookie = session(&app.tokens.submitter);
    let page = |uri: String| ok_page(&app, &cookie, uri);
    let first = page("/tasks".into()).await;
    assert_eq!(rows(&first), 50);
    let next = older(&first).expect("a next page");
    let second = page(next).await;
    assert_eq!(rows(&second), 13);
    assert!(older(&second).is_none());

    let needle = page("/tasks?q=needle".into()).await;
    assert_eq!(rows(&needle), 3, "text search is case-insensitive");
    assert_eq!(rows(&page("/tasks?agent=codex&label=team%3Dx".into()).await), 3);
    assert_eq!(rows(&page("/tasks?agent=claude-code".into()).await), 0);
    let commands = page("/tasks?agent=command".into()).await;
    assert_eq!(rows(&commands), 50);
    let rest = page(older(&commands).expect("more commands")).await;
    assert_eq!(rows(&rest), 10);
    assert_eq!(rows(&page("/tasks?state=queued&q=echo+42".into()).await), 1);
    // By the class of the last error: one task canceled, the rest never ran.
    let canceled = app
        .store
        .list_tasks(&agentpool_store::TaskFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("list")[0]
        .id;
    app.store.cancel(canceled).await.expect("cancel");
    let by_class = page("/tasks?class=CANCELED".into()).await;
    assert_eq!(rows(&by_class), 1);
    assert!(by_class.contains(&canceled.to_string()), "{by_class}");
    assert!(
        by_class.contains("<option selected>CANCELED</option>"),
        "the filter shows its value"
    );
    // A bad filter is a clear 400, not a 500.
    let bad = get(&app, "/tasks?state=sleeping", Some(&cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("state"), "{}", bad.text);
    let bad = get(&app, "/tasks?class=OOPS", Some(&cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("class"), "{}", bad.text);
}

/// Two full pages, and not a task more: the second offers no "older" (which would be empty),
/// on the dashboard (with and without a text filter) and in the API's `next_cursor`.
async fn a_list_of_exactly_full_pages_offers_no_empty_one(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    for i in 0..100 {
        let command = if i % 2 == 0 { "echo even" } else { "echo odd" };
        app.store
            .enqueue(TaskSpec::command("https://example.com/r.git", command))
            .await
            .expect("enqueue");
    }
    let cookie = session(&app.tokens.submitter);
    let page = |uri: String| ok_page(&app, &cookie, uri);
    let first = page("/tasks".into()).await;
    assert_eq!(rows(&first), 50);
    let second = page(older(&first).expect("a second page")).await;
    assert_eq!(rows(&second), 50);
    assert_eq!(older(&second), None, "no third, empty page");
    // Exactly one page of matches among more tasks.
    let even = page("/tasks?q=even".into()).await;
    assert_eq!(rows(&even), 50);
    assert_eq!(older(&even), None, "no second, empty page of matches");
    let odd = page("/tasks?q=odd&agent=command".into()).await;
    assert_eq!((rows(&odd), older(&odd)), (50, None));

    // The API: pages of 25 over 100 tasks end on the fourth.
    let token = Some(app.tokens.submitter.as_str());
    let (mut cursor, mut pages) = (None::<String>, 0);
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/tasks?limit=25&cursor={c}"),
            None => "/v1/tasks?limit=25".to_string(),
        };
        let r = app.call("GET", &uri, token, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["tasks"].as_array().map(Vec::len), Some(25), "{}", r.text);
        pages += 1;
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 4, "a page after the last: {}", r.text);
    }
    assert_eq!(pages, 4);
}

async fn overview_counts_the_queue_and_says_why_the_oldest_waits(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let first = enqueue_true(app.store.as_ref()).await;
    let mut later = TaskSpec::command("https://example.com/r.git", "true");
    later.depends_on = vec![first];
    later.labels.insert("gpu".into(), "yes".into());
    app.store.enqueue(later).await.expect("enqueue");
    let r = get(&app, "/", Some(&session(&app.tokens.admin))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains(r#"id="count-queued"><span class="n">2</span>"#),
        "{}",
        r.text
    );
    assert!(r.text.contains("gpu=yes"), "queue depth by label");
    assert!(r.text.contains("(no project)"), "queue depth by project");
    assert!(r.text.contains(r#"<p id="oldest">"#) && r.text.contains(&first.to_string()));
    assert!(
        r.text.contains("no worker online offers agent command"),
        "why the oldest waits (no worker is registered): {}",
        r.text
    );
    assert!(r.text.contains(r#"<svg class="chart""#));
}

async fn follow_up_and_retry_from_the_task_page(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let mut spec = TaskSpec::agent("https://example.com/r.git", "claude-code", "first");
    spec.model = Some("m1".into());
    let id = app.store.enqueue(spec).await.expect("enqueue").task.id;
    app.store.cancel(id).await.expect("cancel");
    let cookie = session(&app.tokens.submitter);
    let page = get(&app, &format!("/tasks/{id}"), Some(&cookie)).await;
    assert!(page.text.contains("Retry task") && page.text.contains("Follow up"));
    let csrf = page.csrf();
    let follow_up = async |id, prompt: &str| -> agentpool_core::TaskId {
        let form = format!("csrf={csrf}&prompt={prompt}");
        let r = post_expecting(
            &app,
            &format!("/tasks/{id}/follow-up"),
            &cookie,
            &form,
            StatusCode::SEE_OTHER,
        )
        .await;
        r.location()
            .trim_start_matches("/tasks/")
            .parse()
            .expect("task id")
    };
    let new_id = follow_up(id, "and+now+the+docs").await;
    let t = stored_task(&app.store, new_id).await;
    assert_eq!(t.spec.follow_up_of, Some(id));
    assert_eq!(
        t.spec.branch,
        Some(format!("agentpool/{id}")),
        "it goes on on the first task's work branch"
    );
    assert_eq!(t.spec.prompt.as_deref(), Some("and now the docs"));
    assert_eq!(
        (t.spec.agent.as_deref(), t.spec.model.as_deref()),
        (Some("claude-code"), Some("m1"))
    );
    post_expecting(
        &app,
        &format!("/tasks/{id}/follow-up"),
        &cookie,
        &format!("csrf={csrf}&prompt="),
        StatusCode::BAD_REQUEST,
    )
    .await;
    post_expecting(
        &app,
        &format!("/tasks/{id}/retry"),
        &cookie,
        &format!("csrf={csrf}"),
        StatusCode::SEE_OTHER,
    )
    .await;
    let t = stored_task(&app.store, id).await;
    assert_eq!(t.state, agentpool_core::TaskState::Queued);

    // A task that named no agent was run by a worker's default: its follow-up asks for that
    // agent, whose session it resumes, whichever worker claims it.
    let spec = TaskSpec {
        agent: None,
        ..TaskSpec::agent("https://example.com/r.git", "x", "first")
    };
    let id = app.store.enqueue(spec).await.expect("enqueue").task.id;
    let w = app
        .store
        .register_worker(agentpool_testkit::worker::registration(None, &["codex"], 1))
        .await
        .expect("register");
    let claimed = app
        .store
        .claim(&agentpool_store::ClaimFilter {
            worker_id: w.id.clone(),
            agents: vec!["codex".into()],
            labels: Default::default(),
            projects: Vec::new(),
            max: 1,
            lease_ttl: std::time::Duration::from_secs(60),
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "the task of no agent goes to the codex worker");
    let result = agentpool_core::TaskResult {
        agent: Some("codex".into()),
        session_id: Some("s-1".into()),
        ..Default::default()
    };
    app.store
        .complete(&w.id, claimed[0].lease, result)
        .await
        .expect("complete");
    let next = follow_up(id, "more").await;
    assert_eq!(
        stored_task(&app.store, next).await.spec.agent.as_deref(),
        Some("codex")
    );
}

/// The text of page `uri` in the session `cookie`, which must answer 200.
async fn ok_page(app: &crate::support::RouterApp, cookie: &str, uri: String) -> String {
    let r = get(app, &uri, Some(cookie)).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
    r.text
}
