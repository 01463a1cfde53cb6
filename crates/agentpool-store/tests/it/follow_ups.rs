//! Which session a claimed follow-up resumes: the earlier task's only when the work that session
//! speaks of is in the workspace the follow-up starts from — the branch that task pushed (its
//! own, or a branch made from it), or anywhere when that task succeeded without a commit.

use agentpool_core::{ErrorClass, TaskId, TaskResult, TaskSpec};
use agentpool_store::Failure;

use crate::both;
use crate::harness::{Harness, Worker, cmd};

both!(
    a_follow_up_on_the_pushed_branch_resumes_the_session,
    a_follow_up_on_a_branch_made_from_the_pushed_one_resumes_the_session,
    a_follow_up_elsewhere_than_the_pushed_branch_starts_afresh,
    a_follow_up_of_a_task_that_pushed_nothing_starts_afresh,
    a_follow_up_of_a_task_that_changed_nothing_resumes_the_session,
);

const BRANCH: &str = "agentpool/earlier";

/// What the earlier task reports: its session, and a commit pushed to [`BRANCH`] or none.
fn reported(commit: Option<&str>, pushed: bool) -> TaskResult {
    TaskResult {
        session_id: Some("sess-1".into()),
        commit_sha: commit.map(str::to_string),
        pushed,
        branch: pushed.then(|| BRANCH.to_string()),
        ..TaskResult::default()
    }
}

/// An earlier task run to success by `w` with `result`; its id.
async fn succeeded(h: &Harness, w: &Worker, spec: TaskSpec, result: TaskResult) -> TaskId {
    let id = h.submit(spec).await;
    let c = w.claim(1).await.remove(0);
    w.complete_with(c.lease, result).await;
    id
}

/// The session the follow-up of `earlier` made of `spec` resumes once claimed (it is then
/// completed, so that its branch is free for the next).
async fn resumed(h: &Harness, w: &Worker, earlier: TaskId, spec: TaskSpec) -> Option<String> {
    h.submit(TaskSpec {
        follow_up_of: Some(earlier),
        ..spec
    })
    .await;
    let c = w.claim(1).await.remove(0);
    w.complete(c.lease).await;
    c.resume_session
}

fn on_branch(branch: &str, base: Option<&str>) -> TaskSpec {
    TaskSpec {
        branch: Some(branch.into()),
        base_ref: base.map(str::to_string),
        ..cmd("go on")
    }
}

async fn a_follow_up_on_the_pushed_branch_resumes_the_session(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let first = succeeded(&h, &w, cmd("first"), reported(Some("abc123"), true)).await;
    let got = resumed(&h, &w, first, on_branch(BRANCH, Some("main"))).await;
    assert_eq!(got.as_deref(), Some("sess-1"));
}

async fn a_follow_up_on_a_branch_made_from_the_pushed_one_resumes_the_session(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let first = succeeded(&h, &w, cmd("first"), reported(Some("abc123"), true)).await;
    let got = resumed(&h, &w, first, on_branch("own-branch", Some(BRANCH))).await;
    assert_eq!(got.as_deref(), Some("sess-1"));
}

async fn a_follow_up_elsewhere_than_the_pushed_branch_starts_afresh(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let first = succeeded(&h, &w, cmd("first"), reported(Some("abc123"), true)).await;
    // From the usual base, on a branch of its own: the pushed work is not there.
    assert_eq!(
        resumed(&h, &w, first, on_branch("own-branch", Some("main"))).await,
        None
    );
    assert_eq!(resumed(&h, &w, first, cmd("no branch named")).await, None);
}

async fn a_follow_up_of_a_task_that_pushed_nothing_starts_afresh(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    // Checks failed, and nothing was committed or pushed: its changes went with its workspace.
    let id = h
        .submit(TaskSpec {
            max_attempts: Some(1),
            ..cmd("first")
        })
        .await;
    let c = w.claim(1).await.remove(0);
    w.fail(
        c.lease,
        Failure {
            class: ErrorClass::ChecksFailed,
            message: "checks failed: test".into(),
            retry_after: None,
            result: Some(reported(None, false)),
        },
    )
    .await;
    let detail = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(
        detail.task.result.and_then(|r| r.session_id).as_deref(),
        Some("sess-1"),
        "the failed task kept its session"
    );
    assert_eq!(resumed(&h, &w, id, on_branch(BRANCH, Some("main"))).await, None);

    // Committed but not pushed (`push: false`): the commit went with its workspace.
    let unpushed = TaskSpec {
        push: false,
        ..cmd("second")
    };
    let second = succeeded(&h, &w, unpushed, reported(Some("abc123"), false)).await;
    assert_eq!(
        resumed(&h, &w, second, on_branch(BRANCH, Some("main"))).await,
        None
    );

    // Told not to commit: whatever it changed was not kept.
    let uncommitted = TaskSpec {
        commit: false,
        push: false,
        ..cmd("third")
    };
    let third = succeeded(&h, &w, uncommitted, reported(None, false)).await;
    assert_eq!(resumed(&h, &w, third, cmd("go on")).await, None);
}

async fn a_follow_up_of_a_task_that_changed_nothing_resumes_the_session(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    // Succeeded with no changes to commit: nothing it speaks of can be missing.
    let first = succeeded(&h, &w, cmd("first"), reported(None, false)).await;
    let got = resumed(&h, &w, first, on_branch("own-branch", Some("main"))).await;
    assert_eq!(got.as_deref(), Some("sess-1"));
}
