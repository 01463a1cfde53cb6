//! The human view of one task: its spec, state, why it waits, its attempts and its result.

use agentpool_core::protocol::{TaskDetail, WaitReason};
use agentpool_core::render::count;
use agentpool_core::{TaskResult, TaskState};

use chrono::Utc;

use super::{KEY_WIDTH, Style, duration_ms, field, labels, relative, short_id, task_what, truncate};

/// The full human view of a task: spec, state, attempts and result.
pub fn task_detail(style: &Style, view: &TaskDetail) -> String {
    let t = &view.task;
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&field(style, k, &v));
    kv("task", style.bold(&t.id.to_string()));
    kv("state", style.state(t.state));
    kv("what", task_what(t));
    kv("project", t.spec.project.clone().unwrap_or_default());
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
            let mut counts = match (f.added, f.removed) {
                (Some(a), Some(d)) => format!("+{a} -{d}"),
                _ => "binary".into(),
            };
            if let Some(note) = f.note() {
                counts.push_str(&format!(" ({note})"));
            }
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
        out.push_str(&check_rounds(style, &r.checks));
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

/// Every round's checks, under a line naming the round, in the order of the rounds: how the
/// checks failed before they passed is what the rounds are for.
fn check_rounds(style: &Style, checks: &[agentpool_core::CheckRun]) -> String {
    let mut checks: Vec<&agentpool_core::CheckRun> = checks.iter().collect();
    // Stable: a round's checks stay in the order they ran.
    checks.sort_by_key(|c| c.round);
    let mut out = String::new();
    let mut round = None;
    for c in checks {
        if round != Some(c.round) {
            round = Some(c.round);
            out.push_str(&format!(
                "{:<KEY_WIDTH$}   {}\n",
                "",
                style.dim(&format!("round {}", c.round))
            ));
        }
        let mark = if c.passed {
            style.green("✓")
        } else {
            style.red("✗")
        };
        // The round is said by the line above.
        let summary = c.summary();
        let summary = summary
            .strip_prefix(&format!("round {}: ", c.round))
            .unwrap_or(&summary);
        out.push_str(&format!("{:<KEY_WIDTH$}     {mark} {summary}\n", ""));
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
