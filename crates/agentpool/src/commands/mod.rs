//! What each subcommand does, and how commands find the server they talk to.

mod admin;
mod agents;
mod bulk;
mod demo;
mod follow;
pub mod launcher;
mod notifications;
pub mod operator;
pub mod pool;
mod probe;
mod profiles;
pub mod run_task;
mod schedules;
mod status;
mod task_spec;
mod tasks;
mod tokens;
mod worker;

use std::time::Duration;

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
        let mut script = Vec::new();
        clap_complete::generate(a.shell, &mut cmd, name, &mut script);
        out!("{}", String::from_utf8_lossy(&script));
        return Ok(ExitCode::Success);
    }
    let settings = Settings::resolve(&cli.global)?;
    crate::output::set_json_output(settings.json());
    match cli.command {
        Command::Up(a) => pool::up(&settings, a).await,
        Command::Serve(a) => pool::serve(&settings, a).await,
        Command::Worker(a) => worker::worker(&settings, a).await,
        Command::Migrate(a) => pool::migrate(&settings, a).await,
        Command::Run(a) => tasks::run(&settings, a).await,
        Command::Submit(a) => tasks::submit(&settings, a).await,
        Command::Tasks(c) => tasks::tasks(&settings, c).await,
        Command::Workers(c) => admin::workers(&settings, c).await,
        Command::Status(a) => status::status(&settings, a).await,
        Command::Projects(c) => admin::projects(&settings, c).await,
        Command::Credentials(c) => admin::credentials(&settings, c).await,
        Command::Profiles(c) => profiles::profiles(&settings, c).await,
        Command::Schedules(c) => schedules::schedules(&settings, c).await,
        Command::Notifications(c) => notifications::notifications(&settings, c).await,
        Command::Tokens(c) => tokens::tokens(&settings, c).await,
        Command::Demo(a) => demo::demo(&settings, a).await,
        Command::Launcher(a) => launcher::launcher(&settings, a).await,
        Command::RunTask(a) => run_task::run_task(&settings, a).await,
        Command::Operator(a) => operator::operator(&settings, a).await,
        Command::Crd => {
            out!("{}", agentpool_kube::pool::crd_yaml());
            Ok(ExitCode::Success)
        }
        Command::Agents => agents::agents(&settings).await,
        Command::Completions(_) => Ok(ExitCode::Success),
    }
}

/// The server to talk to: the configured one (`--server`, `AGENTPOOL_SERVER`, config file),
/// else the `agentpool up` server recorded in the data dir if it answers. `None` when neither.
pub async fn find_server(settings: &Settings) -> anyhow::Result<Option<Client>> {
    if let Some(url) = &settings.server {
        return Ok(Some(settings.client(url)?));
    }
    wait_for_starting_up(&settings.data_dir).await;
    if let Some(up) = config::read_up_state(&settings.data_dir) {
        let client = settings.client(&up.url)?;
        if client.ready().await.is_ok() {
            return Ok(Some(client));
        }
        tracing::debug!(url = %up.url, "the recorded `agentpool up` server does not answer");
    }
    Ok(None)
}

/// How long a command waits for an `up` that is starting on its data dir.
const UP_START_WAIT: Duration = Duration::from_secs(60);

/// Wait while an `up` is starting on `data_dir` (it holds the data dir's lock and has not yet
/// said where it listens), so that `agentpool up &` followed at once by another command finds
/// the pool rather than none. An `up` that stops meanwhile ends the wait.
async fn wait_for_starting_up(data_dir: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + UP_START_WAIT;
    while config::read_up_state(data_dir).is_none()
        && crate::data_dir_lock::held_by_up(data_dir)
        && tokio::time::Instant::now() < deadline
    {
        tracing::debug!("waiting for the `agentpool up` that is starting");
        // Nothing to await: the pool announces itself only by writing its state file.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// [`print_list`] as a headed table: one row of cells, under `head`, for each item.
pub fn print_table<T: serde::Serialize>(
    settings: &Settings,
    items: &[T],
    what: &str,
    head: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    print_list(settings, items, what, |items| {
        let rows: Vec<Vec<String>> = items.iter().map(row).collect();
        out!(
            "{}",
            crate::output::table(&crate::output::Style::stdout(), head, &rows)
        );
    })
}

/// Print one item: as JSON with `--json`; else one aligned `key value` line for each row
/// whose value is not empty (what `rows` makes, with the colours of stdout).
pub fn print_detail<T: serde::Serialize>(
    settings: &Settings,
    item: &T,
    rows: impl FnOnce(&crate::output::Style) -> Vec<(&'static str, String)>,
) -> anyhow::Result<()> {
    if settings.json() {
        return print_json(item);
    }
    let style = crate::output::Style::stdout();
    out!("{}", crate::output::fields(&style, &rows(&style)));
    Ok(())
}

/// Up to `want` items, newest first, from the pages `page(cursor, size)` fetches (each at most
/// `max_page` long, the API's limit), and whether there are more: a list as long as the user
/// asks for, not as long as one page of the API allows. The last page asks for one item more
/// than needed, so "more" is only said when there are more.
pub async fn collect_pages<T, C, F, Fut>(
    want: usize,
    max_page: usize,
    mut page: F,
) -> anyhow::Result<(Vec<T>, bool)>
where
    F: FnMut(Option<C>, u32) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<T>, Option<C>)>>,
{
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let size = (want + 1 - items.len()).min(max_page);
        let (got, next) = page(cursor, u32::try_from(size).unwrap_or(u32::MAX)).await?;
        items.extend(got);
        if items.len() > want {
            items.truncate(want);
            return Ok((items, true));
        }
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok((items, false)),
        }
    }
}

/// Report `<what> <name> <done>` (stored, deleted): as `{"<done>": name}` with `--json`.
pub fn print_done(settings: &Settings, what: &str, name: &str, done: &str) -> anyhow::Result<()> {
    if settings.json() {
        let out: serde_json::Map<String, serde_json::Value> =
            [(done.to_string(), name.into())].into_iter().collect();
        print_json(&out)?;
    } else {
        outln!("{what} {name} {done}");
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
    outln!("{s}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::collect_pages;

    /// `page` over 0..n, newest (highest) first, as the API pages: a cursor when the page is full.
    async fn list(n: u32, want: usize, max_page: usize) -> (Vec<u32>, bool, Vec<u32>) {
        let all: Vec<u32> = (0..n).rev().collect();
        let mut sizes = Vec::new();
        let (items, more) = collect_pages(want, max_page, |cursor: Option<usize>, size| {
            sizes.push(size);
            let from = cursor.unwrap_or(0);
            let got: Vec<u32> = all.iter().skip(from).take(size as usize).copied().collect();
            let next = (got.len() == size as usize).then_some(from + got.len());
            async move { Ok((got, next)) }
        })
        .await
        .unwrap();
        (items, more, sizes)
    }

    #[tokio::test]
    async fn a_list_follows_pages_to_the_length_asked_and_says_whether_there_are_more() {
        let (items, more, sizes) = list(1200, 1100, 500).await;
        assert_eq!(items.len(), 1100);
        assert_eq!(
            (items[0], items[1099]),
            (1199, 100),
            "newest first, none skipped or repeated"
        );
        assert!(more);
        assert_eq!(sizes, [500, 500, 101]);

        // Exactly as many as asked: all of them, and no "more" although the last page was full.
        let (items, more, _) = list(50, 50, 500).await;
        assert_eq!((items.len(), more), (50, false));
        let (items, more, sizes) = list(1000, 1000, 500).await;
        assert_eq!((items.len(), more, sizes), (1000, false, vec![500, 500, 1]));
        let (items, more, _) = list(3, 50, 500).await;
        assert_eq!((items, more), (vec![2, 1, 0], false));
    }
}
