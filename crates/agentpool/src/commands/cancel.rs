//! `agentpool tasks cancel`: the tasks named, or every unfinished one a filter matches (a
//! batch submitted with a wrong prompt, a project's queue), each with the same reason.

use agentpool_client::Client;
use agentpool_core::protocol::{CancelRequest, TaskListQuery};
use agentpool_core::{Task, TaskId, TaskState};

use super::print_json;
use super::tasks::list_matching;
use crate::cli::CancelArgs;
use crate::config::Settings;
use crate::exit::{Exit, ExitCode};
use crate::output::Style;

/// The most tasks one filter may cancel: past it, nothing is canceled and the filter is to be
/// narrowed (a typo in a label should not empty the queue page by page).
const MAX_MATCHED: usize = 10_000;

pub async fn cancel(settings: &Settings, client: &Client, args: CancelArgs) -> anyhow::Result<ExitCode> {
    let why = CancelRequest {
        reason: args.reason.clone(),
    };
    // Checked before anything is canceled, as the server checks it.
    why.checked_reason()
        .map_err(|m| Exit::new(ExitCode::Usage, format!("invalid field reason: {m}")))?;
    let named = !args.ids.is_empty();
    let ids = if named {
        args.ids.clone()
    } else {
        matching(client, &args).await?
    };
    let out = Style::stdout();
    let mut done: Vec<Task> = Vec::new();
    let mut refused = 0usize;
    for id in &ids {
        let r = match why.reason {
            Some(_) => client.cancel_because(*id, &why).await,
            None => client.cancel(*id).await,
        };
        let task = match r {
            Ok(t) => t,
            // One named alone: its error is the command's.
            Err(e) if named && ids.len() == 1 => return Err(e.into()),
            // Finished (or purged) since it was listed or named: nothing left to cancel.
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(404 | 409)) => {
                if named {
                    eprintln!("agentpool: {id}: {e}");
                    refused += 1;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !settings.json() {
            if task.state == TaskState::Running {
                outln!("{} cancel requested; its worker stops it now", task.id);
            } else {
                outln!("{} {}", task.id, out.state(task.state));
            }
        }
        done.push(task);
    }
    if settings.json() {
        match (named && ids.len() == 1, done.first()) {
            (true, Some(one)) => print_json(one)?,
            _ => print_json(&done)?,
        }
    } else if !named {
        eprintln!("{}", summary(&done));
    }
    if refused > 0 {
        return Err(Exit::new(
            ExitCode::Failed,
            format!("{refused} of {} tasks could not be canceled", ids.len()),
        )
        .into());
    }
    Ok(ExitCode::Success)
}

/// The ids of the unfinished tasks the filters match, running ones first.
async fn matching(client: &Client, args: &CancelArgs) -> anyhow::Result<Vec<TaskId>> {
    let states = match args.state {
        None => vec![TaskState::Running, TaskState::Queued],
        Some(s @ (TaskState::Queued | TaskState::Running)) => vec![s],
        Some(s) => {
            return Err(Exit::new(
                ExitCode::Usage,
                format!("--state {s} names finished tasks; only queued or running ones can be canceled"),
            )
            .into());
        }
    };
    let mut ids = Vec::new();
    for state in states {
        let query = TaskListQuery {
            state: Some(state.to_string()),
            project: args.project.clone(),
            label: args.label.as_ref().map(|(k, v)| format!("{k}={v}")),
            worker: args.worker.clone(),
            cursor: None,
            limit: None,
        };
        let (tasks, more) = list_matching(client, &query, MAX_MATCHED - ids.len()).await?;
        if more {
            return Err(Exit::new(
                ExitCode::Usage,
                format!("more than {MAX_MATCHED} tasks match; narrow the filters (nothing was canceled)"),
            )
            .into());
        }
        ids.extend(tasks.iter().map(|t| t.id));
    }
    Ok(ids)
}

/// What a filtered cancel did, in one line.
fn summary(done: &[Task]) -> String {
    let running = done.iter().filter(|t| t.state == TaskState::Running).count();
    match (done.len(), running) {
        (0, _) => "no queued or running task matches".to_string(),
        (n, 0) => format!("canceled {n} {}", plural(n)),
        (n, r) => format!(
            "canceled {n} {} ({r} running: {} stop them now)",
            plural(n),
            if r == 1 { "its worker" } else { "their workers" }
        ),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "task" } else { "tasks" }
}
