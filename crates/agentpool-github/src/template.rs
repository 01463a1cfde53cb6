//! Prompt templates: `{{name}}` placeholders filled from the triggering issue, comment, review
//! or check run. Unknown placeholders are left as written, so a typo shows in the prompt.

use std::collections::BTreeMap;

/// The prompt of a task started from an issue or a comment.
pub const DEFAULT_PROMPT: &str = "{{comment}}\n\n\
GitHub issue #{{number}} of {{repository}}: {{title}}\n\n{{body}}";

/// The prompt of a follow-up on a pull request agentpool opened.
pub const DEFAULT_FOLLOW_UP: &str = "Address this feedback on pull request #{{number}} of \
{{repository}} ({{title}}) and keep working on the same branch.\n\n{{review}}{{check}}";

/// `template` with each `{{key}}` replaced by its value; runs of blank lines that empty
/// values leave are collapsed and the result trimmed.
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = after[..end].trim();
                match vars.get(key) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    collapse_blank_lines(out.trim())
}

fn collapse_blank_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_known_keeps_unknown_and_collapses_gaps() {
        let vars = BTreeMap::from([("title", "Fix it".to_string()), ("comment", String::new())]);
        assert_eq!(
            render("{{comment}}\n\n\nDo: {{ title }} {{nope}}\n\n\n\nend {{", &vars),
            "Do: Fix it {{nope}}\n\nend {{"
        );
    }
}
