//! `agentpool tasks cancel` and `tasks retry`: the tasks named, or every one a filter matches
//! among those the action applies to (a batch submitted with a wrong prompt, the tasks that
//! failed `AUTH_FAILED` before a key was fixed), one request each.

use agentpool_client::Client;
use agentpool_core::protocol::{CancelRequest, Retried};
use agentpool_core::{Task, TaskId, TaskState};
use serde::Serialize;

use super::print_json;
use super::tasks::list_matching;
use crate::cli::{CancelArgs, RetryArgs, Selection};
use crate::config::Settings;
use crate::exit::{Exit, ExitCode};
use crate::output::Style;

/// The most tasks one filter may act on: past it, nothing is done and the filter is to be
/// narrowed (a typo in a label should not empty the queue page by page).
const MAX_MATCHED: usize = 10_000;

pub async fn cancel(settings: &Settings, client: &Client, args: CancelArgs) -> anyhow::Result<ExitCode> {
    let why = CancelRequest {
        reason: args.reason.clone(),
    };
    // Checked before anything is canceled, as the server checks it.
    why.checked_reason()
        .map_err(|m| Exit::new(ExitCode::Usage, format!("invalid field reason: {m}")))?;
    let ids = select(
        client,
        &args.which,
        [TaskState::Running, TaskState::Queued],
        "canceled",
    )
    .await?;
    let (out, why) = (&Style::stdout(), &why);
    let done = act(settings, &args.which, &ids, "canceled", |id| async move {
        let task = match why.reason {
            Some(_) => client.cancel_because(id, why).await?,
            None => client.cancel(id).await?,
        };
        if !settings.json() {
            if task.state == TaskState::Running {
                outln!("{} cancel requested; its worker stops it now", task.id);
            } else {
                outln!("{} {}", task.id, out.state(task.state));
            }
        }
        Ok(task)
    })
    .await?;
    if !settings.json() && args.which.ids.is_empty() {
        let running = done
            .iter()
            .filter(|t: &&Task| t.state == TaskState::Running)
            .count();
        eprintln!("{}", cancel_summary(done.len(), running));
    }
    Ok(ExitCode::Success)
}

pub async fn retry(settings: &Settings, client: &Client, args: RetryArgs) -> anyhow::Result<ExitCode> {
    let ids = select(
        client,
        &args.which,
        [TaskState::Failed, TaskState::Canceled],
        "retried",
    )
    .await?;
    let out = &Style::stdout();
    let done = act(settings, &args.which, &ids, "retried", |id| async move {
        let retried = client.retry(id).await?;
        if !settings.json() {
            outln!("{} {}", retried.task.id, out.state(retried.task.state));
            let dependents = &retried.requeued_dependents;
            if !dependents.is_empty() {
                let n = dependents.len();
                outln!(
                    "and {n} dependent{} that failed because of it, queued again:",
                    if n == 1 { "" } else { "s" }
                );
                for d in dependents {
                    outln!("  {d}");
                }
            }
        }
        Ok(retried)
    })
    .await?;
    if !settings.json() && args.which.ids.is_empty() {
        let dependents: usize = done.iter().map(|r: &Retried| r.requeued_dependents.len()).sum();
        eprintln!("{}", retry_summary(done.len(), dependents));
    }
    Ok(ExitCode::Success)
}

/// The ids to act on: those named, or those the filters match in `states` (newest first, the
/// first state's first), refused when more than [`MAX_MATCHED`] match. `done` is the verb's
/// past participle, for the messages.
async fn select(
    client: &Client,
    which: &Selection,
    states: [TaskState; 2],
    done: &str,
) -> anyhow::Result<Vec<TaskId>> {
    if !which.ids.is_empty() {
        return Ok(which.ids.clone());
    }
    let states = match which.filters.state {
        None => states.to_vec(),
        Some(s) if states.contains(&s) => vec![s],
        Some(s) => {
            return Err(Exit::new(
                ExitCode::Usage,
                format!(
                    "--state {s}: only {} or {} tasks can be {done}",
                    states[0], states[1]
                ),
            )
            .into());
        }
    };
    let mut ids = Vec::new();
    for state in states {
        let query = which.filters.query(Some(state));
        let (tasks, more) = list_matching(client, &query, MAX_MATCHED - ids.len()).await?;
        if more {
            return Err(Exit::new(
                ExitCode::Usage,
                format!("more than {MAX_MATCHED} tasks match; narrow the filters (nothing was {done})"),
            )
            .into());
        }
        ids.extend(tasks.iter().map(|t| t.id));
    }
    Ok(ids)
}

/// Run `one` on each of `ids`, in order; what it returned for each. A task that finished (or
/// was acted on) since it was listed is passed over; a named one is said, and then the exit
/// code is 1. Any other error stops there: the rest is left as it was, and running the same
/// command again finishes it.
async fn act<T, F, Fut>(
    settings: &Settings,
    which: &Selection,
    ids: &[TaskId],
    verb_done: &str,
    one: F,
) -> anyhow::Result<Vec<T>>
where
    T: Serialize,
    F: Fn(TaskId) -> Fut,
    Fut: std::future::Future<Output = Result<T, agentpool_client::Error>>,
{
    let named = !which.ids.is_empty();
    let alone = named && ids.len() == 1;
    let mut done = Vec::new();
    let mut refused = 0usize;
    for id in ids {
        match one(*id).await {
            Ok(t) => done.push(t),
            // One named alone: its error is the command's.
            Err(e) if alone => return Err(e.into()),
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(404 | 409)) => {
                if named {
                    eprintln!("agentpool: {id}: {e}");
                    refused += 1;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if settings.json() {
        match (alone, done.first()) {
            (true, Some(one)) => print_json(one)?,
            _ => print_json(&done)?,
        }
    }
    if refused > 0 {
        return Err(Exit::new(
            ExitCode::Failed,
            format!("{refused} of {} tasks could not be {verb_done}", ids.len()),
        )
        .into());
    }
    Ok(done)
}

fn cancel_summary(n: usize, running: usize) -> String {
    match (n, running) {
        (0, _) => "no queued or running task matches".to_string(),
        (n, 0) => format!("canceled {n} {}", plural(n)),
        (n, r) => format!(
            "canceled {n} {} ({r} running: {} stop them now)",
            plural(n),
            if r == 1 { "its worker" } else { "their workers" }
        ),
    }
}

fn retry_summary(n: usize, dependents: usize) -> String {
    match (n, dependents) {
        (0, _) => "no failed or canceled task matches".to_string(),
        (n, 0) => format!("queued {n} {} again", plural(n)),
        (n, d) => format!(
            "queued {n} {} again, and {d} {} with them",
            plural(n),
            dependent(d)
        ),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "task" } else { "tasks" }
}

fn dependent(n: usize) -> &'static str {
    if n == 1 { "dependent" } else { "dependents" }
}
