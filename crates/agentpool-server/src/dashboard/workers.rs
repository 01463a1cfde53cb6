//! The workers page: status, heartbeat age, running tasks and slots, labels and projects,
//! agents with their versions — and the drain action for the roles the API lets drain (admin,
//! worker).

use std::collections::BTreeMap;
use std::fmt::Write;

use agentpool_core::{TaskId, TaskState, Timestamp, Worker, WorkerId, WorkerStatus};
use agentpool_store::TaskFilter;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::auth::{Action, Session, redirect};
use super::error::DashResult;
use super::html::{self, Nav, esc};
use super::request::DashPath;
use super::{Dash, require};
use crate::auth::{Caller, Role};

/// Roles the API's drain endpoint admits.
const DRAINERS: &[Role] = &[Role::Worker];

pub struct WorkersView {
    pub workers: Vec<Worker>,
    /// Running task ids per worker.
    pub running: BTreeMap<WorkerId, Vec<TaskId>>,
}

/// The workers, and the running tasks `by` reaches on each (the fleet is everyone's; another
/// project's tasks are not shown to a project token).
pub async fn load(dash: &Dash, by: &Caller) -> DashResult<WorkersView> {
    let store = dash.app.store();
    let workers = store.list_workers().await?;
    let mut filter = TaskFilter {
        state: Some(TaskState::Running),
        limit: 500,
        ..TaskFilter::default()
    };
    by.limit(&mut filter);
    let running_tasks = store.list_tasks(&filter).await?;
    let mut running: BTreeMap<WorkerId, Vec<TaskId>> = BTreeMap::new();
    for t in running_tasks {
        if let Some(w) = t.worker_id {
            running.entry(w).or_default().push(t.id);
        }
    }
    Ok(WorkersView { workers, running })
}

pub async fn page(State(dash): State<Dash>, session: Session) -> DashResult<Response> {
    let view = load(&dash, session.caller()).await?;
    let body = format!(
        r#"<h1>Workers</h1><div id="workers-table">{}</div><p class="live-status" role="status" aria-live="polite"></p>"#,
        table(&view, &session, chrono::Utc::now())
    );
    Ok((
        super::html_headers(),
        html::page(
            "Workers",
            Nav::Workers,
            Some(&session),
            Some("/live/workers"),
            &body,
        ),
    )
        .into_response())
}

pub fn table(view: &WorkersView, session: &Session, now: Timestamp) -> String {
    if view.workers.is_empty() {
        return r#"<p class="empty">No workers have registered.</p>"#.into();
    }
    let can_drain = session.can(DRAINERS);
    let mut h = String::from(
        r#"<table class="workers"><caption class="sr-only">Workers</caption><thead><tr><th scope="col">worker</th><th scope="col">status</th><th scope="col">heartbeat</th><th scope="col">running / slots</th><th scope="col">running tasks</th><th scope="col">labels</th><th scope="col">agents</th><th scope="col">version</th>"#,
    );
    if can_drain {
        h.push_str(r#"<th scope="col"><span class="sr-only">actions</span></th>"#);
    }
    h.push_str("</tr></thead><tbody>");
    for w in &view.workers {
        let agents = w
            .agents
            .iter()
            .map(|a| match &a.version {
                Some(v) => format!("{} {}", esc(&a.name), esc(v)),
                None => esc(&a.name).to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let tasks = view
            .running
            .get(&w.id)
            .map(|ids| ids.iter().map(html::task_link).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let _ = write!(
            h,
            r#"<tr id="worker-{}" data-status="{st}"><td><code>{id}</code><br><span class="hint">{host}</span></td><td>{}</td><td>{}</td><td>{}/{}</td><td>{tasks}</td><td>{}</td><td class="agents">{agents}</td><td>{}</td>"#,
            html::attr(w.id.as_str()),
            status_cell(w),
            html::ago(w.last_heartbeat_at, now),
            w.running,
            w.slots,
            labels_cell(w),
            esc(&w.version),
            id = esc(w.id.as_str()),
            st = w.status.as_str(),
            host = esc(&w.hostname),
        );
        if can_drain {
            h.push_str("<td>");
            if matches!(w.status, WorkerStatus::Idle | WorkerStatus::Busy) {
                let _ = write!(
                    h,
                    r#"<form method="post" action="/workers/{}/drain">{}<button type="submit" data-confirm="Drain this worker? It stops claiming and finishes what it runs.">Drain</button></form>"#,
                    html::Url(w.id.as_str()),
                    session.csrf_field()
                );
            }
            h.push_str("</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
    h
}

/// Its labels, and the projects it is limited to.
fn labels_cell(w: &Worker) -> String {
    let mut h = html::labels(&w.labels).to_string();
    if !w.projects.is_empty() {
        let _ = write!(
            h,
            r#"<br><span class="hint projects">projects {}</span>"#,
            esc(&w.projects.join(", "))
        );
    }
    h
}

/// The status badge, and what the worker said of itself: why it is unhealthy, or which agent
/// it no longer runs.
fn status_cell(w: &Worker) -> String {
    match &w.status_message {
        Some(m) => format!(
            r#"{}<br><span class="hint status-message">{}</span>"#,
            html::worker_badge(w.status),
            esc(m)
        ),
        None => html::worker_badge(w.status),
    }
}

/// `POST /workers/{id}/drain`.
pub async fn drain(
    State(dash): State<Dash>,
    DashPath(id): DashPath<WorkerId>,
    action: Action,
) -> DashResult<Response> {
    require(&action.session, DRAINERS, "drain workers")?;
    dash.app.drain_worker(&id, &action.session.who()).await?;
    Ok(redirect("/workers"))
}
