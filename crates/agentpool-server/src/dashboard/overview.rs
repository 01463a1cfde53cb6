//! The overview: tasks by state, throughput and failures over the last hour (a small chart),
//! queue depth per project and label, the oldest waiting task and why it waits, and workers by
//! status (and by worker pool, for workers labelled `pool=NAME`). Rebuilt by the live stream
//! when anything changes.
//!
//! Every figure is read so that the page stays fast on a large database: the last hour's are
//! counted by the store on its index of end times (exact, whatever the history), and the
//! per-queue ones from at most [`QUEUED_MAX`] queued tasks' labels and projects; the page says
//! so when that read was cut short.

use std::collections::BTreeMap;
use std::fmt::Write;

use agentpool_core::{Task, TaskState, Timestamp, Worker, WorkerStatus};
use agentpool_store::WaitReason;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::Dash;
use super::auth::Session;
use super::error::DashResult;
use super::html::{self, Nav, esc};
use crate::auth::Caller;

/// The most queued tasks counted by project and label; past that the figures are a floor.
const QUEUED_MAX: u32 = 20_000;
/// Chart buckets over the last hour.
const BUCKETS: usize = 12;
const BUCKET_SECS: i64 = 300;

pub struct OverviewData {
    pub now: Timestamp,
    pub counts: BTreeMap<TaskState, u64>,
    /// (succeeded, failed) per bucket, oldest first.
    pub buckets: [(u64, u64); BUCKETS],
    pub queue_by_project: BTreeMap<String, u64>,
    pub queue_by_label: BTreeMap<String, u64>,
    pub queued_seen: usize,
    pub queued_capped: bool,
    pub oldest: Option<(Task, Vec<WaitReason>)>,
    pub workers: Vec<Worker>,
}

/// The overview as `by` sees it: a project token's figures count its projects' tasks only.
pub async fn load(dash: &Dash, by: &Caller) -> DashResult<OverviewData> {
    let store = dash.app.store();
    let now = chrono::Utc::now();
    let counts = match &by.projects {
        None => store.count_by_state().await?,
        Some(ps) => store.count_by_state_of(ps).await?,
    };
    let hour_ago = now - chrono::Duration::seconds(BUCKET_SECS * BUCKETS as i64);
    let step = std::time::Duration::from_secs(BUCKET_SECS as u64);
    let mut buckets = [(0u64, 0u64); BUCKETS];
    for c in store
        .count_finished(hour_ago, step, by.projects.as_deref())
        .await?
    {
        // A task that ended after `now` (another replica's clock, this read's own time) is in
        // the last bucket.
        let i = (c.interval as usize).min(BUCKETS - 1);
        match c.state {
            TaskState::Succeeded => buckets[i].0 += c.tasks,
            TaskState::Failed => buckets[i].1 += c.tasks,
            _ => {}
        }
    }
    // Only the columns counted, on the indexes of queued tasks (what queue stats read).
    let queued = store.queued_shapes(by.projects.as_deref(), QUEUED_MAX).await?;
    let queued_capped = queued.len() == QUEUED_MAX as usize;
    let mut queue_by_project = BTreeMap::new();
    let mut queue_by_label = BTreeMap::new();
    for t in &queued {
        let p = t.project.clone().unwrap_or_else(|| "(no project)".into());
        *queue_by_project.entry(p).or_insert(0) += 1;
        for (k, v) in &t.labels {
            *queue_by_label.entry(format!("{k}={v}")).or_insert(0) += 1;
        }
    }
    // Ids sort by creation: the smallest is the oldest.
    let oldest = match queued.iter().map(|t| t.id).min().filter(|_| !queued_capped) {
        Some(id) => store.get_task(id).await?.map(|d| (d.task, d.waiting)),
        None => None,
    };
    Ok(OverviewData {
        now,
        counts,
        buckets,
        queue_by_project,
        queue_by_label,
        queued_seen: queued.len(),
        queued_capped,
        oldest,
        workers: store.list_workers().await?,
    })
}

pub async fn page(State(dash): State<Dash>, session: Session) -> DashResult<Response> {
    let data = load(&dash, session.caller()).await?;
    let body = format!(
        r#"<h1>Overview</h1><div id="overview">{}</div><p class="live-status" role="status" aria-live="polite"></p>"#,
        render(&data)
    );
    Ok((
        super::html_headers(),
        html::page(
            "Overview",
            Nav::Overview,
            Some(&session),
            Some("/live/overview"),
            &body,
        ),
    )
        .into_response())
}

pub fn render(d: &OverviewData) -> String {
    let mut h = String::with_capacity(4096);
    h.push_str(
        r#"<section aria-labelledby="counts-h"><h2 id="counts-h">Tasks by state</h2><ul class="counts">"#,
    );
    for s in TaskState::ALL {
        let n = d.counts.get(&s).copied().unwrap_or(0);
        let _ = write!(
            h,
            r#"<li><a href="/tasks?state={st}" id="count-{st}"><span class="n">{n}</span> {}</a></li>"#,
            html::state_badge(s),
            st = s.as_str()
        );
    }
    h.push_str("</ul></section>");
    h.push_str(&chart(d));
    h.push_str(&queue(d));
    h.push_str(&workers(d));
    h
}

fn chart(d: &OverviewData) -> String {
    let (ok, bad) = d.buckets.iter().fold((0, 0), |(a, b), (s, f)| (a + s, b + f));
    let max = d.buckets.iter().map(|(s, f)| s + f).max().unwrap_or(0).max(1);
    let (w, hgt, bw) = (360u64, 80u64, 30u64);
    let mut h = format!(
        r#"<section aria-labelledby="tp-h"><h2 id="tp-h">Last hour</h2><p id="throughput"><strong>{ok}</strong> succeeded, <strong>{bad}</strong> failed</p>
<svg class="chart" viewBox="0 0 {w} {}" width="{w}" height="{}" role="img" aria-labelledby="tp-h throughput">"#,
        hgt + 14,
        hgt + 14,
    );
    let start = d.now - chrono::Duration::seconds(BUCKET_SECS * BUCKETS as i64);
    for (i, (s, f)) in d.buckets.iter().enumerate() {
        let x = i as u64 * bw + 2;
        let hs = s * hgt / max;
        let hf = f * hgt / max;
        let from = start + chrono::Duration::seconds(BUCKET_SECS * i as i64);
        let _ = write!(
            h,
            r#"<g><title>from {} UTC: {s} succeeded, {f} failed</title><rect class="bar-ok" x="{x}" y="{}" width="{}" height="{hs}"/><rect class="bar-bad" x="{x}" y="{}" width="{}" height="{hf}"/></g>"#,
            from.format("%H:%M"),
            hgt - hs,
            bw - 4,
            hgt - hs - hf,
            bw - 4,
        );
    }
    let _ = write!(
        h,
        r#"<text x="2" y="{y}" class="axis">−60 min</text><text x="{}" y="{y}" class="axis" text-anchor="end">now</text></svg></section>"#,
        w - 2,
        y = hgt + 12
    );
    h
}

fn queue(d: &OverviewData) -> String {
    let mut h = String::from(r#"<section aria-labelledby="q-h"><h2 id="q-h">Queue</h2>"#);
    let total = d.counts.get(&TaskState::Queued).copied().unwrap_or(0);
    if total == 0 {
        h.push_str(r#"<p class="empty">Nothing is waiting.</p></section>"#);
        return h;
    }
    if d.queued_capped {
        let _ = write!(
            h,
            r#"<p class="hint">Depths below count {} of {total} queued tasks.</p>"#,
            d.queued_seen
        );
    }
    let table = |h: &mut String, title: &str, m: &BTreeMap<String, u64>, param: &str| {
        if m.is_empty() {
            return;
        }
        let _ = write!(
            h,
            r#"<table class="depth"><caption>{title}</caption><thead><tr><th scope="col">{param}</th><th scope="col">queued</th></tr></thead><tbody>"#
        );
        let mut rows: Vec<_> = m.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, n) in rows.into_iter().take(20) {
            let link = if k.starts_with('(') {
                esc(k).to_string()
            } else {
                format!(
                    r#"<a href="/tasks?state=queued&amp;{param}={}">{}</a>"#,
                    html::Url(k),
                    esc(k)
                )
            };
            let _ = write!(h, "<tr><td>{link}</td><td>{n}</td></tr>");
        }
        h.push_str("</tbody></table>");
    };
    table(&mut h, "by project", &d.queue_by_project, "project");
    table(&mut h, "by label", &d.queue_by_label, "label");
    match &d.oldest {
        Some((t, waiting)) => {
            let why = if waiting.is_empty() {
                "ready to run".to_string()
            } else {
                waiting
                    .iter()
                    .map(|w| match w {
                        WaitReason::Scheduled { run_after } => format!("scheduled ({})", html::ago(*run_after, d.now)),
                        WaitReason::Dependencies { pending } => match pending.len() {
                            1 => "waits for a dependency".to_string(),
                            n => format!("waits for {n} dependencies"),
                        },
                        WaitReason::BranchLocked { branch, .. } => format!("branch {branch} is locked"),
                        WaitReason::ProjectSlotsFull { project, slots } => {
                            format!("project {project} has {}", WaitReason::slots_busy(*slots))
                        }
                        WaitReason::BudgetExhausted { project, .. } => {
                            format!("project {project} spent its daily budget")
                        }
                        WaitReason::GivenBack { worker, .. } => format!("given back by {worker}"),
                        WaitReason::NoWorker => "no free worker with its agent and labels".to_string(),
                        w @ WaitReason::NoWorkerCanRun { .. } => {
                            format!("no worker online offers {}", w.no_worker_offers().unwrap_or_default())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let _ = write!(
                h,
                r#"<p id="oldest">Oldest waiting: {} <span class="what">{}</span>, queued {} — <strong>{}</strong></p>"#,
                html::task_link(&t.id),
                esc(&super::task::what(&t.spec, 60)),
                html::ago(t.created_at, d.now),
                esc(&why)
            );
        }
        None if d.queued_capped => h.push_str(
            r#"<p class="hint">The oldest waiting task may be beyond the counted ones; see the <a href="/tasks?state=queued">queued tasks</a>.</p>"#,
        ),
        None => {}
    }
    h.push_str("</section>");
    h
}

fn workers(d: &OverviewData) -> String {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut slots, mut running) = (0u64, 0u64);
    for w in &d.workers {
        *by.entry(w.status.as_str()).or_insert(0) += 1;
        if w.status != WorkerStatus::Offline {
            slots += u64::from(w.slots);
            running += u64::from(w.running);
        }
    }
    let mut h =
        String::from(r#"<section aria-labelledby="w-h"><h2 id="w-h">Workers</h2><ul class="counts">"#);
    for s in [
        WorkerStatus::Idle,
        WorkerStatus::Busy,
        WorkerStatus::Draining,
        WorkerStatus::Offline,
        WorkerStatus::Unhealthy,
    ] {
        let _ = write!(
            h,
            r#"<li id="workers-{st}"><span class="n">{}</span> {}</li>"#,
            by.get(s.as_str()).copied().unwrap_or(0),
            html::worker_badge(s),
            st = s.as_str()
        );
    }
    let _ = write!(
        h,
        r#"</ul><p>{running} of {slots} slots busy on live workers. <a href="/workers">All workers</a></p>"#
    );
    // Workers started as one pool carry its name in a `pool` label.
    let mut pools: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for w in d.workers.iter().filter(|w| w.status != WorkerStatus::Offline) {
        if let Some(p) = w.labels.get("pool") {
            let e = pools.entry(p.as_str()).or_default();
            e.0 += 1;
            e.1 += u64::from(w.running);
            e.2 += u64::from(w.slots);
        }
    }
    if !pools.is_empty() {
        h.push_str(
            r#"<table class="depth"><caption>worker pools</caption><thead><tr><th scope="col">pool</th><th scope="col">workers</th><th scope="col">busy slots</th></tr></thead><tbody>"#,
        );
        for (p, (n, run, slots)) in pools {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{n}</td><td>{run} of {slots}</td></tr>",
                esc(p)
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");
    h
}
