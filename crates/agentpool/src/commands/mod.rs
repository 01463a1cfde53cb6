//! What each subcommand does, and how commands find the server they talk to.

mod admin;
mod demo;
pub mod launcher;
pub mod operator;
pub mod pool;
mod probe;
mod profiles;
pub mod run_task;
mod tasks;
mod worker;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::config::{self, Settings};
use crate::exit::{Exit, ExitCode};
use agentpool_client::Client;

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Completions(a) = &cli.command {
        let mut cmd = Cli::command();
        let name = cmd.get_name().to_string();
        clap_complete::generate(a.shell, &mut cmd, name, &mut std::io::stdout());
        return Ok(ExitCode::Success);
    }
    let settings = Settings::resolve(&cli.global)?;
    match cli.command {
        Command::Up(a) => pool::up(&settings, a).await,
        Command::Serve(a) => pool::serve(&settings, a).await,
        Command::Worker(a) => worker::worker(&settings, a).await,
        Command::Migrate(a) => pool::migrate(&settings, a).await,
        Command::Run(a) => tasks::run(&settings, a).await,
        Command::Submit(a) => tasks::submit(&settings, a).await,
        Command::Tasks(c) => tasks::tasks(&settings, c).await,
        Command::Workers(c) => admin::workers(&settings, c).await,
        Command::Projects(c) => admin::projects(&settings, c).await,
        Command::Credentials(c) => admin::credentials(&settings, c).await,
        Command::Profiles(c) => profiles::profiles(&settings, c).await,
        Command::Tokens(c) => pool::tokens(&settings, c).await,
        Command::Demo(a) => demo::demo(&settings, a).await,
        Command::Launcher(a) => launcher::launcher(&settings, a).await,
        Command::RunTask(a) => run_task::run_task(&settings, a).await,
        Command::Operator(a) => operator::operator(&settings, a).await,
        Command::Crd => {
            print!("{}", agentpool_kube::pool::crd_yaml());
            Ok(ExitCode::Success)
        }
        Command::Completions(_) => Ok(ExitCode::Success),
    }
}

/// The server to talk to: the configured one (`--server`, `AGENTPOOL_SERVER`, config file),
/// else the `agentpool up` server recorded in the data dir if it answers. `None` when neither.
pub async fn find_server(settings: &Settings) -> anyhow::Result<Option<Client>> {
    if let Some(url) = &settings.server {
        return Ok(Some(settings.client(url)?));
    }
    if let Some(up) = config::read_up_state(&settings.data_dir) {
        let client = settings.client(&up.url)?;
        if client.ready().await.is_ok() {
            return Ok(Some(client));
        }
        tracing::debug!(url = %up.url, "the recorded `agentpool up` server does not answer");
    }
    Ok(None)
}

/// Print a list: as JSON with `--json`; else `no <what>` on stderr when it is empty, or what
/// `human` prints.
pub fn print_list<T: serde::Serialize>(
    settings: &Settings,
    items: &[T],
    what: &str,
    human: impl FnOnce(&[T]),
) -> anyhow::Result<()> {
    if settings.json() {
        print_json(&items)?;
    } else if items.is_empty() {
        eprintln!("no {what}");
    } else {
        human(items);
    }
    Ok(())
}

/// Report `<what> <name> <done>` (stored, deleted): as `{"<done>": name}` with `--json`.
pub fn print_done(settings: &Settings, what: &str, name: &str, done: &str) -> anyhow::Result<()> {
    if settings.json() {
        let out: serde_json::Map<String, serde_json::Value> =
            [(done.to_string(), name.into())].into_iter().collect();
        print_json(&out)?;
    } else {
        println!("{what} {name} {done}");
    }
    Ok(())
}

/// Like [`find_server`], but a missing server is an error (exit code 4).
pub async fn connect(settings: &Settings) -> anyhow::Result<Client> {
    find_server(settings).await?.ok_or_else(|| {
        Exit::new(
            ExitCode::Connection,
            format!(
                "no agentpool server: start one with `agentpool up` (data dir {}) or pass --server URL",
                settings.data_dir.display()
            ),
        )
        .into()
    })
}

pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let s = serde_json::to_string_pretty(value).context("cannot encode JSON output")?;
    println!("{s}");
    Ok(())
}
