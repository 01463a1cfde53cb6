//! One task's page: its spec, why it waits, attempts with error classes, usage and cost, the
//! result (commit, branch, files with +/- lines, PR link), the event stream rendered readably
//! and live — and the cancel, retry and follow-up actions.

use std::fmt::Write;

use agentpool_core::protocol::{CancelRequest, MAX_CANCEL_REASON_CHARS};
use agentpool_core::{Event, TaskId, TaskKind, TaskSpec, TaskState, Timestamp};
use agentpool_store::{TaskDetail, WaitReason};
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::auth::{Action, Session, redirect};
use super::error::{DashError, DashResult};
use super::events::{self, UsageSum};
use super::html::{self, Nav, esc, task_link, time};
use super::request::DashPath;
use super::{Dash, require};
use crate::auth::Role;
use crate::state::TaskChange;

/// Events rendered into the page itself; the live stream delivers the rest.
pub const FIRST_EVENTS: u32 = 500;

pub async fn page(
    State(dash): State<Dash>,
    session: Session,
    DashPath(id): DashPath<TaskId>,
) -> DashResult<Response> {
    let store = dash.app.store();
    let detail = store
        .get_task(id)
        .await?
        .filter(|d| session.caller().reaches(d.task.spec.project.as_deref()))
        .ok_or_else(|| DashError::not_found(format!("task {id} not found")))?;
    let evs = store.list_events(id, 0, FIRST_EVENTS).await?;
    let mut usage = UsageSum::default();
    evs.iter().for_each(|e| usage.add(e));
    let last_seq = evs.last().map_or(0, |e| e.seq);
    let complete = detail.task.state.is_finished() && evs.len() < FIRST_EVENTS as usize;
    let live = (!complete).then(|| format!("/live/tasks/{id}?after={last_seq}"));
    let body = render_page(&detail, &evs, &usage, &session, chrono::Utc::now());
    let title = format!("Task {}", html::short_id(&id));
    Ok((
        super::html_headers(),
        html::page(&title, Nav::Tasks, Some(&session), live.as_deref(), &body),
    )
        .into_response())
}

fn render_page(d: &TaskDetail, evs: &[Event], usage: &UsageSum, session: &Session, now: Timestamp) -> String {
    let t = &d.task;
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        r#"<h1>Task <code>{}</code></h1><p class="sub">{}</p>"#,
        t.id,
        esc(&what(&t.spec, 200))
    );
    let (state, detail) = render_state(d, usage, session, now);
    // The state line is announced when it changes (politely: it never interrupts); the rest
    // of what changes is not read out on every update, but its errors are alerts.
    let _ = write!(
        h,
        r#"<div id="task-state" class="live-region" role="status" aria-live="polite" aria-atomic="true">{state}</div><div id="task-detail" class="live-region">{detail}</div>"#,
    );
    h.push_str(&render_spec(d));
    h.push_str(r#"<section aria-labelledby="events-h"><h2 id="events-h">Events</h2>"#);
    h.push_str(r#"<p class="live-status" role="status" aria-live="polite"></p>"#);
    h.push_str(r#"<ol id="events" class="events">"#);
    for e in evs {
        h.push_str(&events::render(e));
    }
    h.push_str("</ol>");
    if evs.is_empty() {
        h.push_str(r#"<p class="empty" id="no-events">No events yet.</p>"#);
    }
    h.push_str("</section>");
    h
}

/// A one-line description of what a task does.
pub fn what(s: &TaskSpec, max: usize) -> String {
    match s.kind {
        TaskKind::Command => format!("$ {}", html::first_line(s.command.as_deref().unwrap_or(""), max)),
        TaskKind::Agent => html::first_line(s.prompt.as_deref().unwrap_or(""), max),
    }
}

/// The parts of the page that change while the task lives, re-rendered by the live stream:
/// the state line (`#task-state`: state, attempt, worker, a pending cancel), and the rest
/// (`#task-detail`: actions, why it waits, error, attempts, usage, result).
pub fn render_state(d: &TaskDetail, usage: &UsageSum, session: &Session, now: Timestamp) -> (String, String) {
    let t = &d.task;
    let mut line = String::with_capacity(256);
    let _ = write!(
        line,
        r#"<p class="state-line"><span id="task-state-badge" data-state="{}">{}</span> · attempt {} of {}"#,
        t.state.as_str(),
        html::state_badge(t.state),
        t.attempts,
        t.max_attempts
    );
    if let Some(w) = &t.worker_id {
        let _ = write!(line, r#" · on worker <code>{}</code>"#, esc(w.as_str()));
    }
    if t.cancel_requested && t.state == TaskState::Running {
        line.push_str(r#" · <strong>cancel requested</strong>, waiting for the worker to stop it"#);
    }
    line.push_str("</p>");
    let mut h = String::with_capacity(4096);
    h.push_str(&actions(d, session));
    if !d.waiting.is_empty() {
        h.push_str(r#"<section class="waiting"><h2>Why it waits</h2><ul>"#);
        for w in &d.waiting {
            let _ = write!(h, "<li>{}</li>", waiting_reason(w, now));
        }
        h.push_str("</ul></section>");
    }
    match &t.error_class {
        Some(class) if t.state.is_finished() => {
            let _ = write!(
                h,
                r#"<p class="error" role="alert"><strong>✗ {}</strong> {}</p>"#,
                esc(class.as_str()),
                esc(t.error_message.as_deref().unwrap_or(""))
            );
        }
        // Until the task ends, the class is its last attempt's, which a retry follows.
        Some(class) => {
            let _ = write!(
                h,
                r#"<p class="retrying">Retrying after <strong>{}</strong> {}</p>"#,
                esc(class.as_str()),
                esc(t.error_message.as_deref().unwrap_or(""))
            );
        }
        None => {}
    }
    h.push_str(&attempts(d));
    h.push_str(&usage_section(d, usage));
    if let Some(r) = &t.result {
        h.push_str(&result_section(r));
    }
    (line, h)
}

fn actions(d: &TaskDetail, session: &Session) -> String {
    let t = &d.task;
    if !session.can(&[Role::Submitter]) {
        return String::new();
    }
    let mut h = String::from(r#"<div class="actions">"#);
    let form = |h: &mut String, path: &str, label: &str, confirm: Option<&str>| {
        let _ = write!(
            h,
            r#"<form method="post" action="/tasks/{}/{path}">{}<button type="submit"{}>{label}</button></form>"#,
            t.id,
            session.csrf_field(),
            confirm
                .map(|c| format!(r#" data-confirm="{}""#, html::label(c)))
                .unwrap_or_default()
        );
    };
    match t.state {
        TaskState::Queued | TaskState::Running if !t.cancel_requested => {
            let _ = write!(
                h,
                r#"<form method="post" action="/tasks/{}/cancel">{}<input name="reason" maxlength="{MAX_CANCEL_REASON_CHARS}" placeholder="Reason (optional)" aria-label="Why cancel"><button type="submit" data-confirm="Cancel this task?">Cancel task</button></form>"#,
                t.id,
                session.csrf_field(),
            );
        }
        TaskState::Failed | TaskState::Canceled => form(&mut h, "retry", "Retry task", None),
        _ => {}
    }
    if t.state.is_finished() && t.spec.kind == TaskKind::Agent {
        let _ = write!(
            h,
            r#"<details class="follow-up"><summary>Follow up…</summary>
<form method="post" action="/tasks/{}/follow-up">{}
<label for="follow-up-prompt">Prompt for a task that continues this one (same agent session where supported, on top of its branch)</label>
<textarea id="follow-up-prompt" name="prompt" rows="4" required></textarea>
<button type="submit">Submit follow-up</button></form></details>"#,
            t.id,
            session.csrf_field()
        );
    }
    h.push_str("</div>");
    h
}

fn waiting_reason(w: &WaitReason, now: Timestamp) -> String {
    match w {
        WaitReason::Scheduled { run_after } => {
            format!(
                "scheduled: runs {} ({})",
                html::ago(*run_after, now),
                time(*run_after)
            )
        }
        WaitReason::Dependencies { pending } => format!(
            "waiting for dependencies: {}",
            pending.iter().map(task_link).collect::<Vec<_>>().join(", ")
        ),
        WaitReason::BranchLocked { branch, held_by } => format!(
            "branch <code>{}</code> is locked by task {}",
            esc(branch),
            task_link(held_by)
        ),
        WaitReason::ProjectSlotsFull { project, slots } => format!(
            "project <strong>{}</strong> has {}",
            esc(project),
            WaitReason::slots_busy(*slots)
        ),
        WaitReason::BudgetExhausted {
            project,
            budget_usd,
            spent_usd,
            until,
            ..
        } => format!(
            "project <strong>{}</strong> spent ${spent_usd:.4} of its ${budget_usd} daily budget: budget exhausted until {}",
            esc(project),
            time(*until)
        ),
        WaitReason::GivenBack { worker, until } => format!(
            "waiting for another worker: <code>{}</code> gave it back and may take it again {} ({})",
            esc(worker),
            html::ago(*until, now),
            time(*until)
        ),
        WaitReason::NoWorker => "waiting for a free worker with its agent and labels".into(),
        w @ WaitReason::NoWorkerCanRun { .. } => format!(
            "waiting for a worker that can run it: none online offers {}",
            esc(&w.no_worker_offers().unwrap_or_default())
        ),
    }
}

fn attempts(d: &TaskDetail) -> String {
    if d.attempts_detail.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        r#"<section><h2>Attempts</h2><table class="attempts"><thead><tr><th scope="col">#</th><th scope="col">worker</th><th scope="col">started</th><th scope="col">took</th><th scope="col">cost</th><th scope="col">outcome</th><th scope="col">error</th></tr></thead><tbody>"#,
    );
    let endings = agentpool_core::task::attempt_endings(&d.attempts_detail, d.task.attempts);
    for (a, ending) in d.attempts_detail.iter().zip(endings) {
        // A running attempt shows no duration: the region would change every second.
        let took = match a.ended_at {
            Some(end) => html::duration_ms((end - a.started_at).num_milliseconds().max(0) as u64),
            None => "running".to_string(),
        };
        let err = match (&a.error_class, &a.error_message) {
            (Some(c), m) => format!(
                r#"<strong class="bad">{}</strong> {}"#,
                esc(c.as_str()),
                esc(m.as_deref().unwrap_or(""))
            ),
            (None, Some(m)) => esc(m).to_string(),
            (None, None) => String::new(),
        };
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class="oc-{}">{ending}</td><td>{err}</td></tr>"#,
            a.number,
            esc(a.worker_id.as_str()),
            time(a.started_at),
            took,
            a.cost_usd.map(|c| format!("${c:.4}")).unwrap_or_default(),
            ending.replace(' ', "-"),
        );
    }
    h.push_str("</tbody></table></section>");
    h
}

fn usage_section(d: &TaskDetail, usage: &UsageSum) -> String {
    // The final result is authoritative; while running, the sum of usage events so far.
    let (input, output, cr, cw, cost) = match &d.task.result {
        Some(r) if r.usage.input_tokens + r.usage.output_tokens > 0 || r.cost_usd.is_some() => (
            r.usage.input_tokens,
            r.usage.output_tokens,
            r.usage.cache_read_tokens,
            r.usage.cache_write_tokens,
            r.cost_usd,
        ),
        _ if usage.seen => (
            usage.input,
            usage.output,
            usage.cache_read,
            usage.cache_write,
            usage.cost_usd,
        ),
        _ => return String::new(),
    };
    let cost = cost
        .map(|c| format!("${c:.4}"))
        .unwrap_or_else(|| "not reported".into());
    format!(
        r#"<section id="usage"><h2>Usage</h2><dl class="kv"><dt>tokens</dt><dd>{input} in, {output} out ({cr} cache read, {cw} cache write)</dd><dt>cost</dt><dd>{cost}</dd></dl></section>"#
    )
}

/// Every check of every round: the rounds the agent needed and what failed on the way.
fn checks_table(r: &agentpool_core::TaskResult) -> String {
    let (Some(rounds), Some(passed)) = (r.rounds, r.checks_passed) else {
        return String::new();
    };
    let mut h = format!(
        r#"<h3>Checks</h3><table class="checks"><caption>{} after {}</caption><thead><tr><th scope="col">round</th><th scope="col">check</th><th scope="col">result</th><th scope="col">took</th></tr></thead><tbody>"#,
        if passed { "passed" } else { "still failing" },
        agentpool_core::render::count(rounds, "round", "rounds"),
    );
    for c in &r.checks {
        let how = match (&c.killed, c.exit_code) {
            (Some(k), _) => format!("killed ({})", k.replace('_', " ")),
            (None, Some(code)) => format!("exit {code}"),
            (None, None) => "no exit code".into(),
        };
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td><code>{}</code></td><td class="{}">{} {}</td><td>{}</td></tr>"#,
            c.round,
            esc(&c.name),
            if c.passed { "add" } else { "del" },
            if c.passed { "passed" } else { "failed" },
            esc(&how),
            html::duration_ms(c.duration_ms)
        );
    }
    h.push_str("</tbody></table>");
    h
}

fn result_section(r: &agentpool_core::TaskResult) -> String {
    let mut h = String::from(r#"<section id="result"><h2>Result</h2><dl class="kv">"#);
    if let Some(sha) = &r.commit_sha {
        let _ = write!(h, "<dt>commit</dt><dd><code>{}</code></dd>", esc(sha));
    }
    if let Some(b) = &r.branch {
        let _ = write!(
            h,
            "<dt>branch</dt><dd><code>{}</code> {}</dd>",
            esc(b),
            if r.pushed { "(pushed)" } else { "(not pushed)" }
        );
    }
    if let Some(p) = &r.push_result {
        let _ = write!(h, "<dt>push</dt><dd>{}</dd>", esc(p));
    }
    if let Some(pr) = &r.pr_url {
        match html::safe_href(pr) {
            Some(u) => {
                let _ = write!(
                    h,
                    r#"<dt>pull request</dt><dd><a href="{}" rel="noopener noreferrer">{}</a></dd>"#,
                    html::attr(u),
                    esc(u)
                );
            }
            None => {
                let _ = write!(h, "<dt>pull request</dt><dd>{}</dd>", esc(pr));
            }
        }
    }
    if let Some(c) = r.exit_code {
        let _ = write!(h, "<dt>exit code</dt><dd>{c}</dd>");
    }
    if r.duration_ms > 0 {
        let _ = write!(h, "<dt>took</dt><dd>{}</dd>", html::duration_ms(r.duration_ms));
    }
    if let Some(n) = r.num_turns {
        let _ = write!(h, "<dt>turns</dt><dd>{n}</dd>");
    }
    if let Some(s) = &r.session_id {
        let _ = write!(h, "<dt>session</dt><dd><code>{}</code></dd>", esc(s));
    }
    h.push_str("</dl>");
    h.push_str(&checks_table(r));
    if let Some(t) = &r.final_text {
        let _ = write!(h, r#"<h3>Summary</h3><div class="msg">{}</div>"#, esc(t));
    }
    if !r.files.is_empty() {
        let (add, del) = r.files.iter().fold((0, 0), |(a, d), f| {
            (a + f.added.unwrap_or(0), d + f.removed.unwrap_or(0))
        });
        let _ = write!(
            h,
            r#"<h3>Files</h3><table class="files"><caption>{} files changed, {add} lines added, {del} removed</caption><thead><tr><th scope="col">file</th><th scope="col">added</th><th scope="col">removed</th></tr></thead><tbody>"#,
            r.files.len()
        );
        for f in &r.files {
            let note = f
                .note()
                .map(|n| format!(r#" <span class="note">{}</span>"#, esc(&n)))
                .unwrap_or_default();
            match (f.added, f.removed) {
                (Some(a), Some(d)) => {
                    let _ = write!(
                        h,
                        r#"<tr><td><code>{}</code>{note}</td><td class="add">+{a}</td><td class="del">−{d}</td></tr>"#,
                        esc(&f.path)
                    );
                }
                _ => {
                    let _ = write!(
                        h,
                        r#"<tr><td><code>{}</code>{note}</td><td colspan="2">binary</td></tr>"#,
                        esc(&f.path)
                    );
                }
            }
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");
    h
}

fn render_spec(d: &TaskDetail) -> String {
    let t = &d.task;
    let s = &t.spec;
    let mut h = String::from(r#"<section><h2>Spec</h2><dl class="kv">"#);
    let mut kv = |k: &str, v: String| {
        if !v.is_empty() {
            let _ = write!(h, "<dt>{k}</dt><dd>{v}</dd>");
        }
    };
    let code = |v: &Option<String>| {
        v.as_deref()
            .map(|x| format!("<code>{}</code>", esc(x)))
            .unwrap_or_default()
    };
    kv("kind", s.kind.as_str().into());
    kv("repository", code(&s.repo));
    kv(
        "project",
        s.project
            .as_deref()
            .map(|p| esc(p).to_string())
            .unwrap_or_default(),
    );
    kv("base ref", code(&s.base_ref));
    kv("branch", code(&s.branch));
    kv("agent", esc(&t.agent_words()).to_string());
    kv(
        "model",
        s.model.as_deref().map(|p| esc(p).to_string()).unwrap_or_default(),
    );
    kv(
        "profile",
        s.profile
            .as_deref()
            .map(|p| esc(p).to_string())
            .unwrap_or_default(),
    );
    kv(
        "cost limit",
        s.max_cost_usd.map(|c| format!("${c}")).unwrap_or_default(),
    );
    kv("priority", t.priority.to_string());
    kv("labels", html::labels(&s.labels));
    kv(
        "depends on",
        s.depends_on.iter().map(task_link).collect::<Vec<_>>().join(", "),
    );
    kv(
        "follows up",
        s.follow_up_of.as_ref().map(task_link).unwrap_or_default(),
    );
    kv("timeout", format!("{} s", s.timeout_secs()));
    kv(
        "max turns",
        s.max_turns.map(|n| n.to_string()).unwrap_or_default(),
    );
    kv(
        "credentials",
        s.credentials
            .iter()
            .map(|c| esc(c).to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    kv("setup", code(&s.setup_command));
    kv(
        "commit / push",
        format!(
            "{} / {}",
            if s.commit { "yes" } else { "no" },
            if s.push { "yes" } else { "no" }
        ),
    );
    kv("created", time(t.created_at));
    kv("started", t.started_at.map(time).unwrap_or_default());
    kv("finished", t.finished_at.map(time).unwrap_or_default());
    h.push_str("</dl>");
    match s.kind {
        TaskKind::Agent => {
            let _ = write!(
                h,
                r#"<h3>Prompt</h3><pre class="prompt">{}</pre>"#,
                esc(s.prompt.as_deref().unwrap_or(""))
            );
        }
        TaskKind::Command => {
            let _ = write!(
                h,
                r#"<h3>Command</h3><pre class="prompt"><code>{}</code></pre>"#,
                esc(s.command.as_deref().unwrap_or(""))
            );
        }
    }
    h.push_str("</section>");
    h
}

/// A submitter's `change` to task `id` from its page, then back to the page.
async fn change(dash: &Dash, id: TaskId, action: &Action, change: TaskChange<'_>) -> DashResult<Response> {
    require(
        &action.session,
        &[Role::Submitter],
        &format!("{} tasks", change.verb()),
    )?;
    crate::routes::tasks::reach(&dash.app, action.session.caller(), id).await?;
    dash.app.change_task(id, change, &action.session.who()).await?;
    Ok(redirect(&format!("/tasks/{id}")))
}

/// `POST /tasks/{id}/cancel`.
pub async fn cancel(
    State(dash): State<Dash>,
    DashPath(id): DashPath<TaskId>,
    action: Action,
) -> DashResult<Response> {
    let reason = cancel_reason(&action)?;
    let reason = reason.as_deref();
    change(&dash, id, &action, TaskChange::Cancel { reason }).await
}

/// The reason a cancel form gives: a blank field is none; the rest is checked as the API
/// checks it.
pub(super) fn cancel_reason(action: &Action) -> DashResult<Option<String>> {
    let why = CancelRequest {
        reason: action
            .form
            .get("reason")
            .filter(|r| !r.trim().is_empty())
            .map(str::to_string),
    };
    let reason = why
        .checked_reason()
        .map_err(|m| DashError::bad_request(format!("the reason {m}")))?;
    Ok(reason.map(str::to_string))
}

/// `POST /tasks/{id}/retry`.
pub async fn retry(
    State(dash): State<Dash>,
    DashPath(id): DashPath<TaskId>,
    action: Action,
) -> DashResult<Response> {
    change(&dash, id, &action, TaskChange::Retry).await
}

/// `POST /tasks/{id}/follow-up`: a task that continues this one — same repository, agent and
/// settings, its session resumed, starting from the branch this task pushed.
pub async fn follow_up(
    State(dash): State<Dash>,
    DashPath(id): DashPath<TaskId>,
    action: Action,
) -> DashResult<Response> {
    require(&action.session, &[Role::Submitter], "submit tasks")?;
    let prompt = action.form.get("prompt").unwrap_or("").trim().to_string();
    if prompt.is_empty() {
        return Err(DashError::bad_request("give the follow-up a prompt"));
    }
    let by = action.session.caller();
    let prev = dash
        .app
        .store()
        .find_task(id)
        .await?
        .filter(|t| by.reaches(t.spec.project.as_deref()))
        .ok_or_else(|| DashError::not_found(format!("task {id} not found")))?;
    let spec = TaskSpec {
        prompt: Some(prompt),
        follow_up_of: Some(id),
        // No branch of its own: as any follow-up, it goes on on the first task's work branch.
        branch: None,
        idempotency_key: None,
        depends_on: Vec::new(),
        run_after: None,
        ..prev.spec
    };
    let spec = crate::routes::prepare::prepare_spec(&dash.app, spec, "")
        .await
        .map_err(|errs| DashError::from(crate::error::ApiError::validation(errs)))?;
    crate::routes::prepare::within_reach(&dash.app, by, &spec).await?;
    let out = dash.app.store().enqueue(spec).await?;
    Ok(redirect(&format!("/tasks/{}", out.task.id)))
}
