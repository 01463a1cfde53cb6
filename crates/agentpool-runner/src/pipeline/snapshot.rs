//! The tree a workspace holds, untracked files included, written without touching its index
//! or HEAD: how the pipeline sees whether the checks changed the work they passed on.

use tokio_util::sync::CancellationToken;

use crate::git::{Git, GitError};
use crate::workspace::{Workspace, scratch_index};

/// The id of the tree of what a commit would hold now: every file git would add (tracked or
/// not, ignored ones left out), written from a scratch index; the repository's own index is
/// left as the agent left it.
pub(super) async fn worktree_tree(
    git: &Git,
    ws: &Workspace,
    cancel: &CancellationToken,
) -> Result<String, GitError> {
    let tree = async {
        let index = scratch_index(git, ws, "snapshot.index", cancel).await?;
        let env = [("GIT_INDEX_FILE", index.as_str())];
        git.run_env("write-tree", &ws.dir, &["write-tree"], &env, cancel)
            .await
    }
    .await;
    let _ = tokio::fs::remove_file(ws.task_dir.join("snapshot.index")).await;
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
