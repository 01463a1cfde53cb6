//! The tree a workspace holds, untracked files included, written without touching its index
//! or HEAD: how the pipeline sees whether the checks changed the work they passed on.

use std::ffi::OsString;

use tokio_util::sync::CancellationToken;

use crate::git::{Git, GitError, RunOpts};
use crate::workspace::Workspace;

/// The id of the tree of what a commit would hold now: every file git would add (tracked or
/// not, ignored ones left out). It is written with a scratch index beside the checkout, seeded
/// from the real one so that unchanged files are not read again; the repository's own index
/// is left as the agent left it.
pub(super) async fn worktree_tree(
    git: &Git,
    ws: &Workspace,
    cancel: &CancellationToken,
) -> Result<String, GitError> {
    let scratch = ws.task_dir.join("snapshot.index");
    let real = ws.dir.join(".git").join("index");
    match tokio::fs::copy(&real, &scratch).await {
        Ok(_) => {}
        // A repository with nothing staged yet has no index: start from none.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = tokio::fs::remove_file(&scratch).await;
        }
        Err(e) => return Err(GitError::Io(e)),
    }
    let index = scratch.to_string_lossy().into_owned();
    let env = [("GIT_INDEX_FILE", index.as_str())];
    let run = |step: &'static str, args: &'static [&'static str]| {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let env = &env;
        let dir = &ws.dir;
        async move {
            git.run_opts(RunOpts {
                step,
                cwd: dir,
                args: &args,
                stdin: None,
                extra_env: env,
                local_source: false,
                ok_codes: &[0],
                cancel,
            })
            .await
            .map(|(_, out)| out)
        }
    };
    let tree = async {
        run("add (snapshot)", &["add", "--all"]).await?;
        run("write-tree", &["write-tree"]).await
    }
    .await;
    let _ = tokio::fs::remove_file(&scratch).await;
    Ok(tree?.trim().to_string())
}

/// The paths that differ between two trees of [`worktree_tree`].
pub(super) async fn changed_paths(
    git: &Git,
    ws: &Workspace,
    from: &str,
    to: &str,
    cancel: &CancellationToken,
) -> Result<Vec<String>, GitError> {
    let out = git
        .run(
            "diff (snapshot)",
            &ws.dir,
            &["diff", "--name-only", "--no-renames", "-z", from, to],
            cancel,
        )
        .await?;
    // The captured output ends in a line feed of its own after the last NUL.
    Ok(out
        .split('\0')
        .filter(|p| !p.is_empty() && *p != "\n")
        .map(str::to_string)
        .collect())
}
