//! `agentpool tasks cancel` and `tasks retry`: the tasks named, or every one a filter matches
//! among those the action applies to (a batch submitted with a wrong prompt, the tasks that
//! failed `AUTH_FAILED` before a key was fixed), up to 1000 tasks a request.

use agentpool_client::Client;
use agentpool_core::protocol::{BulkCancel, CancelRequest, MAX_BULK_TASKS, Retried, Skipped};
use agentpool_core::render::count;
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
    let states = [TaskState::Running, TaskState::Queued];
    let Some(ids) = select(settings, client, &args.which, states, "canceled").await? else {
        return Ok(ExitCode::Success);
    };
    let out = Style::stdout();
    let show = |task: &Task| {
        if task.state == TaskState::Running {
            outln!("{} cancel requested; its worker stops it now", task.id);
        } else {
            outln!("{} {}", task.id, out.state(task.state));
        }
    };
    let why = &why;
    let done = act(
        settings,
        &args.which,
        &ids,
        "canceled",
        |id| async move {
            match why.reason {
                Some(_) => client.cancel_because(id, why).await,
                None => client.cancel(id).await,
            }
        },
        |ids| async move {
            let req = BulkCancel {
                ids,
                reason: why.reason.clone(),
            };
            let r = client.cancel_many(&req).await?;
            Ok((r.canceled, r.skipped))
        },
        show,
    )
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
    let states = [TaskState::Failed, TaskState::Canceled];
    let Some(ids) = select(settings, client, &args.which, states, "retried").await? else {
        return Ok(ExitCode::Success);
    };
    let out = Style::stdout();
    let show = |retried: &Retried| {
        outln!("{} {}", retried.task.id, out.state(retried.task.state));
        let dependents = &retried.requeued_dependents;
        if !dependents.is_empty() {
            let n = dependents.len();
            outln!(
                "and {} that failed because of it, queued again:",
                count(n, "dependent", "dependents")
            );
            for d in dependents {
                outln!("  {d}");
            }
        }
    };
    let done = act(
        settings,
        &args.which,
        &ids,
        "retried",
        |id| client.retry(id),
        |ids| async move {
            let r = client.retry_many(&ids).await?;
            Ok((r.retried, r.skipped))
        },
        show,
    )
    .await?;
    if !settings.json() && args.which.ids.is_empty() {
        let dependents: usize = done.iter().map(|r: &Retried| r.requeued_dependents.len()).sum();
        eprintln!("{}", retry_summary(done.len(), dependents));
    }
    Ok(ExitCode::Success)
}

/// The ids to act on: those named, or those the filters match in `states` (newest first, the
/// first state's first), refused when more than [`MAX_MATCHED`] match. With `--dry-run`, the
/// matches are shown and `None` returned: nothing is to be done. `done` is the verb's past
/// participle, for the messages.
async fn select(
    settings: &Settings,
    client: &Client,
    which: &Selection,
    states: [TaskState; 2],
    done: &str,
) -> anyhow::Result<Option<Vec<TaskId>>> {
    if !which.ids.is_empty() {
        return Ok(Some(which.ids.clone()));
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
    let mut matched = Vec::new();
    for state in states {
        let query = which.filters.query(Some(state));
        let (tasks, more) = list_matching(client, &query, MAX_MATCHED - matched.len()).await?;
        if more {
            return Err(Exit::new(
                ExitCode::Usage,
                format!("more than {MAX_MATCHED} tasks match; narrow the filters (nothing was {done})"),
            )
            .into());
        }
        matched.extend(tasks);
    }
    if which.dry_run {
        if settings.json() {
            print_json(&matched)?;
        } else {
            if !matched.is_empty() {
                out!("{}", crate::output::tasks_table(&Style::stdout(), &matched));
            }
            let n = matched.len();
            eprintln!("{} would be {done}; none was (--dry-run)", tasks(n));
        }
        return Ok(None);
    }
    Ok(Some(matched.iter().map(|t| t.id).collect()))
}

/// Act on `ids`: one named alone through its own request (`one`: its error is the command's,
/// as it always was), otherwise in requests of up to [`MAX_BULK_TASKS`] (`many`: each one
/// transaction on the server), in order; `show` prints what each did. A task the action did
/// not apply to (finished, or acted on, since it was listed) is passed over; a named one is
/// said, and then the exit code is 1. A request that fails stops there: the rest is left as it
/// was, and running the same command again finishes it. A server older than the bulk requests
/// (it answers them 405) is sent one request per task instead.
async fn act<T, One, OneFut, Many, ManyFut>(
    settings: &Settings,
    which: &Selection,
    ids: &[TaskId],
    verb_done: &str,
    one: One,
    many: Many,
    show: impl Fn(&T),
) -> anyhow::Result<Vec<T>>
where
    T: Serialize,
    One: Fn(TaskId) -> OneFut,
    OneFut: std::future::Future<Output = Result<T, agentpool_client::Error>>,
    Many: Fn(Vec<TaskId>) -> ManyFut,
    ManyFut: std::future::Future<Output = Result<(Vec<T>, Vec<Skipped>), agentpool_client::Error>>,
{
    let named = !which.ids.is_empty();
    if let ([id], true) = (ids, named) {
        let done = one(*id).await?;
        match settings.json() {
            true => print_json(&done)?,
            false => show(&done),
        }
        return Ok(vec![done]);
    }
    let mut done = Vec::new();
    let mut refused = 0usize;
    let mut bulk = true;
    for chunk in ids.chunks(MAX_BULK_TASKS) {
        let (acted, skipped) = if bulk {
            match many(chunk.to_vec()).await {
                Ok(answer) => answer,
                // What a server's router answers for a route it does not have on that path.
                Err(e) if e.status().map(|s| s.as_u16()) == Some(405) => {
                    eprintln!("agentpool: the server predates bulk requests: one request per task");
                    bulk = false;
                    one_by_one(chunk, &one).await?
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            one_by_one(chunk, &one).await?
        };
        if !settings.json() {
            acted.iter().for_each(&show);
        }
        done.extend(acted);
        if named {
            for s in &skipped {
                eprintln!("agentpool: {}: {}", s.id, s.message);
            }
            refused += skipped.len();
        }
    }
    if settings.json() {
        print_json(&done)?;
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

/// `one` on each of `ids`, in order: what it did, and the tasks it was refused (404, 409) with
/// why, as a bulk request would have listed them.
async fn one_by_one<T, One, OneFut>(ids: &[TaskId], one: &One) -> anyhow::Result<(Vec<T>, Vec<Skipped>)>
where
    One: Fn(TaskId) -> OneFut,
    OneFut: std::future::Future<Output = Result<T, agentpool_client::Error>>,
{
    let (mut acted, mut skipped) = (Vec::new(), Vec::new());
    for id in ids {
        match one(*id).await {
            Ok(t) => acted.push(t),
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(404 | 409)) => {
                // The code a bulk request would have listed it with.
                let code = match &e {
                    agentpool_client::Error::Rejected { code, .. } => code.clone(),
                    agentpool_client::Error::StaleLease(_) => "stale_lease".to_string(),
                    _ => "not_found".to_string(),
                };
                let message = e.to_string();
                skipped.push(Skipped {
                    id: *id,
                    code,
                    message,
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((acted, skipped))
}

fn cancel_summary(n: usize, running: usize) -> String {
    match (n, running) {
        (0, _) => "no queued or running task matches".to_string(),
        (n, 0) => format!("canceled {}", tasks(n)),
        (n, 1) => format!("canceled {} (1 running: its worker stops it now)", tasks(n)),
        (n, r) => format!("canceled {} ({r} running: their workers stop them now)", tasks(n)),
    }
}

fn retry_summary(n: usize, dependents: usize) -> String {
    match (n, dependents) {
        (0, _) => "no failed or canceled task matches".to_string(),
        (n, 0) => format!("queued {} again", tasks(n)),
        (n, d) => format!(
            "queued {} again, and {} with them",
            tasks(n),
            count(d, "dependent", "dependents")
        ),
    }
}

fn tasks(n: usize) -> String {
    count(n, "task", "tasks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cancel_summary_agrees_with_its_counts() {
        assert_eq!(cancel_summary(0, 0), "no queued or running task matches");
        assert_eq!(cancel_summary(3, 0), "canceled 3 tasks");
        assert_eq!(
            cancel_summary(1, 1),
            "canceled 1 task (1 running: its worker stops it now)"
        );
        assert_eq!(
            cancel_summary(4, 2),
            "canceled 4 tasks (2 running: their workers stop them now)"
        );
    }
}
