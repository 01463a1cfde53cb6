//! The GitHub loop's REST calls, each validated against GitHub's own API description by prism
//! (request and answer), with the recording stand-in behind it keeping pull requests and
//! comments: the pull request opened after a successful push and recorded in the task's
//! result, the one status comment updated in place, and a review follow-up that reuses the
//! pull request instead of opening a second.
use agentpool_core::TaskId;
use agentpool_testkit::db::Backend;
use serde_json::json;

use super::{Github, SECRET, TOKEN, deliver, deliver_task, example, finish, gh_app, github, pass};
use crate::support::stored_task;

const FIRST_PR: u64 = 2; // the number GitHub's review examples use

async fn pull_request_opened_comment_updated_and_reused_by_a_review_follow_up(backend: Backend) {
    let Github { gh, prism, _dir } = github(FIRST_PR).await;
    let app = gh_app(backend, Some(prism.url()), "https://example.com/hello.git")
        .await
        .expect("database");

    // issues.labeled → task, and at once a status comment on the issue.
    let id = deliver_task(&app, "issues", "r-1", &example("issues", Some("labeled"))).await;
    pass(&app).await;
    let comments = gh.comments();
    assert_eq!(comments.len(), 1, "{:?}", prism.log());
    assert_eq!(comments[0].issue, 1);
    assert!(comments[0].body.contains("**queued**"), "{}", comments[0].body);
    assert!(
        comments[0]
            .body
            .contains(&format!("https://agentpool.example.com/tasks/{id}"))
    );

    // The worker pushed its branch: the pull request opens against the default branch and
    // the same comment now links it.
    finish(&app, id, "agentpool/issue-1", "session-1").await;
    pass(&app).await;
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1, "{}", prism.log());
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        ("agentpool/issue-1", "main")
    );
    assert!(pulls[0].body.contains("Fixed the greeting.") && pulls[0].body.contains("Closes #1."));
    let comments = gh.comments();
    assert_eq!(comments.len(), 1, "a second comment was made");
    assert_eq!(comments[0].updates, 1);
    assert!(comments[0].body.contains("**succeeded**") && comments[0].body.contains(&format!("#{FIRST_PR}")));
    assert!(comments[0].body.contains("Cost: $0.25"));
    let result = stored_task(&app.store, id).await.result.expect("result");
    let pr = result.pull_request.expect("pull request recorded");
    assert_eq!((pr.number, pr.state.as_str()), (FIRST_PR, "open"));
    assert_eq!(result.pr_url.as_deref(), Some(pr.url.as_str()));
    // Done: another pass calls GitHub no more.
    let calls = gh.requests().len();
    pass(&app).await;
    assert_eq!(gh.requests().len(), calls);

    // A review comment on that pull request → a follow-up on its branch, resuming the session.
    let review = example("pull_request_review_comment", Some("created"));
    let follow = deliver_task(&app, "pull_request_review_comment", "r-2", &review).await;
    let t = stored_task(&app.store, follow).await;
    assert_eq!(t.spec.branch.as_deref(), Some("agentpool/issue-1"));
    assert_eq!(t.spec.follow_up_of, Some(id));
    let prompt = t.spec.prompt.expect("prompt");
    assert!(
        prompt.contains("README.md:") && prompt.contains("more emoji"),
        "{prompt}"
    );
    pass(&app).await;
    finish(&app, follow, "agentpool/issue-1", "session-2").await;
    pass(&app).await;
    assert_eq!(gh.pulls().len(), 1, "a second pull request was opened");
    let on_pr: Vec<_> = gh
        .comments()
        .into_iter()
        .filter(|c| c.issue == FIRST_PR)
        .collect();
    assert_eq!(on_pr.len(), 1);
    assert!(on_pr[0].body.contains("**succeeded**"));
    let result = stored_task(&app.store, follow).await.result.expect("result");
    assert_eq!(result.pull_request.map(|p| p.number), Some(FIRST_PR));

    // Every call carried the token, and every one matched GitHub's description.
    let reqs = gh.requests();
    assert!(
        reqs.iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")))
    );
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

/// A review with several comments arrives as a review event and one event per comment: one
/// follow-up for all of them, its prompt holding the review's comments as GitHub lists them;
/// and review follow-ups count toward the pull request's limit of automatic follow-ups.
async fn one_follow_up_per_review_and_reviews_count_toward_the_limit(backend: Backend) {
    let Github { gh, prism, _dir } = github(FIRST_PR).await;
    let app = super::with_pull_request(backend, &gh, &prism, 2).await;

    // GitHub's examples: review 237895671 ("commented", no body of its own) and its comment.
    let review = example("pull_request_review", Some("submitted"));
    let comment = example("pull_request_review_comment", Some("created"));
    let review_id = review["review"]["id"].clone();
    assert_eq!(comment["comment"]["pull_request_review_id"], review_id);
    let mut other = comment.clone();
    other["comment"]["id"] = json!(284312631u64);
    other["comment"]["body"] = json!("And rename the file.");
    let mut tasks = Vec::new();
    for (event, delivery, payload) in [
        ("pull_request_review_comment", "b-2", &comment),
        ("pull_request_review", "b-3", &review),
        ("pull_request_review_comment", "b-4", &other),
    ] {
        let (status, body) = deliver(&app, event, delivery, payload, SECRET).await;
        assert_eq!(status, 202, "{event}: {body}");
        tasks.push((body["task_id"].clone(), body["created"].clone()));
    }
    assert!(tasks.iter().all(|(t, _)| *t == tasks[0].0), "{tasks:?}");
    assert_eq!(
        tasks.iter().filter(|(_, c)| *c == json!(true)).count(),
        1,
        "{tasks:?}"
    );
    assert_eq!(super::task_count(&app).await, 2);
    let follow: TaskId = tasks[0].0.as_str().expect("id").parse().expect("id");
    let prompt = stored_task(&app.store, follow).await.spec.prompt.expect("prompt");
    // The event's own comment, and the review's comments as GitHub lists them.
    assert!(
        prompt.contains("more emoji") && prompt.contains("README.md:"),
        "{prompt}"
    );
    assert!(
        prompt.contains("file1.txt") && prompt.contains("Great stuff!"),
        "{prompt}"
    );
    assert!(gh.requests().iter().any(|r| r.path
        == format!(
            "/repos/{}/pulls/{FIRST_PR}/reviews/{review_id}/comments",
            super::REPO
        )));

    // Another review is another follow-up; the one after that is over the limit of two.
    let mut second = review.clone();
    second["review"]["id"] = json!(237895672u64);
    let (status, body) = deliver(&app, "pull_request_review", "b-5", &second, SECRET).await;
    assert_eq!((status, body["created"].clone()), (202, json!(true)), "{body}");
    let mut third = review.clone();
    third["review"]["id"] = json!(237895673u64);
    let (status, body) = deliver(&app, "pull_request_review", "b-6", &third, SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ignored");
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains("limit")),
        "{body}"
    );
    assert_eq!(super::task_count(&app).await, 3);
    assert!(prism.violations().is_empty(), "{:?}", prism.violations());
}

async fn prism_refuses_a_request_that_does_not_match_github(backend: Backend) {
    let _ = backend;
    let Github { gh, prism, _dir } = github(1).await;
    // `head` is required by GitHub's schema for opening a pull request.
    let resp = reqwest::Client::new()
        .post(format!("{}/repos/o/r/pulls", prism.url()))
        .bearer_auth("t")
        .json(&json!({"title": "x", "base": "main"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 422);
    assert!(
        gh.requests().is_empty(),
        "an invalid request reached the stand-in"
    );
}

crate::both_backends!(
    pull_request_opened_comment_updated_and_reused_by_a_review_follow_up,
    one_follow_up_per_review_and_reviews_count_toward_the_limit,
);

#[tokio::test]
async fn prism_refuses_invalid_requests() {
    prism_refuses_a_request_that_does_not_match_github(Backend::Sqlite).await;
}
