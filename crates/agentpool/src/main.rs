//! `agentpool`: the only binary. Parses the command line, resolves configuration, runs the
//! command, and turns its outcome into one line on stderr and a documented exit code.

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
mod embedded;
mod exit;
mod output;
mod telemetry;

use clap::{CommandFactory, Parser};

use crate::cli::Cli;
use crate::exit::ExitCode;

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    telemetry::init(cli.command.is_service());

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
                eprintln!("agentpool: {line}");
            }
            std::process::ExitCode::from(exit::code_of(&e) as u8)
        }
    }
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
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let bin = Cli::command().get_name().to_string();
            eprintln!("{bin}: {first} (see '{bin} --help')");
            std::process::ExitCode::from(ExitCode::Usage as u8)
        }
    }
}
