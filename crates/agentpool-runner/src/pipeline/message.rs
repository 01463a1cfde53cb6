//! The commit message of a task that names none: a subject a reader of `git log --oneline`
//! (or a pull request list) can scan, the agent's own account of what it did, and the task id
//! as a git trailer that tools can read back (`git interpret-trailers --parse`).

use agentpool_core::{TaskId, TaskSpec};

/// Git's and GitHub's conventional subject length; GitHub cuts longer titles.
const SUBJECT_CHARS: usize = 72;
/// The body is for people reading history, not a transcript.
const BODY_CHARS: usize = 4000;

/// The trailer that names the task a commit came from.
pub(crate) const TASK_TRAILER: &str = "Agentpool-Task";

/// The message: the first line of the prompt (or command) as the subject; as the body, the
/// agent's final text, or else the whole prompt when the subject could not hold it; then the
/// trailer.
pub(crate) fn default_message(id: TaskId, spec: &TaskSpec, final_text: Option<&str>) -> String {
    let asked = spec
        .prompt
        .as_deref()
        .or(spec.command.as_deref())
        .unwrap_or("")
        .trim();
    let first = asked.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let first = first.split_whitespace().collect::<Vec<_>>().join(" ");
    let (subject, shortened) = match shorten(&first, SUBJECT_CHARS) {
        _ if first.is_empty() => (format!("agentpool task {id}"), false),
        Some(short) => (short, true),
        None => (first, false),
    };
    let body = match final_text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => Some(text),
        None if shortened || asked.lines().nth(1).is_some() => Some(asked),
        None => None,
    };
    let mut msg = subject;
    if let Some(body) = body {
        msg.push_str("\n\n");
        msg.push_str(&shorten(body, BODY_CHARS).unwrap_or_else(|| body.to_string()));
    }
    msg.push_str(&format!("\n\n{TASK_TRAILER}: {id}\n"));
    msg
}

/// `text` cut to at most `max` characters, ending in an ellipsis; `None` when it fits.
fn shorten(text: &str, max: usize) -> Option<String> {
    let (at, _) = text.char_indices().nth(max)?;
    let keep = text[..at].char_indices().nth(max - 1).map_or(at, |(i, _)| i);
    Some(format!("{}…", text[..keep].trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Asked {
        id: TaskId,
        spec: TaskSpec,
    }

    fn task(prompt: Option<&str>, command: Option<&str>) -> Asked {
        let spec = TaskSpec {
            prompt: prompt.map(str::to_string),
            command: command.map(str::to_string),
            ..TaskSpec::default()
        };
        Asked {
            id: TaskId::new(),
            spec,
        }
    }

    fn default_message(t: &Asked, final_text: Option<&str>) -> String {
        super::default_message(t.id, &t.spec, final_text)
    }

    /// `t`'s message given the agent's `final_text` is `before_trailer`, then the trailer.
    fn assert_message(t: &Asked, final_text: Option<&str>, before_trailer: &str) {
        let expected = format!("{before_trailer}\n\nAgentpool-Task: {}\n", t.id);
        assert_eq!(default_message(t, final_text), expected);
    }

    #[test]
    fn a_short_command_is_the_subject_and_the_task_id_a_trailer() {
        assert_message(&task(None, Some("make fmt")), None, "make fmt");
    }

    #[test]
    fn the_agent_s_final_text_is_the_body() {
        let t = task(Some("Fix the flaky test in\n  crates/x"), None);
        let text = Some("  Made the test wait for the event.\n");
        assert_message(
            &t,
            text,
            "Fix the flaky test in\n\nMade the test wait for the event.",
        );
    }

    #[test]
    fn a_multi_line_prompt_without_final_text_is_the_body() {
        let t = task(Some("\n\nFirst\nthen second"), None);
        assert_message(&t, Some("  "), "First\n\nFirst\nthen second");
    }

    #[test]
    fn nothing_asked_names_the_task() {
        let t = task(Some("  \n "), None);
        assert_message(&t, None, &format!("agentpool task {}", t.id));
    }

    #[test]
    fn a_long_first_line_is_cut_and_kept_whole_in_the_body() {
        let long = format!("  Rename   {} everywhere", "é".repeat(80));
        let t = task(Some(&long), None);
        let msg = default_message(&t, None);
        let subject = msg.lines().next().unwrap();
        assert_eq!(subject.chars().count(), SUBJECT_CHARS);
        assert!(
            subject.starts_with("Rename éé") && subject.ends_with('…'),
            "{subject}"
        );
        assert!(msg.contains(&format!("\n\n{}\n\n", long.trim())), "{msg}");
    }

    #[test]
    fn a_long_body_is_bounded() {
        let t = task(Some("x"), None);
        let msg = default_message(&t, Some(&"y".repeat(BODY_CHARS * 2)));
        let body = msg.split("\n\n").nth(1).unwrap();
        assert_eq!(body.chars().count(), BODY_CHARS);
    }
}
