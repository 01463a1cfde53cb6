//! Events that stop work: an issue closed or its label removed, a pull request agentpool
//! opened closed, and `/agentpool cancel` cancel the tasks still queued or running for it.

use agentpool_core::{TaskId, TaskState};
use agentpool_testkit::db::Backend;
use serde_json::{Value, json};

use super::{SECRET, deliver, deliver_task, example, gh_app};
use crate::support::{TestApp, claim_one, register, stored_task};

async fn app(backend: Backend) -> TestApp {
    gh_app(backend, None, "https://example.com/hello.git")
        .await
        .expect("database (set AGENTPOOL_TEST_PG_URL or run scripts/services.sh)")
}

/// GitHub's example of `event`/`action` as a delivery that must cancel `ids` (in order).
async fn stops(app: &TestApp, event: &str, delivery: &str, payload: &Value, ids: &[TaskId]) {
    let (status, body) = deliver(app, event, delivery, payload, SECRET).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("canceled")),
        "{body}"
    );
    let canceled: Vec<String> = ids.iter().map(TaskId::to_string).collect();
    assert_eq!(body["canceled"], json!(canceled));
}

/// A labeled-issue task whose event GitHub sent at `updated_at` (a new label event each time).
async fn labeled(app: &TestApp, delivery: &str, updated_at: &str) -> TaskId {
    let mut payload = example("issues", Some("labeled"));
    payload["issue"]["updated_at"] = json!(updated_at);
    deliver_task(app, "issues", delivery, &payload).await
}

async fn closing_an_issue_or_removing_its_label_cancels_its_unfinished_tasks(backend: Backend) {
    let app = app(backend).await;
    // Removing the label (GitHub's own example) cancels the queued task it started.
    let queued = labeled(&app, "d-1", "2026-11-01T00:00:00Z").await;
    let unlabeled = example("issues", Some("unlabeled"));
    stops(&app, "issues", "d-2", &unlabeled, &[queued]).await;
    let t = stored_task(&app.store, queued).await;
    assert_eq!(t.state, TaskState::Canceled);
    // The task says which issue stopped it, why, and who (the event's sender).
    assert_eq!(
        t.error_message.as_deref(),
        Some("canceled by GitHub Codertocat/Hello-World#1: the label was removed by @Codertocat")
    );

    // Closing the issue cancels a running one through its worker. GitHub's examples have no
    // `closed` issue event; it is the `reopened` one with the other action and state.
    let running = labeled(&app, "d-3", "2026-11-02T00:00:00Z").await;
    let wrk = app.worker();
    let w = register(&wrk).await;
    assert_eq!(claim_one(&wrk, &w.id).await.task.id, running);
    let mut closed = example("issues", Some("reopened"));
    closed["action"] = json!("closed");
    closed["issue"]["state"] = json!("closed");
    stops(&app, "issues", "d-4", &closed, &[running]).await;
    let t = stored_task(&app.store, running).await;
    assert!(t.state == TaskState::Running && t.cancel_requested, "{t:?}");

    // Nothing left to stop: acknowledged, nothing changes; a redelivery is a duplicate.
    let (status, body) = deliver(&app, "issues", "d-5", &closed, SECRET).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (200, Some("no unfinished task to stop"))
    );
    let (status, body) = deliver(&app, "issues", "d-4", &closed, SECRET).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
}

async fn a_cancel_command_or_closing_the_pull_request_cancels_its_follow_ups(backend: Backend) {
    let app = app(backend).await;
    // The issue's task opened pull request #2 (as the notifier records it) and finished.
    let first = labeled(&app, "d-1", "2026-11-01T00:00:00Z").await;
    let mut link = app.store.github_link(first).await.expect("link").expect("linked");
    link.pr_number = Some(2);
    link.branch = Some("agentpool/first".into());
    app.store.github_update_link(&link).await.expect("update link");
    app.submitter().cancel(first).await.expect("cancel");

    // Comments on the pull request (GitHub's example comment, moved onto pull request #2).
    let comment = |id: u64, body: &str, association: &str| {
        let mut c = example("issue_comment", Some("created"));
        c["issue"]["number"] = json!(2);
        c["issue"]["pull_request"] =
            json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2"});
        c["comment"]["id"] = json!(id);
        c["comment"]["body"] = json!(body);
        c["comment"]["author_association"] = json!(association);
        c
    };
    let fix = comment(1, "/agentpool fix the test", "OWNER");
    let follow_up = deliver_task(&app, "issue_comment", "d-2", &fix).await;
    assert_eq!(
        stored_task(&app.store, follow_up).await.spec.branch.as_deref(),
        Some("agentpool/first")
    );
    // Only an allowed author may cancel.
    let stranger = comment(2, "/agentpool cancel", "NONE");
    let (status, body) = deliver(&app, "issue_comment", "d-3", &stranger, SECRET).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ignored")),
        "{body}"
    );
    assert_eq!(stored_task(&app.store, follow_up).await.state, TaskState::Queued);
    let mut member = comment(3, "/agentpool cancel", "MEMBER");
    member["sender"]["login"] = json!("a-member");
    stops(&app, "issue_comment", "d-4", &member, &[follow_up]).await;
    assert_eq!(
        stored_task(&app.store, follow_up).await.error_message.as_deref(),
        Some("canceled by GitHub Codertocat/Hello-World#2: a cancel command by @a-member")
    );

    // Closing the pull request (GitHub's example: #2 of the same repository) cancels the next.
    let again = comment(4, "/agentpool try again", "OWNER");
    let next = deliver_task(&app, "issue_comment", "d-5", &again).await;
    let closed = example("pull_request", Some("closed"));
    stops(&app, "pull_request", "d-6", &closed, &[next]).await;
    assert_eq!(stored_task(&app.store, next).await.state, TaskState::Canceled);
    // A pull request agentpool did not open: not its business.
    let mut other = example("pull_request", Some("closed"));
    other["pull_request"]["number"] = json!(3);
    other["number"] = json!(3);
    let (status, body) = deliver(&app, "pull_request", "d-7", &other, SECRET).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (200, Some("not a pull request agentpool opened"))
    );
}

crate::both_backends!(
    closing_an_issue_or_removing_its_label_cancels_its_unfinished_tasks,
    a_cancel_command_or_closing_the_pull_request_cancels_its_follow_ups,
);
