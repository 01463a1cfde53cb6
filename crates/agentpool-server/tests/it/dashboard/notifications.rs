//! The projects page's notifications: shown to admins only, with what each is told of and how
//! its recent deliveries went, and never its URL.

use agentpool_core::TaskSpec;
use agentpool_core::notification::{DeliveryState, Format, NotificationSpec};
use agentpool_store::notifications::DeliveryAttempt;
use agentpool_testkit::db::Backend;

use super::{get, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(notifications_are_listed_to_admins_with_their_deliveries_and_without_their_url);

async fn notifications_are_listed_to_admins_with_their_deliveries_and_without_their_url(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let store = app.store.as_ref();
    let spec = NotificationSpec {
        url: "https://hooks.example.com/services/T0KEN-in-the-path".into(),
        on: vec![],
        project: None,
        labels: Default::default(),
        secret_credential: None,
        format: Format::Json,
    };
    store.put_notification("ops", &spec).await.expect("put");
    let admin = session(&app.tokens.admin);
    let page = get(&app, "/projects", Some(&admin)).await;
    assert!(
        page.text
            .contains("<th scope=\"row\">ops</th><td>every task that ends</td><td>none yet</td>"),
        "{}",
        page.text
    );

    // Two ends: one delivered, one failing with a hostile-looking error.
    let ids: Vec<_> = store
        .enqueue_batch(vec![
            TaskSpec::command("https://example.com/r.git", "a"),
            TaskSpec::command("https://example.com/r.git", "b"),
        ])
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.task.id)
        .collect();
    store.cancel_many(&ids, None, None).await.expect("cancel");
    assert_eq!(
        store.find_deliveries("ops", &spec, 30_000).await.expect("find"),
        2
    );
    let taken = store.take_due_deliveries(10, 60_000).await.expect("take");
    let ok = DeliveryAttempt {
        state: DeliveryState::Delivered,
        status: Some(204),
        error: None,
        next_attempt_at: None,
    };
    store.record_delivery(taken[0].id, &ok).await.expect("record");
    let failing = DeliveryAttempt {
        state: DeliveryState::Pending,
        status: Some(502),
        error: Some("HTTP 502 <script>alert(1)</script>".into()),
        next_attempt_at: Some(store.time()),
    };
    store
        .record_delivery(taken[1].id, &failing)
        .await
        .expect("record");

    let page = get(&app, "/projects", Some(&admin)).await;
    assert!(
        page.text.contains("<td>1 pending · 1 delivered</td>"),
        "{}",
        page.text
    );
    assert!(
        page.text
            .contains("HTTP 502 &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.text
    );
    assert!(
        page.text
            .contains(&format!("href=\"/tasks/{}\"", taken[1].task_id))
    );
    assert!(!page.text.contains("<script>alert(1)"));
    assert!(!page.text.contains("T0KEN") && !page.text.contains("hooks.example.com"));

    // A submitter sees no notifications, as the API shows them none.
    let sub = session(&app.tokens.submitter);
    let page = get(&app, "/projects", Some(&sub)).await;
    assert!(!page.text.contains("Notifications"), "{}", page.text);
}
