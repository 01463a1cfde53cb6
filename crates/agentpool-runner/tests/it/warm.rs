//! The warm path through the mirror cache: a task starts from what the remote has now (the
//! mirror's fetch runs alongside a speculative clone, redone when the fetch moved a ref), and
//! each task's workspace is its own — what a task does to it never reaches the mirror or
//! another task's workspace, and deleting it leaves the mirror whole.

use std::path::{Path, PathBuf};
use std::process::Command;

use agentpool_runner::git::Git;
use agentpool_runner::workspace::Workspace;

use crate::workspace::{Fixture, TOKEN, fixture, git_with};

async fn prepare_warm(f: &Fixture, git: &Git) -> Workspace {
    f.prepare(git, true, None).await.unwrap()
}

fn mirror(f: &Fixture) -> PathBuf {
    let mut m: Vec<PathBuf> = std::fs::read_dir(f.dir.path().join("mirrors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "git"))
        .collect();
    assert_eq!(m.len(), 1, "{m:?}");
    m.remove(0)
}

/// Plain git in `dir` (no user configuration), returning (success, stdout).
fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "gc.auto=0"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (success, out) = git(dir, args);
    assert!(success, "git {args:?} in {}", dir.display());
    out
}

/// The workspace fixture, its git, and the remote's `main`.
async fn warm_fixture() -> (Fixture, Git, String) {
    let f = fixture().await;
    let g = git_with(f.dir.path(), TOKEN);
    let head = f.server.branch_sha("app", "main").unwrap();
    (f, g, head)
}

#[tokio::test]
async fn warm_tasks_start_from_what_the_remote_has_now() {
    let (f, g, head) = warm_fixture().await;

    let created = prepare_warm(&f, &g).await;
    assert!(created.warm);
    assert_eq!(created.base_sha, head);

    // Remote unchanged: fetch, clone, set-url, resolve and checkout, each one git process;
    // the fetch sends the token with its first request (no 401 round trip) and asks for the
    // refs only.
    let (requests, refused) = f.server.request_counts();
    let same = prepare_warm(&f, &g).await;
    let (requests_now, refused_now) = f.server.request_counts();
    assert_eq!(refused_now, refused, "a request went out without credentials");
    assert!(
        requests_now - requests <= 2,
        "{} requests",
        requests_now - requests
    );
    assert_eq!(same.base_sha, head);
    assert_eq!(same.phases.git_processes, 5, "{:?}", same.phases);
    assert!(same.dir.join("src/lib.rs").exists());

    // A commit pushed since the mirror was last fetched is where the next task starts: the
    // speculative clone of the stale mirror is not used.
    f.server
        .add_commit("app", "upstream", &[("UPSTREAM.md", "new\n")])
        .unwrap();
    let new_head = f.server.branch_sha("app", "main").unwrap();
    assert_ne!(new_head, head);
    let next = prepare_warm(&f, &g).await;
    assert_eq!(next.base_sha, new_head);
    assert_eq!(ok(&next.dir, &["rev-parse", "HEAD"]).trim(), new_head);
    assert_eq!(
        std::fs::read_to_string(next.dir.join("UPSTREAM.md")).unwrap(),
        "new\n"
    );
    assert_eq!(
        ok(&next.dir, &["rev-parse", "refs/remotes/origin/main"]).trim(),
        new_head,
        "the workspace's view of the remote is current"
    );
    assert_eq!(
        ok(&next.dir, &["remote", "get-url", "origin"]).trim(),
        f.server.url("app"),
        "origin is the remote, not the mirror"
    );
    assert!(next.phases.git_processes > 5, "{:?}", next.phases);
}

#[tokio::test]
async fn warm_workspaces_never_touch_the_mirror_or_each_other() {
    let (f, g, head) = warm_fixture().await;
    let a = prepare_warm(&f, &g).await;
    let b = prepare_warm(&f, &g).await;
    let m = mirror(&f);
    let mirror_refs = ok(&m, &["for-each-ref"]);

    // Task A commits, tags, deletes its view of the remote, repacks and prunes everything
    // it does not reference, and rewrites its config.
    std::fs::write(a.dir.join("README.md"), "changed by a\n").unwrap();
    ok(&a.dir, &["commit", "--quiet", "-am", "a's work"]);
    let a_commit = ok(&a.dir, &["rev-parse", "HEAD"]).trim().to_string();
    ok(&a.dir, &["tag", "a-tag"]);
    ok(&a.dir, &["update-ref", "-d", "refs/remotes/origin/main"]);
    ok(&a.dir, &["gc", "--quiet", "--prune=now"]);
    ok(&a.dir, &["config", "core.bare", "true"]);

    // Nothing of it in the mirror or in B.
    assert_eq!(ok(&m, &["for-each-ref"]), mirror_refs);
    assert!(
        !git(&m, &["cat-file", "-e", &a_commit]).0,
        "a's commit reached the mirror"
    );
    assert!(
        !git(&b.dir, &["cat-file", "-e", &a_commit]).0,
        "a's commit reached b"
    );
    assert_eq!(ok(&b.dir, &["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(b.dir.join("README.md")).unwrap(),
        "hello\n"
    );

    // Deleting A's workspace leaves the mirror and B whole.
    a.remove().await.unwrap();
    ok(&m, &["fsck", "--no-dangling", "--no-progress"]);
    ok(&b.dir, &["fsck", "--no-dangling", "--no-progress"]);
    assert_eq!(ok(&b.dir, &["rev-parse", "HEAD"]).trim(), head);

    // The next task gets a clean workspace from the mirror.
    let c = prepare_warm(&f, &g).await;
    assert_eq!(c.base_sha, head);
    assert_eq!(
        std::fs::read_to_string(c.dir.join("README.md")).unwrap(),
        "hello\n"
    );
    assert!(!git(&c.dir, &["cat-file", "-e", &a_commit]).0);
    ok(&c.dir, &["fsck", "--no-dangling", "--no-progress"]);
}

/// The remote's default branch changes under a warm mirror (a fetch never moves the mirror's
/// `HEAD`): renamed, it is learned at once, since the branch the mirror knew is gone; made
/// another existing branch, it is learned once the mirror's knowledge is older than it trusts.
#[tokio::test]
async fn a_task_without_a_base_starts_from_the_remote_s_default_branch_after_it_changes() {
    let (f, g, head) = warm_fixture().await;
    assert_eq!(prepare_warm(&f, &g).await.base_sha, head);
    let remote = f.server.repo_path("app");

    // GitHub's "rename branch": main becomes trunk, and the default with it.
    ok(&remote, &["branch", "-m", "main", "trunk"]);
    assert_eq!(ok(&remote, &["symbolic-ref", "HEAD"]).trim(), "refs/heads/trunk");
    let renamed = prepare_warm(&f, &g).await;
    assert_eq!(renamed.base_sha, head);
    assert_eq!(
        ok(&renamed.dir, &["symbolic-ref", "refs/remotes/origin/HEAD"]).trim(),
        "refs/remotes/origin/trunk"
    );

    // Another branch, with its own commit, made the default; trunk stays.
    let next = ok(
        &remote,
        &["commit-tree", "trunk^{tree}", "-p", "trunk", "-m", "on next"],
    );
    let next = next.trim().to_string();
    ok(&remote, &["branch", "next", &next]);
    ok(&remote, &["symbolic-ref", "HEAD", "refs/heads/next"]);
    assert_eq!(
        f.server.branch_sha("app", "trunk").as_deref(),
        Some(head.as_str())
    );
    // Within the time the mirror trusts what it learned, it starts from trunk still...
    assert_eq!(prepare_warm(&f, &g).await.base_sha, head);
    // ...and after it, from the new default.
    let stamp = mirror(&f).join("agentpool-head-checked");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stamp)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(prepare_warm(&f, &g).await.base_sha, next);
}
