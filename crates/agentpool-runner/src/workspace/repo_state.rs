//! What the run did to the repository itself, undone or refused before anything is committed
//! from it: a `.git` removed or replaced, the configuration and exclude file it rewrote, lock
//! files its git left behind, and a merge, rebase, cherry-pick or revert it left half done.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::Workspace;
use super::finish::FinishFault;
use crate::git::{Git, GitError};

/// Where [`super::prepare`] keeps the configuration as prepared.
pub(super) const SAVED_CONFIG: &str = "git-config.orig";
/// Where it keeps `.git/info/exclude` as prepared (absent when the clone had none).
pub(super) const SAVED_EXCLUDE: &str = "git-exclude.orig";

/// What a refusal adds: the run's work is not half committed.
const NOTHING_DONE: &str = "nothing was committed or pushed";

/// Fail unless the workspace's `.git` is still the repository the worker made: a directory,
/// with its `HEAD` and object store. A command that deleted it (or put a `gitdir:` file or a
/// link to another repository in its place) left nothing the worker can commit from — or
/// would commit into a repository it did not prepare — and that is the command's doing, not
/// a fault of git or of the worker.
pub(super) async fn check_git_dir(ws: &Workspace) -> Result<(), FinishFault> {
    let run_fault = |what: &str| {
        FinishFault::Run(format!(
            "the command {what}; {NOTHING_DONE} (a task must leave the workspace's .git in place)"
        ))
    };
    if !is_dir(&ws.dir).await {
        return Err(run_fault("removed the workspace's directory"));
    }
    let dot_git = ws.dir.join(".git");
    match tokio::fs::symlink_metadata(&dot_git).await {
        Err(_) => return Err(run_fault("removed the workspace's .git directory")),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(run_fault(
                "replaced the workspace's .git directory with a symbolic link",
            ));
        }
        Ok(m) if !m.is_dir() => {
            return Err(run_fault(
                "replaced the workspace's .git directory with a file (such as a `gitdir:` link to \
                 another repository)",
            ));
        }
        Ok(_) => {}
    }
    let head = tokio::fs::symlink_metadata(dot_git.join("HEAD")).await;
    if !head.is_ok_and(|m| m.is_file()) || !is_dir(&dot_git.join("objects")).await {
        return Err(run_fault(
            "removed or replaced the workspace's .git (its HEAD or its objects are gone)",
        ));
    }
    Ok(())
}

async fn is_dir(path: &Path) -> bool {
    tokio::fs::symlink_metadata(path).await.is_ok_and(|m| m.is_dir())
}

/// Put back `.git/config` and `.git/info/exclude` as they were prepared. The configuration,
/// because git runs with credentials next (a URL rewrite or a helper the run added would see
/// them); the exclude file, because an exclusion the run added (`*`) would hide its own work
/// from `git add` and the task would say "no changes".
pub(super) async fn restore(ws: &Workspace) -> Result<(), FinishFault> {
    let saved = |name: &str| ws.task_dir.join(name);
    let config = tokio::fs::read(saved(SAVED_CONFIG))
        .await
        .map_err(|e| restore_failed("the prepared git configuration could not be read", &e))?;
    put(ws, ".git/config", Some(&config)).await?;
    let exclude = match tokio::fs::read(saved(SAVED_EXCLUDE)).await {
        Ok(data) => Some(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(restore_failed("the prepared exclude file could not be read", &e)),
    };
    put(ws, ".git/info/exclude", exclude.as_deref()).await
}

/// Remove the lock files that the commit and push would need and that the run's own git left
/// behind (an agent killed in the middle of `git add`, a tool's git that crashed), and name
/// them. Every process of the run has ended by now ([`crate::process`] returns only then), so
/// no git of the run holds them: they are stale, and without this the commit would fail
/// `GIT_ERROR` and the whole attempt would run again for a file. One that cannot be removed
/// (a directory in its place) is left for git to report.
pub(super) async fn clear_stale_locks(ws: &Workspace) -> Vec<String> {
    let branch_lock = format!("refs/heads/{}.lock", ws.branch.as_str());
    let mut removed = Vec::new();
    for name in [
        "index.lock",
        "HEAD.lock",
        "packed-refs.lock",
        branch_lock.as_str(),
    ] {
        let path = ws.dir.join(".git").join(name);
        let is_file = tokio::fs::symlink_metadata(&path)
            .await
            .is_ok_and(|m| !m.is_dir());
        if is_file && tokio::fs::remove_file(&path).await.is_ok() {
            removed.push(format!(".git/{name}"));
        }
    }
    removed
}

fn restore_failed(what: &str, e: &std::io::Error) -> FinishFault {
    FinishFault::Git(GitError::Failed {
        step: "restore",
        message: format!("{what}: {e}"),
    })
}

/// Write `data` at `name` in the workspace (none: remove what is there), as a new file: what
/// the run left there (a link pointing outside, say) is removed, not written through. What
/// stands in the way is the run's doing.
async fn put(ws: &Workspace, name: &str, data: Option<&[u8]>) -> Result<(), FinishFault> {
    let path = ws.dir.join(name);
    let path = path.as_path();
    let stuck = |e: std::io::Error| {
        FinishFault::Run(format!(
            "the command left {name} so that the worker cannot restore it ({e}); {NOTHING_DONE}"
        ))
    };
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(stuck(e)),
        _ => {}
    }
    let Some(data) = data else {
        return Ok(());
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(stuck)?;
    }
    tokio::fs::write(path, data).await.map_err(stuck)
}

/// Operations git leaves half done, by the file or directory in `.git` that marks them.
const OPERATIONS: [(&str, &str); 5] = [
    ("MERGE_HEAD", "a merge"),
    ("rebase-merge", "a rebase"),
    ("rebase-apply", "a rebase (or `git am`)"),
    ("CHERRY_PICK_HEAD", "a cherry-pick"),
    ("REVERT_HEAD", "a revert"),
];

/// At most this many conflicted paths are named.
const NAMED_PATHS: usize = 5;

/// Why nothing may be committed from the repository as the run left it, when it is mid-merge
/// (or mid-rebase, cherry-pick, revert) or has unmerged paths: `git add --all` would take the
/// files with their conflict markers as resolved and the commit would push them.
pub(super) async fn unfinished(
    git: &Git,
    ws: &Workspace,
    cancel: &CancellationToken,
) -> Result<Option<String>, GitError> {
    let dot_git = ws.dir.join(".git");
    let mut operation = None;
    for (marker, what) in OPERATIONS {
        if tokio::fs::symlink_metadata(dot_git.join(marker)).await.is_ok() {
            operation = Some((marker, what));
            break;
        }
    }
    let unmerged = git
        .run("ls-files", &ws.dir, &["ls-files", "--unmerged", "-z"], cancel)
        .await?;
    Ok(refusal(operation, &unmerged_paths(&unmerged)))
}

/// The paths of `git ls-files --unmerged -z` (`mode sha stage\tpath\0`, a line per stage),
/// each once, in order.
fn unmerged_paths(out: &str) -> Vec<&str> {
    let mut paths: Vec<&str> = Vec::new();
    for path in out.split('\0').filter_map(|r| r.split_once('\t').map(|(_, p)| p)) {
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths
}

/// The failure message for an operation in progress and conflicted paths, if either.
fn refusal(operation: Option<(&str, &str)>, paths: &[&str]) -> Option<String> {
    let mut named = paths
        .iter()
        .take(NAMED_PATHS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > NAMED_PATHS {
        named.push_str(&format!(" and {} more", paths.len() - NAMED_PATHS));
    }
    Some(match (operation, paths.is_empty()) {
        (None, true) => return None,
        (Some((marker, what)), true) => format!(
            "the command left {what} in progress (.git/{marker}); {NOTHING_DONE}: finish it or \
             abort it before the command ends"
        ),
        (Some((_, what)), false) => format!(
            "the command left {what} in progress with unresolved conflicts in {named}; \
             {NOTHING_DONE}: resolve them and finish the operation (or abort it) before the \
             command ends"
        ),
        (None, false) => format!(
            "the command left unresolved conflicts in {named}; {NOTHING_DONE}: resolve them \
             before the command ends"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicted_paths_are_named_once_each_and_the_operation_too() {
        let out = "100644 aaa 1\tREADME.md\x00100644 bbb 2\tREADME.md\x00100644 ccc 3\tREADME.md\0\
                   100644 ddd 2\tsrc/a b.rs\0";
        let paths = unmerged_paths(out);
        assert_eq!(paths, vec!["README.md", "src/a b.rs"]);
        let merge = Some(("MERGE_HEAD", "a merge"));
        let said = refusal(merge, &paths).unwrap();
        assert!(
            said.starts_with(
                "the command left a merge in progress with unresolved conflicts in README.md, src/a b.rs; \
                 nothing was committed or pushed"
            ),
            "{said}"
        );
        let said = refusal(merge, &[]).unwrap();
        assert!(said.contains("a merge in progress (.git/MERGE_HEAD)"), "{said}");
        let many: Vec<String> = (0..7).map(|i| format!("f{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let said = refusal(None, &many).unwrap();
        assert!(said.contains("in f0, f1, f2, f3, f4 and 2 more;"), "{said}");
        assert_eq!(refusal(None, &[]), None);
    }
}
