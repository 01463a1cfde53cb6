//! Human output: colours (only on a terminal, never with `NO_COLOR`), aligned tables, relative
//! times, a live status line, and readable renderings of tasks, workers and agent events.
//! JSON output is plain `serde_json` and lives with each command.

use std::io::IsTerminal;

use agentpool_core::{Task, TaskResult, TaskState, Timestamp, Worker, WorkerStatus};
use chrono::Utc;

use agentpool_core::protocol::{TaskDetail, WaitReason};
use agentpool_core::render::count;
pub use agentpool_core::render::tool_key_argument;

mod events;
mod stdout;
pub use events::{StatusLine, render_event};
pub use stdout::write_stdout;

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
    // Why a worker is unhealthy is too long for a column: it follows the table.
    let why: Vec<String> = workers
        .iter()
        .filter_map(|w| {
            Some(format!(
                "{} {}: {}\n",
                style.red("unhealthy"),
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

/// The full human view of a task: spec, state, attempts and result.
pub fn task_detail(style: &Style, view: &TaskDetail) -> String {
    let t = &view.task;
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&field(style, k, &v));
    kv("task", style.bold(&t.id.to_string()));
    kv("state", style.state(t.state));
    kv("what", task_what(t));
    kv(
        "repo",
        t.spec.repo.clone().or(t.spec.project.clone()).unwrap_or_default(),
    );
    kv("base", t.spec.base_ref.clone().unwrap_or_default());
    kv("agent", t.agent_words());
    kv("model", t.spec.model.clone().unwrap_or_default());
    kv("profile", profile_summary(&t.spec));
    kv(
        "priority",
        if t.priority != 0 {
            t.priority.to_string()
        } else {
            String::new()
        },
    );
    kv("labels", labels(&t.spec.labels));
    kv(
        "depends",
        t.spec
            .depends_on
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    kv(
        "follows",
        t.spec.follow_up_of.map(|f| f.to_string()).unwrap_or_default(),
    );
    kv("attempts", format!("{}/{}", t.attempts, t.max_attempts));
    kv("created", relative(t.created_at));
    if let Some(w) = &t.worker_id {
        kv("worker", w.to_string());
    }
    // A waiting reason of its time says when it runs already; a server that gives none is
    // read from `run_after`.
    let scheduled = view
        .waiting
        .iter()
        .any(|w| matches!(w, WaitReason::Scheduled { .. }));
    if t.state == TaskState::Queued && t.run_after > Utc::now() && !scheduled {
        kv("runs", relative(t.run_after));
    }
    for w in &view.waiting {
        kv("waiting", waiting_reason(w));
    }
    if let Some(c) = t.error_class {
        let msg = t.error_message.as_deref().unwrap_or("");
        // Until the task ends, the class is its last attempt's, which a retry follows.
        let (key, class) = if t.state.is_finished() {
            ("error", style.red(c.as_str()))
        } else {
            ("retrying", format!("after {}", style.yellow(c.as_str())))
        };
        kv(key, format!("{class} {}", truncate(msg, 200)));
    }
    if let Some(r) = &t.result {
        // A queued or running task's result is its last attempt's: how long that took is
        // not how long the task took, which is not over.
        out.push_str(&result_block(style, r, t.state.is_finished()));
    }
    // The result's cost is its last attempt's; earlier ones that spent money count too.
    let costed = view
        .attempts_detail
        .iter()
        .filter(|a| a.cost_usd.is_some())
        .count();
    if costed > 1
        && let Some(total) = agentpool_core::task::total_cost(&view.attempts_detail)
    {
        out.push_str(&field(
            style,
            "all tries",
            &format!("${total:.4} over {costed} attempts"),
        ));
    }
    if view.attempts_detail.len() > 1 || view.attempts_detail.iter().any(|a| a.error_class.is_some()) {
        out.push_str(&format!("{}\n", style.dim("attempts")));
        let endings = agentpool_core::task::attempt_endings(&view.attempts_detail, t.attempts);
        for (a, ending) in view.attempts_detail.iter().zip(endings) {
            let took = a
                .ended_at
                .map(|e| duration_ms((e - a.started_at).num_milliseconds().max(0) as u64))
                .unwrap_or_default();
            let err = match (a.error_class, &a.error_message) {
                (Some(c), Some(m)) => format!("{} {}", style.red(c.as_str()), truncate(m, 80)),
                (Some(c), None) => style.red(c.as_str()),
                _ => String::new(),
            };
            let cost = a.cost_usd.map(|c| format!("${c:.4}")).unwrap_or_default();
            out.push_str(&format!(
                "  #{} {:<10} {:<8} {:<8} {} {}\n",
                a.number, ending, took, cost, a.worker_id, err
            ));
        }
    }
    out
}

fn waiting_reason(w: &WaitReason) -> String {
    match w {
        WaitReason::Scheduled { run_after } => format!("scheduled, runs {}", relative(*run_after)),
        WaitReason::Dependencies { pending } => format!(
            "for dependencies {}",
            pending.iter().map(short_id).collect::<Vec<_>>().join(", ")
        ),
        WaitReason::BranchLocked { branch, held_by } => {
            format!("branch {branch} is locked by {held_by}")
        }
        WaitReason::ProjectSlotsFull { project, slots } => {
            format!("project {project} has {}", WaitReason::slots_busy(*slots))
        }
        WaitReason::BudgetExhausted { message, project, .. } => format!("project {project}: {message}"),
        WaitReason::GivenBack { worker, until } => format!(
            "for another worker: {worker} gave it back and may take it again {}",
            relative(*until)
        ),
        WaitReason::NoWorker => "for a free worker with its agent and labels".into(),
        w @ WaitReason::NoWorkerCanRun { .. } => format!(
            "for a worker that can run it: none online offers {}",
            w.no_worker_offers().unwrap_or_default()
        ),
    }
}

/// The result block: commit, branch, files, tokens, cost.
pub fn result_lines(style: &Style, r: &TaskResult) -> String {
    result_block(style, r, true)
}

/// The result block, with how long it took when `finished`.
fn result_block(style: &Style, r: &TaskResult, finished: bool) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&field(style, k, &v));
    if let Some(sha) = &r.commit_sha {
        kv("commit", style.yellow(&sha.chars().take(12).collect::<String>()));
        // A commit that reached no remote: say where it is (nowhere, unless kept).
        if !r.pushed
            && let Some(why) = &r.push_result
        {
            kv("push", why.clone());
        }
    }
    if let Some(b) = &r.branch {
        let pushed = if r.pushed { " (pushed)" } else { "" };
        kv("branch", format!("{b}{pushed}"));
    }
    if let Some(pr) = &r.pull_request {
        kv("pr", format!("#{} {} ({})", pr.number, pr.url, pr.state));
    } else if let Some(pr) = &r.pr_url {
        kv("pr", pr.clone());
    }
    if !r.files.is_empty() {
        let (add, del) = r.files.iter().fold((0, 0), |(a, d), f| {
            (a + f.added.unwrap_or(0), d + f.removed.unwrap_or(0))
        });
        kv(
            "files",
            format!(
                "{} changed, {} {}",
                r.files.len(),
                style.green(&format!("+{add}")),
                style.red(&format!("-{del}"))
            ),
        );
        for f in r.files.iter().take(20) {
            let counts = match (f.added, f.removed) {
                (Some(a), Some(d)) => format!("+{a} -{d}"),
                _ => "binary".into(),
            };
            out.push_str(&format!(
                "{:<KEY_WIDTH$}   {} {}\n",
                "",
                f.path,
                style.dim(&counts)
            ));
        }
        if r.files.len() > 20 {
            out.push_str(&format!("{:<KEY_WIDTH$}   … {} more\n", "", r.files.len() - 20));
        }
    }
    if let (Some(rounds), Some(passed)) = (r.rounds, r.checks_passed) {
        let verdict = if passed {
            style.green("passed")
        } else {
            style.red("failing")
        };
        out.push_str(&format!(
            "{} {verdict} after {}\n",
            style.dim(&format!("{:<KEY_WIDTH$}", "checks")),
            count(rounds, "round", "rounds")
        ));
        for c in r.checks.iter().filter(|c| c.round == rounds) {
            let mark = if c.passed {
                style.green("✓")
            } else {
                style.red("✗")
            };
            out.push_str(&format!(
                "{:<KEY_WIDTH$}   {mark} {}
",
                "",
                c.summary()
            ));
        }
    }
    let u = &r.usage;
    let mut kv = |k: &str, v: String| out.push_str(&field(style, k, &v));
    if u.input_tokens + u.output_tokens > 0 {
        kv(
            "tokens",
            format!("{} in, {} out", u.input_tokens, u.output_tokens),
        );
    }
    if let Some(c) = r.cost_usd {
        kv("cost", format!("${c:.4}"));
    }
    if let Some(code) = r.exit_code {
        kv("exit", code.to_string());
    }
    if finished && r.duration_ms > 0 {
        kv("took", duration_ms(r.duration_ms));
    }
    if let Some(s) = &r.session_id {
        kv("session", s.clone());
    }
    if let Some(t) = &r.final_text {
        kv("summary", truncate(t, 300));
    }
    out
}

/// `name (env A,B; mcp x; tools n; prompt appended)`: which profile a task runs with and what
/// it brought; the full settings are in `--output json`.
fn profile_summary(spec: &agentpool_core::TaskSpec) -> String {
    let Some(name) = &spec.profile else {
        return String::new();
    };
    let Some(s) = &spec.profile_settings else {
        return name.clone();
    };
    let mut parts = Vec::new();
    if !s.env.is_empty() {
        parts.push(format!(
            "env {}",
            s.env.keys().cloned().collect::<Vec<_>>().join(",")
        ));
    }
    if !s.mcp_servers.is_empty() {
        parts.push(format!(
            "mcp {}",
            s.mcp_servers.keys().cloned().collect::<Vec<_>>().join(",")
        ));
    }
    if !s.allowed_tools.is_empty() {
        parts.push(count(s.allowed_tools.len(), "allowed tool", "allowed tools"));
    }
    if s.append_system_prompt.is_some() {
        parts.push("system prompt appended".into());
    }
    if parts.is_empty() {
        name.clone()
    } else {
        format!("{name} ({})", parts.join("; "))
    }
}

#[cfg(test)]
mod tests;
