//! After the run: commit what it changed, record the diff stat against the base, push the work
//! branch.

use agentpool_core::FileChange;
use tokio_util::sync::CancellationToken;

use super::Workspace;
use crate::git::{Git, GitError, RunOpts};

/// What the post-run step produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostRun {
    /// HEAD after the run, when it differs from the base.
    pub commit_sha: Option<String>,
    pub files: Vec<FileChange>,
    pub pushed: bool,
    pub push_result: Option<String>,
}

/// How to commit what the run changed.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    pub message: String,
    pub author_name: String,
    pub author_email: String,
}

/// Commit what the run changed (when `commit` is given), record the diff stat against the
/// base, and push the work branch (when `push`).
pub async fn finish(
    git: &Git,
    ws: &Workspace,
    commit: Option<&CommitOptions>,
    push: bool,
    cancel: &CancellationToken,
) -> Result<PostRun, GitError> {
    // Undo whatever the run did to the repository's configuration before git runs with
    // credentials again.
    tokio::fs::copy(ws.task_dir.join("git-config.orig"), ws.dir.join(".git/config")).await?;
    let dir = &ws.dir;
    if let Some(c) = commit {
        git.run("add", dir, &["add", "--all"], cancel).await?;
        let (code, _) = git
            .run_opts(RunOpts {
                step: "diff",
                cwd: dir,
                args: &["diff".into(), "--cached".into(), "--quiet".into()],
                stdin: None,
                extra_env: &[],
                local_source: false,
                ok_codes: &[0, 1],
                cancel,
            })
            .await?;
        if code == 1 {
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
    if head == ws.base_sha {
        return Ok(PostRun::default());
    }
    let numstat = git
        .run(
            "diff",
            dir,
            &[
                "diff",
                "--numstat",
                "-z",
                "--no-renames",
                ws.base_sha.as_str(),
                head.as_str(),
                "--",
            ],
            cancel,
        )
        .await?;
    let mut out = PostRun {
        commit_sha: Some(head),
        files: parse_numstat_z(&numstat),
        ..PostRun::default()
    };
    if push {
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
    Ok(out)
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
