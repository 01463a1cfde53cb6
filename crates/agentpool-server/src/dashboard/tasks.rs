//! The task list: filters (state, project, label, agent, worker, text in the prompt or
//! command), cursor paging, rows that update live, and bulk cancel/retry for admins.
//!
//! State, project, label, agent and worker filter in the store; text is checked here on
//! pages read from the store, scanning at most [`SCAN_CAP`] tasks per page of results so one
//! request stays cheap on a large queue (the pager then continues the scan).

use std::fmt::Write;

use agentpool_core::protocol::MAX_CANCEL_REASON_CHARS;
use agentpool_core::{ErrorClass, Task, TaskId, TaskKind};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Dash;
use super::auth::{Action, Session, local_path, redirect, task_ids};
use super::error::{DashError, DashResult};
use super::html::{self, Nav, Url, attr, esc};
use super::request::DashQuery;
use crate::api::TaskListQuery;
use crate::auth::Caller;
use crate::state::TaskChange;

/// Rows per page.
pub const PAGE: usize = 50;
/// Tasks read from the store at most for one page of text-filtered results.
const SCAN_CAP: usize = 2000;
/// Tasks one bulk action may touch.
const MAX_BULK: usize = 500;

/// The list's query string. Empty values (an untouched filter field) mean "any".
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    pub state: Option<String>,
    pub project: Option<String>,
    pub label: Option<String>,
    pub agent: Option<String>,
    pub worker: Option<String>,
    /// An error class: tasks whose last attempt ended with it.
    pub class: Option<String>,
    /// A schedule's name: the tasks it submitted.
    pub schedule: Option<String>,
    pub q: Option<String>,
    pub cursor: Option<String>,
    /// After a bulk action: what was done, how many succeeded and failed, when, and the
    /// session's signature of these ([`Notice`]).
    pub done: Option<String>,
    pub ok: Option<usize>,
    pub failed: Option<usize>,
    pub at: Option<i64>,
    pub sig: Option<String>,
}

fn set(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl ListQuery {
    /// The query string of this view (filters and cursor, not the notice).
    pub fn to_query(&self, with_cursor: bool) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("state", &self.state),
            ("project", &self.project),
            ("label", &self.label),
            ("agent", &self.agent),
            ("worker", &self.worker),
            ("class", &self.class),
            ("schedule", &self.schedule),
            ("q", &self.q),
        ] {
            if let Some(v) = set(v) {
                parts.push(format!("{k}={}", Url(&v)));
            }
        }
        if with_cursor && let Some(c) = set(&self.cursor) {
            parts.push(format!("cursor={}", Url(&c)));
        }
        parts.join("&")
    }
}

/// One page of the list.
pub struct ListView {
    pub tasks: Vec<Task>,
    pub next_cursor: Option<TaskId>,
    /// The scan cap was reached before the page filled.
    pub scan_capped: bool,
}

/// What a bulk action did, as the list it leads back to says. The server signs it with the
/// session's secret in the URL it redirects to, and the list shows it only with that signature
/// and for a short while: a link made elsewhere (`?done=retry&ok=999999`) says nothing.
struct Notice<'a> {
    verb: &'a str,
    ok: usize,
    failed: usize,
    /// Unix seconds, by the store's clock.
    at: i64,
}

/// How long after the action its notice is shown (a reload of the page shortly after).
const NOTICE_SECS: i64 = 600;

impl Notice<'_> {
    fn signed_text(&self) -> String {
        format!("bulk\0{}\0{}\0{}\0{}", self.verb, self.ok, self.failed, self.at)
    }

    /// The query parameters that carry it.
    fn to_query(&self, session: &Session) -> String {
        format!(
            "done={}&ok={}&failed={}&at={}&sig={}",
            self.verb,
            self.ok,
            self.failed,
            self.at,
            session.sign(&self.signed_text())
        )
    }

    /// The notice `q` carries, when `session` signed it and not long ago.
    fn verified<'q>(q: &'q ListQuery, session: &Session, now: i64) -> Option<Notice<'q>> {
        let n = Notice {
            verb: q.done.as_deref()?,
            ok: q.ok?,
            failed: q.failed?,
            at: q.at?,
        };
        let fresh = (now - NOTICE_SECS..=now + 5).contains(&n.at);
        (fresh && session.signed(&n.signed_text(), q.sig.as_deref()?)).then_some(n)
    }
}

/// A page of the tasks matching `q` that `by` reaches: one more than a page is read, so the
/// pager offers "older" only when there are older tasks.
pub async fn find(dash: &Dash, by: &Caller, q: &ListQuery) -> DashResult<ListView> {
    let mut filter = crate::routes::tasks::task_filter(TaskListQuery {
        state: set(&q.state),
        project: set(&q.project),
        label: set(&q.label),
        worker: set(&q.worker),
        agent: set(&q.agent),
        class: set(&q.class),
        schedule: set(&q.schedule),
        cursor: set(&q.cursor),
        limit: Some(PAGE as u32),
    })
    .map_err(DashError::from)?;
    by.limit(&mut filter);
    let text = set(&q.q).map(|t| t.to_lowercase());
    let store = dash.app.store();
    let Some(text) = text else {
        filter.limit = PAGE as u32 + 1;
        let mut tasks = store.list_tasks(&filter).await?;
        let more = tasks.len() > PAGE;
        tasks.truncate(PAGE);
        let next_cursor = more.then(|| tasks.last().map(|t| t.id)).flatten();
        return Ok(ListView {
            tasks,
            next_cursor,
            scan_capped: false,
        });
    };
    let matches = |t: &Task| {
        [&t.spec.prompt, &t.spec.command]
            .into_iter()
            .flatten()
            .any(|s| s.to_lowercase().contains(&text))
    };
    filter.limit = 200;
    let (mut tasks, mut scanned) = (Vec::new(), 0usize);
    loop {
        let batch = store.list_tasks(&filter).await?;
        let full = batch.len() == filter.limit as usize;
        for t in batch {
            let id = t.id;
            if matches(&t) {
                // A match past a full page: there is an older page, which starts after the
                // last task shown.
                if tasks.len() == PAGE {
                    return Ok(ListView {
                        next_cursor: tasks.last().map(|t: &Task| t.id),
                        tasks,
                        scan_capped: false,
                    });
                }
                tasks.push(t);
            }
            scanned += 1;
            filter.before = Some(id);
        }
        if !full {
            return Ok(ListView {
                tasks,
                next_cursor: None,
                scan_capped: false,
            });
        }
        if scanned >= SCAN_CAP {
            return Ok(ListView {
                tasks,
                next_cursor: filter.before,
                scan_capped: true,
            });
        }
    }
}

pub async fn page(
    State(dash): State<Dash>,
    session: Session,
    DashQuery(q): DashQuery<ListQuery>,
) -> DashResult<Response> {
    let view = find(&dash, session.caller(), &q).await?;
    let admin = session.is_admin();
    let mut h = String::from("<h1>Tasks</h1>");
    let now = dash.app.store().time().timestamp();
    if let Some(Notice { verb, ok, failed, .. }) = Notice::verified(&q, &session, now) {
        let verb = if verb == "retry" { "Retried" } else { "Canceled" };
        let _ = write!(
            h,
            r#"<p class="notice" role="status">{verb} {}{}.</p>"#,
            agentpool_core::render::count(ok, "task", "tasks"),
            if failed > 0 {
                format!("; {failed} could not be (already finished, or not found)")
            } else {
                String::new()
            }
        );
    }
    h.push_str(&filters(&q));
    let ret = format!("/tasks?{}", q.to_query(true));
    let _ = write!(
        h,
        r#"<form method="post" action="/tasks/bulk" id="bulk">{}<input type="hidden" name="return" value="{}">"#,
        session.csrf_field(),
        attr(&ret)
    );
    if admin {
        let _ = write!(
            h,
            r#"<div class="bulk actions"><input name="reason" maxlength="{MAX_CANCEL_REASON_CHARS}" placeholder="Reason for a cancel (optional)" aria-label="Why cancel the selected tasks"><button type="submit" name="action" value="cancel" data-confirm="Cancel the selected tasks?">Cancel selected</button><button type="submit" name="action" value="retry">Retry selected</button></div>"#,
        );
    }
    h.push_str(r#"<table class="tasks"><caption class="sr-only">Tasks, newest first</caption><thead><tr>"#);
    if admin {
        h.push_str(r#"<th scope="col"><input type="checkbox" data-select-all aria-label="select all tasks on this page"></th>"#);
    }
    h.push_str(
        r#"<th scope="col">task</th><th scope="col">state</th><th scope="col">what</th><th scope="col">project</th><th scope="col">agent</th><th scope="col">labels</th><th scope="col">worker</th><th scope="col">attempts</th><th scope="col">created</th></tr></thead>"#,
    );
    let _ = write!(
        h,
        r#"<tbody id="task-rows">{}</tbody></table></form>"#,
        rows(&view, admin)
    );
    let _ = write!(h, r#"<div id="task-pager">{}</div>"#, pager(&q, &view));
    h.push_str(r#"<p class="live-status" role="status" aria-live="polite"></p>"#);
    let live = format!("/live/tasks?{}", q.to_query(true));
    Ok((
        super::html_headers(),
        html::page("Tasks", Nav::Tasks, Some(&session), Some(&live), &h),
    )
        .into_response())
}

fn filters(q: &ListQuery) -> String {
    let cur = set(&q.state).unwrap_or_default();
    let mut h = String::from(
        r#"<form class="filters" method="get" action="/tasks" role="search" aria-label="Filter tasks"><label>state <select name="state"><option value="">any</option>"#,
    );
    for s in ["queued", "running", "succeeded", "failed", "canceled"] {
        let sel = if cur == s { " selected" } else { "" };
        let _ = write!(h, r#"<option{sel}>{s}</option>"#);
    }
    h.push_str("</select></label>");
    let cur = set(&q.class).unwrap_or_default();
    h.push_str(r#"<label>error <select name="class"><option value="">any</option>"#);
    for c in ErrorClass::ALL {
        let sel = if cur == c.as_str() { " selected" } else { "" };
        let _ = write!(h, r#"<option{sel}>{}</option>"#, c.as_str());
    }
    h.push_str("</select></label>");
    for (name, label, v) in [
        ("project", "project", &q.project),
        ("label", "label k=v", &q.label),
        ("agent", "agent", &q.agent),
        ("worker", "worker", &q.worker),
        ("schedule", "schedule", &q.schedule),
        ("q", "text", &q.q),
    ] {
        let _ = write!(
            h,
            r#"<label>{label} <input name="{name}" value="{}" size="12"></label>"#,
            attr(&set(v).unwrap_or_default())
        );
    }
    h.push_str(r#"<button type="submit">Filter</button> <a href="/tasks">clear</a></form>"#);
    h
}

/// The table body: one row per task.
pub fn rows(view: &ListView, admin: bool) -> String {
    let mut h = String::with_capacity(view.tasks.len() * 600);
    if view.tasks.is_empty() {
        let _ = write!(
            h,
            r#"<tr><td colspan="{}" class="empty">No tasks match.</td></tr>"#,
            if admin { 10 } else { 9 }
        );
    }
    for t in &view.tasks {
        let _ = write!(h, r#"<tr id="task-{}" data-state="{}">"#, t.id, t.state.as_str());
        if admin {
            let _ = write!(
                h,
                r#"<td><input type="checkbox" name="id" value="{id}" id="sel-{id}" aria-label="select task {}"></td>"#,
                html::short_id(&t.id),
                id = t.id
            );
        }
        let agent = match (t.spec.kind, &t.spec.agent, &t.spec.model) {
            (TaskKind::Command, _, _) => "command".to_string(),
            (_, Some(a), Some(m)) => format!("{a} · {m}"),
            (_, Some(a), None) => a.clone(),
            (_, None, _) => t
                .result
                .as_ref()
                .and_then(|r| r.agent.as_deref())
                .map_or_else(|| "default".to_string(), |a| format!("{a} (default)")),
        };
        let _ = write!(
            h,
            r#"<td>{}</td><td class="state">{}</td><td class="what">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td></tr>"#,
            html::task_link(&t.id),
            html::state_badge(t.state),
            esc(&super::task::what(&t.spec, 90)),
            esc(t.spec.project.as_deref().unwrap_or("")),
            esc(&agent),
            html::labels(&t.spec.labels),
            t.worker_id
                .as_ref()
                .map(|w| format!("<code>{}</code>", esc(w.as_str())))
                .unwrap_or_default(),
            t.attempts,
            t.max_attempts,
            html::time(t.created_at),
        );
    }
    h
}

pub fn pager(q: &ListQuery, view: &ListView) -> String {
    let mut h = String::from(r#"<nav class="pager" aria-label="Pages">"#);
    if set(&q.cursor).is_some() {
        let _ = write!(
            h,
            r#"<a href="/tasks?{}">« newest</a> "#,
            attr(&q.to_query(false))
        );
    }
    if let Some(c) = view.next_cursor {
        let mut next = q.clone();
        next.cursor = Some(c.to_string());
        let _ = write!(
            h,
            r#"<a href="/tasks?{}" rel="next">older »</a>"#,
            attr(&next.to_query(true))
        );
    }
    if view.scan_capped {
        let _ = write!(
            h,
            r#" <span class="hint">searched {SCAN_CAP} tasks for this page; “older” searches further</span>"#
        );
    }
    h.push_str("</nav>");
    h
}

/// `POST /tasks/bulk`: cancel or retry the selected tasks (admins only).
pub async fn bulk(State(dash): State<Dash>, action: Action) -> DashResult<Response> {
    if !action.session.is_admin() {
        return Err(DashError::forbidden("bulk actions are for admin tokens"));
    }
    // The reason field is read only for a cancel: a retry ignores it.
    let reason = match action.form.get("action") {
        Some("cancel") => super::task::cancel_reason(&action)?,
        _ => None,
    };
    let change = match action.form.get("action") {
        Some("cancel") => TaskChange::Cancel {
            reason: reason.as_deref(),
        },
        Some("retry") => TaskChange::Retry,
        _ => return Err(DashError::bad_request("action must be cancel or retry")),
    };
    let verb = change.verb();
    let mut ids = task_ids(&action.form)?;
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    if ids.len() > MAX_BULK {
        return Err(DashError::bad_request(format!(
            "select at most {MAX_BULK} tasks at once"
        )));
    }
    // One transaction for all; a task the action does not apply to is passed over.
    let out = dash.app.change_tasks(&ids, change, &action.session.who()).await?;
    let (mut ok, mut failed) = (0usize, 0usize);
    for (id, r) in ids.iter().zip(&out) {
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                tracing::debug!(task = %id, error = %e, "bulk {verb} refused");
                failed += 1;
            }
        }
    }
    let back = action.form.get("return").map(local_path).unwrap_or("/tasks");
    let back = if back.starts_with("/tasks") {
        back
    } else {
        "/tasks"
    };
    let sep = if back.contains('?') { '&' } else { '?' };
    let notice = Notice {
        verb,
        ok,
        failed,
        at: dash.app.store().time().timestamp(),
    };
    Ok(redirect(&format!("{back}{sep}{}", notice.to_query(&action.session))).into_response())
}
