//! Projects, schedules, notifications and the names of stored credentials. Credential values
//! never leave the server except to the worker running a task that needs them; this page
//! lists names only, and only to admins (as the API does).

use std::fmt::Write;

use agentpool_core::Timestamp;
use agentpool_core::notification::DeliveryState;
use agentpool_core::schedule::Schedule;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::auth::{Action, Session, redirect};
use super::error::DashResult;
use super::html::{self, Nav, Url, esc};
use super::request::DashPath;
use super::{Dash, require};
use crate::auth::Role;

pub async fn page(State(dash): State<Dash>, session: Session) -> DashResult<Response> {
    let store = dash.app.store();
    let by = session.caller();
    let mut projects = store.list_projects().await?;
    projects.retain(|p| by.reaches(Some(&p.spec.name)));
    let mut h = String::from("<h1>Projects</h1>");
    // Credential names are the admins' to know, as in the API's project list.
    let admin = session.is_admin();
    if projects.is_empty() {
        h.push_str(
            r#"<p class="empty">No projects yet (<code>agentpool projects put NAME --repo URL</code>).</p>"#,
        );
    } else {
        let _ = write!(
            h,
            r#"<table class="projects"><caption class="sr-only">Projects</caption><thead><tr><th scope="col">name</th><th scope="col">repository</th><th scope="col">base</th><th scope="col">slots</th><th scope="col">default agent</th><th scope="col">allowed agents</th>{}<th scope="col">spent today (UTC)</th><th scope="col">tasks</th></tr></thead><tbody>"#,
            if admin {
                r#"<th scope="col">credentials</th>"#
            } else {
                ""
            }
        );
        for p in &projects {
            let s = &p.spec;
            let agent = match (&s.default_agent, &s.default_model) {
                (Some(a), Some(m)) => format!("{a} · {m}"),
                (Some(a), None) => a.clone(),
                _ => String::new(),
            };
            // Spent to a hundredth of a cent and the budget as it was set (`$0.003`, `$50`),
            // as `agentpool projects show` says them: a budget rounded to cents would read
            // $0.00 for one under half a cent.
            let spent = match (p.spent_today_usd, s.daily_budget_usd) {
                (spent, Some(budget)) => format!("${:.4} of ${budget}", spent.unwrap_or(0.0)),
                (Some(spent), None) => format!("${spent:.4}"),
                (None, None) => String::new(),
            };
            let credentials = if admin {
                format!("<td>{}</td>", esc(&s.credentials.join(", ")))
            } else {
                String::new()
            };
            let _ = write!(
                h,
                r#"<tr><th scope="row">{}</th><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{credentials}<td>{}</td><td><a href="/tasks?project={}">tasks</a></td></tr>"#,
                esc(&s.name),
                esc(&s.repo),
                esc(s.default_base.as_deref().unwrap_or("")),
                s.slots.map_or_else(|| "unlimited".to_string(), |n| n.to_string()),
                esc(&agent),
                esc(&s.allowed_agents.join(", ")),
                spent,
                Url(&s.name),
            );
        }
        h.push_str("</tbody></table>");
    }
    let mut listed = store.list_schedules().await?;
    listed.retain(|s| by.reaches(s.spec.task.project.as_deref()));
    schedules(&mut h, &listed, store.time(), &session);
    if session.is_admin() {
        notifications(&mut h, &dash).await?;
    }
    h.push_str(r#"<section aria-labelledby="cred-h"><h2 id="cred-h">Credentials</h2>"#);
    if session.is_admin() {
        let names = store.list_credentials().await?;
        if names.is_empty() {
            h.push_str(r#"<p class="empty">No credentials stored.</p>"#);
        } else {
            h.push_str(r#"<p class="hint">Names only: values are write-only.</p><ul class="credentials">"#);
            for n in &names {
                let _ = write!(h, "<li><code>{}</code></li>", esc(n));
            }
            h.push_str("</ul>");
        }
    } else {
        h.push_str(r#"<p class="hint">Credential names are shown to admins.</p>"#);
    }
    h.push_str("</section>");
    if session.is_admin() {
        let tokens: Vec<_> = store.list_tokens().await?.into_iter().map(Into::into).collect();
        super::tokens::section(&mut h, &tokens, store.time(), &session);
    }
    Ok((
        super::html_headers(),
        html::page("Projects", Nav::Projects, Some(&session), None, &h),
    )
        .into_response())
}

/// The schedules: when each runs, when next, and what its last run did; and, for those who
/// may submit tasks, a run now and a pause or resume.
fn schedules(h: &mut String, list: &[Schedule], now: Timestamp, session: &Session) {
    let can_act = session.can(ACTORS);
    h.push_str(r#"<section aria-labelledby="sched-h"><h2 id="sched-h">Schedules</h2>"#);
    if list.is_empty() {
        h.push_str(
            r#"<p class="empty">No schedules (<code>agentpool schedules put NAME --cron '0 6 * * 1' …</code>).</p></section>"#,
        );
        return;
    }
    h.push_str(
        r#"<table class="schedules"><caption class="sr-only">Schedules</caption><thead><tr><th scope="col">name</th><th scope="col">when</th><th scope="col">next run</th><th scope="col">last run</th><th scope="col">last task</th><th scope="col">tasks</th>"#,
    );
    if can_act {
        h.push_str(r#"<th scope="col"><span class="sr-only">actions</span></th>"#);
    }
    h.push_str("</tr></thead><tbody>");
    for s in list {
        let next = match s.next_run_at {
            Some(t) => format!(
                "{}{} ({})",
                html::time(t),
                in_zone(t, s.spec.time_zone.as_deref()),
                html::ago(t, now)
            ),
            None if s.spec.paused => "paused".to_string(),
            None => "none".to_string(),
        };
        let last = match (&s.last_run_at, &s.last_message) {
            (Some(t), Some(m)) => format!("{}: {}", html::time(*t), esc(m)),
            _ => "not run yet".to_string(),
        };
        let _ = write!(
            h,
            r#"<tr><th scope="row">{}</th><td><code>{}</code> {}</td><td>{next}</td><td>{last}</td><td>{}</td><td><a href="/tasks?schedule={}">tasks</a></td>"#,
            esc(&s.name),
            esc(&s.spec.cron),
            esc(s.spec.time_zone.as_deref().unwrap_or("UTC")),
            s.last_task.as_ref().map(html::task_link).unwrap_or_default(),
            Url(&s.name),
        );
        if can_act {
            let (toggle, word) = if s.spec.paused {
                ("resume", "Resume")
            } else {
                ("pause", "Pause")
            };
            let _ = write!(
                h,
                r#"<td class="row-actions"><form method="post" action="/schedules/{name}/run">{csrf}<button type="submit" data-confirm="Submit this schedule's task now?">Run now</button></form><form method="post" action="/schedules/{name}/{toggle}">{csrf}<button type="submit">{word}</button></form></td>"#,
                name = Url(&s.name),
                csrf = session.csrf_field(),
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></section>");
}

/// `t` as a clock in a schedule's time zone reads it (` = 09:00 Europe/Berlin`),
/// when that is not UTC: the zone its cron expression is read in.
fn in_zone(t: Timestamp, zone: Option<&str>) -> String {
    match zone.map(|z| (z, z.parse::<chrono_tz::Tz>())) {
        Some((name, Ok(tz))) if tz != chrono_tz::UTC => {
            let local = t.with_timezone(&tz);
            // The date too when it is another day there.
            let shown = if local.date_naive() == t.date_naive() {
                local.format("%H:%M")
            } else {
                local.format("%Y-%m-%d %H:%M")
            };
            format!(" = {shown} {}", esc(name))
        }
        _ => String::new(),
    }
}

/// Deliveries looked at for a notification's row.
const RECENT_DELIVERIES: u32 = 20;

/// The notifications (admins only, as in the API): what each is told of, how its recent
/// deliveries went, and its latest problem. Not the URL, which may hold the endpoint's secret.
async fn notifications(h: &mut String, dash: &Dash) -> DashResult<()> {
    let store = dash.app.store();
    let list = store.list_notifications().await?;
    h.push_str(r#"<section aria-labelledby="notify-h"><h2 id="notify-h">Notifications</h2>"#);
    if list.is_empty() {
        h.push_str(
            r#"<p class="empty">No notifications (<code>agentpool notifications put NAME --url URL</code>).</p></section>"#,
        );
        return Ok(());
    }
    h.push_str(
        r#"<table class="notifications"><caption class="sr-only">Notifications</caption><thead><tr><th scope="col">name</th><th scope="col">told of</th><th scope="col">last deliveries</th><th scope="col">last problem</th></tr></thead><tbody>"#,
    );
    for n in &list {
        let recent = store.list_deliveries(&n.name, RECENT_DELIVERIES).await?;
        let count = |st: DeliveryState| recent.iter().filter(|d| d.state == st).count();
        let counts: Vec<String> = DeliveryState::ALL
            .iter()
            .map(|st| (count(*st), st))
            .filter(|(c, _)| *c > 0)
            .map(|(c, st)| format!("{c} {st}"))
            .collect();
        let summary = if counts.is_empty() {
            "none yet".to_string()
        } else {
            counts.join(" · ")
        };
        let problem = recent
            .iter()
            .find(|d| d.state != DeliveryState::Delivered && d.last_error.is_some())
            .map(|d| {
                format!(
                    "{}: {} ({})",
                    html::time(d.updated_at),
                    esc(d.last_error.as_deref().unwrap_or_default()),
                    html::task_link(&d.task_id)
                )
            })
            .unwrap_or_default();
        let _ = write!(
            h,
            r#"<tr><th scope="row">{}</th><td>{}</td><td>{summary}</td><td>{problem}</td></tr>"#,
            esc(&n.name),
            esc(&n.spec.describe()),
        );
    }
    h.push_str("</tbody></table></section>");
    Ok(())
}

/// Roles the API's schedule actions admit.
const ACTORS: &[Role] = &[Role::Submitter];

/// `POST /schedules/{name}/run`: submit its task now, then show that task.
pub async fn run(
    State(dash): State<Dash>,
    DashPath(name): DashPath<String>,
    action: Action,
) -> DashResult<Response> {
    require(&action.session, ACTORS, "run schedules")?;
    crate::routes::schedules::reached(&dash.app, action.session.caller(), &name).await?;
    let out = crate::schedules::run_now(&dash.app, &name, &action.session.who()).await?;
    Ok(redirect(&format!("/tasks/{}", out.task.id)))
}

/// `POST /schedules/{name}/pause`.
pub async fn pause(
    State(dash): State<Dash>,
    DashPath(name): DashPath<String>,
    action: Action,
) -> DashResult<Response> {
    set_paused(&dash, &name, &action, true).await
}

/// `POST /schedules/{name}/resume`.
pub async fn resume(
    State(dash): State<Dash>,
    DashPath(name): DashPath<String>,
    action: Action,
) -> DashResult<Response> {
    set_paused(&dash, &name, &action, false).await
}

async fn set_paused(dash: &Dash, name: &str, action: &Action, paused: bool) -> DashResult<Response> {
    require(&action.session, ACTORS, "pause or resume schedules")?;
    crate::routes::schedules::reached(&dash.app, action.session.caller(), name).await?;
    crate::schedules::set_paused(&dash.app, name, paused, &action.session.who()).await?;
    Ok(redirect("/projects#sched-h"))
}
