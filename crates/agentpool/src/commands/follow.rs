//! Following a task to its end: its events as they come (SSE, or pages when the server has no
//! stream), a live status line on a terminal, and the finished task.

use std::time::{Duration, Instant};

use agentpool_client::Client;
use agentpool_core::protocol::TaskDetail;
use agentpool_core::{TaskId, TaskState};
use futures::StreamExt;

use super::pool::Signals;
use crate::config::Settings;
use crate::exit::{Exit, ExitCode};
use crate::output::{self, StatusLine, Style};

mod waits;
pub use waits::Waits;

/// Wait until the task finishes, showing its events (when `show_events` and not JSON), why it
/// waits while queued, and a live status line on a terminal. Returns the finished task.
pub async fn wait_for(
    client: &Client,
    id: TaskId,
    json: bool,
    show_events: bool,
) -> anyhow::Result<TaskDetail> {
    wait_saying(client, id, json, show_events, Waits::new(!json)).await
}

/// [`wait_for`], saying why the task waits through `waits`.
pub async fn wait_saying(
    client: &Client,
    id: TaskId,
    json: bool,
    show_events: bool,
    waits: Waits,
) -> anyhow::Result<TaskDetail> {
    let style = Style::stdout();
    let mut status = StatusLine::new(!json);
    let sink = |line: Option<String>, status: &mut StatusLine| {
        if let Some(l) = line
            && show_events
            && !json
        {
            status.println(&l);
        }
    };
    follow_saying(client, id, &mut status, waits, |ev, st| {
        sink(output::render_event(&style, ev), st)
    })
    .await
}

/// What a follower says, and exits with (130), when it is interrupted: it only stopped
/// following; the task goes on on the server.
pub fn stopped_following(id: TaskId) -> anyhow::Error {
    Exit::new(
        ExitCode::Interrupted,
        format!(
            "stopped following; the task goes on: `agentpool tasks logs -f {id}` follows it \
             again, `agentpool tasks cancel {id}` stops it"
        ),
    )
    .into()
}

/// What `tasks wait` says, and exits with (130), when it is interrupted: the tasks go on.
fn stopped_waiting(ids: &[TaskId]) -> anyhow::Error {
    let named = ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
    let (them, go) = if ids.len() == 1 {
        ("it", "the task goes on")
    } else {
        ("them", "the tasks go on")
    };
    Exit::new(
        ExitCode::Interrupted,
        format!(
            "stopped waiting; {go}: `agentpool tasks wait {named}` waits again, \
             `agentpool tasks cancel {named}` stops {them}"
        ),
    )
    .into()
}

/// `following` (a follower of task `id`), or, on Ctrl-C or SIGTERM, [`stopped_following`].
/// `signals` is made before the task is first named on stdout, so that whoever reads that and
/// interrupts at once is not met by the default action (a silent death by the signal).
pub async fn until_interrupted<T>(
    id: TaskId,
    mut signals: Signals,
    following: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        r = following => r,
        _ = signals.next() => Err(stopped_following(id)),
    }
}

/// `tasks wait ID…`: wait until every task named has finished (or `timeout` passes), then say
/// how each ended. One task prints like `submit --wait`; several, a line each (JSON: an array
/// of tasks). The exit code is the worst outcome: 1 when any failed, else 3 when any was
/// canceled, else 0 — so a script can submit now and wait later.
pub async fn wait_all(
    settings: &Settings,
    client: &Client,
    ids: &[TaskId],
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    // Made first, so that an interrupt at any moment is answered (see `until_interrupted`).
    let mut signals = Signals::new();
    let mut done: Vec<TaskDetail> = Vec::with_capacity(ids.len());
    let waiting = async {
        // One after another: the tasks run meanwhile, so this takes as long as the slowest,
        // and following one that already finished returns at once.
        // Why one waits is said of a single task only: among several, a line would not say
        // which task it is about.
        let say = !settings.json() && ids.len() == 1;
        for id in ids {
            done.push(wait_saying(client, *id, settings.json(), false, Waits::new(say)).await?);
        }
        anyhow::Ok(())
    };
    let waited = async {
        match timeout {
            Some(limit) => tokio::time::timeout(limit, waiting).await.ok(),
            None => Some(waiting.await),
        }
    };
    let waited = tokio::select! {
        w = waited => w,
        _ = signals.next() => return Err(stopped_waiting(ids)),
    };
    let Some(waited) = waited else {
        // Timed out. Waited on in order: of those not reached, some may have finished meanwhile.
        let mut left = Vec::new();
        for id in &ids[done.len()..] {
            match client.get_task(*id).await {
                Ok(d) if d.task.state.is_finished() => {}
                _ => left.push(id.to_string()),
            }
        }
        let limit = timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        return Err(Exit::new(
            ExitCode::Failed,
            format!(
                "timed out after {}: {} of {} still unfinished: {}",
                output::duration_ms(limit),
                left.len(),
                ids.len(),
                left.join(", ")
            ),
        )
        .into());
    };
    waited?;
    if let [one] = done.as_slice() {
        return super::tasks::finish(settings, one);
    }
    if settings.json() {
        super::print_json(&done)?;
    } else {
        let s = Style::stdout();
        for d in &done {
            let t = &d.task;
            let why = match (t.error_class, t.error_message.as_deref()) {
                (Some(c), Some(m)) => format!(" {c} {m}"),
                (Some(c), None) => format!(" {c}"),
                _ => String::new(),
            };
            outln!("{} {}{why}", t.id, s.state(t.state));
        }
    }
    let states = || done.iter().map(|d| d.task.state);
    Ok(if states().any(|s| s == TaskState::Failed) {
        ExitCode::Failed
    } else if states().any(|s| s == TaskState::Canceled) {
        ExitCode::Canceled
    } else {
        ExitCode::Success
    })
}

/// Follow a task's events live until its terminal event: SSE when the server offers it, paged
/// reads otherwise. Every event is passed to `on_event` exactly once, in order. The status line
/// is drawn from the lifecycle events; the task itself is read once, at the end, for its result.
pub async fn follow(
    client: &Client,
    id: TaskId,
    status: &mut StatusLine,
    on_event: impl FnMut(&agentpool_core::Event, &mut StatusLine),
) -> anyhow::Result<TaskDetail> {
    follow_saying(client, id, status, Waits::new(false), on_event).await
}

/// [`follow`], saying through `waits` why the task waits while it is queued (each time it
/// becomes so, the task is read once more: see [`Waits`]).
pub async fn follow_saying(
    client: &Client,
    id: TaskId,
    status: &mut StatusLine,
    mut waits: Waits,
    mut on_event: impl FnMut(&agentpool_core::Event, &mut StatusLine),
) -> anyhow::Result<TaskDetail> {
    let started = Instant::now();
    let mut after: i64 = 0;
    let mut progress = Progress::default();
    let mut sse_ok = true;
    let mut outage = Outage::default();
    loop {
        if progress.finished {
            match client.get_task(id).await {
                Ok(done) => {
                    status.clear();
                    return Ok(done);
                }
                Err(e) => {
                    outage.wait_or_give_up(e, id, status).await?;
                    continue;
                }
            }
        }
        let stream = if sse_ok {
            match client.stream_events(id, after).await {
                Ok(s) => {
                    outage.over(status);
                    if progress.state == Some(TaskState::Queued) {
                        waits.reconnected();
                    }
                    Some(s)
                }
                Err(agentpool_client::Error::NotFound(_)) if client.get_task(id).await.is_ok() => {
                    tracing::debug!("no SSE endpoint; reading event pages");
                    sse_ok = false;
                    None
                }
                Err(e) => {
                    outage.wait_or_give_up(e, id, status).await?;
                    continue;
                }
            }
        } else {
            None
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(120));
        let mut ticks: u32 = 0;
        let mut stream = stream.map(Box::pin);
        loop {
            tokio::select! {
                next = async { match stream.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                    match next {
                        Some(Ok(ev)) => {
                            if ev.seq <= after { continue; }
                            after = ev.seq;
                            progress.apply(&ev);
                            waits.heard(&ev);
                            on_event(&ev, status);
                        }
                        // The server ends the stream after the terminal event; otherwise it
                        // broke: reconnect from the last event seen.
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "event stream interrupted");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            break;
                        }
                        None => break,
                    }
                }
                _ = ticker.tick() => {
                    ticks += 1;
                    // On a tick, not on the event: a follower catching up on a long history
                    // reads the task once, as it stands after the events seen so far.
                    if waits.due() {
                        let read = client.get_task(id).await.ok();
                        waits.say(read.as_ref(), progress.retry_at, status);
                    }
                    status.set(progress.text(id, started.elapsed()));
                    status.tick();
                    if !sse_ok && ticks.is_multiple_of(16) {
                        let page = match client.events(id, after, 500).await {
                            Ok(page) => {
                                outage.over(status);
                                page
                            }
                            Err(e) => {
                                outage.wait_or_give_up(e, id, status).await?;
                                continue;
                            }
                        };
                        for ev in page.events {
                            after = after.max(ev.seq);
                            progress.apply(&ev);
                            waits.heard(&ev);
                            on_event(&ev, status);
                        }
                        if progress.finished { break; }
                    }
                }
            }
        }
    }
}

/// How long a follower keeps trying to reach a server that went away (a restart, a rolling
/// deploy) before it gives up. The task goes on either way; only the following stops.
const RECONNECT_FOR: Duration = Duration::from_secs(300);

/// A follower's time without its server: a restart of the server should not fail a script
/// waiting on a task (`submit --wait`, `tasks wait`) that goes on and succeeds meanwhile.
#[derive(Debug, Default)]
struct Outage {
    /// A call of this follower has succeeded: a server that cannot be reached now went away.
    /// Before that, it may never have been there (a wrong `--server`), which should fail at
    /// once rather than after minutes.
    reached: bool,
    since: Option<Instant>,
    tries: u32,
}

impl Outage {
    /// After the call that failed with `e`: wait to try again (with backoff, saying so once),
    /// or give up — at once when `e` is not a matter of time (a refusal, a task not found),
    /// else once the server has been away for [`RECONNECT_FOR`].
    async fn wait_or_give_up(
        &mut self,
        e: agentpool_client::Error,
        id: TaskId,
        status: &mut StatusLine,
    ) -> anyhow::Result<()> {
        if !e.is_transient() || !self.reached {
            return Err(e.into());
        }
        let since = *self.since.get_or_insert_with(|| {
            status.clear();
            eprintln!(
                "agentpool: lost the server ({e}); trying again for up to {} (the task goes on)",
                output::duration_ms(u64::try_from(RECONNECT_FOR.as_millis()).unwrap_or(u64::MAX))
            );
            Instant::now()
        });
        if since.elapsed() >= RECONNECT_FOR {
            return Err(anyhow::Error::from(e).context(format!(
                "gave up following task {id} (it goes on: `agentpool tasks logs -f {id}` follows it again)"
            )));
        }
        let backoff = Duration::from_millis(250u64 << self.tries.min(4)).min(Duration::from_secs(3));
        self.tries += 1;
        tokio::time::sleep(backoff).await;
        Ok(())
    }

    /// A call succeeded: the server is back, if it was away.
    fn over(&mut self, status: &mut StatusLine) {
        self.reached = true;
        if self.since.take().is_some() {
            status.clear();
            eprintln!("agentpool: reached the server again");
        }
        self.tries = 0;
    }
}

/// Where a followed task stands, as its lifecycle events tell it.
#[derive(Debug, Default)]
struct Progress {
    state: Option<TaskState>,
    attempt: u32,
    worker: Option<agentpool_core::WorkerId>,
    retry_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The last failed attempt was given back: the next one has its number.
    given_back: bool,
    /// The last event seen ended the task.
    finished: bool,
}

impl Progress {
    fn apply(&mut self, ev: &agentpool_core::Event) {
        use agentpool_core::Lifecycle as L;
        self.finished = ev.is_terminal();
        let Some(l) = ev.payload.lifecycle() else {
            return;
        };
        match l {
            L::Queued => {
                self.state = Some(TaskState::Queued);
                self.retry_at = None;
            }
            L::Claimed { attempt, worker } => {
                self.state = Some(TaskState::Running);
                self.attempt = *attempt;
                self.worker = Some(worker.clone());
                self.retry_at = None;
            }
            L::RetryScheduled {
                run_after,
                given_back,
                ..
            } => {
                self.state = Some(TaskState::Queued);
                self.retry_at = Some(*run_after);
                self.given_back = *given_back;
            }
            other => {
                if let Some(s) = other.terminal_state() {
                    self.state = Some(s);
                }
            }
        }
    }

    fn text(&self, id: TaskId, elapsed: Duration) -> String {
        let why = match self.state {
            Some(TaskState::Queued) if self.attempt > 0 => match self.retry_at {
                Some(at) if at > chrono::Utc::now() => format!(
                    "attempt {} failed; retrying {}",
                    self.attempt,
                    output::relative(at)
                ),
                _ => format!(
                    "retrying (attempt {})",
                    self.attempt + u32::from(!self.given_back)
                ),
            },
            Some(TaskState::Queued) | None => "waiting for a worker".to_string(),
            Some(TaskState::Running) => match &self.worker {
                Some(w) => format!("running on {w}"),
                None => "running".to_string(),
            },
            Some(s) => s.to_string(),
        };
        format!("{} · {why} · {}s", output::short_id(&id), elapsed.as_secs())
    }
}
