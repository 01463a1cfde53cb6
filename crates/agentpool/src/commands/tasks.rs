//! `submit`, `run` and `tasks …`: submitting a task (and saying when no worker could run it),
//! following it, and printing tasks for people and for scripts.

use agentpool_core::spec::DEDICATED_LABEL;
use agentpool_core::{Task, TaskId, TaskState};

use super::follow::{Waits, follow_saying, stopped_following, until_interrupted, wait_for, wait_saying};
use super::pool::Signals;
use super::task_spec::{note_uncommitted, refused, spec_from};
use super::{collect_pages, connect, find_server, print_json, print_list};
use crate::access::AgentAccess;
use crate::cli::{LogsArgs, RunArgs, SubmitArgs, TasksCommand};
use crate::config::Settings;
use crate::data_dir_lock;
use crate::embedded::{Embedded, EmbeddedOptions};
use crate::exit::{Exit, ExitCode};
use crate::output::{self, StatusLine, Style};
use agentpool_client::Client;
use agentpool_core::protocol::{CancelRequest, TaskDetail, TaskListQuery, WaitReason};
use tokio_util::sync::CancellationToken;

pub async fn submit(settings: &Settings, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let spec = spec_from(&args.task)?;
    note_uncommitted(&spec);
    let client = connect(settings).await?;
    let enqueued = client.submit(&spec).await.map_err(refused)?;
    let task = enqueued.task;
    // A key seen before returns the earlier task, as it is, whatever this submit asked for:
    // say so, or "submitted" would claim a new task that runs what was just typed.
    let how = if enqueued.created {
        "submitted".to_string()
    } else {
        format!(
            "already submitted (idempotency key {})",
            task.spec.idempotency_key.as_deref().unwrap_or_default()
        )
    };
    // A script reads the task from stdout either way; a person (or a log) learns from stderr
    // that nothing new was submitted.
    if !enqueued.created && settings.json() {
        eprintln!("agentpool: {how}");
    }
    if !args.wait {
        if settings.json() {
            print_json(&task)?;
        } else {
            outln!("{}", task.id);
            let err = Style::stderr();
            // A task can be over at once (a dependency that had failed, an idempotency key of
            // a finished task): then there is nothing to follow, and the why is the news.
            let after = if task.state.is_finished() {
                let class = task.error_class.map(|c| c.as_str()).unwrap_or_default();
                let why = format!("{class} {}", task.error_message.as_deref().unwrap_or_default());
                match why.trim() {
                    "" => format!("— see `agentpool tasks show {}`", task.id),
                    why => format!("({why}) — see `agentpool tasks show {}`", task.id),
                }
            } else {
                format!("— follow it with `agentpool tasks logs -f {}`", task.id)
            };
            eprintln!(
                "{} {} {}",
                err.dim(&format!("{how}, now")),
                err.state(task.state),
                err.dim(&after)
            );
            // Why it waits: a typo in --agent or --label, a spent budget, is otherwise found
            // only by whoever wonders why the task never starts. A failed read says nothing.
            if task.state == TaskState::Queued {
                let first = client.get_task(task.id).await.ok();
                Waits::new(true).seeded(first.as_ref());
            }
        }
        return Ok(ExitCode::Success);
    }
    let signals = Signals::new();
    if !enqueued.created && !settings.json() {
        eprintln!(
            "{}",
            Style::stderr().dim(&format!("agentpool: {how}; following that task"))
        );
    }
    if !settings.json() {
        let s = Style::stdout();
        outln!("{} {}", s.dim("task"), s.bold(&task.id.to_string()));
    }
    // Read at once, so that why it waits is said before anything else happens to it.
    let first = client.get_task(task.id).await.ok();
    let waits = Waits::new(!settings.json()).seeded(first.as_ref());
    let following = wait_saying(&client, task.id, settings.json(), false, waits);
    let view = until_interrupted(task.id, signals, following).await?;
    finish(settings, &view)
}

pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut spec = spec_from(&args.task)?;
    note_uncommitted(&spec);
    let access = AgentAccess::resolve(&args.access)?;
    let (client, embedded) = match find_server(settings).await? {
        Some(c) if !args.access.is_empty() => {
            return Err(Exit::new(
                ExitCode::Usage,
                format!(
                    "--agent-env and --use-local-login apply to a transient pool, but a server runs at {}: \
                     give them to `agentpool up`, or store the key (`agentpool credentials put`)",
                    c.base_url()
                ),
            )
            .into());
        }
        Some(c) => (c, None),
        None => {
            let status = Style::stderr();
            if !settings.json() {
                eprintln!(
                    "{}",
                    status.dim("no server running: starting a transient embedded pool")
                );
            }
            // Shared with other transient runs, which may use this data dir at once; refused
            // while an `up` is starting on it.
            let lock = data_dir_lock::for_transient_run(&settings.data_dir)?;
            let mut opts = EmbeddedOptions::transient(settings, args.workers);
            // The pool is for this run's task alone: other tasks queued in the database (tasks
            // submitted for an `up`, other transient runs' tasks) are not its to run, and one
            // it took would hold this run up until it ended, or be handed back and run again.
            let dedication = (
                DEDICATED_LABEL.to_string(),
                format!("run-{}", uuid::Uuid::now_v7()),
            );
            spec.labels.insert(dedication.0.clone(), dedication.1.clone());
            opts.labels.push(dedication);
            opts.access = access;
            opts.runner = args.runner.clone();
            let e = Embedded::start(opts).await?;
            (settings.client(&e.url)?, Some((e, lock)))
        }
    };
    let (embedded, lock) = embedded.unzip();
    let transient = embedded.is_some();
    // The first Ctrl-C (or SIGTERM) interrupts the following; with a transient pool, a second
    // one stops the pool at once, without waiting for the canceled task's worker to end it.
    let interrupted = CancellationToken::new();
    let watcher = {
        let interrupted = interrupted.clone();
        let stop_now = embedded.as_ref().map(Embedded::stop_now_token);
        let mut signals = Signals::new();
        tokio::spawn(async move {
            signals.next().await;
            interrupted.cancel();
            let Some(now) = stop_now else { return };
            signals.next().await;
            eprintln!("{}", Style::stderr().dim("stopping the pool now"));
            now.cancel();
        })
    };
    let outcome = async {
        let task = client.submit(&spec).await.map_err(refused)?.task;
        if !settings.json() {
            let s = Style::stdout();
            outln!("{} {}", s.dim("task"), s.bold(&task.id.to_string()));
        }
        let first = client.get_task(task.id).await.ok();
        if transient && let Some(needs) = first.as_ref().and_then(no_worker_in_transient_pool) {
            // Its workers are all the pool has: the task would wait forever. An agent it
            // lacks is one this machine lacks: say how to install it.
            let missing = task.spec.required_agent().filter(|a| {
                embedded
                    .as_ref()
                    .is_some_and(|e| !e.agents.iter().any(|o| o == a))
            });
            let mut hint = match missing {
                Some(a) => format!(
                    " (agents are looked up in AGENTPOOL_AGENT_BIN_DIR, then on PATH){}",
                    crate::embedded::install_hint(a)
                        .map(|h| format!("; install it: {h}"))
                        .unwrap_or_default()
                ),
                None => String::new(),
            };
            // Its workers carry no labels: a labelled task needs a pool that does.
            let labels: Vec<String> = task
                .spec
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("agentpool/"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !labels.is_empty() {
                hint.push_str(&format!(
                    "; its workers carry no labels: start a pool whose workers do (`agentpool up --labels {}`)",
                    labels.join(",")
                ));
            }
            let why = format!("the transient pool cannot run it: none of its workers offers {needs}{hint}");
            client
                .cancel_because(task.id, &CancelRequest::fitted(&why))
                .await?;
            return Err(Exit::new(ExitCode::Failed, format!("{why}; the task was canceled")).into());
        }
        // Why it waits (no worker online that can run it, too) is said from here on.
        let waits = Waits::new(!settings.json()).seeded(first.as_ref());
        let view = tokio::select! {
            v = wait_saying(&client, task.id, settings.json(), true, waits) => v?,
            why = all_unhealthy(embedded.as_ref()) => {
                // Its workers are all the pool has, and none claims any more. A worker turns
                // unhealthy before it hands its last task back: let that report land first,
                // or the cancel would end the attempt it is handing back.
                handed_back(&client, task.id).await;
                let why = format!("the transient pool cannot run it: {}", why.join("; "));
                client.cancel_because(task.id, &CancelRequest::fitted(&why)).await?;
                let view = wait_for(&client, task.id, settings.json(), false).await?;
                // The task as it ended, with its attempts; its own error (canceled, with the
                // reason cut to fit) gives way to the whole reason.
                let _ = finish(settings, &view);
                return Err(Exit::new(ExitCode::Failed, format!("{why}; the task was canceled")).into());
            }
            _ = interrupted.cancelled() => {
                if !transient {
                    // The server keeps the task; only this follower goes away.
                    return Err(stopped_following(task.id));
                }
                // The transient pool dies with us, so its task must not be left running.
                eprintln!(
                    "{}",
                    Style::stderr().dim("interrupted: canceling the task (Ctrl-C again to stop the pool at once)")
                );
                let why = CancelRequest::fitted("agentpool run was interrupted");
                client.cancel_because(task.id, &why).await?;
                wait_for(&client, task.id, settings.json(), false).await?
            }
        };
        let done = finish(settings, &view);
        if transient {
            return done.map_err(|e| with_access_hint(e, &view.task));
        }
        done
    }
    .await;
    if let Some(e) = embedded {
        e.stop().await?;
    }
    watcher.abort();
    drop(lock);
    outcome
}

/// Once every worker of a transient pool is unhealthy, why; never for a server's pool (other
/// workers may come, and its own recover by themselves).
async fn all_unhealthy(embedded: Option<&Embedded>) -> Vec<String> {
    match embedded {
        Some(e) => e.all_unhealthy().await,
        None => std::future::pending().await,
    }
}

/// Returns once task `id` is not running (its worker's report landed), or after a while: the
/// report of a worker on loopback takes milliseconds, and the events stream does not say
/// when the task is back in the queue.
async fn handed_back(client: &Client, id: TaskId) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        match client.get_task(id).await {
            Ok(d) if d.task.state != TaskState::Running => return,
            Err(_) => return,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// A transient pool's agents see nothing of the caller's environment or login unless the run
/// names it: when one failed for want of credentials, the failure line says how to pass them
/// (the worker's own message speaks of stored credentials, which a transient pool has none of).
fn with_access_hint(e: anyhow::Error, task: &agentpool_core::Task) -> anyhow::Error {
    if task.error_class != Some(agentpool_core::ErrorClass::AuthFailed) {
        return e;
    }
    let mut exit = match e.downcast::<Exit>() {
        Ok(exit) => exit,
        Err(e) => return e,
    };
    exit.message
        .push_str(" — with `agentpool run`, pass the variable from your environment with `--agent-env NAME`");
    if let Some(agent) = task
        .spec
        .agent
        .as_deref()
        .filter(|a| !agentpool_agents::login::files_of(a).is_empty())
    {
        exit.message.push_str(&format!(
            ", or your {agent} login with `--use-local-login {agent}`"
        ));
    }
    exit.into()
}

/// What a worker would have to offer to run task `d`, when none of a transient pool's does
/// (an agent not installed on this machine, a label its workers do not carry). They all read
/// local repositories and are dedicated to the task, so neither label is named as what they
/// lack.
fn no_worker_in_transient_pool(d: &TaskDetail) -> Option<String> {
    d.waiting.iter().find_map(|w| {
        let mut w = w.clone();
        if let WaitReason::NoWorkerCanRun { labels, .. } = &mut w {
            labels.remove(agentpool_core::spec::LOCAL_REPOS_LABEL);
            labels.remove(DEDICATED_LABEL);
        }
        w.no_worker_offers()
    })
}

/// Print the outcome and turn the final state into the exit code.
pub(crate) fn finish(settings: &Settings, view: &TaskDetail) -> anyhow::Result<ExitCode> {
    let t = &view.task;
    if settings.json() {
        print_json(view)?;
    } else {
        let s = Style::stdout();
        out!("{}", output::task_detail(&s, view));
    }
    let code = outcome_code(t.state);
    if code != ExitCode::Success {
        let class = t.error_class.map(|c| c.as_str()).unwrap_or("");
        let msg = t.error_message.as_deref().unwrap_or("");
        return Err(Exit::new(
            code,
            format!("task {} {}: {class} {msg}", t.id, t.state)
                .trim_end()
                .to_string(),
        )
        .into());
    }
    Ok(code)
}

/// The most tasks `GET /v1/tasks` returns in one page.
const MAX_LIST_PAGE: usize = 500;

/// Up to `want` of the tasks `query` matches, newest first, and whether more match.
pub(super) async fn list_matching(
    client: &Client,
    query: &TaskListQuery,
    want: usize,
) -> anyhow::Result<(Vec<Task>, bool)> {
    collect_pages(want, MAX_LIST_PAGE, |cursor, limit| {
        let q = TaskListQuery {
            cursor,
            limit: Some(limit),
            ..query.clone()
        };
        async move {
            let p = client.list_tasks(&q).await?;
            Ok((p.tasks, p.next_cursor.map(|c| c.to_string())))
        }
    })
    .await
}

pub async fn tasks(settings: &Settings, cmd: TasksCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    let out = Style::stdout();
    match cmd {
        TasksCommand::List(a) => {
            let query = a.filters.query(a.filters.state);
            let (tasks, more) = list_matching(&client, &query, a.limit as usize).await?;
            print_list(settings, &tasks, "tasks", |tasks| {
                out!("{}", output::tasks_table(&out, tasks))
            })?;
            if more && !settings.json() {
                eprintln!(
                    "the newest {} shown; there are more (--limit N shows more)",
                    tasks.len()
                );
            }
        }
        TasksCommand::Show { id } => {
            let view = client.get_task(id).await?;
            if settings.json() {
                print_json(&view)?;
            } else {
                out!("{}", output::task_detail(&out, &view));
            }
        }
        TasksCommand::Cancel(args) => return super::bulk::cancel(settings, &client, args).await,
        TasksCommand::Retry(args) => return super::bulk::retry(settings, &client, args).await,
        TasksCommand::Logs(a) => return logs(settings, &client, a).await,
        TasksCommand::Wait(a) => {
            let timeout = a.timeout.map(std::time::Duration::from_secs);
            return super::follow::wait_all(settings, &client, &a.ids, timeout).await;
        }
    }
    Ok(ExitCode::Success)
}

/// `tasks logs ID [-f]`. With JSON output: an array of events, or with `-f` one event per line
/// (NDJSON) as they arrive, so a script can consume them live.
async fn logs(settings: &Settings, client: &Client, a: LogsArgs) -> anyhow::Result<ExitCode> {
    let style = Style::stdout();
    if !a.follow {
        // A person sees each page as it comes (`| head` answers at once, however long the
        // log); JSON is one array, so it is printed whole.
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = client.events(a.id, after, 500).await?.events;
            let Some(last) = page.last() else { break };
            after = last.seq;
            if settings.json() {
                all.extend(page);
            } else {
                for ev in &page {
                    if let Some(l) = output::render_event(&style, ev) {
                        outln!("{l}");
                    }
                }
            }
        }
        if settings.json() {
            print_json(&all)?;
        }
        return Ok(ExitCode::Success);
    }
    let json = settings.json();
    let signals = Signals::new();
    let mut status = StatusLine::new(!json);
    let following = follow_saying(client, a.id, &mut status, Waits::new(!json), |ev, st| {
        if json {
            if let Ok(s) = serde_json::to_string(ev) {
                outln!("{s}");
            }
        } else if let Some(l) = output::render_event(&style, ev) {
            st.println(&l);
        }
    });
    let view = until_interrupted(a.id, signals, following).await?;
    if !json {
        let s = Style::stderr();
        eprintln!("{} {}", s.dim("task ended:"), s.state(view.task.state));
    }
    // The line above (or the terminal event) already says how it ended.
    Ok(if a.exit_status {
        outcome_code(view.task.state)
    } else {
        ExitCode::Success
    })
}

/// The exit code of a task that ended in `state`.
fn outcome_code(state: TaskState) -> ExitCode {
    match state {
        TaskState::Succeeded => ExitCode::Success,
        TaskState::Canceled => ExitCode::Canceled,
        _ => ExitCode::Failed,
    }
}
