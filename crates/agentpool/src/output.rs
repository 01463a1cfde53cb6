//! Human output: colours (only on a terminal, never with `NO_COLOR`), aligned tables, relative
//! times, a live status line, and readable renderings of tasks, workers and agent events.
//! JSON output is plain `serde_json` and lives with each command.

use std::io::IsTerminal;

use agentpool_core::{Task, TaskState, Timestamp, Worker, WorkerStatus};
use chrono::Utc;

pub use agentpool_core::render::tool_key_argument;

mod events;
mod shown;
mod stdout;
mod task;
pub use events::{StatusLine, render_event};
pub use shown::{set_json_output, terminal_safe};
pub use stdout::write_stdout;
pub use task::{result_lines, task_detail};

/// One `Style` method per SGR code: `style.red(s)` is `s` painted red when colouring.
macro_rules! sgr {
    ($($name:ident = $code:literal),* $(,)?) => {
        $(
            pub fn $name(&self, s: &str) -> String {
                self.paint($code, s)
            }
        )*
    };
}

/// Whether to colour stdout / stderr.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn stdout() -> Self {
        Self {
            color: colors_allowed() && std::io::stdout().is_terminal(),
        }
    }

    pub fn stderr() -> Self {
        Self {
            color: colors_allowed() && std::io::stderr().is_terminal(),
        }
    }

    #[cfg(test)]
    pub fn plain() -> Self {
        Self { color: false }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    sgr! {
        bold = "1",
        dim = "2",
        red = "31",
        green = "32",
        yellow = "33",
        blue = "34",
        magenta = "35",
        cyan = "36",
    }

    pub fn state(&self, s: TaskState) -> String {
        match s {
            TaskState::Queued => self.yellow(s.as_str()),
            TaskState::Running => self.blue(s.as_str()),
            TaskState::Succeeded => self.green(s.as_str()),
            TaskState::Failed => self.red(s.as_str()),
            TaskState::Canceled => self.magenta(s.as_str()),
        }
    }

    pub fn worker_status(&self, s: WorkerStatus) -> String {
        match s {
            WorkerStatus::Idle => self.green(s.as_str()),
            WorkerStatus::Busy => self.blue(s.as_str()),
            WorkerStatus::Draining => self.yellow(s.as_str()),
            WorkerStatus::Offline => self.dim(s.as_str()),
            WorkerStatus::Unhealthy => self.red(s.as_str()),
        }
    }
}

fn colors_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Display width of a string, ignoring ANSI colour sequences.
fn visible_width(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        if in_escape {
            if c == 'm' {
                in_escape = false;
            }
        } else if c == '\x1b' {
            in_escape = true;
        } else {
            n += 1;
        }
    }
    n
}

/// The width a detail view's keys are padded to.
const KEY_WIDTH: usize = 10;

/// One `key value` line of a detail view, keys aligned; nothing when the value is empty.
pub fn field(style: &Style, key: &str, value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        // Padded before it is coloured: a colour's escape codes take no room on the screen.
        format!("{} {value}\n", style.dim(&format!("{key:<KEY_WIDTH$}")))
    }
}

/// The lines of a detail view. Keys past [`KEY_WIDTH`] (`credentials`) widen the key column
/// for every line, so the values still start under each other; lines a [`stacked`] value
/// continues on are moved along with them.
pub fn fields(style: &Style, rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(KEY_WIDTH);
    let more = " ".repeat(width - KEY_WIDTH);
    let mut out = String::new();
    for (key, value) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        let value = value.replace('\n', &format!("\n{more}"));
        // Padded before it is coloured: a colour's escape codes take no room on the screen.
        out.push_str(&format!("{} {value}\n", style.dim(&format!("{key:<width$}"))));
    }
    out
}

/// Several values of one [`field`], one a line, each under the first (past the key and the
/// space after it).
pub fn stacked<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<S> = items.into_iter().collect();
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    items.join(&format!("\n{:w$}", "", w = KEY_WIDTH + 1))
}

/// An aligned table; cells may contain colour codes.
pub fn table(style: &Style, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(visible_width(c));
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i < last {
                let pad = widths[i].saturating_sub(visible_width(c)) + 2;
                l.push_str(&" ".repeat(pad));
            }
        }
        // Empty last cells leave no padding behind.
        out.push_str(l.trim_end_matches(' '));
        out.push('\n');
    };
    line(headers.iter().map(|h| style.bold(h)).collect(), &mut out);
    for r in rows {
        line(r.clone(), &mut out);
    }
    out
}

/// "just now", "42s ago", "3m ago", "5h ago", "2d ago" (and "in 3m" for future times).
pub fn relative(t: Timestamp) -> String {
    relative_to(t, Utc::now())
}

/// As [`relative`], to the nearest unit: a delay just under two hours is "in 2h".
pub fn relative_to(t: Timestamp, now: Timestamp) -> String {
    let secs = (now - t).num_seconds();
    let (future, s) = if secs < 0 { (true, -secs) } else { (false, secs) };
    let nearest = |unit: i64| (s + unit / 2) / unit;
    let amount = match s {
        0..=1 => return "just now".into(),
        2..=59 => format!("{s}s"),
        _ if nearest(60) < 60 => format!("{}m", nearest(60)),
        _ if nearest(3600) < 24 => format!("{}h", nearest(3600)),
        _ => format!("{}d", nearest(86400)),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

pub fn short_id(id: &impl ToString) -> String {
    let s = id.to_string();
    s.chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    agentpool_core::render::clip(&s.replace(['\n', '\r'], " "), max)
}

/// What a task does, in a few words; for an agent task that named no agent, the agent that
/// ran it, once one has.
pub fn task_what(task: &Task) -> String {
    let ran = task.result.as_ref().and_then(|r| r.agent.as_deref());
    match (&task.spec.prompt, ran) {
        (Some(p), Some(agent)) if task.spec.agent.is_none() && task.spec.command.is_none() => {
            format!("{agent}: {p}")
        }
        _ => spec_what(&task.spec),
    }
}

/// What a task with this spec does, in a few words: `$ command` or `agent: prompt`.
pub fn spec_what(s: &agentpool_core::TaskSpec) -> String {
    match (&s.command, &s.prompt) {
        (Some(c), _) => format!("$ {c}"),
        (None, Some(p)) => format!("{}: {p}", s.agent.as_deref().unwrap_or("agent")),
        _ => String::new(),
    }
}

pub fn tasks_table(style: &Style, tasks: &[Task]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            // A task still queued or running keeps the class of its last attempt's failure: it
            // is what the retry follows, not what the task came to.
            let class = match t.error_class {
                Some(c) if t.state.is_finished() => style.red(c.as_str()),
                Some(c) => style.dim(&format!("after {}", c.as_str())),
                None => String::new(),
            };
            vec![
                t.id.to_string(),
                style.state(t.state),
                format!("{}/{}", t.attempts, t.max_attempts),
                relative(t.created_at),
                truncate(&task_what(t), 50),
                class,
            ]
        })
        .collect();
    table(
        style,
        &["ID", "STATE", "TRIES", "CREATED", "WHAT", "ERROR"],
        &rows,
    )
}

pub fn workers_table(style: &Style, workers: &[Worker]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.id.to_string(),
                style.worker_status(w.status),
                format!("{}/{}", w.running, w.slots),
                w.agent_names().join(","),
                labels(&w.labels),
                // None named: it takes every project's tasks, as `tokens list` says it.
                if w.projects.is_empty() {
                    "all".to_string()
                } else {
                    w.projects.join(",")
                },
                relative(w.last_heartbeat_at),
            ]
        })
        .collect();
    let mut out = table(
        style,
        &[
            "ID",
            "STATUS",
            "RUNNING",
            "AGENTS",
            "LABELS",
            "PROJECTS",
            "HEARTBEAT",
        ],
        &rows,
    );
    // Why a worker is unhealthy, or which agent it no longer runs, is too long for a column:
    // it follows the table.
    let why: Vec<String> = workers
        .iter()
        .filter_map(|w| {
            Some(format!(
                "{} {}: {}\n",
                style.worker_status(w.status),
                w.id,
                w.status_message.as_ref()?
            ))
        })
        .collect();
    if !why.is_empty() {
        out.push('\n');
        out.push_str(&why.concat());
    }
    out
}

pub fn labels(l: &agentpool_core::Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
