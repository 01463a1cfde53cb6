//! The scaling decision, kept free of I/O: how many pods a pool wants from its queue, and how
//! to get from the current size to that without killing a running task — grow at once; shrink
//! only by pods whose workers have been drained and are idle, highest ordinals first.

use std::collections::{BTreeMap, BTreeSet};

use agentpool_core::protocol::QueueStats;
use agentpool_core::{Worker, WorkerStatus};

use super::crd::WorkerPoolSpec;
use super::objects::worker_id;

/// Pods the pool should have for `stats`: enough slots for the matching running tasks and the
/// queued ones a worker could claim now (not those waiting for a dependency, a branch or
/// their project's slots or budget: more pods would not run them sooner), within `[min, max]`;
/// the fixed count without autoscaling. A server that does not say which queued tasks are
/// runnable is sized by the due ones. Once one of the pool's workers takes tasks, runnable
/// tasks none of them could take ([`QueueStats::runnable_no_worker`]: an agent its pods do not
/// have, say) are left out: its pods are alike, so another would not take them either.
pub fn desired_replicas(spec: &WorkerPoolSpec, stats: Option<&QueueStats>) -> Option<i32> {
    if let Some(r) = spec.replicas {
        return Some(r.max(0));
    }
    let a = spec.autoscale.as_ref()?;
    let stats = stats?;
    let slots = u64::try_from(spec.slots_per_pod.max(1)).unwrap_or(1);
    let mut queued = stats.queued_runnable.unwrap_or(stats.queued_due);
    if let Some(n) = unservable(stats) {
        queued = queued.saturating_sub(n);
    }
    let needed = queued.saturating_add(stats.running);
    let pods = i32::try_from(needed.div_ceil(slots)).unwrap_or(i32::MAX);
    Some(pods.clamp(a.min.max(0), a.max.max(a.min.max(0))))
}

/// The runnable tasks none of the pool's workers could take, once one of them takes tasks (a
/// pool with none taking tasks cannot tell: its first pod may take them).
pub fn unservable(stats: &QueueStats) -> Option<u64> {
    let taking = stats.worker_counts.idle + stats.worker_counts.busy;
    stats.runnable_no_worker.filter(|n| *n > 0 && taking > 0)
}

/// One step toward the desired size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// The StatefulSet's replicas after this step.
    pub replicas: i32,
    /// Workers to ask to drain now (pods that are to go and still take work).
    pub drain: Vec<String>,
    /// Pods to delete so they come back as fresh, undrained workers (drained by the operator
    /// for a scale-down that demand has since cancelled; idle).
    pub restart: Vec<String>,
    /// Pods that are to go but still run tasks: the scale-down waits for them.
    pub waiting_for: Vec<String>,
}

/// Whether a worker's pod can go without a task being cut short: gone, or drained and idle.
fn removable(w: Option<&Worker>) -> bool {
    match w {
        None => true,
        Some(w) => match w.status {
            WorkerStatus::Offline => true,
            WorkerStatus::Draining => w.running == 0,
            _ => false,
        },
    }
}

/// The step from `current` pods toward `desired` for pool `pool`, given the server's view of
/// the pool's workers and the ones the operator drained earlier. `shrink` is false while a
/// scale-down is held back (its delay).
pub fn step(
    pool: &str,
    current: i32,
    desired: i32,
    workers: &[Worker],
    drained: &BTreeSet<String>,
    shrink: bool,
) -> Step {
    let by_id: BTreeMap<&str, &Worker> = workers.iter().map(|w| (w.id.as_str(), w)).collect();
    let mut s = Step {
        replicas: current,
        ..Step::default()
    };
    if desired >= current {
        s.replicas = desired;
    } else if shrink {
        for ordinal in (desired..current).rev() {
            let id = worker_id(pool, ordinal);
            let w = by_id.get(id.as_str()).copied();
            match w.map(|w| w.status) {
                None | Some(WorkerStatus::Offline) | Some(WorkerStatus::Draining) => {}
                Some(_) => s.drain.push(id.clone()),
            }
            if !removable(w) {
                s.waiting_for.push(id);
            }
        }
        // Lower replicas past the highest ordinals that can go now; a pod still running a task
        // keeps itself and every pod below it.
        while s.replicas > desired && removable(by_id.get(worker_id(pool, s.replicas - 1).as_str()).copied())
        {
            s.replicas -= 1;
        }
    }
    // Pods that stay but were drained for an earlier scale-down: bring them back once idle.
    // A worker drained by anyone else stays drained.
    for ordinal in 0..s.replicas.min(desired.max(0)) {
        let id = worker_id(pool, ordinal);
        if let Some(w) = by_id.get(id.as_str())
            && drained.contains(&id)
            && w.status == WorkerStatus::Draining
            && w.running == 0
        {
            s.restart.push(id);
        }
    }
    s
}
