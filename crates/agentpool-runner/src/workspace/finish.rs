//! After the run: commit what it changed, record the diff stat against the base, push the work
//! branch.

use std::ffi::OsString;

use agentpool_core::{FileChange, FileStatus, Redactor};
use tokio_util::sync::CancellationToken;

use super::remote::RemoteBranch;
use super::{Workspace, repo_state};
use crate::git::{Git, GitError, RunOpts};

/// What the post-run step produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostRun {
    /// The new HEAD, when the run (or the commit made of its changes) added commits to the
    /// base: a HEAD merely moved to a commit the repository already had is no commit of the
    /// task's.
    pub commit_sha: Option<String>,
    /// What the run changed against the base: the commit's files, or (neither committing nor
    /// pushing) the working tree's.
    pub files: Vec<FileChange>,
    pub pushed: bool,
    pub push_result: Option<String>,
    /// Whether the work branch is on the remote: pushed now, or already there when the
    /// workspace was made (a follow-up's, an earlier attempt's), or found there after a push
    /// that did not end cleanly. A result names the branch only then, since a branch that is
    /// nowhere else is gone with the workspace.
    pub branch_on_remote: bool,
    /// Where the changes carry a secret of the task, when they do: they were not pushed.
    pub withheld: Option<String>,
    /// After a push that did not end cleanly, why the remote could not be asked whether it
    /// took the push: then nobody knows whether the commit is on the remote.
    pub remote_unknown: Option<String>,
    /// What the task's log should say about how its work was committed (a nested repository
    /// committed as files, work left in `git stash`).
    pub notes: Vec<String>,
}

/// How to commit what the run changed.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    pub message: String,
    pub author_name: String,
    pub author_email: String,
}

/// Why [`finish`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum FinishFault {
    #[error(transparent)]
    Git(#[from] GitError),
    /// The run left the workspace so that nothing can be committed from it as it is (its
    /// `.git` removed or replaced, a merge with conflicts half done): the run's own doing, as
    /// when the command fails, not a fault of git or of the worker.
    #[error("{0}")]
    Run(String),
}

/// A step of [`finish`] failed; `done` holds what was done before it (a commit made and its
/// files, when the push is what failed), so that the failure can still say so.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct FinishError {
    pub error: FinishFault,
    pub done: PostRun,
}

/// Commit what the run changed (when `commit` is given), record the diff stat against the
/// base, and push the work branch (when `push`) unless what it would push carries one of
/// `secrets` (then [`PostRun::withheld`] says where). Asked to do neither, it still records
/// what the run changed in the working tree (a `--no-commit` task's result lists its files).
///
/// Failure messages show the workspace as `<workspace>`, never its private path.
pub async fn finish(
    git: &Git,
    ws: &Workspace,
    commit: Option<&CommitOptions>,
    push: bool,
    secrets: &Redactor,
    cancel: &CancellationToken,
) -> Result<PostRun, FinishError> {
    let git = &git
        .clone()
        .hiding_path(&ws.dir, "<workspace>")
        .hiding_path(&ws.task_dir, "<task dir>");
    let mut done = PostRun::default();
    let mut pushing = None;
    let error = match finish_into(git, ws, commit, push, secrets, cancel, &mut done, &mut pushing).await {
        Ok(()) => return Ok(done),
        Err(error) => error,
    };
    let interrupted = matches!(
        error,
        FinishFault::Git(GitError::Canceled { .. } | GitError::Timeout { .. } | GitError::Failed { .. })
    );
    match pushing {
        // The push may have landed before it was cut short: the remote says.
        Some(head) if interrupted => {
            match super::remote::ask(git, ws).await {
                RemoteBranch::At(sha) => {
                    done.branch_on_remote = true;
                    if sha == head {
                        done.pushed = true;
                        let said = format!(
                            "pushed: the remote has the branch at {} although git push did not end \
                             cleanly ({error})",
                            short(&sha)
                        );
                        done.notes.push(said.clone());
                        done.push_result = Some(said);
                        // It did what it was for; only a cancel still ends the attempt.
                        if !matches!(error, FinishFault::Git(GitError::Canceled { .. })) {
                            return Ok(done);
                        }
                    }
                }
                RemoteBranch::Absent => done.branch_on_remote = false,
                RemoteBranch::Unknown(why) => {
                    // Whatever the push did, it did not delete a branch the remote had.
                    done.branch_on_remote = ws.remote_branch.is_some();
                    done.remote_unknown = Some(why);
                }
            }
        }
        // A branch the remote had before names where earlier work is, pushed now or not.
        _ if done.commit_sha.is_some() => {
            done.branch_on_remote = ws.remote_branch.is_some();
        }
        _ => {}
    }
    Err(FinishError { error, done })
}

/// [`finish`], recording each outcome in `out` as soon as it is known, and in `pushing` the
/// commit while it is being pushed.
#[allow(clippy::too_many_arguments)]
async fn finish_into(
    git: &Git,
    ws: &Workspace,
    commit: Option<&CommitOptions>,
    push: bool,
    secrets: &Redactor,
    cancel: &CancellationToken,
    out: &mut PostRun,
    pushing: &mut Option<String>,
) -> Result<(), FinishFault> {
    let dir = &ws.dir;
    repo_state::check_git_dir(ws).await?;
    // Undo whatever the run did to the repository's configuration (before git runs with
    // credentials again) and to its excludes (before `git add` reads them).
    repo_state::restore(ws).await?;
    let locks = repo_state::clear_stale_locks(ws).await;
    if !locks.is_empty() {
        out.notes.push(format!(
            "removed {}, which the run's git left behind (nothing of the run is still running)",
            locks.join(", ")
        ));
    }
    if (commit.is_some() || push)
        && let Some(why) = repo_state::unfinished(git, ws, cancel).await?
    {
        return Err(FinishFault::Run(why));
    }
    if commit.is_some() || !push {
        let verb = if commit.is_some() { "committed" } else { "listed" };
        for repo in super::nested::flatten(git, ws, cancel).await? {
            out.notes.push(format!(
                "{repo} was a git repository of its own; its files were {verb} as ordinary files, \
                 not its history"
            ));
        }
    }
    if let Some(c) = commit {
        commit_changes(git, ws, c, cancel).await?;
    }
    let head = git
        .run("rev-parse", dir, &["rev-parse", "--verify", "HEAD"], cancel)
        .await?
        .trim()
        .to_string();
    let range = format!("{}..{head}", ws.base_sha);
    let new_commits = git
        .run(
            "rev-list",
            dir,
            &["rev-list", "--count", range.as_str(), "--"],
            cancel,
        )
        .await?;
    out.commit_sha = (new_commits.trim() != "0").then(|| head.clone());
    if out.commit_sha.is_none() {
        nothing_committed(git, ws, &head, push, out).await?;
    }
    if commit.is_none() && !push {
        out.files = working_tree_changes(git, ws, cancel).await?;
    } else if out.commit_sha.is_some() {
        out.files = diff_files(git, ws, &[head.as_str()], &[], cancel).await?;
    }
    if push && out.commit_sha.is_some() {
        out.withheld = super::leaks::find(git, ws, &head, secrets, cancel).await?;
    }
    if push && out.commit_sha.is_some() && out.withheld.is_none() {
        let refspec = format!("HEAD:refs/heads/{}", ws.branch.as_str());
        let mut args = vec!["push".to_string(), "--porcelain".to_string()];
        // A lost attempt's commit is replaced only while the branch is still at it.
        if let Some(lost) = &ws.replaces {
            args.push(format!(
                "--force-with-lease=refs/heads/{}:{lost}",
                ws.branch.as_str()
            ));
        }
        args.extend(["--".to_string(), ws.url.to_string(), refspec]);
        *pushing = Some(head.clone());
        let stdout = git.run("push", dir, &args, cancel).await?;
        *pushing = None;
        out.pushed = true;
        out.push_result = Some(
            stdout
                .lines()
                .find(|l| l.contains(&format!("refs/heads/{}", ws.branch.as_str())))
                .map(|l| l.replace('\t', " ").trim().to_string())
                .unwrap_or_else(|| "pushed".to_string()),
        );
    }
    out.branch_on_remote = out.pushed || ws.remote_branch.is_some();
    Ok(())
}

/// `git add --all` and, when that staged anything, a commit of it.
async fn commit_changes(
    git: &Git,
    ws: &Workspace,
    c: &CommitOptions,
    cancel: &CancellationToken,
) -> Result<(), GitError> {
    let dir = &ws.dir;
    git.run("add", dir, &["add", "--all"], cancel).await?;
    let unchanged = git
        .yes_no("diff", dir, &["diff", "--cached", "--quiet"], cancel)
        .await?;
    if unchanged {
        return Ok(());
    }
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
    Ok(())
}

/// Say what there is to push when the run left no new commit: nothing, though HEAD moved (to
/// a commit the repository already had: `git reset --hard HEAD~1`) or work sits in `git
/// stash` (which no push takes along). When the work branch was on the remote already and the
/// run started from it (a retry after a push that landed, a follow-up), the result says the
/// branch has it, rather than let "no commit" suggest that nothing is there.
async fn nothing_committed(
    git: &Git,
    ws: &Workspace,
    head: &str,
    push: bool,
    out: &mut PostRun,
) -> Result<(), GitError> {
    if push && head == ws.base_sha && ws.remote_branch.as_deref() == Some(head) {
        out.push_result = Some(format!(
            "nothing new to push: the work branch is on the remote at {} already",
            short(head)
        ));
    }
    if head != ws.base_sha {
        let said = format!(
            "nothing new to push: the command moved HEAD from {} to {}, a commit the repository \
             already had, and made no new commit",
            short(&ws.base_sha),
            short(head)
        );
        out.notes.push(said.clone());
        out.push_result = Some(said);
    }
    // A local look, answered also after a cancel: the warning is for the result either way.
    let stashed = git
        .yes_no(
            "rev-parse",
            &ws.dir,
            &["rev-parse", "--verify", "--quiet", "refs/stash"],
            &CancellationToken::new(),
        )
        .await?;
    if stashed {
        let said = "the command left work in git stash; stashes are not pushed";
        out.notes.push(said.to_string());
        out.push_result
            .get_or_insert_with(|| format!("nothing pushed: {said}"));
    }
    Ok(())
}

/// The short form of a commit id, as messages show it.
fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The files changed from the base to `to` (a commit; none: the index), with their counts,
/// status and mode change: `git diff --raw --numstat` read by [`parse_diff_z`].
async fn diff_files(
    git: &Git,
    ws: &Workspace,
    to: &[&str],
    env: &[(&str, &str)],
    cancel: &CancellationToken,
) -> Result<Vec<FileChange>, GitError> {
    let mut args: Vec<OsString> = ["diff", "--raw", "--numstat", "-z", "--no-renames"]
        .iter()
        .map(OsString::from)
        .collect();
    if to.is_empty() {
        args.push("--cached".into());
    }
    args.push(ws.base_sha.as_str().into());
    args.extend(to.iter().map(OsString::from));
    args.push("--".into());
    let out = git.run_env("diff", &ws.dir, &args, env, cancel).await?;
    Ok(parse_diff_z(&out))
}

/// What the run changed against the base, committed or not, new files included — as a commit
/// of it would record them, without touching the workspace's own index (see
/// [`scratch_index`]), then its diff stat.
async fn working_tree_changes(
    git: &Git,
    ws: &Workspace,
    cancel: &CancellationToken,
) -> Result<Vec<FileChange>, GitError> {
    let index = scratch_index(git, ws, "status-index", cancel).await?;
    diff_files(git, ws, &[], &[("GIT_INDEX_FILE", index.as_str())], cancel).await
}

/// Everything a commit would take now (`git add --all`: tracked and untracked files, ignored
/// ones left out) in an index of its own named `name` beside the checkout, leaving the
/// workspace's index as the run left it; returns its path, for `GIT_INDEX_FILE`. It starts as
/// a copy of the workspace's index, whose file stamps spare hashing the unchanged files.
pub(crate) async fn scratch_index(
    git: &Git,
    ws: &Workspace,
    name: &str,
    cancel: &CancellationToken,
) -> Result<String, GitError> {
    let index = ws.task_dir.join(name);
    match tokio::fs::copy(ws.dir.join(".git/index"), &index).await {
        // The run removed the index (or staged nothing yet): git builds one from scratch.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = tokio::fs::remove_file(&index).await;
        }
        other => {
            other?;
        }
    }
    let index = index.to_string_lossy().into_owned();
    git.run_env(
        "add",
        &ws.dir,
        &["add", "--all"],
        &[("GIT_INDEX_FILE", index.as_str())],
        cancel,
    )
    .await?;
    Ok(index)
}

/// Parse `git diff --raw --numstat -z --no-renames`: first a raw record per file
/// (`:oldmode newmode oldsha newsha STATUS\0path\0`), then a numstat one
/// (`added\tremoved\tpath\0`, `-` counts for binary files); one [`FileChange`] per file, in
/// numstat's order, with the status and any mode change its raw record gave.
pub fn parse_diff_z(s: &str) -> Vec<FileChange> {
    let mut how: std::collections::HashMap<&str, (Option<FileStatus>, Option<String>)> =
        std::collections::HashMap::new();
    let mut files = Vec::new();
    let mut tokens = s.split('\0');
    while let Some(t) = tokens.next() {
        let t = t.trim_start_matches('\n');
        if let Some(raw) = t.strip_prefix(':') {
            // The path is the next token, whatever it holds (a name may start with `:`).
            let Some(path) = tokens.next() else { break };
            let fields: Vec<&str> = raw.split(' ').collect();
            let (old, new, letter) = match fields.as_slice() {
                [old, new, _, _, letter] => (*old, *new, *letter),
                _ => continue,
            };
            let status = match letter {
                "A" => Some(FileStatus::Added),
                "D" => Some(FileStatus::Deleted),
                "T" => Some(FileStatus::TypeChanged),
                "M" => Some(FileStatus::Modified),
                _ => None,
            };
            let mode =
                (status == Some(FileStatus::Modified) && old != new).then(|| format!("{old} -> {new}"));
            how.insert(path, (status, mode));
            continue;
        }
        let mut parts = t.splitn(3, '\t');
        let (Some(added), Some(removed), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mut f = FileChange::counted(path, added.parse().ok(), removed.parse().ok());
        if let Some((status, mode)) = how.remove(path) {
            f.status = status;
            f.mode_change = mode;
        }
        files.push(f);
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_with_binary_files_and_odd_names_is_parsed() {
        let out = "3\t1\tsrc/a b.rs\0-\t-\timg.png\0\n10\t0\tnew\tfile.txt\0";
        assert_eq!(
            parse_diff_z(out),
            vec![
                FileChange::counted("src/a b.rs", Some(3), Some(1)),
                FileChange::counted("img.png", None, None),
                FileChange::counted("new\tfile.txt", Some(10), Some(0)),
            ]
        );
    }

    /// What `git diff --raw --numstat -z` printed for: `a` made executable, `b` deleted, `c`
    /// edited, the link `l` replaced by a file, `n` new, and `:odd` (a name starting like a
    /// raw record) new.
    #[test]
    fn raw_records_give_each_file_its_status_and_mode_change() {
        let out = ":100644 100755 7898192 7898192 M\0a\0\
                   :100644 000000 6178079 0000000 D\0b\0\
                   :100644 100644 f2ad6c7 2f773ae M\0c\0\
                   :120000 100644 2e65efe 587be6b T\0l\0\
                   :000000 100644 0000000 3e75765 A\0n\0\
                   :000000 100644 0000000 3e75765 A\0:odd\0\
                   0\t0\ta\x000\t1\tb\x001\t0\tc\x001\t1\tl\x001\t0\tn\x001\t0\t:odd\0";
        let got: Vec<(String, Option<FileStatus>, Option<String>)> = parse_diff_z(out)
            .into_iter()
            .map(|f| (f.path, f.status, f.mode_change))
            .collect();
        let m = |p: &str, s, mode: Option<&str>| (p.to_string(), Some(s), mode.map(String::from));
        assert_eq!(
            got,
            vec![
                m("a", FileStatus::Modified, Some("100644 -> 100755")),
                m("b", FileStatus::Deleted, None),
                m("c", FileStatus::Modified, None),
                m("l", FileStatus::TypeChanged, None),
                m("n", FileStatus::Added, None),
                m(":odd", FileStatus::Added, None),
            ]
        );
    }
}
