//! The `agentpool …` command lines that README.md and docs/ show, each parsed by the real
//! command-line definition: a renamed flag or subcommand fails here rather than in a reader's
//! shell.

use std::path::Path;

use clap::Parser;

use super::Cli;

/// A documented command line: where it stands and what it says.
#[derive(Debug)]
struct Example {
    at: String,
    line: String,
}

/// Shell text outside quotes, split where one command ends and another begins (pipes, `&&`,
/// `;`, `&`, `$(…)`, redirections), with `#` comments dropped.
fn commands(shell: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut single, mut double) = (false, false);
    let chars: Vec<char> = shell.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev_space = i == 0 || chars[i - 1].is_whitespace();
        let next = chars.get(i + 1).copied();
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ if single || double => {}
            '#' if prev_space => break,
            '|' | ';' | '&' | '(' | ')' => {
                out.push(String::new());
                i += 1;
                continue;
            }
            // A redirection (`< file`, `> file`), not a `<placeholder>`.
            '<' | '>' if prev_space && next.is_none_or(char::is_whitespace) => {
                out.push(String::new());
                i += 1;
                continue;
            }
            _ => {}
        }
        if let Some(cur) = out.last_mut() {
            cur.push(c);
        }
        i += 1;
    }
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `line` as the command starting with `agentpool`, past any `VAR=value` prefixes.
fn agentpool_command(line: &str) -> Option<String> {
    let mut rest = line.trim_start_matches("$ ");
    while let Some((word, after)) = rest.split_once(' ') {
        if word == "agentpool" {
            return Some(rest.to_string());
        }
        if !word.contains('=') || word.starts_with('-') {
            return None;
        }
        rest = after.trim_start();
    }
    None
}

/// The documented `agentpool` command lines of one Markdown text: in shell code blocks (with
/// `\` continuations joined) and in inline code spans.
fn examples(name: &str, text: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut fence: Option<bool> = None;
    let mut pending = String::new();
    let mut start = 0;
    for (n, line) in text.lines().enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(matches!(info.trim(), "sh" | "bash" | "shell" | "console")),
            };
            continue;
        }
        let spans: Vec<String> = match fence {
            Some(false) => continue,
            Some(true) => {
                if pending.is_empty() {
                    start = n + 1;
                }
                match line.trim_end().strip_suffix('\\') {
                    Some(head) => {
                        pending.push_str(head);
                        pending.push(' ');
                        continue;
                    }
                    None => vec![std::mem::take(&mut pending) + line],
                }
            }
            None => {
                start = n + 1;
                line.split('`').skip(1).step_by(2).map(str::to_string).collect()
            }
        };
        for span in spans {
            for cmd in commands(&span) {
                if let Some(c) = agentpool_command(&cmd) {
                    found.push(Example {
                        at: format!("{name}:{start}"),
                        line: c,
                    });
                }
            }
        }
    }
    found
}

/// What a `<placeholder>` becomes in the arguments.
const PLACEHOLDER: &str = "PLACEHOLDER";

/// `line` as arguments: placeholders (`<id>`, `<worker token>`) become [`PLACEHOLDER`], and the
/// brackets of optional parts (`[--workers N]`) go.
fn args(line: &str) -> Option<Vec<String>> {
    let mut filled = String::new();
    let mut placeholder = false;
    for c in line.chars() {
        match c {
            '<' => {
                placeholder = true;
                filled.push_str(PLACEHOLDER);
            }
            '>' if placeholder => placeholder = false,
            _ if placeholder => {}
            '[' | ']' => {}
            _ => filled.push(c),
        }
    }
    shlex::split(&filled)
}

/// Whether `err` is only what a line written for people has: a required argument left out
/// (`agentpool tasks show` named in prose), or a value that is a placeholder (`<task-id>`,
/// `ADDR`, `127.0.0.1:PORT`). A wrong subcommand, an unknown flag or a literal value the
/// command refuses still count.
fn shorthand(err: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match err.kind() {
        ErrorKind::MissingRequiredArgument => true,
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => match err.get(ContextKind::InvalidValue) {
            Some(ContextValue::String(v)) => {
                v.contains(PLACEHOLDER)
                    || v.split(|c: char| !c.is_ascii_alphanumeric())
                        .any(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase()))
            }
            _ => false,
        },
        _ => false,
    }
}

#[test]
fn every_documented_command_line_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a documentation file");
        let name = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        for e in examples(&name, &text) {
            // Elided (`…`) or a choice of subcommands (`show|cancel`): shorthand, not a line
            // to run.
            if e.line.contains('…') || e.line.contains("...") || e.line.split_whitespace().count() < 2 {
                continue;
            }
            let Some(argv) = args(&e.line) else {
                wrong.push(format!("{}: unbalanced quotes: {}", e.at, e.line));
                continue;
            };
            checked += 1;
            if let Err(err) = Cli::try_parse_from(&argv)
                && !shorthand(&err)
            {
                let why = err.to_string();
                let first = why.lines().next().unwrap_or_default().to_string();
                wrong.push(format!("{}: `{}`: {first}", e.at, e.line));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "documented command lines that do not parse:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked > 40,
        "only {checked} command lines found: is the extraction broken?"
    );
}

#[test]
fn shell_text_is_split_into_commands() {
    assert_eq!(
        commands("printenv K | agentpool credentials put k   # stored encrypted"),
        ["printenv K", "agentpool credentials put k"]
    );
    assert_eq!(
        commands("agentpool credentials put gh-webhook < webhook-secret"),
        ["agentpool credentials put gh-webhook", "webhook-secret"]
    );
    assert_eq!(
        commands("agentpool run --check 'cargo test | tee' \"a # b\" && agentpool up &"),
        [
            "agentpool run --check 'cargo test | tee' \"a # b\"",
            "agentpool up"
        ]
    );
    assert_eq!(
        agentpool_command("AGENTPOOL_SERVER=http://s:7700 agentpool submit x").as_deref(),
        Some("agentpool submit x")
    );
    assert_eq!(
        agentpool_command("kubectl exec deploy/s -- agentpool tokens"),
        None
    );
    assert_eq!(
        args("agentpool worker --token <worker token> [--concurrency 4]"),
        Some(
            [
                "agentpool",
                "worker",
                "--token",
                PLACEHOLDER,
                "--concurrency",
                "4"
            ]
            .map(String::from)
            .to_vec()
        )
    );
}
