//! Git repositories the run made inside the workspace (a scaffolder's `git init`), turned
//! into ordinary files before `git add --all`: added as they are, each would become a gitlink
//! to a commit that exists nowhere but in the discarded workspace (its files lost), or fail
//! the add when it has no commit yet. Submodules the base commit already had, and those the
//! run declared in `.gitmodules`, are left as they are.

use std::collections::HashSet;
use std::ffi::OsString;

use tokio_util::sync::CancellationToken;

use super::Workspace;
use super::finish::FinishFault;
use crate::git::{Git, GitError, RunOpts};

/// The mode of a gitlink (a submodule's commit) in a tree or the index.
const GITLINK: &str = "160000";

/// Turn every nested repository of the working tree that is not a kept submodule into a
/// plain directory: its `.git` removed (the workspace is discarded afterwards), its gitlink,
/// if the index had one, taken out of the index so that `git add --all` adds its files.
/// Returns the directories so treated (`app/`), for the task's log.
pub(super) async fn flatten(
    git: &Git,
    ws: &Workspace,
    cancel: &CancellationToken,
) -> Result<Vec<String>, FinishFault> {
    let mut kept = base_gitlinks(git, ws, cancel).await?;
    kept.extend(declared_submodules(git, ws, cancel).await?);
    let mut flattened: Vec<String> = Vec::new();
    // A repository inside a flattened one shows only once the outer `.git` is gone: look again
    // until a look finds nothing new.
    loop {
        let untracked = git
            .run(
                "ls-files",
                &ws.dir,
                &["ls-files", "--others", "--exclude-standard", "-z"],
                cancel,
            )
            .await?;
        let staged = git
            .run("ls-files", &ws.dir, &["ls-files", "--stage", "-z"], cancel)
            .await?;
        let found: Vec<String> = nested_untracked(&untracked)
            .into_iter()
            .chain(gitlinks(&staged).into_iter().filter(|p| !kept.contains(*p)))
            .map(|p| p.trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty() && !flattened.iter().any(|f| f == p))
            .collect();
        if found.is_empty() {
            break;
        }
        for path in found {
            remove_git_dir(ws, &path).await?;
            let (args, env) = unstage_args(&path);
            git.run_env("rm", &ws.dir, &args, &env, cancel).await?;
            flattened.push(path);
        }
    }
    Ok(flattened.into_iter().map(|p| format!("{p}/")).collect())
}

/// `git rm --cached` of exactly `path` (no glob), quietly, whether the index has it or not.
fn unstage_args(path: &str) -> (Vec<OsString>, [(&'static str, &'static str); 1]) {
    let args = ["rm", "--cached", "-r", "-q", "--ignore-unmatch", "--", path]
        .iter()
        .map(OsString::from)
        .collect();
    (args, [("GIT_LITERAL_PATHSPECS", "1")])
}

/// Remove `path/.git` (a directory, or a `gitdir:` file), not following a link.
async fn remove_git_dir(ws: &Workspace, path: &str) -> Result<(), FinishFault> {
    let dot_git = ws.dir.join(path).join(".git");
    let removed = match tokio::fs::symlink_metadata(&dot_git).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(&dot_git).await,
        Ok(_) => tokio::fs::remove_file(&dot_git).await,
    };
    removed.map_err(|e| {
        FinishFault::Run(format!(
            "{path}/ is a git repository of its own, and its .git could not be removed to commit \
             its files ({e}); nothing was committed or pushed"
        ))
    })
}

/// The submodules of the base commit: gitlinks in its tree.
async fn base_gitlinks(
    git: &Git,
    ws: &Workspace,
    cancel: &CancellationToken,
) -> Result<HashSet<String>, GitError> {
    let tree = git
        .run(
            "ls-tree",
            &ws.dir,
            &["ls-tree", "-r", "-z", "--full-tree", ws.base_sha.as_str()],
            cancel,
        )
        .await?;
    Ok(gitlinks(&tree).into_iter().map(str::to_string).collect())
}

/// The paths `.gitmodules` of the working tree declares submodules at: a submodule the run
/// added on purpose (`git submodule add`) is one, its commit on its own remote.
async fn declared_submodules(
    git: &Git,
    ws: &Workspace,
    cancel: &CancellationToken,
) -> Result<HashSet<String>, GitError> {
    let (code, out) = git
        .run_opts(RunOpts {
            step: "config",
            cwd: &ws.dir,
            args: &[
                "config".into(),
                "-z".into(),
                "--file".into(),
                ".gitmodules".into(),
                "--get-regexp".into(),
                r"^submodule\..*\.path$".into(),
            ],
            stdin: None,
            extra_env: &[],
            local_source: false,
            // None declared (1), or no file git can read as one (3): no submodule is kept.
            ok_codes: &[0, 1, 3],
            cancel,
        })
        .await?;
    Ok(if code == 0 {
        out.split('\0')
            .filter_map(|r| {
                r.split_once('\n')
                    .map(|(_, p)| p.trim_end_matches('/').to_string())
            })
            .filter(|p| !p.is_empty())
            .collect()
    } else {
        HashSet::new()
    })
}

/// The nested repositories among `git ls-files --others -z`: it lists one as its directory,
/// with a trailing slash, instead of its files.
fn nested_untracked(out: &str) -> Vec<&str> {
    out.split('\0').filter(|p| p.ends_with('/')).collect()
}

/// The gitlink paths of `git ls-tree -r -z` (`mode type sha\tpath`) or `git ls-files --stage
/// -z` (`mode sha stage\tpath`) output.
fn gitlinks(out: &str) -> Vec<&str> {
    out.split('\0')
        .filter_map(|r| {
            let (meta, path) = r.split_once('\t')?;
            meta.starts_with(GITLINK).then_some(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlinks_and_nested_repositories_are_read_from_git_s_listings() {
        let tree = "100644 blob aaa\tREADME.md\x00160000 commit bbb\tlib/sub\x00040000 tree ccc\tsrc\0";
        assert_eq!(gitlinks(tree), vec!["lib/sub"]);
        let index = "100644 aaa 0\tREADME.md\x00160000 bbb 0\tapp\0";
        assert_eq!(gitlinks(index), vec!["app"]);
        let others = "new.txt\0app/\0deep/er/repo/\0odd\tname\0";
        assert_eq!(nested_untracked(others), vec!["app/", "deep/er/repo/"]);
    }
}
