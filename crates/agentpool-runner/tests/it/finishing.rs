//! How a task's work is finished when the command did unusual things with git: a nested
//! repository, a deleted `.git`, a merge left half done, HEAD moved back, an exclude that hides
//! everything, a stash, a push canceled after the remote took it — each reported as it is, with
//! the right error class.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agentpool_core::{ErrorClass, Lifecycle, TaskState};
use agentpool_runner::workspace::finish;
use agentpool_store::TaskDetail;
use agentpool_testkit::git::{GitServer, git};

use crate::worker::{
    Env, command, enqueue_command, env, events, finished, log_lines, run_to_done, start_w1,
    succeeded_on_branch, succeeded_result, until,
};

/// A git identity for the commands' own commits (their HOME has no configuration).
const ID: &str =
    "export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t; ";

/// Run `cmd` (with [`ID`]) once, no retry, to its end.
async fn run_once(env: &Env, cmd: &str) -> TaskDetail {
    let mut spec = command(env, &format!("{ID}{cmd}"));
    spec.max_attempts = Some(1);
    run_to_done(env, spec).await
}

/// The work branch of `done` in the remote, if it is there.
fn pushed_branch(env: &Env, done: &TaskDetail) -> Option<String> {
    env.server
        .branch_sha("app", &format!("agentpool/{}", done.task.id))
}

/// The entries of the tree of `rev` in the remote: `mode type sha\tpath`, recursively.
fn remote_tree(env: &Env, rev: &str) -> String {
    git(&env.server.repo_path("app"), &["ls-tree", "-r", rev])
}

fn committed_events(evs: &[agentpool_core::Event]) -> usize {
    evs.iter()
        .filter(|e| matches!(e.payload.lifecycle(), Some(Lifecycle::Committed { .. })))
        .count()
}

#[tokio::test]
async fn nested_repositories_are_committed_as_ordinary_files() {
    let env = env().await;
    // `app` has a commit of its own and a repository without one inside; `fresh` has none.
    let cmd = "mkdir app && cd app && git init -q && echo x > x.txt && git add x.txt && \
               git commit -qm x && mkdir inner && cd inner && git init -q && echo z > z.txt && \
               cd ../.. && mkdir fresh && cd fresh && git init -q && echo y > y.txt";
    let done = run_once(&env, cmd).await;
    let r = succeeded_result(&done);
    let sha = r.commit_sha.clone().expect("a commit");
    assert!(r.pushed);
    assert_eq!(pushed_branch(&env, &done), Some(sha.clone()));
    for (path, content) in [
        ("app/x.txt", "x\n"),
        ("app/inner/z.txt", "z\n"),
        ("fresh/y.txt", "y\n"),
    ] {
        assert_eq!(
            env.server.read_file("app", &sha, path).as_deref(),
            Some(content),
            "{path}"
        );
    }
    let tree = remote_tree(&env, &sha);
    assert!(!tree.contains("160000"), "no gitlink: {tree}");
    assert!(!tree.contains(".git/"), "no repository files: {tree}");
    let lines = log_lines(&events(&env.store, done.task.id).await);
    for dir in ["app/", "app/inner/", "fresh/"] {
        let said = format!(
            "{dir} was a git repository of its own; its files were committed as ordinary files, not its history"
        );
        assert!(lines.contains(&said), "{said} not in {lines:?}");
    }
}

/// A submodule the base commit has stays a submodule: its gitlink is pushed as it was.
#[tokio::test]
async fn a_submodule_of_the_base_commit_stays_a_submodule() {
    let env = env().await;
    let work = env.dir.path().join("seed");
    let bare = env.server.repo_path("app");
    git(
        env.dir.path(),
        &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()],
    );
    let pinned = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(
        work.join(".gitmodules"),
        "[submodule \"lib/sub\"]\n\tpath = lib/sub\n\turl = https://example.invalid/sub.git\n",
    )
    .unwrap();
    git(&work, &["add", ".gitmodules"]);
    git(
        &work,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{pinned},lib/sub"),
        ],
    );
    git(&work, &["commit", "-qm", "add a submodule"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);

    let done = run_once(&env, "echo more >> README.md").await;
    let sha = succeeded_result(&done).commit_sha.expect("a commit");
    let tree = remote_tree(&env, &sha);
    assert!(
        tree.contains(&format!("160000 commit {pinned}\tlib/sub")),
        "{tree}"
    );
    let lines = log_lines(&events(&env.store, done.task.id).await);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("was a git repository of its own")),
        "{lines:?}"
    );
}

/// A command that deletes `.git` (or puts a `gitdir:` file in its place) fails as its own
/// fault: `AGENT_ERROR`, not the worker's `WORKER_ERROR` (given back, a strike against it).
#[tokio::test]
async fn a_command_that_removes_or_replaces_dot_git_fails_as_its_own_fault() {
    let env = env().await;
    for (cmd, said) in [
        (
            "rm -rf .git; echo a > a.txt",
            "the command removed the workspace's .git directory; nothing was committed or pushed",
        ),
        (
            "mv .git ../moved.git && echo 'gitdir: ../moved.git' > .git && echo a > a.txt",
            "the command replaced the workspace's .git directory with a file",
        ),
    ] {
        let done = run_once(&env, cmd).await;
        assert_eq!(done.task.state, TaskState::Failed, "{cmd}");
        assert_eq!(done.task.error_class, Some(ErrorClass::AgentError), "{cmd}");
        assert_eq!(done.task.attempts, 1, "not given back: {cmd}");
        let message = done.task.error_message.clone().unwrap_or_default();
        assert!(message.starts_with(said), "{message}");
        assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
    }
}

/// A merge left with conflicts, or merely not concluded, is not committed: the conflict
/// markers would be pushed as if resolved.
#[tokio::test]
async fn a_merge_left_unfinished_is_not_committed() {
    let env = env().await;
    let branches = "git checkout -qb other && echo theirs > README.md && git commit -qam theirs && \
                    git checkout -q - && ";
    for (cmd, said) in [
        (
            format!("{branches}echo mine > README.md && git commit -qam mine && git merge -q other; true"),
            "the command left a merge in progress with unresolved conflicts in README.md; \
             nothing was committed or pushed",
        ),
        (
            format!(
                "{branches}echo new > new.txt && git add new.txt && git commit -qm new && git merge -q --no-ff --no-commit other"
            ),
            "the command left a merge in progress (.git/MERGE_HEAD); nothing was committed or pushed",
        ),
    ] {
        let done = run_once(&env, &cmd).await;
        assert_eq!(done.task.state, TaskState::Failed, "{cmd}");
        assert_eq!(done.task.error_class, Some(ErrorClass::AgentError), "{cmd}");
        let message = done.task.error_message.clone().unwrap_or_default();
        assert!(message.starts_with(said), "{message}");
        let r = done.task.result.clone().unwrap_or_default();
        assert_eq!((r.commit_sha, r.pushed, r.branch), (None, false, None));
        assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
    }
}

/// HEAD moved back to a commit the base already has is no commit of the task's: nothing is
/// reported committed, nothing pushed, and the result says why.
#[tokio::test]
async fn a_head_moved_back_reports_no_commit_and_pushes_nothing() {
    let env = env().await;
    let base = env.server.branch_sha("app", "main").unwrap();
    let done = run_once(&env, "git reset -q --hard HEAD~1").await;
    let r = succeeded_result(&done);
    assert_eq!(
        (r.commit_sha.as_deref(), r.pushed, r.branch.as_deref()),
        (None, false, None)
    );
    let said = r.push_result.clone().unwrap_or_default();
    assert!(
        said.starts_with(&format!(
            "nothing new to push: the command moved HEAD from {} to ",
            &base[..12]
        )) && said.ends_with("a commit the repository already had, and made no new commit"),
        "{said}"
    );
    assert!(r.files.is_empty());
    assert_eq!(committed_events(&events(&env.store, done.task.id).await), 0);
    assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
}

#[tokio::test]
async fn an_exclude_the_command_wrote_does_not_hide_its_work() {
    let env = env().await;
    let done = run_once(&env, "echo '*' >> .git/info/exclude && echo x > x.txt").await;
    let r = succeeded_result(&done);
    let sha = r.commit_sha.clone().expect("the work is committed");
    assert_eq!(env.server.read_file("app", &sha, "x.txt").as_deref(), Some("x\n"));
}

#[tokio::test]
async fn work_left_in_git_stash_is_warned_of() {
    let env = env().await;
    let done = run_once(&env, "echo more >> README.md && git stash -q").await;
    let r = succeeded_result(&done);
    assert_eq!(r.commit_sha, None);
    let said = "the command left work in git stash; stashes are not pushed";
    assert_eq!(
        r.push_result.as_deref(),
        Some(format!("nothing pushed: {said}").as_str())
    );
    assert!(log_lines(&events(&env.store, done.task.id).await).contains(&said.to_string()));
}

/// Git's message about a file in the workspace names it in the workspace, not under the
/// worker's private (unlisted, randomly named) task directory. (A directory where git wants
/// its index lock: the worker removes a stale lock file, not a directory.)
#[tokio::test]
async fn a_local_git_failure_does_not_show_the_private_task_directory() {
    let env = env().await;
    let done = run_once(&env, "echo x > x.txt && mkdir .git/index.lock").await;
    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::GitError));
    let message = done.task.error_message.clone().unwrap_or_default();
    assert!(message.contains("'<workspace>/.git/index.lock'"), "{message}");
    let private = env.dir.path().display().to_string();
    assert!(!message.contains(&private), "{message}");
    assert!(!message.contains("/tasks/"), "{message}");
}

/// Lock files the run's git left behind (an agent killed mid `git add`) are stale once every
/// process of the run has ended: they are removed, the log says so, and the work is committed
/// and pushed instead of the attempt failing `GIT_ERROR` and running again.
#[tokio::test]
async fn lock_files_the_run_left_behind_are_removed_and_the_work_is_committed() {
    let env = env().await;
    let done = run_once(
        &env,
        "echo x > x.txt && touch .git/index.lock .git/HEAD.lock \
         \"$(git rev-parse --git-path refs/heads/$(git branch --show-current)).lock\"",
    )
    .await;
    let why = format!("{:?}", done.task.error_message);
    assert_eq!(done.task.state, TaskState::Succeeded, "{why}");
    assert_eq!(done.task.attempts, 1);
    let r = done.task.result.clone().expect("a result");
    assert!(r.pushed, "{r:?}");
    assert_eq!(
        r.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["x.txt"]
    );
    let log = log_lines(&events(&env.store, done.task.id).await);
    assert!(
        log.iter().any(
            |l| l.starts_with("removed .git/index.lock, .git/HEAD.lock, .git/refs/heads/")
                && l.ends_with(
                    ".lock, which the run's git left behind (nothing of the run is still running)"
                )
        ),
        "{log:?}"
    );
}

/// Make the remote's post-receive hook (run after the branch is updated) signal `landed` and
/// then hold the push open until `gate` exists: a slow hook after the push took effect.
fn slow_post_receive(server: &GitServer, dir: &Path) -> (PathBuf, PathBuf) {
    let landed = dir.join("landed");
    let gate = dir.join("gate");
    let hook = server.repo_path("app").join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\ntouch '{}'\nwhile [ ! -e '{}' ]; do sleep 0.02; done\n",
            landed.display(),
            gate.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    (landed, gate)
}

/// A cancel while git push waits on the remote's slow hook: the branch is on the remote all
/// the same, and the result says so (pushed, branch named), not that the commit is gone.
#[tokio::test]
async fn a_push_canceled_after_the_remote_took_it_is_reported_pushed() {
    let env = env().await;
    let (landed, gate) = slow_post_receive(&env.server, env.dir.path());
    let task = enqueue_command(&env, "echo x > x.txt").await;
    let w = start_w1(&env).await;
    until("the push to reach the remote", async || {
        landed.exists().then_some(())
    })
    .await;
    env.store.cancel(task.id).await.unwrap();
    let done = finished(&env.store, task.id).await;
    std::fs::write(&gate, "").unwrap();
    w.stop().await;
    assert_eq!(done.task.state, TaskState::Canceled);
    let r = done.task.result.clone().expect("the cancel carries the result");
    let sha = r.commit_sha.clone().expect("the commit");
    assert_eq!(pushed_branch(&env, &done), Some(sha.clone()));
    assert!(r.pushed, "{r:?}");
    assert_eq!(r.branch, Some(format!("agentpool/{}", task.id)));
    let said = r.push_result.clone().unwrap_or_default();
    assert!(
        said.starts_with(&format!("pushed: the remote has the branch at {}", &sha[..12])),
        "{said}"
    );
    let evs = events(&env.store, task.id).await;
    assert!(
        evs.iter()
            .any(|e| matches!(e.payload.lifecycle(), Some(Lifecycle::Pushed { .. }))),
        "a pushed event"
    );
}

/// A push that times out waiting on the remote's slow hook, after the remote took it, did
/// what it was for: `finish` reports it pushed rather than failing (and retrying) the task.
#[tokio::test]
async fn a_push_that_timed_out_after_the_remote_took_it_is_pushed() {
    let f = crate::workspace::fixture().await;
    let (_landed, gate) = slow_post_receive(&f.server, f.dir.path());
    let git = crate::workspace::git_with(f.dir.path(), crate::workspace::TOKEN);
    let ws = f.prepare(&git, false, Some("main")).await.unwrap();
    std::fs::write(ws.dir.join("x.txt"), "x\n").unwrap();
    let short = git.clone().with_timeout(std::time::Duration::from_secs(3));
    let post = finish(
        &short,
        &ws,
        Some(&crate::workspace::commit_opts()),
        true,
        &agentpool_core::Redactor::default(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    std::fs::write(&gate, "").unwrap();
    let post = post.expect("the push landed");
    let sha = post.commit_sha.clone().unwrap();
    assert!(post.pushed && post.branch_on_remote, "{post:?}");
    assert_eq!(f.server.branch_sha("app", ws.branch.as_str()), Some(sha));
    let said = post.push_result.unwrap_or_default();
    assert!(
        said.ends_with("although git push did not end cleanly (git push timed out)"),
        "{said}"
    );
}

/// A task that starts from a work branch the remote already has (a retry after a push that
/// landed, a follow-up) and adds nothing says the branch has the work, not merely "no commit".
#[tokio::test]
async fn nothing_new_on_a_branch_the_remote_has_says_the_branch_has_it() {
    let env = env().await;
    succeeded_on_branch(&env, "echo one > one.txt", "feature/again").await;
    let pushed = env.server.branch_sha("app", "feature/again").expect("pushed");
    let r = succeeded_on_branch(&env, "echo one > one.txt", "feature/again").await;
    assert_eq!((r.commit_sha.as_deref(), r.pushed), (None, false));
    assert_eq!(r.branch.as_deref(), Some("feature/again"));
    assert_eq!(
        r.push_result,
        Some(format!(
            "nothing new to push: the work branch is on the remote at {} already",
            &pushed[..12]
        ))
    );
}

/// An attempt that pushed and was lost before it reported (its worker killed between the push
/// and the report) left its commit on the task's own work branch, unrecorded. The next attempt
/// does not run the task again on top of it — an appended line would be there twice — but
/// starts again from where that one did, says so, and its push replaces that commit.
#[tokio::test]
async fn a_lost_attempt_s_pushed_commit_is_replaced_not_built_upon() {
    let env = env().await;
    let task = enqueue_command(&env, "echo line >> log.txt").await;
    let branch = format!("agentpool/{}", task.id);
    // What the lost attempt pushed: the same work, with the task's trailer.
    let bare = env.server.repo_path("app");
    let scratch = env.dir.path().join("lost-attempt");
    git(
        env.dir.path(),
        &["clone", "-q", bare.to_str().unwrap(), scratch.to_str().unwrap()],
    );
    git(&scratch, &["checkout", "-q", "-b", &branch]);
    std::fs::write(scratch.join("log.txt"), "line\n").unwrap();
    git(&scratch, &["add", "log.txt"]);
    let message = format!("the lost attempt\n\nAgentpool-Task: {}", task.id);
    git(&scratch, &["commit", "-qm", &message]);
    git(&scratch, &["push", "-q", "origin", &branch]);
    let lost = git(&scratch, &["rev-parse", "HEAD"]);
    let main = git(&scratch, &["rev-parse", "HEAD~1"]);

    let w = start_w1(&env).await;
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    let r = succeeded_result(&done);
    let sha = r.commit_sha.clone().expect("a commit");
    assert_ne!(sha, lost);
    assert_eq!(
        pushed_branch(&env, &done),
        Some(sha.clone()),
        "the push replaced it"
    );
    assert_eq!(
        git(&bare, &["rev-parse", &format!("{sha}~1")]),
        main,
        "one commit on the base"
    );
    assert_eq!(
        git(&bare, &["show", &format!("{sha}:log.txt")]),
        "line",
        "the line once"
    );
    let files: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["log.txt"]);
    let lines = log_lines(&events(&env.store, task.id).await);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("an earlier attempt of this task pushed {lost}"))),
        "{lines:#?}"
    );
}
