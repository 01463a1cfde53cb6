//! `agentpool schedules`: put, list, show, run, pause, resume and delete the schedules that
//! submit tasks on a cron expression.

use agentpool_core::schedule::{Overlap, Schedule, ScheduleSpec};

use super::task_spec::{refused_schedule, spec_from};
use super::{connect, print_detail, print_done, print_json, print_table};
use crate::cli::{SchedulePutArgs, SchedulesCommand};
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::{self, Style};

pub async fn schedules(settings: &Settings, cmd: SchedulesCommand) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match cmd {
        SchedulesCommand::Put(args) => {
            let name = args.name.clone();
            let spec = spec_of(&args)?;
            let s = client
                .put_schedule(&name, &spec)
                .await
                .map_err(refused_schedule)?;
            if settings.json() {
                print_json(&s)?;
            } else {
                outln!("schedule {name} stored; {}", next_words(&s));
            }
        }
        SchedulesCommand::List => {
            let list = client.list_schedules().await?;
            let head = ["NAME", "WHEN", "NEXT RUN", "LAST RUN"];
            print_table(settings, &list, "schedules", &head, |s| {
                let zone = s.spec.time_zone.as_deref().unwrap_or("UTC");
                vec![
                    s.name.clone(),
                    format!("{} ({zone})", s.spec.cron),
                    next_run(s),
                    s.last_message.clone().unwrap_or_else(|| "not run yet".into()),
                ]
            })?;
        }
        SchedulesCommand::Show { name } => {
            let s = client.get_schedule(&name).await?;
            print_detail(settings, &s, |out| detail(out, &s))?;
        }
        SchedulesCommand::Run { name } => {
            let out = client.run_schedule(&name).await.map_err(refused_schedule)?;
            if settings.json() {
                print_json(&out)?;
            } else {
                // The id alone on stdout, as `submit` prints it, for `$(…)`.
                outln!("{}", out.task.id);
            }
        }
        SchedulesCommand::Pause { name } => set_paused(settings, &client, &name, true).await?,
        SchedulesCommand::Resume { name } => set_paused(settings, &client, &name, false).await?,
        SchedulesCommand::Delete { name } => {
            client.delete_schedule(&name).await?;
            print_done(settings, "schedule", &name, "deleted")?;
        }
    }
    Ok(ExitCode::Success)
}

/// The schedule the flags describe.
fn spec_of(args: &SchedulePutArgs) -> anyhow::Result<ScheduleSpec> {
    Ok(ScheduleSpec {
        cron: args.cron.clone(),
        time_zone: args.time_zone.clone(),
        task: spec_from(&args.task)?,
        overlap: args.overlap,
        paused: args.paused,
    })
}

/// Pause or resume `name`.
async fn set_paused(
    settings: &Settings,
    client: &agentpool_client::Client,
    name: &str,
    paused: bool,
) -> anyhow::Result<()> {
    let s = if paused {
        client.pause_schedule(name).await?
    } else {
        client.resume_schedule(name).await?
    };
    if settings.json() {
        print_json(&s)?;
    } else {
        // A paused schedule has no next run to name: its next-run words would only repeat
        // "paused".
        if paused {
            outln!("schedule {name} paused");
        } else {
            outln!("schedule {name} resumed; {}", next_words(&s));
        }
    }
    Ok(())
}

/// `schedules show`: when it runs, what it submits, and what its last run did.
fn detail(out: &Style, s: &Schedule) -> Vec<(&'static str, String)> {
    let task = &s.spec.task;
    let last = match (s.last_run_at, &s.last_message) {
        (Some(at), Some(what)) => format!("{}: {what}", at.format("%Y-%m-%d %H:%M UTC")),
        (Some(at), None) => at.format("%Y-%m-%d %H:%M UTC").to_string(),
        (None, _) => "not run yet".to_string(),
    };
    let overlap = match s.spec.overlap {
        Overlap::Skip => "skip a run while the last task is unfinished",
        Overlap::Allow => "submit every run, even while the last task is unfinished",
    };
    vec![
        ("schedule", out.bold(&s.name)),
        (
            "when",
            format!(
                "{} ({})",
                s.spec.cron,
                s.spec.time_zone.as_deref().unwrap_or("UTC")
            ),
        ),
        ("next run", next_run(s)),
        ("submits", output::spec_what(task)),
        ("project", task.project.clone().unwrap_or_default()),
        ("repo", task.repo.clone().unwrap_or_default()),
        ("labels", output::labels(&task.labels)),
        ("overlap", overlap.to_string()),
        ("last run", last),
        (
            "last task",
            s.last_task.map(|t| t.to_string()).unwrap_or_default(),
        ),
        ("updated", output::relative(s.updated_at)),
    ]
}

/// When it runs next, in words.
fn next_words(s: &Schedule) -> String {
    match s.next_run_at {
        Some(_) => format!("next run {}", next_run(s)),
        None => next_run(s),
    }
}

/// When it runs next, or why it does not.
fn next_run(s: &Schedule) -> String {
    match s.next_run_at {
        Some(t) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        None if s.spec.paused => "paused".to_string(),
        None => "no run time comes".to_string(),
    }
}
