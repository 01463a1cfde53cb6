//! Wake-one dispatch of waiting claimers: when work arrives, wake as many waiting claimers as
//! there are new tasks — per group of claimers with the same agents and labels that could run
//! them — instead of every waiter, so the cost of a submit does not grow with the number of
//! idle workers.
//!
//! Waiters are grouped into classes by their capabilities (agents, labels). A wake names the
//! shapes of the tasks it is about (required agent, labels; or "any") and a count; each class
//! that could run one of the shapes hands that many wake-ups to its longest-waiting idle
//! members. A waiter is idle (registered, eligible for a wake-up) from before its claim until it
//! returns, so a task committed while it claims still reaches it or another idle member.
//!
//! No wake-up is lost: a waiter that was handed one and leaves without using it (its poll timed
//! out, its client went away, its claim failed or came back with tasks taken before the
//! wake-up) passes it on to another member of its class; a claim that came back full passes one
//! on too, since more work may be waiting.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agentpool_core::Labels;
use tokio::sync::Notify;

/// What a task needs from a worker: its agent (none for "any worker") and its labels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Shape {
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(rename = "l", default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// Which classes of waiters a wake-up concerns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scope {
    /// Unknown work (re-queued, unblocked, came due): every class gets the wake-ups.
    Any,
    /// Tasks of these shapes: only classes that could claim one of them.
    Shapes(Vec<Shape>),
}

/// Capabilities that make a class: sorted, de-duplicated agents and the labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClassKey {
    agents: Vec<String>,
    labels: Labels,
}

impl ClassKey {
    fn new(agents: &[String], labels: &Labels) -> Self {
        let mut agents = agents.to_vec();
        agents.sort();
        agents.dedup();
        Self {
            agents,
            labels: labels.clone(),
        }
    }

    fn can_run(&self, s: &Shape) -> bool {
        s.agent
            .as_ref()
            .is_none_or(|a| self.agents.binary_search(a).is_ok())
            && s.labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

#[derive(Debug, Default)]
struct Class {
    /// Idle members by registration order: the longest-waiting is woken first.
    idle: BTreeMap<u64, u64>,
    members: usize,
}

#[derive(Debug)]
struct Member {
    class: Arc<ClassKey>,
    /// Its key in `Class::idle` while idle.
    idle_at: Option<u64>,
    /// Handed a wake-up it has not used yet.
    woken: bool,
    notify: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    classes: HashMap<Arc<ClassKey>, Class>,
    members: HashMap<u64, Member>,
}

impl State {
    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn make_idle(&mut self, id: u64) {
        let seq = self.seq();
        if let Some(m) = self.members.get_mut(&id) {
            m.woken = false;
            if m.idle_at.is_none() {
                m.idle_at = Some(seq);
                if let Some(c) = self.classes.get_mut(&m.class) {
                    c.idle.insert(seq, id);
                }
            }
        }
    }

    /// Hand up to `count` wake-ups to idle members of `key`'s class.
    fn wake_class(&mut self, key: &ClassKey, count: u32) -> u32 {
        let mut woken = 0;
        while woken < count {
            let Some(id) = self
                .classes
                .get_mut(key)
                .and_then(|c| c.idle.pop_first())
                .map(|(_, id)| id)
            else {
                break;
            };
            if let Some(m) = self.members.get_mut(&id) {
                m.idle_at = None;
                m.woken = true;
                m.notify.notify_one();
                woken += 1;
            }
        }
        woken
    }
}

/// The wake-one registry of one store (shared by its clones).
#[derive(Debug, Clone, Default)]
pub(crate) struct Dispatch {
    state: Arc<Mutex<State>>,
}

impl Dispatch {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent state (every step is one insert
        // or removal), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake up to `count` waiters in each class that `scope` concerns. `u32::MAX` wakes all.
    pub(crate) fn wake(&self, scope: &Scope, count: u32) {
        if count == 0 {
            return;
        }
        let mut st = self.lock();
        let keys: Vec<Arc<ClassKey>> = st
            .classes
            .iter()
            .filter(|(k, c)| {
                !c.idle.is_empty()
                    && match scope {
                        Scope::Any => true,
                        Scope::Shapes(shapes) => shapes.iter().any(|s| k.can_run(s)),
                    }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            st.wake_class(&k, count);
        }
    }

    /// Register a waiting claimer with these capabilities; it is idle at once.
    pub(crate) fn waiter(&self, agents: &[String], labels: &Labels) -> ClaimWaiter {
        let key = ClassKey::new(agents, labels);
        let mut st = self.lock();
        let id = st.seq();
        let class = match st.classes.get_key_value(&key) {
            Some((k, _)) => k.clone(),
            None => {
                let k = Arc::new(key);
                st.classes.insert(k.clone(), Class::default());
                k
            }
        };
        if let Some(c) = st.classes.get_mut(&class) {
            c.members += 1;
        }
        let notify = Arc::new(Notify::new());
        st.members.insert(
            id,
            Member {
                class,
                idle_at: None,
                woken: false,
                notify: notify.clone(),
            },
        );
        st.make_idle(id);
        ClaimWaiter {
            dispatch: self.clone(),
            id,
            notify,
            more: false,
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().classes.values().map(|c| c.idle.len()).sum()
    }
}

/// A claimer waiting for work (see the module docs). Claim after creating it, and again each
/// time [`ClaimWaiter::wait`] returns `true`; call [`ClaimWaiter::finish`] when a claim returns
/// tasks. Dropping it passes on a wake-up it was handed and did not use.
#[derive(Debug)]
pub struct ClaimWaiter {
    dispatch: Dispatch,
    id: u64,
    notify: Arc<Notify>,
    /// Pass a wake-up on when leaving, used or not (the last claim came back full).
    more: bool,
}

impl ClaimWaiter {
    /// Wait until this waiter is handed a wake-up (`true`: claim again) or `timeout` passes
    /// (`false`). Cancel-safe: a wake-up that arrives as the wait is dropped is passed on when
    /// the waiter is.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let mut st = self.dispatch.lock();
                if st.members.get(&self.id).is_some_and(|m| m.woken) {
                    // Idle again before the claim this wake-up asks for.
                    st.make_idle(self.id);
                    return true;
                }
            }
            // A stale permit from an earlier wake-up only sends us round the loop once more.
            if tokio::time::timeout_at(deadline, self.notify.notified())
                .await
                .is_err()
            {
                let mut st = self.dispatch.lock();
                if st.members.get(&self.id).is_some_and(|m| m.woken) {
                    st.make_idle(self.id);
                    return true;
                }
                return false;
            }
        }
    }

    /// The claim returned tasks: leave. With `full` (it returned as many as asked for), a
    /// wake-up goes to another waiter of the class, since more work may be waiting.
    pub fn finish(mut self, full: bool) {
        self.more = full;
    }
}

impl Drop for ClaimWaiter {
    fn drop(&mut self) {
        let mut st = self.dispatch.lock();
        let Some(m) = st.members.remove(&self.id) else {
            return;
        };
        let class = m.class.clone();
        let mut empty = false;
        if let Some(c) = st.classes.get_mut(&class) {
            if let Some(seq) = m.idle_at {
                c.idle.remove(&seq);
            }
            c.members = c.members.saturating_sub(1);
            empty = c.members == 0;
        }
        if empty {
            st.classes.remove(&class);
        } else if m.woken || self.more {
            st.wake_class(&class, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(agent: &str, labels: &[(&str, &str)]) -> Shape {
        Shape {
            agent: Some(agent.into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn labels(l: &[(&str, &str)]) -> Labels {
        l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const NOW: Duration = Duration::from_millis(0);

    #[tokio::test]
    async fn one_task_wakes_one_waiter_of_each_class_that_can_run_it() {
        let d = Dispatch::default();
        let mut a: Vec<_> = (0..5)
            .map(|_| d.waiter(&["command".into()], &Labels::new()))
            .collect();
        let mut gpu: Vec<_> = (0..3)
            .map(|_| d.waiter(&["codex".into(), "command".into()], &labels(&[("gpu", "1")])))
            .collect();
        d.wake(&Scope::Shapes(vec![shape("codex", &[])]), 1);
        let woken_a = futures_count(&mut a).await;
        let woken_gpu = futures_count(&mut gpu).await;
        assert_eq!((woken_a, woken_gpu), (0, 1));
        d.wake(&Scope::Shapes(vec![shape("command", &[])]), 2);
        assert_eq!(futures_count(&mut a).await, 2);
        assert_eq!(futures_count(&mut gpu).await, 2);
        d.wake(&Scope::Any, u32::MAX);
        assert_eq!(futures_count(&mut a).await, 5);
        assert_eq!(futures_count(&mut gpu).await, 3);
        assert_eq!(d.idle_count(), 8);
    }

    async fn futures_count(ws: &mut [ClaimWaiter]) -> usize {
        let mut n = 0;
        for w in ws {
            if w.wait(NOW).await {
                n += 1;
            }
        }
        n
    }

    #[tokio::test]
    async fn an_unused_wake_up_is_passed_on_when_the_waiter_leaves() {
        let d = Dispatch::default();
        let first = d.waiter(&["command".into()], &Labels::new());
        let mut second = d.waiter(&["command".into()], &Labels::new());
        d.wake(&Scope::Any, 1);
        // The longest-waiting one got it; it leaves without claiming (its poll ended).
        assert!(!second.wait(NOW).await);
        drop(first);
        assert!(
            second.wait(NOW).await,
            "the wake-up was lost with the leaving waiter"
        );
        // A claim that came back full passes one on as well.
        let third = d.waiter(&["command".into()], &Labels::new());
        third.finish(true);
        assert!(second.wait(NOW).await);
        let fourth = d.waiter(&["command".into()], &Labels::new());
        fourth.finish(false);
        assert!(!second.wait(NOW).await);
        drop(second);
        assert_eq!(d.idle_count(), 0);
        assert!(d.lock().classes.is_empty());
    }
}
