//! Queue statistics for one set of workers (`GET /v1/queue/stats`): how much matching work is
//! queued and running and how busy the workers with given labels are — what an autoscaler of
//! a worker pool sizes the pool from.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::worker::Needs;
use crate::{Labels, Worker, WorkerStatus};

/// `GET /v1/queue/stats?labels=k=v,…&agents=a,…&projects=p,…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct QueueStatsQuery {
    /// The pool's worker labels, `k=v` comma-separated: workers whose labels include all of
    /// these are the pool's, and a queued task matches when its labels are a subset of them
    /// (empty: workers with no labels, and tasks with none). Absent: every worker and every
    /// queued task, whatever their labels.
    pub labels: Option<String>,
    /// Agents the pool offers, comma-separated; any agent when absent. Command tasks always
    /// match.
    pub agents: Option<String>,
    /// The projects the pool's workers are limited to, comma-separated: only their queued
    /// tasks match. Any task when absent (a project token counts its projects' only, either way).
    pub projects: Option<String>,
}

/// Counts of the pool's workers by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerCounts {
    /// Registered and not offline.
    pub online: u32,
    pub idle: u32,
    pub busy: u32,
    pub draining: u32,
    pub unhealthy: u32,
    /// Slots of the online workers.
    pub slots: u32,
}

/// The answer of `GET /v1/queue/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueStats {
    /// Queued tasks the pool could run (labels a subset of the pool's, agent offered),
    /// including tasks still waiting for a dependency, a branch lock or their `run_after`.
    pub queued: u64,
    /// Of those, the ones whose `run_after` has come.
    pub queued_due: u64,
    /// Of those, the ones a worker could claim now: no dependency pending, their branch free,
    /// their project's slots and daily budget not used up (a project's tasks counted up to its
    /// free slots, a branch's one at a time). What a pool is sized from: another worker would
    /// not run the others sooner. Absent from a server that does not count it (then size
    /// from `queued_due`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_runnable: Option<u64>,
    /// Of the runnable ones, those none of the pool's workers taking tasks now (idle or busy)
    /// could take: none offers their agent with all their labels and takes their project.
    /// They wait for a worker that does; the pods of a pool being alike, a larger pool would
    /// not start them either once one of its workers takes tasks. Absent from a server that
    /// does not count it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runnable_no_worker: Option<u64>,
    /// Tasks the pool's workers hold a live lease on.
    pub running: u64,
    pub worker_counts: WorkerCounts,
    /// The pool's workers (offline ones included, so a caller sees who has gone).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::WorkerSchema>))]
    pub workers: Vec<Worker>,
}

/// A queued task as [`QueueStats::compute`] counts it.
#[derive(Debug, Clone, Copy)]
pub struct QueuedTask<'a> {
    pub needs: Needs<'a>,
    /// Its `run_after` has come.
    pub due: bool,
    /// A worker could claim it now (see [`QueueStats::queued_runnable`]).
    pub runnable: bool,
}

impl QueueStats {
    /// Statistics from the queued tasks and every worker: the one definition of "matches the
    /// pool", shared by the server and tests. No selector: labels do not matter.
    pub fn compute<'a>(
        selector: Option<&Labels>,
        agents: &[String],
        queued: impl IntoIterator<Item = QueuedTask<'a>>,
        workers: impl IntoIterator<Item = Worker>,
    ) -> Self {
        let mut s = Self {
            queued_runnable: Some(0),
            runnable_no_worker: Some(0),
            ..Self::default()
        };
        s.count_workers(selector, workers);
        // Whether a worker takes a task depends on its needs alone, and a queue has few kinds.
        let mut taken: HashMap<Needs<'a>, bool> = HashMap::new();
        for t in queued {
            let labels_ok =
                selector.is_none_or(|sel| t.needs.labels.iter().all(|(k, v)| sel.get(k) == Some(v)));
            let agent_ok = match t.needs.agent {
                None => {
                    agents.is_empty()
                        || crate::worker::offers(agents.iter().map(String::as_str), crate::worker::ANY_AGENT)
                }
                Some(a) if a == crate::spec::COMMAND_AGENT => true,
                Some(a) => agents.is_empty() || agents.iter().any(|x| x == a),
            };
            if !(labels_ok && agent_ok) {
                continue;
            }
            s.queued += 1;
            if t.due {
                s.queued_due += 1;
            }
            if !t.runnable {
                continue;
            }
            if let Some(n) = s.queued_runnable.as_mut() {
                *n += 1;
            }
            let workers = &s.workers;
            let some_worker = *taken
                .entry(t.needs)
                .or_insert_with(|| workers.iter().any(|w| w.takes(&t.needs)));
            if !some_worker && let Some(n) = s.runnable_no_worker.as_mut() {
                *n += 1;
            }
        }
        s
    }

    /// The pool's workers (those whose labels include the selector's), counted by status.
    fn count_workers(&mut self, selector: Option<&Labels>, workers: impl IntoIterator<Item = Worker>) {
        let s = self;
        for w in workers {
            if selector.is_some_and(|sel| !sel.iter().all(|(k, v)| w.labels.get(k) == Some(v))) {
                continue;
            }
            let c = &mut s.worker_counts;
            if w.status != WorkerStatus::Offline {
                c.online += 1;
                c.slots += w.slots;
                s.running += u64::from(w.running);
            }
            match w.status {
                WorkerStatus::Idle => c.idle += 1,
                WorkerStatus::Busy => c.busy += 1,
                WorkerStatus::Draining => c.draining += 1,
                WorkerStatus::Unhealthy => c.unhealthy += 1,
                WorkerStatus::Offline => {}
            }
            s.workers.push(w);
        }
    }
}

/// `k=v,k2=v2` → labels; the error names the bad pair.
pub fn parse_label_list(s: &str) -> Result<Labels, String> {
    let mut out = Labels::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        if k.is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}
