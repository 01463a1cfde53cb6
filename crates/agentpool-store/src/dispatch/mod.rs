//! Wake-one dispatch of waiting claimers: when work arrives, wake as many waiting claimers as
//! there are new tasks — per group of claimers with the same agents, labels and projects that
//! could run them — instead of every waiter, so the cost of a submit does not grow with the
//! number of idle workers.
//!
//! Waiters are grouped into classes by their capabilities (agents, labels, projects). A wake
//! names the shapes of the tasks it is about (required agent, labels, project; or "any") and a
//! count; each class that could run one of the shapes hands that many wake-ups to its
//! longest-waiting idle members. A waiter is idle (registered, eligible for a wake-up) from before its claim until it
//! returns, so a task committed while it claims still reaches it or another idle member.
//!
//! No wake-up is lost: a waiter that was handed one and leaves without using it (its poll timed
//! out, its client went away, its claim failed or came back with tasks taken before the
//! wake-up) passes it on to another member of its class; a claim that came back full passes one
//! on too, since more work may be waiting.
//!
//! **Hand-over.** A waiter that is parked in [`ClaimWaiter::wait`] can be handed a new task
//! directly: the enqueue reserves it ([`Dispatch::reserve`]), inserts the task already claimed
//! by the waiter's worker in the same transaction, and after the commit puts the claimed task in
//! the waiter's mailbox ([`Dispatch::deliver`]). One durable commit instead of two (the enqueue,
//! then the woken waiter's claim) and no wake-up hop in between. A reservation that comes to
//! nothing (the insert failed, the worker is draining) wakes the waiter to claim as usual
//! ([`Dispatch::release`]); a waiter that leaves while reserved makes the delivery fail and the
//! enqueue gives the task back to the queue; a waiter dropped with tasks in its mailbox gives
//! them back itself (through the store it came from, in a task of its own).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agentpool_core::protocol::ClaimedTask;
use agentpool_core::{Labels, Lease, WorkerId};
use tokio::sync::Notify;

/// What a task needs from a worker: its agent (none for "any worker"), its labels, and one
/// that takes tasks of its project.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Shape {
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(rename = "l", default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

impl Shape {
    /// The shape of a task: the agent it requires (`command` for a command task), its labels
    /// and its project.
    pub(crate) fn of(spec: &agentpool_core::TaskSpec) -> Self {
        Self {
            agent: spec.required_agent().map(str::to_string),
            labels: spec.labels.clone(),
            project: spec.project.clone(),
        }
    }

    /// Whether a worker with `labels`, offering the agents `offers` says yes to and limited
    /// to `projects` (empty: any), could run a task of this shape (the claim's own rule).
    pub(crate) fn fits(&self, offers: impl Fn(&str) -> bool, labels: &Labels, projects: &[String]) -> bool {
        agentpool_core::worker::Needs {
            agent: self.agent.as_deref(),
            labels: &self.labels,
            project: self.project.as_deref(),
        }
        .met_by(offers, labels, projects)
    }
}

/// Which classes of waiters a wake-up concerns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scope {
    /// Unknown work (re-queued, unblocked, came due): every class gets the wake-ups.
    Any,
    /// Tasks of these shapes: only classes that could claim one of them.
    Shapes(Vec<Shape>),
}

/// Capabilities that make a class: sorted, de-duplicated agents, the labels, and the sorted
/// projects it is limited to (empty: any).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClassKey {
    agents: Vec<String>,
    labels: Labels,
    projects: Vec<String>,
}

impl ClassKey {
    fn new(agents: &[String], labels: &Labels, projects: &[String]) -> Self {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        Self {
            agents: sorted(agents),
            labels: labels.clone(),
            projects: sorted(projects),
        }
    }

    fn can_run(&self, s: &Shape) -> bool {
        s.fits(
            |a| agentpool_core::worker::offers(self.agents.iter().map(String::as_str), a),
            &self.labels,
            &self.projects,
        )
    }
}

#[derive(Debug, Default)]
struct Class {
    /// Idle members by registration order: the longest-waiting is woken first.
    idle: BTreeMap<u64, u64>,
    members: usize,
}

/// Whose claim a task handed over becomes: the waiter's worker, leased for `lease_ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandOff {
    pub worker: WorkerId,
    pub lease_ttl: Duration,
}

/// A waiter reserved for one task by an enqueue in progress.
#[derive(Debug)]
pub(crate) struct Reservation {
    pub member: u64,
    pub to: HandOff,
}

#[derive(Debug)]
struct Member {
    class: Arc<ClassKey>,
    /// Its key in `Class::idle` while idle.
    idle_at: Option<u64>,
    /// Handed a wake-up it has not used yet.
    woken: bool,
    notify: Arc<Notify>,
    /// Who claims a task handed to this waiter.
    handoff: HandOff,
    /// Inside [`ClaimWaiter::wait`]: not claiming, so a task can be handed to it.
    parked: bool,
    /// Reserved by an enqueue: neither idle nor parked until the enqueue delivers or releases.
    reserved: bool,
    /// Tasks handed over and not yet taken by `wait`.
    mailbox: Vec<ClaimedTask>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    classes: HashMap<Arc<ClassKey>, Class>,
    members: HashMap<u64, Member>,
}

/// Returns to the queue tasks handed to a waiter that was dropped before it took them: the
/// store the waiter came from.
pub(crate) trait GiveBack: Send + Sync + 'static {
    fn give_back_later(&self, items: Vec<(WorkerId, Lease)>) -> crate::futures_like::BoxFuture;
}

/// A [`GiveBack`] kept by a waiter.
#[derive(Clone)]
pub(crate) struct Returner(pub Arc<dyn GiveBack>);

impl std::fmt::Debug for Returner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Returner")
    }
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

    /// Reserve the longest-waiting parked waiter that could run a task of `shape`, to hand
    /// it over (see the module docs). It leaves the idle set until delivered or released.
    pub(crate) fn reserve(&self, shape: &Shape) -> Option<Reservation> {
        let mut st = self.lock();
        let mut best: Option<(u64, u64)> = None;
        for (k, c) in &st.classes {
            if !k.can_run(shape) {
                continue;
            }
            let first = c
                .idle
                .iter()
                .find(|(_, id)| st.members.get(id).is_some_and(|m| m.parked))
                .map(|(seq, id)| (*seq, *id));
            if let Some(f) = first
                && best.is_none_or(|b| f.0 < b.0)
            {
                best = Some(f);
            }
        }
        let (seq, id) = best?;
        let m = st.members.get_mut(&id)?;
        m.idle_at = None;
        m.reserved = true;
        let (class, to) = (m.class.clone(), m.handoff.clone());
        if let Some(c) = st.classes.get_mut(&class) {
            c.idle.remove(&seq);
        }
        Some(Reservation { member: id, to })
    }

    /// Put `task`, claimed for the reserved waiter `member`, in its mailbox. False when the
    /// waiter has left meanwhile (the caller gives the task back to the queue).
    pub(crate) fn deliver(&self, member: u64, task: ClaimedTask) -> bool {
        let mut st = self.lock();
        match st.members.get_mut(&member) {
            Some(m) if m.reserved => {
                m.reserved = false;
                m.mailbox.push(task);
                m.notify.notify_one();
                true
            }
            _ => false,
        }
    }

    /// The reservation of `member` came to nothing: it claims for itself (a task meant for it
    /// may still be queued).
    pub(crate) fn release(&self, member: u64) {
        let mut st = self.lock();
        if let Some(m) = st.members.get_mut(&member)
            && m.reserved
        {
            m.reserved = false;
            m.woken = true;
            m.notify.notify_one();
        }
    }

    /// Register a waiting claimer with these capabilities; it is idle at once.
    pub(crate) fn waiter(
        &self,
        agents: &[String],
        labels: &Labels,
        projects: &[String],
        handoff: HandOff,
        returner: Returner,
    ) -> ClaimWaiter {
        let key = ClassKey::new(agents, labels, projects);
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
                handoff,
                parked: false,
                reserved: false,
                mailbox: Vec::new(),
            },
        );
        st.make_idle(id);
        ClaimWaiter {
            dispatch: self.clone(),
            id,
            notify,
            more: false,
            returner,
        }
    }

    /// How many waiters are parked in `wait` right now.
    pub(crate) fn parked(&self) -> usize {
        self.lock().members.values().filter(|m| m.parked).count()
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
    returner: Returner,
}

/// What ended a [`ClaimWaiter::wait`].
#[derive(Debug)]
pub enum Wake {
    /// Work may be available: claim.
    Claim,
    /// Tasks were handed over, already claimed for this waiter's worker.
    Handed(Vec<ClaimedTask>),
    /// Nothing came before the timeout.
    TimedOut,
}

/// Clears `parked` when a wait ends, however it ends (it may be dropped mid-way).
struct Parked<'a>(&'a ClaimWaiter);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0.dispatch.lock().members.get_mut(&self.0.id) {
            m.parked = false;
        }
    }
}

/// How long a timed-out wait still waits for an enqueue that reserved it to deliver or
/// release: the enqueue's transaction, far shorter than this in any healthy database.
const RESERVED_GRACE: Duration = Duration::from_secs(10);

impl ClaimWaiter {
    /// Wait until this waiter is handed a wake-up ([`Wake::Claim`]: claim again) or tasks
    /// ([`Wake::Handed`]), or `timeout` passes. Cancel-safe: a wake-up that arrives as the
    /// wait is dropped is passed on when the waiter is, and tasks handed over stay in the
    /// mailbox for the next wait (or are given back when the waiter is dropped).
    pub async fn wait(&mut self, timeout: Duration) -> Wake {
        let mut deadline = tokio::time::Instant::now() + timeout;
        let mut graced = false;
        let _parked = Parked(self);
        loop {
            {
                let mut st = self.dispatch.lock();
                let Some(m) = st.members.get_mut(&self.id) else {
                    return Wake::TimedOut;
                };
                // Unparked under the same lock that makes it idle again: an enqueue must not
                // reserve a waiter that is on its way to claim (the guard only covers drops).
                if !m.mailbox.is_empty() {
                    m.parked = false;
                    let tasks = std::mem::take(&mut m.mailbox);
                    // Idle again, should it wait once more.
                    st.make_idle(self.id);
                    return Wake::Handed(tasks);
                }
                if m.woken {
                    m.parked = false;
                    // Idle again before the claim this wake-up asks for.
                    st.make_idle(self.id);
                    return Wake::Claim;
                }
                // A timed-out wait stays for an enqueue that reserved it, once.
                if tokio::time::Instant::now() >= deadline {
                    if m.reserved && !graced {
                        graced = true;
                        deadline += RESERVED_GRACE;
                    } else {
                        m.parked = false;
                        return Wake::TimedOut;
                    }
                }
                m.parked = true;
            }
            // A stale permit from an earlier wake-up only sends us round the loop once more.
            let _ = tokio::time::timeout_at(deadline, self.notify.notified()).await;
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
        if !m.mailbox.is_empty() {
            // Handed over but never taken: back to the queue. Without a runtime (shutting
            // down) the leases expire and maintenance re-queues the tasks.
            let worker = m.handoff.worker.clone();
            let items = m.mailbox.iter().map(|c| (worker.clone(), c.lease)).collect();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(self.returner.0.give_back_later(items));
            }
        }
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
mod tests;
