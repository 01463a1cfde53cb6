//! The task page's attempts: one the worker handed back (it could not start git) reads "given
//! back", not "failed", beside the attempt of the same number that then succeeded (on another
//! worker, which gets a task given back first).

use agentpool_core::{ErrorClass, TaskResult, Worker};
use agentpool_store::Failure;
use agentpool_testkit::db::Backend;

use super::{claim_commands, enqueue_true, get, register, session};
use crate::both_backends;
use crate::support::router_app;

both_backends!(an_attempt_handed_back_reads_given_back);

async fn an_attempt_handed_back_reads_given_back(backend: Backend) {
    let Some(app) = router_app(backend).await else {
        return;
    };
    let id = enqueue_true(app.store.as_ref()).await;
    let w = register(app.store.as_ref(), "w-1").await;
    // The task given back goes to another worker first.
    let w2 = register(app.store.as_ref(), "w-2").await;
    let store = app.store.clone();
    let claim = |w: &Worker| {
        let (worker_id, store) = (w.id.clone(), store.clone());
        async move {
            claim_commands(store.as_ref(), &worker_id, 1)
                .await
                .remove(0)
                .lease
        }
    };
    let failure = Failure {
        class: ErrorClass::WorkerError,
        message: "could not run git".into(),
        retry_after: None,
        result: None,
    };
    app.store
        .fail(&w.id, claim(&w).await, failure)
        .await
        .expect("fail");
    let cookie = session(&app.tokens.admin);
    let page = get(&app, &format!("/tasks/{id}"), Some(&cookie)).await;
    assert!(
        page.text.contains(r#"<td class="oc-given-back">given back</td>"#),
        "queued again, its attempt given back:\n{}",
        page.text
    );
    // What the retry follows, not an error the task came to.
    assert!(
        page.text.contains(
            r#"<p class="retrying">Retrying after <strong>WORKER_ERROR</strong> could not run git</p>"#
        ) && !page.text.contains(r#"role="alert""#),
        "{}",
        page.text
    );
    app.store
        .complete(&w2.id, claim(&w2).await, TaskResult::default())
        .await
        .expect("complete");
    let page = get(&app, &format!("/tasks/{id}"), Some(&cookie)).await;
    let outcomes: Vec<&str> = page
        .text
        .split(r#"<td class="oc-"#)
        .skip(1)
        .filter_map(|s| {
            s.split_once('>')
                .and_then(|(_, rest)| rest.split_once('<'))
                .map(|(o, _)| o)
        })
        .collect();
    assert_eq!(outcomes, ["given back", "succeeded"], "{}", page.text);
}
