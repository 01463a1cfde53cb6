//! The check before a push that the run's changes carry none of the task's secrets: a token a
//! task wrote into a file (or into a file's name, or a commit message of its own) would
//! otherwise be pushed in clear and stay in the remote's history.

use agentpool_core::Redactor;
use tokio_util::sync::CancellationToken;

use super::Workspace;
use crate::git::{Git, GitError};

/// Where the commits from the base to `head` carry a secret of `secrets`: "file PATH" (an
/// added line, or its name) or "the message of commit SHORT"; `None` when nowhere. Only
/// what the run added is read (a secret already in the base is not the run's doing), text
/// files only (git shows no lines of a binary file).
pub(super) async fn find(
    git: &Git,
    ws: &Workspace,
    head: &str,
    secrets: &Redactor,
    cancel: &CancellationToken,
) -> Result<Option<String>, GitError> {
    if secrets.is_empty() {
        return Ok(None);
    }
    let holds = |text: &str| secrets.redact(text) != text;
    let range = format!("{}..{head}", ws.base_sha);
    let log = git
        .run(
            "log",
            &ws.dir,
            &["log", "--format=%x00%h %B", range.as_str(), "--"],
            cancel,
        )
        .await?;
    if let Some(commit) = log.split('\0').find(|m| holds(m)) {
        let short = commit.split_whitespace().next().unwrap_or_default();
        return Ok(Some(format!("the message of commit {short}")));
    }
    // Every path the run added or changed, as it is (a new empty file has no `+++` line).
    let names = git
        .run(
            "diff",
            &ws.dir,
            &[
                "diff",
                "--name-only",
                "-z",
                "--no-renames",
                "--diff-filter=d",
                ws.base_sha.as_str(),
                head,
                "--",
            ],
            cancel,
        )
        .await?;
    if let Some(path) = names.split('\0').find(|p| holds(p)) {
        return Ok(Some(format!("file {path}")));
    }
    // Paths as they are (not octal-escaped), to name the file in which a line was found.
    let diff = git
        .run(
            "diff",
            &ws.dir,
            &[
                "-c",
                "core.quotePath=false",
                "diff",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--no-renames",
                "--unified=0",
                ws.base_sha.as_str(),
                head,
                "--",
            ],
            cancel,
        )
        .await?;
    Ok(first_in_diff(&diff, holds).map(|path| format!("file {path}")))
}

/// The file of the first line in `diff` (a unified diff) for which `holds` is true: an added
/// line, or the line naming the file.
fn first_in_diff(diff: &str, holds: impl Fn(&str) -> bool) -> Option<String> {
    let mut path = String::new();
    // Within a file's header (until its first hunk) `+++ ` names the file; in a hunk it is an
    // added line that starts with "++ ".
    let mut in_header = false;
    for line in diff.lines() {
        if line.starts_with("diff --git ") {
            in_header = true;
        } else if line.starts_with("@@") {
            in_header = false;
        } else if in_header && let Some(name) = line.strip_prefix("+++ ") {
            path = name.strip_prefix("b/").unwrap_or(name).to_string();
            if holds(name) {
                return Some(path);
            }
        } else if !in_header && line.starts_with('+') && holds(line) {
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "diff --git a/a.txt b/a.txt\n\
        --- a/a.txt\n\
        +++ b/a.txt\n\
        @@ -1 +1 @@\n\
        -old TOKEN-123456\n\
        +new\n\
        +++ TOKEN-123456 in a line starting with ++\n\
        diff --git a/b.txt b/b.txt\n\
        new file mode 100644\n\
        --- /dev/null\n\
        +++ b/b.txt\n\
        @@ -0,0 +1 @@\n\
        +TOKEN-123456\n";

    #[test]
    fn the_file_of_the_first_added_secret_is_named() {
        let holds = |l: &str| l.contains("TOKEN-123456");
        // The removed line does not count; the added one starting with "++" does.
        assert_eq!(first_in_diff(DIFF, holds).as_deref(), Some("a.txt"));
        let b_only = DIFF.replace("+++ TOKEN-123456 in a line starting with ++\n", "");
        assert_eq!(first_in_diff(&b_only, holds).as_deref(), Some("b.txt"));
        let named = "diff --git a/x b/leak-TOKEN-123456\n--- /dev/null\n+++ b/leak-TOKEN-123456\n";
        assert_eq!(first_in_diff(named, holds).as_deref(), Some("leak-TOKEN-123456"));
        assert_eq!(
            first_in_diff("diff --git a/a b/a\n+++ b/a\n@@\n+fine\n", holds),
            None
        );
    }
}
