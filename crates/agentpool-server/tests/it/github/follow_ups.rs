//! The pull request a task opened, through what goes wrong around it: GitHub refusing the
//! status comment does not cost the pull request, a closed pull request takes no follow-ups
//! (and none opens a second one), and follow-up prompts hold no unfilled placeholder.

use agentpool_core::TaskId;
use agentpool_testkit::db::Backend;
use serde_json::{Value, json};

use super::{Github, SECRET, deliver, deliver_task, example, finish, gh_app, github, pass};
use crate::support::{TestApp, stored_task};

const FIRST_PR: u64 = 2; // the number GitHub's review and check run examples use

/// A delivery that must be acknowledged without a task, for `reason`.
async fn ignored(app: &TestApp, event: &str, delivery: &str, payload: &Value, reason: &str) {
    let (status, body) = deliver(app, event, delivery, payload, SECRET).await;
    assert_eq!(
        (status, body["status"].as_str(), body["reason"].as_str()),
        (200, Some("ignored"), Some(reason)),
        "{event}: {body}"
    );
}

async fn prompt_of(app: &TestApp, id: TaskId) -> String {
    stored_task(&app.store, id).await.spec.prompt.expect("prompt")
}

async fn a_refused_status_comment_does_not_cost_the_pull_request(backend: Backend) {
    let Github { gh, prism, _dir } = github(FIRST_PR).await;
    let app = gh_app(backend, Some(prism.url()), "https://example.com/hello.git")
        .await
        .expect("database");
    // The token may open pull requests but not write on issues: GitHub's 403, which asking
    // again does not change.
    gh.refuse_comments(Some(403));
    let id = deliver_task(&app, "issues", "c-1", &example("issues", Some("labeled"))).await;
    pass(&app).await;
    assert!(gh.comments().is_empty());
    let link = app.store.github_link(id).await.expect("link").expect("linked");
    assert!(!link.done, "the link was given up while its task was queued");

    finish(&app, id, "agentpool/issue-1", "session-1").await;
    pass(&app).await;
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1, "{}", prism.log());
    assert_eq!(pulls[0].head, "agentpool/issue-1");
    let result = stored_task(&app.store, id).await.result.expect("result");
    assert_eq!(result.pull_request.map(|p| p.number), Some(FIRST_PR));
    // Finished: nothing more is asked of GitHub.
    assert!(
        app.store
            .github_link(id)
            .await
            .expect("link")
            .expect("linked")
            .done
    );
    let calls = gh.requests().len();
    pass(&app).await;
    assert_eq!(gh.requests().len(), calls);
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

async fn a_closed_pull_request_takes_no_follow_ups_and_none_opens_another(backend: Backend) {
    let Github { gh, prism, _dir } = github(FIRST_PR).await;
    let app = super::with_pull_request(backend, &gh, &prism, 10).await;

    // A failed check run on it: a follow-up whose prompt quotes the check, and no unfilled
    // placeholder of the other kind of feedback.
    let check = example("check_run", Some("completed"));
    let fix = deliver_task(&app, "check_run", "f-2", &check).await;
    let prompt = prompt_of(&app, fix).await;
    assert!(
        prompt.contains("failed (failure)") && !prompt.contains("{{"),
        "{prompt}"
    );
    // A review's follow-up likewise.
    let review = example("pull_request_review_comment", Some("created"));
    let answer = deliver_task(&app, "pull_request_review_comment", "f-3", &review).await;
    let prompt = prompt_of(&app, answer).await;
    assert!(
        prompt.contains("more emoji") && !prompt.contains("{{"),
        "{prompt}"
    );
    app.submitter().cancel(answer).await.expect("cancel");

    // Someone closes the pull request before the check's follow-up ends: its work is
    // recorded, and no second pull request is opened for the branch.
    gh.close_pull(FIRST_PR);
    finish(&app, fix, "agentpool/issue-1", "session-2").await;
    pass(&app).await;
    assert_eq!(gh.pulls().len(), 1, "a second pull request was opened");

    // Once GitHub says it is closed, nothing about it starts work: not a review, not a failed
    // check (whose event does not say), not a command.
    let closed = example("pull_request", Some("closed"));
    let (status, body) = deliver(&app, "pull_request", "f-4", &closed, SECRET).await;
    assert_eq!(status, 200, "{body}");
    let mut later_review = review.clone();
    later_review["comment"]["id"] = json!(999_001u64);
    later_review["comment"]["pull_request_review_id"] = json!(999_002u64);
    let closed_reason = "the pull request is closed";
    ignored(
        &app,
        "pull_request_review_comment",
        "f-5",
        &later_review,
        closed_reason,
    )
    .await;
    let mut later_check = check.clone();
    later_check["check_run"]["id"] = json!(999_003u64);
    ignored(&app, "check_run", "f-6", &later_check, closed_reason).await;
    let mut command = example("issue_comment", Some("created"));
    command["issue"]["number"] = json!(FIRST_PR);
    command["issue"]["pull_request"] =
        json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2"});
    command["comment"]["body"] = json!("/agentpool one more thing");
    command["comment"]["author_association"] = json!("OWNER");
    ignored(&app, "issue_comment", "f-7", &command, closed_reason).await;
    assert_eq!(super::task_count(&app).await, 3);

    // Reopened, it takes follow-ups again.
    let reopened = example("pull_request", Some("reopened"));
    let (status, body) = deliver(&app, "pull_request", "f-8", &reopened, SECRET).await;
    assert_eq!(status, 200, "{body}");
    deliver_task(&app, "pull_request_review_comment", "f-9", &later_review).await;
    assert_eq!(super::task_count(&app).await, 4);
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

crate::both_backends!(
    a_refused_status_comment_does_not_cost_the_pull_request,
    a_closed_pull_request_takes_no_follow_ups_and_none_opens_another,
);
