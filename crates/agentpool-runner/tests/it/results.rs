//! What a result claims about git is true: a commit that was not pushed says it is gone, a
//! branch is named only when the remote has it, a `--no-commit` task lists the files it
//! changed, and a push the remote declines quotes the remote's reason (redacted).

use std::os::unix::fs::PermissionsExt;

use agentpool_core::{ErrorClass, FileChange, FileStatus, Lifecycle, TaskState};

use crate::worker::{
    Env, TOKEN, command, env, events, log_lines, run_to_done, succeeded_on_branch, succeeded_result,
};

/// The files of a result as (path, added, removed), sorted.
fn changes(files: &[FileChange]) -> Vec<(&str, Option<u64>, Option<u64>)> {
    let mut v: Vec<_> = files
        .iter()
        .map(|f| (f.path.as_str(), f.added, f.removed))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_commit_that_is_not_pushed_says_it_was_discarded_and_names_no_branch() {
    let env = env().await;
    let mut spec = command(&env, "echo x > np.txt");
    spec.push = false;
    let done = run_to_done(&env, spec).await;
    let r = succeeded_result(&done);
    assert!(r.commit_sha.is_some(), "the commit made is still reported");
    assert!(!r.pushed);
    let said = "not pushed (the task asked for no push): the commit was discarded with the workspace";
    assert_eq!(r.push_result.as_deref(), Some(said));
    assert_eq!(r.branch, None, "the branch is on no remote");
    assert_eq!(changes(&r.files), vec![("np.txt", Some(1), Some(0))]);
    assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
    assert!(log_lines(&events(&env.store, done.task.id).await).contains(&said.to_string()));
}

#[tokio::test]
async fn a_task_that_commits_nothing_names_no_branch() {
    let env = env().await;
    let done = run_to_done(&env, command(&env, "test -f README.md")).await;
    let r = succeeded_result(&done);
    assert_eq!(
        (
            r.commit_sha.as_deref(),
            r.branch.as_deref(),
            r.pushed,
            r.push_result.as_deref()
        ),
        (None, None, false, None)
    );
    assert!(r.files.is_empty());
    assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
}

#[tokio::test]
async fn a_no_commit_task_lists_the_files_it_changed_and_names_no_branch() {
    let env = env().await;
    let mut spec = command(
        &env,
        "printf 'more\\n' >> README.md && echo new > added.txt && rm src/lib.rs",
    );
    spec.commit = false;
    spec.push = false;
    let done = run_to_done(&env, spec).await;
    let r = succeeded_result(&done);
    assert_eq!(
        changes(&r.files),
        vec![
            ("README.md", Some(1), Some(0)),
            ("added.txt", Some(1), Some(0)),
            ("src/lib.rs", Some(0), Some(1)),
        ]
    );
    assert_eq!(
        (r.commit_sha.as_deref(), r.branch.as_deref(), r.pushed),
        (None, None, false)
    );
    assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
    assert_eq!(
        statuses(&r.files),
        vec![
            ("README.md", Some(FileStatus::Modified), None),
            ("added.txt", Some(FileStatus::Added), None),
            ("src/lib.rs", Some(FileStatus::Deleted), None),
        ]
    );
    let lines = log_lines(&events(&env.store, done.task.id).await);
    assert!(
        lines.contains(&"not committed (the task asked for no commit)".to_string()),
        "{lines:?}"
    );
}

/// The files of a result as (path, status, mode change), sorted.
fn statuses(files: &[FileChange]) -> Vec<(&str, Option<FileStatus>, Option<&str>)> {
    let mut v: Vec<_> = files
        .iter()
        .map(|f| (f.path.as_str(), f.status, f.mode_change.as_deref()))
        .collect();
    v.sort_by_key(|c| c.0);
    v
}

/// A result says how each file changed where its line counts cannot: a new empty file, a
/// deleted one and a mode change are all `+0`-something, an edit is not.
#[tokio::test]
async fn a_result_says_which_files_are_new_deleted_or_changed_mode() {
    let env = env().await;
    let done = run_to_done(
        &env,
        command(
            &env,
            "chmod +x README.md && : > empty.txt && rm src/lib.rs && ln -s README.md link",
        ),
    )
    .await;
    let r = succeeded_result(&done);
    assert!(r.pushed, "{r:?}");
    assert_eq!(
        statuses(&r.files),
        vec![
            ("README.md", Some(FileStatus::Modified), Some("100644 -> 100755")),
            ("empty.txt", Some(FileStatus::Added), None),
            ("link", Some(FileStatus::Added), None),
            ("src/lib.rs", Some(FileStatus::Deleted), None),
        ]
    );
    let readme = r.files.iter().find(|f| f.path == "README.md").expect("README.md");
    assert_eq!((readme.added, readme.removed), (Some(0), Some(0)));
    assert_eq!(readme.note().as_deref(), Some("mode 100644 -> 100755"));
}

#[tokio::test]
async fn a_branch_the_remote_already_has_is_named_though_nothing_was_pushed() {
    let env = env().await;
    succeeded_on_branch(&env, "echo one > one.txt", "feature/kept").await;
    let pushed = env.server.branch_sha("app", "feature/kept").expect("pushed");

    // Another task on that branch that changes nothing: the branch is there, as it was.
    let r = succeeded_on_branch(&env, "test -f one.txt", "feature/kept").await;
    assert_eq!(r.branch.as_deref(), Some("feature/kept"));
    assert!(!r.pushed && r.commit_sha.is_none());
    assert_eq!(env.server.branch_sha("app", "feature/kept"), Some(pushed));
}

/// Make repository `app` decline every push with a pre-receive hook that says `why`.
fn decline_pushes(env: &Env, why: &str) {
    let hook = env.server.repo_path("app").join("hooks/pre-receive");
    std::fs::write(&hook, format!("#!/bin/sh\necho '{why}' >&2\nexit 1\n")).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_push_the_remote_declines_quotes_its_reason_and_the_rejected_ref_redacted() {
    let env = env().await;
    // A policy hook that explains itself, and (carelessly) echoes the credential it was sent.
    decline_pushes(&env, &format!("denied by policy: ask #infra ({TOKEN})"));
    let mut spec = command(&env, "echo x > denied.txt");
    spec.max_attempts = Some(1);
    let done = run_to_done(&env, spec).await;
    assert_eq!(done.task.state, TaskState::Failed);
    // No class says "refused for good", and the next attempt may push other content.
    assert_eq!(done.task.error_class, Some(ErrorClass::GitError));
    let msg = done.task.error_message.clone().unwrap_or_default();
    let branch = format!("agentpool/{}", done.task.id);
    assert!(
        msg.contains("remote: denied by policy: ask #infra ([REDACTED])"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "! [remote rejected] HEAD -> {branch} (pre-receive hook declined)"
        )),
        "{msg}"
    );
    assert!(msg.contains("error: failed to push some refs"), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
    assert!(msg.len() < 2100, "{}", msg.len());
    let r = done.task.result.clone().unwrap_or_default();
    assert_eq!((r.branch.as_deref(), r.pushed), (None, false));
    assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
}

/// The attempt whose push was declined still made its commit: its failure carries the commit
/// (not pushed, and where it went), the files it changed, and the `committed` event.
#[tokio::test]
async fn a_declined_push_still_reports_the_commit_and_the_files_it_changed() {
    let env = env().await;
    decline_pushes(&env, "denied by policy");
    let mut spec = command(&env, "echo x > x.txt");
    spec.max_attempts = Some(1);
    let done = run_to_done(&env, spec).await;
    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::GitError));
    let r = done.task.result.clone().expect("the failure carries a result");
    let sha = r.commit_sha.clone().expect("the commit made is reported");
    assert!(!r.pushed);
    assert_eq!(changes(&r.files), vec![("x.txt", Some(1), Some(0))]);
    assert_eq!(
        r.push_result.as_deref(),
        Some("not pushed (the push failed): the commit was discarded with the workspace")
    );
    assert_eq!(r.branch, None, "the branch is on no remote");
    let committed: Vec<_> = events(&env.store, done.task.id)
        .await
        .into_iter()
        .filter_map(|e| match e.payload.lifecycle() {
            Some(Lifecycle::Committed { sha, files }) => Some((sha.clone(), *files)),
            _ => None,
        })
        .collect();
    assert_eq!(committed, vec![(sha, 1)], "one committed event");
    assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
}
