//! Live task events: in-process wake-ups fed by every path that appends events or changes a
//! task, and the SSE stream that reads the store (the source of truth) whenever it is woken —
//! or every second, so events written through another replica arrive too. The store writes
//! each task's terminal lifecycle event with the state change itself, so the stream ends right
//! after sending it; waking costs one read of the events after the last one sent.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentpool_core::{Event, TaskId};
use agentpool_store::Store;
use axum::response::sse;
use futures::Stream;
use tokio::sync::{broadcast, watch};

/// Wake-ups per task id. Carries no payload: subscribers re-read the store, so a lagging
/// subscriber loses nothing but a wake-up it then treats as one.
///
/// Two kinds of subscriber: pages that follow every task (the dashboard) take the broadcast of
/// all task ids; a stream that follows one task takes that task's own channel, so an append
/// wakes only the streams of its task — with one broadcast, 100 watchers of 100 busy tasks
/// were woken 100 times per append each, and spent the server's CPU discarding wake-ups.
pub struct EventHub {
    tx: broadcast::Sender<TaskId>,
    /// One counter per task somebody follows; bumped on every wake-up of that task. A watch
    /// channel coalesces: a stream busy sending sees one change however many came meanwhile.
    per_task: Arc<Mutex<HashMap<TaskId, watch::Sender<u64>>>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            tx,
            per_task: Arc::default(),
        }
    }

    pub fn notify(&self, task: TaskId) {
        // No subscribers is the common case; nothing to do then.
        let _ = self.tx.send(task);
        let map = self.per_task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&task) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wake-ups for every task.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskId> {
        self.tx.subscribe()
    }

    /// Wake-ups for one task. Take it before the first read of the store, so that no wake-up
    /// between that read and the first wait is lost.
    pub fn watch_task(&self, task: TaskId) -> TaskWatch {
        let mut map = self.per_task.lock().unwrap_or_else(|p| p.into_inner());
        let rx = match map.get(&task) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                map.insert(task, tx);
                rx
            }
        };
        TaskWatch {
            task,
            rx,
            map: self.per_task.clone(),
        }
    }
}

/// A subscription to one task's wake-ups; the task's channel goes when its last one does.
pub struct TaskWatch {
    task: TaskId,
    rx: watch::Receiver<u64>,
    map: Arc<Mutex<HashMap<TaskId, watch::Sender<u64>>>>,
}

impl TaskWatch {
    /// Resolves on the next wake-up not yet seen, or after `fallback`.
    pub async fn wait(&mut self, fallback: Duration) {
        let _ = tokio::time::timeout(fallback, self.rx.changed()).await;
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // This receiver still counts while it is being dropped.
        if map.get(&self.task).is_some_and(|tx| tx.receiver_count() <= 1) {
            map.remove(&self.task);
        }
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
    wake: TaskWatch,
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
        wake: hub.watch_task(task),
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
                match st.store.find_task(st.task).await {
                    Ok(Some(t)) if !t.state.is_finished() => {}
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
            st.wake.wait(POLL_FALLBACK).await;
        }
    })
}

async fn fill(st: &mut StreamState) -> Result<bool, agentpool_store::StoreError> {
    let events = st.store.list_events(st.task, st.after, PAGE).await?;
    let got = !events.is_empty();
    st.buf.extend(events);
    Ok(got)
}

fn to_sse(ev: &Event) -> sse::Event {
    let data = serde_json::to_string(ev).unwrap_or_else(|_| "{}".to_string());
    sse::Event::default()
        .id(ev.seq.to_string())
        .event(ev.kind().as_str())
        .data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn woken(w: &TaskWatch) -> bool {
        w.rx.has_changed().unwrap_or(true)
    }

    #[tokio::test]
    async fn a_task_s_wake_up_reaches_its_watchers_only_and_coalesces() {
        let hub = EventHub::new();
        let (a, b) = (TaskId::new(), TaskId::new());
        let mut wa = hub.watch_task(a);
        let wa2 = hub.watch_task(a);
        let wb = hub.watch_task(b);
        hub.notify(a);
        hub.notify(a);
        assert!(woken(&wa) && woken(&wa2));
        assert!(!woken(&wb), "a wake-up of A reached B's watcher");
        // Two wake-ups while busy are one change: after one wait nothing is pending.
        wa.wait(Duration::from_secs(3600)).await;
        assert!(!woken(&wa));
        // A wake-up before the wait is not lost.
        hub.notify(a);
        wa.wait(Duration::from_secs(3600)).await;
        assert!(!woken(&wa));
    }

    #[tokio::test]
    async fn a_task_s_channel_goes_with_its_last_watcher() {
        let hub = EventHub::new();
        let a = TaskId::new();
        let w1 = hub.watch_task(a);
        let w2 = hub.watch_task(a);
        drop(w1);
        assert_eq!(hub.per_task.lock().unwrap().len(), 1);
        drop(w2);
        assert!(hub.per_task.lock().unwrap().is_empty());
        // Wake-ups of a task nobody follows cost a map lookup and nothing else.
        hub.notify(a);
        assert!(hub.per_task.lock().unwrap().is_empty());
    }
}
