//! After the run: commit what it changed, record the diff stat against the base, push the work
//! branch.

use std::ffi::OsString;

use agentpool_core::{FileChange, Redactor};
use tokio_util::sync::CancellationToken;

use super::Workspace;
use crate::git::{Git, GitError, RunOpts};

/// What the post-run step produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostRun {
    /// HEAD after the run, when it differs from the base.
    pub commit_sha: Option<String>,
    /// What the run changed against the base: the commit's files, or (neither committing nor
    /// pushing) the working tree's.
    pub files: Vec<FileChange>,
    pub pushed: bool,
    pub push_result: Option<String>,
    /// Whether the work branch is on the remote: pushed now, or already there when the
    /// workspace was made (a follow-up's, an earlier attempt's). A result names the branch
    /// only then, since a branch that is nowhere else is gone with the workspace.
    pub branch_on_remote: bool,
    /// Where the changes carry a secret of the task, when they do: they were not pushed.
    pub withheld: Option<String>,
}

/// How to commit what the run changed.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    pub message: String,
    pub author_name: String,
    pub author_email: String,
}

/// A step of [`finish`] failed; `done` holds what was done before it (a commit made and its
/// files, when the push is what failed), so that the failure can still say so.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct FinishError {
    pub error: GitError,
    pub done: PostRun,
}

/// Commit what the run changed (when `commit` is given), record the diff stat against the
/// base, and push the work branch (when `push`) unless what it would push carries one of
/// `secrets` (then [`PostRun::withheld`] says where). Asked to do neither, it still records
/// what the run changed in the working tree (a `--no-commit` task's result lists its files).
pub async fn finish(
    git: &Git,
    ws: &Workspace,
    commit: Option<&CommitOptions>,
    push: bool,
    secrets: &Redactor,
    cancel: &CancellationToken,
) -> Result<PostRun, FinishError> {
    let mut done = PostRun::default();
    match finish_into(git, ws, commit, push, secrets, cancel, &mut done).await {
        Ok(()) => Ok(done),
        Err(error) => {
            // A branch the remote had before names where earlier work is, pushed now or not;
            // a check that fails too (a cancel stops it as well) leaves it unnamed.
            if done.commit_sha.is_some() {
                done.branch_on_remote = remote_had_branch(git, ws, cancel).await.unwrap_or(false);
            }
            Err(FinishError { error, done })
        }
    }
}

/// [`finish`], recording each outcome in `out` as soon as it is known.
async fn finish_into(
    git: &Git,
    ws: &Workspace,
    commit: Option<&CommitOptions>,
    push: bool,
    secrets: &Redactor,
    cancel: &CancellationToken,
    out: &mut PostRun,
) -> Result<(), GitError> {
    // Undo whatever the run did to the repository's configuration before git runs with
    // credentials again.
    tokio::fs::copy(ws.task_dir.join("git-config.orig"), ws.dir.join(".git/config")).await?;
    let dir = &ws.dir;
    if let Some(c) = commit {
        git.run("add", dir, &["add", "--all"], cancel).await?;
        let unchanged = git
            .yes_no("diff", dir, &["diff", "--cached", "--quiet"], cancel)
            .await?;
        if !unchanged {
            let env = [
                ("GIT_AUTHOR_NAME", c.author_name.as_str()),
                ("GIT_AUTHOR_EMAIL", c.author_email.as_str()),
                ("GIT_COMMITTER_NAME", c.author_name.as_str()),
                ("GIT_COMMITTER_EMAIL", c.author_email.as_str()),
            ];
            git.run_opts(RunOpts {
                step: "commit",
                cwd: dir,
                args: &[
                    "commit".into(),
                    "--quiet".into(),
                    "--no-verify".into(),
                    "--no-gpg-sign".into(),
                    "--file=-".into(),
                ],
                stdin: Some(c.message.as_bytes()),
                extra_env: &env,
                local_source: false,
                ok_codes: &[0],
                cancel,
            })
            .await?;
        }
    }
    let head = git
        .run("rev-parse", dir, &["rev-parse", "--verify", "HEAD"], cancel)
        .await?
        .trim()
        .to_string();
    out.commit_sha = (head != ws.base_sha).then(|| head.clone());
    if commit.is_none() && !push {
        out.files = working_tree_changes(git, ws, cancel).await?;
    } else if out.commit_sha.is_some() {
        out.files = numstat(git, ws, &[head.as_str()], &[], cancel).await?;
    }
    if push && out.commit_sha.is_some() {
        out.withheld = super::leaks::find(git, ws, &head, secrets, cancel).await?;
    }
    if push && out.commit_sha.is_some() && out.withheld.is_none() {
        let refspec = format!("HEAD:refs/heads/{}", ws.branch.as_str());
        let stdout = git
            .run(
                "push",
                dir,
                &["push", "--porcelain", "--", ws.url.as_str(), refspec.as_str()],
                cancel,
            )
            .await?;
        out.pushed = true;
        out.push_result = Some(
            stdout
                .lines()
                .find(|l| l.contains(&format!("refs/heads/{}", ws.branch.as_str())))
                .map(|l| l.replace('\t', " ").trim().to_string())
                .unwrap_or_else(|| "pushed".to_string()),
        );
    }
    out.branch_on_remote = out.pushed || remote_had_branch(git, ws, cancel).await?;
    Ok(())
}

/// `git diff --numstat` of the base against `to` (a commit; none: the index), as file changes.
async fn numstat(
    git: &Git,
    ws: &Workspace,
    to: &[&str],
    env: &[(&str, &str)],
    cancel: &CancellationToken,
) -> Result<Vec<FileChange>, GitError> {
    let mut args: Vec<OsString> = ["diff", "--numstat", "-z", "--no-renames"]
        .iter()
        .map(OsString::from)
        .collect();
    if to.is_empty() {
        args.push("--cached".into());
    }
    args.push(ws.base_sha.as_str().into());
    args.extend(to.iter().map(OsString::from));
    args.push("--".into());
    let (_, out) = git
        .run_opts(RunOpts {
            step: "diff",
            cwd: &ws.dir,
            args: &args,
            stdin: None,
            extra_env: env,
            local_source: false,
            ok_codes: &[0],
            cancel,
        })
        .await?;
    Ok(parse_numstat_z(&out))
}

/// What the run changed against the base, committed or not, new files included — as a commit
/// of it would record them, without touching the workspace's own index: `git add --all` into
/// a copy of it (whose file stamps spare hashing the unchanged files), then its diff stat.
async fn working_tree_changes(
    git: &Git,
    ws: &Workspace,
    cancel: &CancellationToken,
) -> Result<Vec<FileChange>, GitError> {
    let index = ws.task_dir.join("status-index");
    match tokio::fs::copy(ws.dir.join(".git/index"), &index).await {
        // The run removed the index: git builds one from scratch.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => {
            other?;
        }
    }
    let index = index.to_string_lossy();
    let env = [("GIT_INDEX_FILE", index.as_ref())];
    git.run_opts(RunOpts {
        step: "add",
        cwd: &ws.dir,
        args: &["add".into(), "--all".into()],
        stdin: None,
        extra_env: &env,
        local_source: false,
        ok_codes: &[0],
        cancel,
    })
    .await?;
    numstat(git, ws, &[], &env, cancel).await
}

/// Whether the remote had the work branch when the workspace was made (its remote-tracking
/// ref, from the clone): then it is there to name although nothing was pushed now.
async fn remote_had_branch(git: &Git, ws: &Workspace, cancel: &CancellationToken) -> Result<bool, GitError> {
    let tracking = format!("refs/remotes/origin/{}", ws.branch.as_str());
    git.yes_no(
        "rev-parse",
        &ws.dir,
        &["rev-parse", "--verify", "--quiet", "--end-of-options", &tracking],
        cancel,
    )
    .await
}

/// Parse `git diff --numstat -z --no-renames`: `added\tremoved\tpath\0` per file, `-` counts
/// for binary files.
pub fn parse_numstat_z(s: &str) -> Vec<FileChange> {
    s.split('\0')
        .filter(|r| !r.trim().is_empty())
        .filter_map(|r| {
            let r = r.trim_start_matches('\n');
            let mut parts = r.splitn(3, '\t');
            let added = parts.next()?;
            let removed = parts.next()?;
            let path = parts.next()?;
            Some(FileChange {
                path: path.to_string(),
                added: added.parse().ok(),
                removed: removed.parse().ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_with_binary_files_and_odd_names_is_parsed() {
        let out = "3\t1\tsrc/a b.rs\0-\t-\timg.png\0\n10\t0\tnew\tfile.txt\0";
        let files = parse_numstat_z(out);
        assert_eq!(
            files,
            vec![
                FileChange {
                    path: "src/a b.rs".into(),
                    added: Some(3),
                    removed: Some(1)
                },
                FileChange {
                    path: "img.png".into(),
                    added: None,
                    removed: None
                },
                FileChange {
                    path: "new\tfile.txt".into(),
                    added: Some(10),
                    removed: Some(0)
                },
            ]
        );
    }
}
