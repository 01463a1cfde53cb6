//! The part of a failed git command's output a failure message quotes: the error lines, what
//! the remote said (a hook's own words), and the refs a push had rejected — bounded.

/// At most this many error lines (git's own, the remote's, a rejected ref).
const MAX_ERROR_LINES: usize = 5;
/// At most this many of the remote's other lines, when it marked none of its lines as errors.
const MAX_REMOTE_LINES: usize = 3;
/// Each quoted line is cut to this many bytes, so that the whole stays under [`MAX_BYTES`].
const MAX_LINE_BYTES: usize = 240;
const MAX_BYTES: usize = 2000;

/// The informative part of git's output, bounded: its error lines (git's own, the remote's, a
/// rejected ref), the first of which is usually the cause; else its last lines. A remote's
/// advice can run to a dozen lines after the cause, which the tail alone would keep instead.
///
/// A remote that does not mark its lines as errors (a pre-receive hook printing "denied by
/// policy", a forge's "You are not allowed to push") still says why it refused: then its
/// first few lines are kept too. `git push --porcelain` reports rejected refs on stdout, not
/// stderr, so those lines of `stdout` are quoted as well, where git would have put them.
///
/// Give it redacted text: it cuts lines, which could cut a secret in two past recognition.
pub(crate) fn summarize(stderr: &str, stdout: &str) -> String {
    // Git pads the remote's lines with spaces (to overwrite progress output).
    let mut lines: Vec<String> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let rejected: Vec<String> = stdout.lines().filter_map(porcelain_rejection).collect();
    if !rejected.is_empty() {
        // Before git's closing "error: failed to push some refs", as its human format has it.
        let at = lines
            .iter()
            .position(|l| l.starts_with("error: failed to push"))
            .unwrap_or(lines.len());
        lines.splice(at..at, rejected);
    }
    let remote_errors = lines.iter().any(|l| remote_text(l).is_some_and(is_error));
    let mut remote_kept = 0;
    let mut errors = 0;
    let mut kept: Vec<&str> = Vec::new();
    for line in &lines {
        let keep = if is_error(line.trim_start()) || remote_text(line).is_some_and(is_error) {
            errors += 1;
            errors <= MAX_ERROR_LINES
        } else if !remote_errors && remote_text(line).is_some_and(is_informative) {
            remote_kept += 1;
            remote_kept <= MAX_REMOTE_LINES
        } else {
            false
        };
        if keep {
            kept.push(line);
        }
    }
    let chosen: Vec<&str> = if errors == 0 && remote_kept == 0 {
        lines
            .iter()
            .map(String::as_str)
            .skip(lines.len().saturating_sub(5))
            .collect()
    } else {
        kept
    };
    let text = chosen
        .iter()
        .map(|l| cut(l, MAX_LINE_BYTES))
        .collect::<Vec<_>>()
        .join("\n");
    cut(&text, MAX_BYTES).to_string()
}

/// What the remote said on a `remote: …` line.
fn remote_text(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix("remote:").map(str::trim)
}

fn is_error(line: &str) -> bool {
    ["error:", "fatal:", "! ["].iter().any(|p| line.starts_with(p))
}

/// A remote line worth quoting: not empty, not a progress report.
fn is_informative(text: &str) -> bool {
    const PROGRESS: [&str; 6] = [
        "Counting objects",
        "Compressing objects",
        "Resolving deltas",
        "Enumerating objects",
        "Total ",
        "Processing changes",
    ];
    !text.is_empty() && !PROGRESS.iter().any(|p| text.starts_with(p))
}

/// A rejected ref of `git push --porcelain` (`!\t<from>:<to>\t[remote rejected] (<why>)`) in
/// git's human form: `! [remote rejected] <from> -> <branch> (<why>)`.
fn porcelain_rejection(line: &str) -> Option<String> {
    let mut fields = line.strip_prefix("!\t")?.splitn(2, '\t');
    let (from, to) = fields.next()?.split_once(':')?;
    let summary = fields.next()?.trim();
    let to = to.strip_prefix("refs/heads/").unwrap_or(to);
    Some(match summary.split_once("] ") {
        Some((status, why)) => format!("! {status}] {from} -> {to} {why}"),
        None => format!("! {summary} {from} -> {to}"),
    })
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn a_summary_keeps_the_error_lines_over_the_remote_s_advice() {
        let refused = "remote: error: refusing to update checked out branch: refs/heads/main        \n\
            remote: error: By default, updating the current branch in a non-bare repository        \n\
            remote: is denied, because it will make the index and work tree inconsistent        \n\
            remote: other way.        \n\
            remote: \n\
            remote: To squelch this message and still keep the default behaviour, set        \n\
            remote: 'receive.denyCurrentBranch' configuration variable to 'refuse'.        \n\
            To /srv/repo\n \
            ! [remote rejected] agentpool/x -> main (branch is currently checked out)\n\
            error: failed to push some refs to '/srv/repo'\n";
        assert_eq!(
            summarize(refused, ""),
            "remote: error: refusing to update checked out branch: refs/heads/main\n\
             remote: error: By default, updating the current branch in a non-bare repository\n \
             ! [remote rejected] agentpool/x -> main (branch is currently checked out)\n\
             error: failed to push some refs to '/srv/repo'"
        );
        // Without error lines, the last lines say what happened.
        assert_eq!(summarize("a\nb\n\nc\nd\ne\nf\n", ""), "b\nc\nd\ne\nf");
    }

    #[test]
    fn a_hook_s_own_words_and_the_porcelain_rejection_are_kept() {
        let stderr = "remote: denied by policy        \n\
            remote: see https://wiki/push-rules        \n\
            error: failed to push some refs to 'http://h/app.git'\n";
        let stdout = "To http://h/app.git\n\
            !\tHEAD:refs/heads/agentpool/x\t[remote rejected] (pre-receive hook declined)\nDone\n";
        assert_eq!(
            summarize(stderr, stdout),
            "remote: denied by policy\n\
             remote: see https://wiki/push-rules\n\
             ! [remote rejected] HEAD -> agentpool/x (pre-receive hook declined)\n\
             error: failed to push some refs to 'http://h/app.git'"
        );
    }

    #[test]
    fn a_talkative_remote_is_bounded() {
        let long = "x".repeat(5000);
        let mut stderr = String::new();
        for i in 0..50 {
            stderr.push_str(&format!("remote: line {i} {long}\n"));
        }
        stderr.push_str("remote: Resolving deltas: 100% (3/3)\n");
        stderr.push_str("error: failed to push some refs to 'h'\n");
        let s = summarize(&stderr, "");
        assert!(s.len() <= 2000, "{}", s.len());
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4, "{s}");
        assert!(lines[0].starts_with("remote: line 0 xxx"));
        assert_eq!(lines[3], "error: failed to push some refs to 'h'");
        assert!(!s.contains("Resolving deltas"));
    }
}
