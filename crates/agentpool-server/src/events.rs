//! Live task events: an in-process wake-up channel fed by every path that appends events or
//! changes a task, and the SSE stream that reads the store (the source of truth) whenever it is
//! woken — or every second, so events written through another replica arrive too. The store
//! writes each task's terminal lifecycle event with the state change itself, so the stream
//! ends right after sending it; waking costs one read of the events after the last one sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::{Event, TaskId};
use agentpool_store::Store;
use axum::response::sse;
use futures::Stream;
use tokio::sync::broadcast;

/// Wake-ups per task id. Carries no payload: subscribers re-read the store, so a lagging
/// subscriber loses nothing but a wake-up it then treats as one.
pub struct EventHub {
    tx: broadcast::Sender<TaskId>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    pub fn notify(&self, task: TaskId) {
        // No subscribers is the common case; nothing to do then.
        let _ = self.tx.send(task);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskId> {
        self.tx.subscribe()
    }
}

/// How often a stream re-reads the store without a local wake-up (events from other replicas).
const POLL_FALLBACK: Duration = Duration::from_secs(1);
const PAGE: u32 = 500;

struct StreamState {
    store: Arc<dyn Store>,
    task: TaskId,
    after: i64,
    buf: VecDeque<Event>,
    rx: broadcast::Receiver<TaskId>,
    done: bool,
    /// The last event sent ended the task.
    ended: bool,
    /// Whether the task's state was read once, for a stream resumed past its terminal event.
    state_checked: bool,
}

/// SSE events of `task` with `seq > after`, live until the task has finished and its last
/// events were sent. The SSE id of each event is its `seq`, so `Last-Event-ID` resumes.
pub fn task_event_stream(
    store: Arc<dyn Store>,
    hub: &EventHub,
    task: TaskId,
    after: i64,
) -> impl Stream<Item = Result<sse::Event, Infallible>> + Send + 'static {
    let st = StreamState {
        store,
        task,
        after,
        buf: VecDeque::new(),
        // Subscribe before the first read so no wake-up between read and wait is lost.
        rx: hub.subscribe(),
        done: false,
        ended: false,
        state_checked: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.buf.pop_front() {
                st.after = ev.seq;
                st.ended = ev.is_terminal();
                return Some((Ok(to_sse(&ev)), st));
            }
            if st.done {
                return None;
            }
            match fill(&mut st).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(task = %st.task, error = %e, "event stream ended on a store error");
                    return None;
                }
            }
            // Nothing new after the terminal event (a manual retry would have written
            // `queued` after it): the record is complete.
            if st.ended {
                return None;
            }
            // A stream resumed past the terminal event never sees it: read the state once.
            if !st.state_checked {
                st.state_checked = true;
                match st.store.get_task(st.task).await {
                    Ok(Some(t)) if !t.task.state.is_finished() => {}
                    Ok(_) => {
                        // Finished: its terminal event committed with the state, so one more
                        // read has it.
                        st.done = true;
                        match fill(&mut st).await {
                            Ok(_) => continue,
                            Err(_) => return None,
                        }
                    }
                    Err(_) => return None,
                }
            }
            wait_for_wake(&mut st).await;
        }
    })
}

async fn fill(st: &mut StreamState) -> Result<bool, agentpool_store::StoreError> {
    let events = st.store.list_events(st.task, st.after, PAGE).await?;
    let got = !events.is_empty();
    st.buf.extend(events);
    Ok(got)
}

async fn wait_for_wake(st: &mut StreamState) {
    let deadline = tokio::time::Instant::now() + POLL_FALLBACK;
    loop {
        tokio::select! {
            r = st.rx.recv() => match r {
                Ok(id) if id == st.task => return,
                Ok(_) => continue,
                // Lagged: we may have missed our own wake-up; re-read.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            },
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

fn to_sse(ev: &Event) -> sse::Event {
    let data = serde_json::to_string(ev).unwrap_or_else(|_| "{}".to_string());
    sse::Event::default()
        .id(ev.seq.to_string())
        .event(ev.kind().as_str())
        .data(data)
}
