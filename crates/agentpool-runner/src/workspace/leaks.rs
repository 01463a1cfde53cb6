//! The check before a push that the run's changes carry none of the task's secrets: a token a
//! task wrote into a file (or into a file's name, or a commit message of its own) would
//! otherwise be pushed in clear and stay in the remote's history.

use agentpool_core::Redactor;
use tokio_util::sync::CancellationToken;

use super::Workspace;
use crate::git::{Git, GitError};

/// Where the commits from the base to `head` carry a secret of `secrets`: "file PATH of
/// commit SHORT" (an added line, or its name) or "the message of commit SHORT"; `None` when
/// nowhere. Every commit is read, not only the net change: a secret one commit adds and a
/// later one removes is still in the history a push would send. Only what the run added is
/// read (a secret already in the base is not the run's doing), text files only (git shows no
/// lines of a binary file).
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
    // `git log` shows no changes of a merge: each is read against its first parent (what
    // the merge brought to the branch), after the other commits.
    let merges = git
        .run(
            "rev-list",
            &ws.dir,
            &["rev-list", "--merges", range.as_str(), "--"],
            cancel,
        )
        .await?;
    let mut sources = vec![Changes::Log(range.clone())];
    sources.extend(merges.split_whitespace().map(|m| Changes::Merge(m.to_string())));
    for source in &sources {
        // Every path a commit added or changed, as it is (a new empty file has no `+++` line).
        let names = git.run("log", &ws.dir, &source.args(NAMES), cancel).await?;
        if let Some((commit, path)) = first_name(&names, holds) {
            return Ok(Some(in_commit(
                &format!("file {path}"),
                commit.or(source.merge()),
            )));
        }
        let diff = git.run("log", &ws.dir, &source.args(LINES), cancel).await?;
        if let Some((commit, path)) = first_in_diff(&diff, holds) {
            return Ok(Some(in_commit(
                &format!("file {path}"),
                commit.or(source.merge()),
            )));
        }
    }
    Ok(None)
}

/// "PLACE of commit SHORT", or PLACE when the commit is not known.
fn in_commit(place: &str, commit: Option<&str>) -> String {
    match commit {
        Some(c) => format!("{place} of commit {c}"),
        None => place.to_string(),
    }
}

/// The commits whose changes are read: the range's (merges show none), or one merge's
/// against its first parent.
enum Changes {
    Log(String),
    Merge(String),
}

/// Options of the listing of changed paths, NUL-separated, each commit led by `\x01SHORT`.
const NAMES: &[&str] = &["-z", "--name-only", "--diff-filter=d"];
/// Options of the unified diff of added lines, each commit led by a `\x01SHORT` line. Paths
/// as they are (not octal-escaped), to name the file in which a line was found.
const LINES: &[&str] = &[
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--unified=0",
    "-p",
];

impl Changes {
    fn args(&self, options: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "-c",
            "core.quotePath=false",
            "log",
            "--format=%x01%h",
            "--no-renames",
        ]
        .iter()
        .chain(options)
        .map(|a| a.to_string())
        .collect();
        match self {
            Changes::Log(range) => args.push(range.clone()),
            // `-m` shows a merge's changes; `--first-parent` against its first parent only.
            Changes::Merge(sha) => {
                args.extend(["-m", "--first-parent", "-1", sha.as_str()].map(String::from))
            }
        }
        args.push("--".to_string());
        args
    }

    fn merge(&self) -> Option<&str> {
        match self {
            Changes::Log(_) => None,
            Changes::Merge(sha) => Some(sha.get(..12).unwrap_or(sha)),
        }
    }
}

/// The first path (with its commit) in `git log -z --name-only --format=%x01%h` output for
/// which `holds` is true.
fn first_name(out: &str, holds: impl Fn(&str) -> bool) -> Option<(Option<&str>, &str)> {
    let mut commit = None;
    for field in out.split('\0') {
        let field = field.trim_start_matches('\n');
        if let Some(c) = field.strip_prefix('\u{1}') {
            commit = Some(c);
        } else if !field.is_empty() && holds(field) {
            return Some((commit, field));
        }
    }
    None
}

/// The commit and file of the first line in `diff` (unified diffs, each commit's led by a
/// `\x01SHORT` line) for which `holds` is true: an added line, or the line naming the file.
fn first_in_diff(diff: &str, holds: impl Fn(&str) -> bool) -> Option<(Option<&str>, String)> {
    let mut commit = None;
    let mut path = String::new();
    // Within a file's header (until its first hunk) `+++ ` names the file; in a hunk it is an
    // added line that starts with "++ ".
    let mut in_header = false;
    for line in diff.lines() {
        if let Some(c) = line.strip_prefix('\u{1}') {
            // No line of a diff starts so: hunk lines start with '+', '-', ' ' or '\\'.
            commit = Some(c);
            in_header = false;
        } else if line.starts_with("diff --git ") {
            in_header = true;
        } else if line.starts_with("@@") {
            in_header = false;
        } else if in_header && let Some(name) = line.strip_prefix("+++ ") {
            path = name.strip_prefix("b/").unwrap_or(name).to_string();
            if holds(name) {
                return Some((commit, path));
            }
        } else if !in_header && line.starts_with('+') && holds(line) {
            return Some((commit, path));
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

    /// The file (and commit, when the diff names it) of the first added line with a secret.
    fn found(diff: &str) -> Option<(Option<&str>, String)> {
        first_in_diff(diff, |l: &str| l.contains("TOKEN-123456"))
    }

    #[test]
    fn the_file_of_the_first_added_secret_is_named() {
        // The removed line does not count; the added one starting with "++" does.
        assert_eq!(found(DIFF), Some((None, "a.txt".to_string())));
        let b_only = DIFF.replace("+++ TOKEN-123456 in a line starting with ++\n", "");
        assert_eq!(found(&b_only), Some((None, "b.txt".to_string())));
        let named = "diff --git a/x b/leak-TOKEN-123456\n--- /dev/null\n+++ b/leak-TOKEN-123456\n";
        assert_eq!(found(named), Some((None, "leak-TOKEN-123456".to_string())));
        assert_eq!(found("diff --git a/a b/a\n+++ b/a\n@@\n+fine\n"), None);
    }

    /// `git log -p` of two commits, newest first: the second scrubs what the first added. The
    /// net diff shows no secret; the first commit's does, and is named.
    #[test]
    fn a_secret_an_earlier_commit_added_is_found_though_a_later_one_removed_it() {
        let log = "\u{1}bbb2222\n\n\
            diff --git a/config.txt b/config.txt\n\
            --- a/config.txt\n\
            +++ b/config.txt\n\
            @@ -1 +1 @@\n\
            -key=TOKEN-123456\n\
            +key=X\n\
            \u{1}aaa1111\n\n\
            diff --git a/config.txt b/config.txt\n\
            new file mode 100644\n\
            --- /dev/null\n\
            +++ b/config.txt\n\
            @@ -0,0 +1 @@\n\
            +key=TOKEN-123456\n";
        assert_eq!(found(log), Some((Some("aaa1111"), "config.txt".to_string())));
        let names = "\u{1}bbb2222\0\nfine.txt\0\u{1}aaa1111\0\nleak-TOKEN-123456\0other\0";
        assert_eq!(
            first_name(names, |p: &str| p.contains("TOKEN-123456")),
            Some((Some("aaa1111"), "leak-TOKEN-123456"))
        );
        assert_eq!(in_commit("file a", Some("aaa1111")), "file a of commit aaa1111");
    }
}
