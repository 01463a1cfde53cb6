//! `agentpool`: the only binary. Parses the command line, resolves configuration, runs the
//! command, and turns its outcome into one line on stderr and a documented exit code.

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// `print!` for command output: [`output::write_stdout`] ends the process quietly when the
/// reader has gone.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::output::write_stdout(format_args!($($t)*))
    };
}

/// `println!` for command output, as [`out!`].
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($t)*)))
    };
}

mod access;
mod cli;
mod commands;
mod config;
mod data_dir_lock;
mod embedded;
mod exit;
mod file_settings;
mod output;
mod telemetry;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::Cli;
use crate::exit::ExitCode;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (command, file) =
        match file_settings::with_file_defaults(Cli::command(), &file_settings::data_dir_of(&args)) {
            Ok(c) => c,
            Err(line) => {
                eprintln!("agentpool: {line}");
                return std::process::ExitCode::from(ExitCode::Usage as u8);
            }
        };
    let (cli, words) = match command
        .try_get_matches_from(&args)
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, subcommand_words(&m))))
    {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    if let Err(e) = telemetry::init(cli.command.is_service(), cli.global.log_format) {
        eprintln!("agentpool: {e}");
        return std::process::ExitCode::from(ExitCode::Usage as u8);
    }
    if let Some(read) = file.filter(|_| cli.command.is_service()) {
        let (used, not_used) = read.used_by(&words);
        if not_used.is_empty() {
            tracing::info!(
                file = %read.path.display(),
                settings = %used.join(", "),
                "settings read from the config file"
            );
        } else {
            // Accepted because another command has them: say so, rather than let them pass
            // for applied.
            tracing::info!(
                file = %read.path.display(),
                settings = %used.join(", "),
                not_used = %not_used.join(", "),
                "settings read from the config file; `{}` does not use {} (only other commands have {})",
                words.join(" "),
                not_used.join(", "),
                if not_used.len() == 1 { "that setting" } else { "those settings" }
            );
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentpool: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Failed as u8);
        }
    };
    let result = runtime.block_on(commands::dispatch(cli));
    // Background tasks (HTTP connections, an embedded pool's loops) must not keep us alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            let line = exit::one_line(&e);
            if !line.is_empty() {
                // The server's words, or a task's, can hold escape sequences too.
                eprintln!(
                    "agentpool: {}",
                    output::terminal_safe(&line, output::Style::stderr().color)
                );
            }
            std::process::ExitCode::from(exit::code_of(&e) as u8)
        }
    }
}

/// The subcommand that runs, by its names from the root (`["tasks", "list"]`).
fn subcommand_words(m: &clap::ArgMatches) -> Vec<String> {
    let mut words = Vec::new();
    let mut at = m;
    while let Some((name, sub)) = at.subcommand() {
        words.push(name.to_string());
        at = sub;
    }
    words
}

/// Clap's errors span several lines (tip, usage, hint); a usage mistake gets one line here.
/// Help and version requests print in full and succeed.
fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::Usage
            } else {
                ExitCode::Success
            };
            std::process::ExitCode::from(code as u8)
        }
        _ => {
            let bin = Cli::command().get_name().to_string();
            eprintln!("{bin}: {}", one_line(&e.render().to_string(), &bin));
            std::process::ExitCode::from(ExitCode::Usage as u8)
        }
    }
}

/// Clap's rendering of a usage error in one line: the error, with the items it lists on the
/// lines below it ("the following required arguments were not provided:" then `<ID>`), its
/// tip ("a similar argument exists: '--priority'") and the values it accepts, then where to
/// read more: the help of the (sub)command its usage line names.
fn one_line(rendered: &str, bin: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).skip_while(|l| l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let rest: Vec<&str> = lines.collect();
    if line.ends_with(':') {
        let items: Vec<&str> = rest.iter().copied().take_while(|l| !l.is_empty()).collect();
        line = format!("{line} {}", items.join(", "));
    }
    for l in &rest {
        if let Some(tip) = l.strip_prefix("tip: ") {
            line = format!("{line}; {tip}");
        } else if l.starts_with("[possible values:") {
            line = format!("{line} {l}");
        }
    }
    // "Usage: agentpool tasks [OPTIONS] <COMMAND>": the command is the words before the first
    // argument.
    let command = rest
        .iter()
        .find_map(|l| l.strip_prefix("Usage: "))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| bin.to_string());
    format!("{line} (see '{command} --help')")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, one_line};

    fn line(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).expect_err("a usage error");
        one_line(&e.render().to_string(), "agentpool")
    }

    #[test]
    fn a_usage_error_is_one_line_that_names_what_is_missing() {
        let cases: [(&[&str], &str); 4] = [
            (
                &["agentpool", "tasks", "show"],
                "the following required arguments were not provided: <ID> (see 'agentpool tasks show --help')",
            ),
            (
                &["agentpool", "submit", "--prio", "3"],
                "unexpected argument '--prio' found; a similar argument exists: '--priority' \
                 (see 'agentpool submit --help')",
            ),
            (
                &["agentpool", "tasks", "lst"],
                "unrecognized subcommand 'lst'; some similar subcommands exist: 'ls', 'list' \
                 (see 'agentpool tasks --help')",
            ),
            (
                &["agentpool", "--output", "xml", "tasks", "list"],
                "invalid value 'xml' for '--output <OUTPUT>' [possible values: human, json] \
                 (see 'agentpool --help')",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(line(args), want, "{args:?}");
        }
    }

    /// The verbs of other tools reach `put`, which creates or replaces.
    #[test]
    fn put_answers_to_the_usual_other_verbs() {
        for line in [
            "credentials set git-token",
            "projects create web --repo https://h/r.git --credential c",
            "profiles create p --model m",
            "schedules create s --cron @daily -c true",
            "notifications create n --url https://h/hook",
        ] {
            let args = std::iter::once("agentpool").chain(line.split(' '));
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{line}: {e}");
            }
        }
    }
}
