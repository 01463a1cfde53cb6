//! `agentpool status`: the queue at a glance, from `GET /v1/queue/stats` — queued tasks (due,
//! able to run now), running tasks and workers by status, of the whole pool or of the workers
//! a selector names, with a word on what stands out (work no worker is online for or none
//! offers what it needs, more work that could run than free slots, workers that claim
//! nothing).

use agentpool_core::Labels;
use agentpool_core::protocol::QueueStats;

use super::{connect, print_json};
use crate::cli::StatusArgs;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::{self, Style};

pub async fn status(settings: &Settings, a: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    // Without --label, every worker and task whatever their labels (an empty selector would
    // mean workers with none).
    let labels: Labels = a.labels.iter().cloned().collect();
    let selector = (!a.labels.is_empty()).then_some(&labels);
    let stats = client.queue_stats(selector, &a.agents, &a.projects).await?;
    if settings.json() {
        print_json(&stats)?;
    } else {
        out!("{}", render(&Style::stdout(), &a, &stats));
    }
    Ok(ExitCode::Success)
}

/// The figures, a line each, then what stands out.
fn render(style: &Style, a: &StatusArgs, s: &QueueStats) -> String {
    let mut out = output::field(style, "for", &scope(a));
    let runnable = s.queued_runnable.unwrap_or(s.queued_due);
    out.push_str(&output::field(
        style,
        "queued",
        &format!("{}: {} due, {runnable} can run now", s.queued, s.queued_due),
    ));
    out.push_str(&output::field(style, "running", &s.running.to_string()));
    let c = &s.worker_counts;
    let mut by_status = vec![format!("{} busy", c.busy), format!("{} idle", c.idle)];
    for (n, what) in [(c.draining, "draining"), (c.unhealthy, "unhealthy")] {
        if n > 0 {
            by_status.push(format!("{n} {what}"));
        }
    }
    let free = u64::from(c.slots).saturating_sub(s.running);
    out.push_str(&output::field(
        style,
        "workers",
        &format!(
            "{} online ({}), {free} of {} slots free",
            c.online,
            by_status.join(", "),
            c.slots
        ),
    ));
    for note in notes(s, runnable, free) {
        out.push_str(&format!("{}\n", style.yellow(&note)));
    }
    out
}

/// Which workers the figures are of, in words; empty for all of them.
fn scope(a: &StatusArgs) -> String {
    let mut parts = Vec::new();
    if !a.labels.is_empty() {
        let pairs: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("workers labelled {}", pairs.join(",")));
    }
    if !a.agents.is_empty() {
        parts.push(format!("offering {}", a.agents.join(", ")));
    }
    if !a.projects.is_empty() {
        parts.push(format!("tasks of {}", a.projects.join(", ")));
    }
    parts.join("; ")
}

/// What a reader should not miss.
fn notes(s: &QueueStats, runnable: u64, free: u64) -> Vec<String> {
    let c = &s.worker_counts;
    let mut notes = Vec::new();
    if runnable > 0 && c.online == 0 {
        notes.push(format!(
            "no worker is online: {runnable} task(s) that could run wait for one"
        ));
    } else {
        // Tasks no worker takes would not start on more workers like these.
        let for_these = runnable.saturating_sub(s.runnable_no_worker.unwrap_or(0));
        if for_these > free {
            notes.push(format!(
                "{for_these} task(s) could run now and {free} slot(s) are free: more workers would \
                 start them sooner"
            ));
        }
    }
    if let Some(n) = s.runnable_no_worker.filter(|n| *n > 0 && c.online > 0) {
        notes.push(format!(
            "{n} task(s) that could run now need what no worker taking tasks offers (an agent, \
             labels or a project): `agentpool tasks show ID` says which"
        ));
    }
    if c.unhealthy > 0 {
        notes.push(format!(
            "{} unhealthy worker(s) claim nothing until they recover: see `agentpool workers list`",
            c.unhealthy
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use agentpool_core::protocol::WorkerCounts;

    use super::*;

    fn args() -> StatusArgs {
        StatusArgs {
            labels: Vec::new(),
            agents: Vec::new(),
            projects: Vec::new(),
        }
    }

    fn stats(queued: u64, due: u64, runnable: u64, running: u64, counts: WorkerCounts) -> QueueStats {
        QueueStats {
            queued,
            queued_due: due,
            queued_runnable: Some(runnable),
            runnable_no_worker: Some(0),
            running,
            worker_counts: counts,
            workers: Vec::new(),
        }
    }

    #[test]
    fn the_figures_and_what_stands_out() {
        let counts = WorkerCounts {
            online: 2,
            idle: 0,
            busy: 1,
            draining: 0,
            unhealthy: 1,
            slots: 4,
        };
        let text = render(&Style::plain(), &args(), &stats(12, 9, 4, 3, counts));
        assert_eq!(
            text,
            "queued     12: 9 due, 4 can run now\n\
             running    3\n\
             workers    2 online (1 busy, 0 idle, 1 unhealthy), 1 of 4 slots free\n\
             4 task(s) could run now and 1 slot(s) are free: more workers would start them sooner\n\
             1 unhealthy worker(s) claim nothing until they recover: see `agentpool workers list`\n"
        );
    }

    #[test]
    fn work_with_no_worker_online_is_called_out_and_a_selector_is_named() {
        let a = StatusArgs {
            labels: vec![("gpu".into(), "a100".into())],
            agents: vec!["codex".into()],
            projects: Vec::new(),
        };
        let text = render(&Style::plain(), &a, &stats(2, 2, 2, 0, WorkerCounts::default()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "for        workers labelled gpu=a100; offering codex");
        assert_eq!(
            lines[4],
            "no worker is online: 2 task(s) that could run wait for one"
        );
        // A quiet pool has nothing to say.
        let idle = WorkerCounts {
            online: 1,
            idle: 1,
            slots: 2,
            ..WorkerCounts::default()
        };
        let text = render(&Style::plain(), &args(), &stats(0, 0, 0, 0, idle.clone()));
        assert_eq!(text.lines().count(), 3, "{text}");
        // Work that no worker taking tasks could take.
        let mut s = stats(3, 3, 3, 0, idle);
        s.runnable_no_worker = Some(3);
        let text = render(&Style::plain(), &args(), &s);
        assert!(
            text.ends_with(
                "workers    1 online (0 busy, 1 idle), 2 of 2 slots free\n\
                 3 task(s) that could run now need what no worker taking tasks offers (an agent, \
                 labels or a project): `agentpool tasks show ID` says which\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_older_server_is_read_by_its_due_tasks() {
        let mut s = stats(5, 3, 0, 0, WorkerCounts::default());
        s.queued_runnable = None;
        let text = render(&Style::plain(), &args(), &s);
        assert!(text.starts_with("queued     5: 3 due, 3 can run now\n"), "{text}");
    }
}
