//! Cancels from the dashboard: the task page's, and the task list's bulk cancel and retry,
//! each with an optional reason checked as the API checks it, and the notice the list shows
//! after a bulk action.

use agentpool_core::TaskState;
use agentpool_testkit::db::Backend;
use axum::http::StatusCode;

use super::{enc, enqueue_true, get, post, post_expecting, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(a_cancel_from_the_task_page_may_say_why);

/// The task page's cancel, and the task list's bulk cancel, take an optional reason, kept in
/// the task's message; one the API would refuse is refused here too, and changes nothing.
async fn a_cancel_from_the_task_page_may_say_why(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let cookie = session(&app.tokens.admin);
    let id = enqueue_true(app.store.as_ref()).await;
    let page = get(&app, &format!("/tasks/{id}"), Some(&cookie)).await;
    assert!(
        page.text.contains(r#"<input name="reason" maxlength="500""#),
        "{}",
        page.text
    );
    let csrf = page.csrf();
    let cancel = format!("/tasks/{id}/cancel");
    let long = "x".repeat(501);
    let r = post_expecting(
        &app,
        &cancel,
        &cookie,
        &format!("csrf={csrf}&reason={long}"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        r.text.contains("the reason must be 1-500 characters"),
        "{}",
        r.text
    );
    let t = app.store.get_task(id).await.expect("get").expect("task");
    assert_eq!(t.task.state, TaskState::Queued);
    let form = format!("csrf={csrf}&reason={}", enc("wrong repository"));
    post_expecting(&app, &cancel, &cookie, &form, StatusCode::SEE_OTHER).await;
    let t = app.store.get_task(id).await.expect("get").expect("task").task;
    assert_eq!(t.state, TaskState::Canceled);
    let message = t.error_message.unwrap_or_default();
    assert!(
        message.starts_with("canceled by ") && message.ends_with(": wrong repository"),
        "{message}"
    );
    // A blank reason is none.
    let other = enqueue_true(app.store.as_ref()).await;
    post_expecting(
        &app,
        &format!("/tasks/{other}/cancel"),
        &cookie,
        &format!("csrf={csrf}&reason=+"),
        StatusCode::SEE_OTHER,
    )
    .await;
    let t = app.store.get_task(other).await.expect("get").expect("task").task;
    assert!(!t.error_message.unwrap_or_default().contains(':'));

    // The task list's bulk cancel gives its reason to each task it cancels.
    let list = get(&app, "/tasks", Some(&cookie)).await;
    assert!(list.text.contains(r#"<input name="reason""#), "{}", list.text);
    let (a, b) = (
        enqueue_true(app.store.as_ref()).await,
        enqueue_true(app.store.as_ref()).await,
    );
    let form = format!(
        "csrf={}&action=cancel&id={a}&id={b}&reason={}",
        list.csrf(),
        enc("a bad batch")
    );
    let r = post(&app, "/tasks/bulk", &cookie, &form).await;
    assert!(
        r.location().starts_with("/tasks?done=cancel&ok=2&failed=0&"),
        "{}",
        r.location()
    );
    for id in [a, b] {
        let t = app.store.get_task(id).await.expect("get").expect("task").task;
        let message = t.error_message.unwrap_or_default();
        assert!(message.ends_with(": a bad batch"), "{message}");
    }
    // A bulk retry ignores the reason field, whatever it holds.
    let form = format!(
        "csrf={}&action=retry&id={a}&id={b}&reason={}",
        list.csrf(),
        "x".repeat(501)
    );
    let r = post(&app, "/tasks/bulk", &cookie, &form).await;
    assert!(
        r.location().starts_with("/tasks?done=retry&ok=2&failed=0&"),
        "{}",
        r.location()
    );
    // The list it leads back to says what was done.
    let done = get(&app, r.location(), Some(&cookie)).await;
    assert!(done.text.contains(">Retried 2 tasks.</p>"), "{}", done.text);
}
