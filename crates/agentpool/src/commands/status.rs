//! `agentpool status`: the queue at a glance, from `GET /v1/queue/stats` — queued tasks (due,
//! ready: due with nothing pending), running tasks and workers by status, of the whole pool or
//! of the workers a selector names, with a word on what stands out (ready work no worker is
//! online for or none offers what it needs, more ready work than free slots, workers that
//! claim nothing or stopped running an agent).

use agentpool_core::protocol::QueueStats;
use agentpool_core::render::count;
use agentpool_core::{Labels, WorkerStatus};

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
    // "Ready", not "can run now": a ready task may still need what no worker offers, which
    // a note below says.
    out.push_str(&output::field(
        style,
        "queued",
        &format!(
            "{}: {} due, {runnable} ready (due, dependencies done)",
            s.queued, s.queued_due
        ),
    ));
    out.push_str(&output::field(style, "running", &s.running.to_string()));
    let c = &s.worker_counts;
    let mut by_status = vec![format!("{} busy", c.busy), format!("{} idle", c.idle)];
    for (n, what) in [(c.draining, "draining"), (c.unhealthy, "unhealthy")] {
        if n > 0 {
            by_status.push(format!("{n} {what}"));
        }
    }
    // Only the slots of workers taking tasks can start one: not a draining or unhealthy one's.
    let taking = s
        .workers
        .iter()
        .filter(|w| matches!(w.status, WorkerStatus::Idle | WorkerStatus::Busy));
    let (slots, free) = taking.fold((0u64, 0u64), |(slots, free), w| {
        (
            slots + u64::from(w.slots),
            free + u64::from(w.slots.saturating_sub(w.running)),
        )
    });
    out.push_str(&output::field(
        style,
        "workers",
        &format!(
            "{} online ({}), {free} of {slots} slots free",
            c.online,
            by_status.join(", "),
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

/// `n` with `noun` (made plural past one), and `verb` in the third person made to agree:
/// ("1 task", "waits"), ("2 tasks", "wait"); "is" goes with "are".
fn agree<N>(n: N, noun: &str, verb: &str) -> (String, String)
where
    N: Copy + PartialEq + From<u8> + std::fmt::Display,
{
    let many_verb = match verb {
        "is" => "are".to_string(),
        v => v.strip_suffix('s').unwrap_or(v).to_string(),
    };
    let one = n == N::from(1);
    (
        count(n, noun, &format!("{noun}s")),
        if one { verb.to_string() } else { many_verb },
    )
}

/// What a reader should not miss.
fn notes(s: &QueueStats, runnable: u64, free: u64) -> Vec<String> {
    let c = &s.worker_counts;
    let mut notes = Vec::new();
    // Online but draining or unhealthy: they take nothing, whatever the tasks ask for.
    let taking = c.online.saturating_sub(c.draining + c.unhealthy);
    if runnable > 0 && c.online == 0 {
        let (tasks, wait) = agree(runnable, "ready task", "waits");
        notes.push(format!("no worker is online: {tasks} {wait} for one"));
    } else if runnable > 0 && taking == 0 {
        let (tasks, wait) = agree(runnable, "ready task", "waits");
        let why = [(c.draining, "draining"), (c.unhealthy, "unhealthy")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ");
        notes.push(format!(
            "no online worker takes tasks ({why}): {tasks} {wait} for one that does"
        ));
    } else {
        // Tasks no worker takes would not start on more workers like these.
        let for_these = runnable.saturating_sub(s.runnable_no_worker.unwrap_or(0));
        if for_these > free {
            let (tasks, are_ready) = agree(for_these, "task", "is");
            let (slots, are) = agree(free, "slot", "is");
            notes.push(format!(
                "{tasks} {are_ready} ready and {slots} {are} free: more workers would start them sooner"
            ));
        }
    }
    if let Some(n) = s.runnable_no_worker.filter(|n| *n > 0 && taking > 0) {
        let (tasks, need) = agree(n, "ready task", "needs");
        notes.push(format!(
            "{tasks} {need} what no worker taking tasks offers (an agent, labels or a \
             project): `agentpool tasks show ID` says which"
        ));
    }
    if c.unhealthy > 0 {
        let (workers, claim) = agree(c.unhealthy, "unhealthy worker", "claims");
        let until = if c.unhealthy == 1 {
            "it recovers"
        } else {
            "they recover"
        };
        notes.push(format!(
            "{workers} {claim} nothing until {until}: see `agentpool workers list`"
        ));
    }
    let limited = s.workers.iter().filter(|w| w.retired_an_agent()).count() as u64;
    if limited > 0 {
        let (workers, run) = agree(limited, "worker", "runs");
        notes.push(format!(
            "{workers} no longer {run} an agent whose provider refused the worker's own key: \
             see `agentpool workers list`"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use agentpool_core::Worker;

    use super::*;

    fn args() -> StatusArgs {
        StatusArgs {
            labels: Vec::new(),
            agents: Vec::new(),
            projects: Vec::new(),
        }
    }

    fn worker(id: &str, status: WorkerStatus, slots: u32, running: u32) -> Worker {
        Worker {
            status,
            running,
            ..agentpool_testkit::worker::worker(id, &[], slots)
        }
    }

    /// Statistics with these queued figures, the workers counted as the server counts them.
    fn stats(queued: u64, due: u64, runnable: u64, workers: Vec<Worker>) -> QueueStats {
        QueueStats {
            queued,
            queued_due: due,
            queued_runnable: Some(runnable),
            ..QueueStats::compute(None, &[], [], workers)
        }
    }

    #[test]
    fn the_figures_and_what_stands_out() {
        let workers = vec![
            worker("a", WorkerStatus::Busy, 2, 2),
            worker("b", WorkerStatus::Busy, 2, 1),
            worker("c", WorkerStatus::Unhealthy, 2, 0),
            worker("d", WorkerStatus::Draining, 2, 1),
        ];
        let text = render(&Style::plain(), &args(), &stats(12, 9, 4, workers));
        assert_eq!(
            text,
            "queued     12: 9 due, 4 ready (due, dependencies done)\n\
             running    4\n\
             workers    4 online (2 busy, 0 idle, 1 draining, 1 unhealthy), 1 of 4 slots free\n\
             4 tasks are ready and 1 slot is free: more workers would start them sooner\n\
             1 unhealthy worker claims nothing until it recovers: see `agentpool workers list`\n"
        );
    }

    #[test]
    fn work_with_no_worker_online_is_called_out_and_a_selector_is_named() {
        let a = StatusArgs {
            labels: vec![("gpu".into(), "a100".into())],
            agents: vec!["codex".into()],
            projects: Vec::new(),
        };
        let text = render(&Style::plain(), &a, &stats(2, 2, 2, Vec::new()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "for        workers labelled gpu=a100; offering codex");
        assert_eq!(lines[4], "no worker is online: 2 ready tasks wait for one");
        // A quiet pool has nothing to say.
        let idle = || vec![worker("a", WorkerStatus::Idle, 2, 0)];
        let text = render(&Style::plain(), &args(), &stats(0, 0, 0, idle()));
        assert_eq!(text.lines().count(), 3, "{text}");
        // Work that no worker taking tasks could take.
        let mut s = stats(3, 3, 3, idle());
        s.runnable_no_worker = Some(3);
        let text = render(&Style::plain(), &args(), &s);
        assert!(
            text.ends_with(
                "workers    1 online (0 busy, 1 idle), 2 of 2 slots free\n\
                 3 ready tasks need what no worker taking tasks offers (an agent, labels or a \
                 project): `agentpool tasks show ID` says which\n"
            ),
            "{text}"
        );
    }

    /// While every online worker drains (or is unhealthy), ready tasks wait because nobody
    /// takes tasks, not because of what they ask for.
    #[test]
    fn work_while_every_worker_drains_is_said_to_wait_for_one_that_takes_tasks() {
        let workers = vec![
            worker("a", WorkerStatus::Draining, 2, 1),
            worker("b", WorkerStatus::Unhealthy, 2, 0),
        ];
        let mut s = stats(2, 2, 2, workers);
        s.runnable_no_worker = Some(2);
        let text = render(&Style::plain(), &args(), &s);
        assert!(
            text.ends_with(
                "no online worker takes tasks (1 draining, 1 unhealthy): 2 ready tasks wait for \
                 one that does\n\
                 1 unhealthy worker claims nothing until it recovers: see `agentpool workers list`\n"
            ),
            "{text}"
        );
        assert!(!text.contains("no worker taking tasks offers"), "{text}");
    }

    /// A worker that stopped running an agent (its key was refused) still takes tasks, and
    /// is called out.
    #[test]
    fn a_worker_that_stopped_running_an_agent_is_called_out() {
        let limited = Worker {
            status_message: Some("runs no claude-code tasks: its key was refused".into()),
            ..worker("a", WorkerStatus::Idle, 2, 0)
        };
        let text = render(&Style::plain(), &args(), &stats(0, 0, 0, vec![limited]));
        assert!(
            text.ends_with(
                "workers    1 online (0 busy, 1 idle), 2 of 2 slots free\n\
                 1 worker no longer runs an agent whose provider refused the worker's own key: \
                 see `agentpool workers list`\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_older_server_is_read_by_its_due_tasks() {
        let mut s = stats(5, 3, 0, Vec::new());
        s.queued_runnable = None;
        let text = render(&Style::plain(), &args(), &s);
        assert!(
            text.starts_with("queued     5: 3 due, 3 ready (due, dependencies done)\n"),
            "{text}"
        );
    }
}
