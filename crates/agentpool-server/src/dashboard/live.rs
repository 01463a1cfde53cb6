//! Live updates over server-sent events. A page's stream re-renders the page's live regions
//! when something may have changed and sends only regions whose HTML differs from what it sent
//! last (`event: replace`, data = region id, newline, inner HTML). A task's stream also
//! appends its new events (`event: append`, SSE id = last event seq, so a reconnect resumes)
//! and says `end` once the task has finished and its last events were sent.
//!
//! "May have changed" is the server's in-process wake-up hub (claims, events, completions,
//! cancels on this replica), the store's work signal (enqueues), or a fallback timer that
//! covers other replicas and clocks (heartbeat ages).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use agentpool_core::TaskId;
use agentpool_store::WorkListener;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::broadcast;

use super::Dash;
use super::auth::Session;
use super::error::{DashError, DashResult};
use super::events::{self, UsageSum};
use super::request::{DashPath, DashQuery};
use super::tasks::ListQuery;

/// Re-render at least this often without a wake-up.
const FALLBACK: Duration = Duration::from_secs(5);
/// A task page re-reads this often without a wake-up (events written through other replicas).
const TASK_FALLBACK: Duration = Duration::from_secs(1);
/// After a wake-up, wait this long so a burst of changes costs one render.
const SETTLE: Duration = Duration::from_millis(500);
const EVENT_PAGE: u32 = 500;

enum View {
    Overview,
    Tasks(Box<ListQuery>),
    Workers,
}

async fn render(dash: &Dash, view: &View, session: &Session) -> DashResult<Vec<(&'static str, String)>> {
    Ok(match view {
        View::Overview => vec![(
            "overview",
            super::overview::render(&super::overview::load(dash, session.caller()).await?),
        )],
        View::Tasks(q) => {
            let v = super::tasks::find(dash, session.caller(), q).await?;
            vec![
                ("task-rows", super::tasks::rows(&v, session.is_admin())),
                ("task-pager", super::tasks::pager(q, &v)),
            ]
        }
        View::Workers => vec![(
            "workers-table",
            super::workers::table(
                &super::workers::load(dash, session.caller()).await?,
                session,
                chrono::Utc::now(),
            ),
        )],
    })
}

struct Wake {
    hub: broadcast::Receiver<TaskId>,
    work: Option<WorkListener>,
}

impl Wake {
    fn new(dash: &Dash, with_work: bool) -> Self {
        Self {
            hub: dash.app.inner.hub.subscribe(),
            work: with_work.then(|| dash.app.store().work_listener()),
        }
    }

    /// Resolve on a wake-up (for `task`, when given) or after `fallback`.
    async fn wait(&mut self, task: Option<TaskId>, fallback: Duration) {
        let deadline = tokio::time::Instant::now() + fallback;
        let work = async {
            match self.work.as_mut() {
                Some(w) => {
                    w.wait(fallback).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let hub = async {
            loop {
                match self.hub.recv().await {
                    Ok(id) if task.is_none_or(|t| t == id) => return,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            _ = hub => {}
            _ = work => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn replace(id: &str, html: &str) -> SseEvent {
    SseEvent::default().event("replace").data(format!("{id}\n{html}"))
}

struct PageStream {
    dash: Dash,
    session: Session,
    view: View,
    wake: Wake,
    last: HashMap<&'static str, String>,
    pending: VecDeque<SseEvent>,
    first: bool,
}

fn page_stream(dash: Dash, session: Session, view: View) -> Response {
    let st = PageStream {
        wake: Wake::new(&dash, true),
        dash,
        session,
        view,
        last: HashMap::new(),
        pending: VecDeque::new(),
        first: true,
    };
    sse(futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if !st.first {
                st.wake.wait(None, FALLBACK).await;
                tokio::time::sleep(SETTLE).await;
            }
            st.first = false;
            if !st.session.still_valid(&st.dash).await {
                return None;
            }
            match render(&st.dash, &st.view, &st.session).await {
                Ok(regions) => {
                    for (id, html) in regions {
                        if st.last.get(id) != Some(&html) {
                            st.pending.push_back(replace(id, &html));
                            st.last.insert(id, html);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "dashboard live render failed");
                    return None;
                }
            }
        }
    }))
}

/// A stream's session, or 401: an `EventSource` must not be redirected to the login page.
fn stream_session(s: Result<Session, DashError>) -> DashResult<Session> {
    s.map_err(|e| match e {
        DashError::Login { .. } => DashError::new(StatusCode::UNAUTHORIZED, "log in again"),
        other => other,
    })
}

pub async fn overview(State(dash): State<Dash>, session: Result<Session, DashError>) -> DashResult<Response> {
    Ok(page_stream(dash, stream_session(session)?, View::Overview))
}

pub async fn tasks(
    State(dash): State<Dash>,
    session: Result<Session, DashError>,
    DashQuery(q): DashQuery<ListQuery>,
) -> DashResult<Response> {
    Ok(page_stream(
        dash,
        stream_session(session)?,
        View::Tasks(Box::new(q)),
    ))
}

pub async fn workers(State(dash): State<Dash>, session: Result<Session, DashError>) -> DashResult<Response> {
    Ok(page_stream(dash, stream_session(session)?, View::Workers))
}

#[derive(serde::Deserialize)]
pub struct AfterQuery {
    after: Option<i64>,
}

struct TaskStream {
    dash: Dash,
    session: Session,
    id: TaskId,
    after: i64,
    usage: UsageSum,
    wake: Wake,
    last_state: String,
    last_detail: String,
    pending: VecDeque<SseEvent>,
    started: bool,
    skip_wait: bool,
    done: bool,
}

impl TaskStream {
    /// Sum the usage of the events the page already showed (seq ≤ after).
    async fn sum_earlier_usage(&mut self) -> DashResult<()> {
        let mut cursor = 0;
        while cursor < self.after {
            let evs = self
                .dash
                .app
                .store()
                .list_events(self.id, cursor, EVENT_PAGE)
                .await?;
            let Some(last) = evs.last().map(|e| e.seq) else {
                break;
            };
            evs.iter()
                .filter(|e| e.seq <= self.after)
                .for_each(|e| self.usage.add(e));
            cursor = last;
        }
        Ok(())
    }

    /// One round: new events, then the state region; whether the stream is finished.
    async fn step(&mut self) -> DashResult<()> {
        let store = self.dash.app.store().clone();
        let evs = store.list_events(self.id, self.after, EVENT_PAGE).await?;
        let got = evs.len();
        if let Some(last) = evs.last() {
            let mut html = String::new();
            for e in &evs {
                self.usage.add(e);
                html.push_str(&events::render(e));
            }
            self.after = last.seq;
            self.pending.push_back(
                SseEvent::default()
                    .event("append")
                    .id(self.after.to_string())
                    .data(format!("events\n{html}")),
            );
        }
        let detail = store
            .get_task(self.id)
            .await?
            .ok_or_else(|| DashError::not_found("task gone"))?;
        let (state, rest) =
            super::task::render_state(&detail, &self.usage, &self.session, chrono::Utc::now());
        if state != self.last_state {
            self.pending.push_back(replace("task-state", &state));
            self.last_state = state;
        }
        if rest != self.last_detail {
            self.pending.push_back(replace("task-detail", &rest));
            self.last_detail = rest;
        }
        if got == EVENT_PAGE as usize {
            self.skip_wait = true;
        } else if detail.task.state.is_finished() {
            // Events written just before the task finished may have landed after the read
            // above: read once more, and end only after a read that found nothing.
            if got == 0 {
                self.pending
                    .push_back(SseEvent::default().event("end").data("finished"));
                self.done = true;
            } else {
                self.skip_wait = true;
            }
        }
        Ok(())
    }
}

pub async fn task(
    State(dash): State<Dash>,
    session: Result<Session, DashError>,
    DashPath(id): DashPath<TaskId>,
    DashQuery(q): DashQuery<AfterQuery>,
    headers: HeaderMap,
) -> DashResult<Response> {
    let session = stream_session(session)?;
    match dash.app.store().find_task(id).await? {
        Some(t) if session.caller().reaches(t.spec.project.as_deref()) => {}
        _ => return Err(DashError::not_found(format!("task {id} not found"))),
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<i64>().ok());
    let after = resume.or(q.after).unwrap_or(0).max(0);
    let st = TaskStream {
        wake: Wake::new(&dash, false),
        dash,
        session,
        id,
        after,
        usage: UsageSum::default(),
        last_state: String::new(),
        last_detail: String::new(),
        pending: VecDeque::new(),
        started: false,
        skip_wait: true,
        done: false,
    };
    Ok(sse(futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            if !st.started {
                st.started = true;
                if let Err(e) = st.sum_earlier_usage().await {
                    tracing::warn!(error = ?e, "dashboard task stream failed");
                    return None;
                }
            }
            if !std::mem::take(&mut st.skip_wait) {
                st.wake.wait(Some(st.id), TASK_FALLBACK).await;
            }
            if !st.session.still_valid(&st.dash).await {
                return None;
            }
            if let Err(e) = st.step().await {
                tracing::warn!(error = ?e, "dashboard task stream failed");
                return None;
            }
        }
    })))
}
