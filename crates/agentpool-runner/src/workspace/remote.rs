//! What the remote has of the work branch after a push that did not end cleanly, for a result
//! that names the branch only when it is there (what it had before the run is
//! [`Workspace::remote_branch`](super::Workspace::remote_branch)).
//!
//! A push can land and still fail or be canceled: the remote updates the ref, then a slow
//! post-receive hook (CI triggers, mirroring) holds the connection until the task's cancel or
//! git's timeout kills the client. Reporting "not pushed" then would hide a branch that is on
//! the remote, and a retry would be told nothing of it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Workspace;
use crate::git::Git;

/// The longest the remote is asked after an interrupted push: the answer only sets the result
/// straight, and a worker told to stop should not wait a full git timeout for it.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the remote said of the work branch after a push that did not end cleanly.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RemoteBranch {
    /// The branch is there, at this commit.
    At(String),
    /// The remote has no such branch.
    Absent,
    /// The remote could not be asked; why.
    Unknown(String),
}

/// Ask the remote (`git ls-remote`) where the work branch is. Not under the task's cancel:
/// the question is asked because the push was canceled, and its answer is what the result
/// must tell.
pub(super) async fn ask(git: &Git, ws: &Workspace) -> RemoteBranch {
    let git = git.clone().with_timeout(ASK_TIMEOUT.min(git.timeout()));
    let refname = format!("refs/heads/{}", ws.branch.as_str());
    let out = git
        .run(
            "ls-remote",
            &ws.dir,
            &["ls-remote", "--", ws.url.as_str(), refname.as_str()],
            &CancellationToken::new(),
        )
        .await;
    match out {
        Ok(out) => match branch_sha(&out, &refname) {
            Some(sha) => RemoteBranch::At(sha.to_string()),
            None => RemoteBranch::Absent,
        },
        Err(e) => RemoteBranch::Unknown(e.to_string()),
    }
}

/// The commit of exactly `refname` in `git ls-remote` output (`sha\tref` lines): its patterns
/// also match longer names that end the same way.
fn branch_sha<'a>(out: &'a str, refname: &str) -> Option<&'a str> {
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(_, r)| *r == refname)
        .map(|(sha, _)| sha)
}

#[cfg(test)]
mod tests {
    use super::branch_sha;

    #[test]
    fn only_the_branch_itself_counts_in_ls_remote_output() {
        let out = "aaa\trefs/heads/x/refs/heads/w\nbbb\trefs/heads/w\n";
        assert_eq!(branch_sha(out, "refs/heads/w"), Some("bbb"));
        assert_eq!(
            branch_sha("aaa\trefs/heads/x/refs/heads/w\n", "refs/heads/w"),
            None
        );
        assert_eq!(branch_sha("", "refs/heads/w"), None);
    }
}
