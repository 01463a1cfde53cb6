//! The git workspace against a real smart-HTTP server with basic auth: cold and warm clones,
//! work branch, commit and push, and authentication failures that never leak the token.

use std::time::Duration;

use agentpool_core::Redactor;
use agentpool_core::{BranchName, RepoUrl, TaskId};
use agentpool_runner::git::{AskPass, Git, GitCredentials, GitError, GitOptions, Secret};
use agentpool_runner::workspace::{
    CommitOptions, MirrorLocks, PrepareRequest, Workspace, WorkspaceConfig, WorkspaceError, finish, prepare,
};
use agentpool_testkit::git::{GIT_USER, GitServer};
use tokio_util::sync::CancellationToken;

pub struct Fixture {
    pub server: GitServer,
    pub dir: tempfile::TempDir,
}

pub const TOKEN: &str = "s3cret-token-0123456789";

/// A git server taking `token`, with repo `app` of two commits (README.md, then src/lib.rs).
pub async fn app_server(token: &str) -> GitServer {
    let server = GitServer::start(token).await.unwrap();
    server
        .create_repo(
            "app",
            &[&[("README.md", "hello\n")], &[("src/lib.rs", "fn a() {}\n")]],
        )
        .unwrap();
    server
}

pub async fn fixture() -> Fixture {
    Fixture {
        server: app_server(TOKEN).await,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Fixture {
    /// Prepare a workspace of repository `app` at `base_ref` for a new task: warm through the
    /// fixture's mirror directory, or (`mirror` false) a cold clone.
    pub async fn prepare(
        &self,
        git: &Git,
        mirror: bool,
        base_ref: Option<&str>,
    ) -> Result<Workspace, WorkspaceError> {
        let url = RepoUrl::parse(&self.server.url("app"), false).unwrap();
        let task_id = TaskId::new();
        let cfg = WorkspaceConfig {
            root: self.dir.path().join("tasks"),
            mirror_dir: mirror.then(|| self.dir.path().join("mirrors")),
        };
        let req = PrepareRequest {
            task_id,
            url: &url,
            base_ref,
            branch: &BranchName::for_task(task_id),
            own_branch: Some(None),
        };
        prepare(git, &cfg, &MirrorLocks::default(), req, &CancellationToken::new()).await
    }
}

pub fn git_with(dir: &std::path::Path, token: &str) -> Git {
    let creds = GitCredentials {
        username: GIT_USER.into(),
        token: Secret::new(token),
    };
    let askpass = AskPass::install(&dir.join("askpass"), &creds).unwrap();
    std::fs::create_dir_all(dir.join("git-home")).unwrap();
    Git::new(GitOptions {
        home: dir.join("git-home"),
        askpass: Some(askpass),
        allow_file: false,
        timeout: Duration::from_secs(60),
        redactor: Redactor::new([token]),
    })
}

pub fn commit_opts() -> CommitOptions {
    CommitOptions {
        message: "agentpool: edit".into(),
        author_name: "Agent Pool".into(),
        author_email: "bot@agentpool.test".into(),
    }
}

async fn edit_commit_push(f: &Fixture, mirror: bool) {
    let git = git_with(f.dir.path(), TOKEN);
    let cancel = CancellationToken::new();
    let ws = f.prepare(&git, mirror, Some("main")).await.unwrap();
    let branch = &ws.branch;
    assert_eq!(ws.warm, mirror);
    std::fs::write(ws.dir.join("README.md"), "hello\nworld\n").unwrap();
    std::fs::write(ws.dir.join("new.txt"), "a\nb\nc\n").unwrap();
    let post = finish(
        &git,
        &ws,
        Some(&commit_opts()),
        true,
        &agentpool_core::Redactor::default(),
        &cancel,
    )
    .await
    .unwrap();
    let sha = post.commit_sha.clone().unwrap();
    assert!(post.pushed);
    assert_eq!(f.server.branch_sha("app", branch.as_str()), Some(sha.clone()));
    let mut files = post.files.clone();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(files.len(), 2);
    assert_eq!(
        (files[0].path.as_str(), files[0].added, files[0].removed),
        ("README.md", Some(1), Some(0))
    );
    assert_eq!(
        (files[1].path.as_str(), files[1].added, files[1].removed),
        ("new.txt", Some(3), Some(0))
    );
    let (author, msg) = f.server.commit_info("app", &sha).unwrap();
    assert_eq!(author, "Agent Pool <bot@agentpool.test>");
    assert_eq!(msg, "agentpool: edit");
    ws.remove().await.unwrap();
}

#[tokio::test]
async fn cold_clone_commit_and_push_reach_the_remote() {
    let f = fixture().await;
    edit_commit_push(&f, false).await;
}

#[tokio::test]
async fn warm_mirror_clone_commit_and_push_reach_the_remote() {
    let f = fixture().await;
    edit_commit_push(&f, true).await;
    // Second task: the mirror exists and is only fetched.
    edit_commit_push(&f, true).await;
    assert_eq!(
        std::fs::read_dir(f.dir.path().join("mirrors"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "git"))
            .count(),
        1,
        "one mirror, reused"
    );
}

#[tokio::test]
async fn wrong_token_is_an_auth_failure_and_never_shows_the_token() {
    let f = fixture().await;
    let wrong = "wrong-token-value-98765";
    let git = git_with(f.dir.path(), wrong);
    let err = f.prepare(&git, false, None).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(err, WorkspaceError::Git(GitError::Auth { .. })),
        "{text}"
    );
    assert!(!text.contains(wrong) && !text.contains(TOKEN), "{text}");
    let (_, refused) = f.server.request_counts();
    assert!(refused >= 1);
}

#[tokio::test]
async fn unknown_base_ref_is_a_bad_ref() {
    let f = fixture().await;
    let git = git_with(f.dir.path(), TOKEN);
    let err = f.prepare(&git, false, Some("no-such-branch")).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::BadRef(_)), "{err}");
}

/// A remote whose `HEAD` names a branch it does not have: no default branch, and the error
/// says which branches there are to name as the base instead — cold and warm alike.
#[tokio::test]
async fn a_remote_head_naming_a_missing_branch_is_a_bad_ref_that_lists_the_branches() {
    let f = fixture().await;
    let git = git_with(f.dir.path(), TOKEN);
    agentpool_testkit::git::git(
        &f.server.repo_path("app"),
        &["symbolic-ref", "HEAD", "refs/heads/master"],
    );
    for mirror in [false, true] {
        let err = f.prepare(&git, mirror, None).await.unwrap_err();
        let WorkspaceError::BadRef(why) = &err else {
            panic!("{err}");
        };
        assert!(
            why.contains("HEAD names a branch it does not have") && why.ends_with("(it has main)"),
            "{why}"
        );
        // Named as the base, the branch it has works.
        f.prepare(&git, mirror, Some("main"))
            .await
            .unwrap()
            .remove()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn concurrent_tasks_on_one_mirror_take_turns_and_all_succeed() {
    // Shared by the spawned tasks.
    let f = std::sync::Arc::new(fixture().await);
    // Separate lock tables, as separate worker processes would have: only the file lock on
    // the mirror keeps their fetches apart.
    let runs = (0..4).map(|i| {
        let git = git_with(&f.dir.path().join(format!("worker-{i}")), TOKEN);
        let f = f.clone();
        async move { f.prepare(&git, true, None).await }
    });
    for ws in futures_join_all(runs).await {
        let ws = ws.unwrap();
        assert!(ws.warm);
        assert!(ws.dir.join("README.md").exists());
    }
}

async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// The work branch starts where the task says, whatever form the base takes: the default
/// branch, a branch (plain or `refs/heads/`), an annotated tag, or a commit id.
#[tokio::test]
async fn work_branch_starts_at_the_base_in_every_form() {
    let f = fixture().await;
    let first = f.server.branch_sha("app", "main").unwrap();
    f.server.add_commit("app", "second", &[("b.txt", "b\n")]).unwrap();
    let head = f.server.branch_sha("app", "main").unwrap();
    let repo = f.server.repo_path("app");
    let tag = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "tag",
            "-a",
            "v1",
            "-m",
            "v1",
            &first,
        ])
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(tag.success());
    let git = git_with(f.dir.path(), TOKEN);
    for (mirror, base, want) in [
        (false, None, &head),
        (true, None, &head),
        (true, Some("main"), &head),
        (true, Some("refs/heads/main"), &head),
        (true, Some("v1"), &first),
        (false, Some("v1"), &first),
        (true, Some(first.as_str()), &first),
    ] {
        let ws = f.prepare(&git, mirror, base).await.unwrap();
        assert_eq!(&ws.base_sha, want, "base {base:?} (mirror: {mirror})");
        ws.remove().await.unwrap();
    }
}
