//! What a reconcile pass writes into a WorkerPool's status besides its sizes: conditions
//! (keeping their transition time while they hold), the pool's mirror caches summed over its
//! workers, and the scale-down state that must outlive the operator process — since when
//! demand has been below the pool's size, and which workers the operator drained.

use std::collections::BTreeSet;

use agentpool_core::{CacheStats, Worker, WorkerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::crd::{PoolCacheStatus, ScaleDownStatus};
use super::objects::worker_id;

pub(crate) fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(chrono::Utc::now()),
    }
}

/// Keep a condition's transition time while its status does not change.
pub(crate) fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(o) = old.iter().find(|o| o.type_ == c.type_)
                && o.status == c.status
            {
                c.last_transition_time = o.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// The pool's caches: the sum over its online workers that reported one; `None` when none
/// did.
pub fn cache_status(workers: &[Worker]) -> Option<PoolCacheStatus> {
    let reported: Vec<&CacheStats> = workers
        .iter()
        .filter(|w| w.status != WorkerStatus::Offline)
        .filter_map(|w| w.cache.as_ref())
        .collect();
    if reported.is_empty() {
        return None;
    }
    let sum = CacheStats::sum(reported.iter().copied());
    let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Some(PoolCacheStatus {
        hits: big(sum.hits),
        misses: big(sum.misses),
        // Three decimals: a status that changes on every pass for nothing would be noise.
        hit_rate: sum.hit_rate().map(|r| (r * 1000.0).round() / 1000.0),
        bytes: big(sum.bytes),
        mirrors: i32::try_from(sum.mirrors).unwrap_or(i32::MAX),
        workers: i32::try_from(reported.len()).unwrap_or(i32::MAX),
    })
}

/// The scale-down state a pass starts from (the last one written) and moves on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleDown {
    pub below_since: Option<chrono::DateTime<chrono::Utc>>,
    pub drained: BTreeSet<String>,
}

impl ScaleDown {
    pub fn from_status(s: Option<&ScaleDownStatus>) -> Self {
        Self {
            below_since: s.and_then(|s| s.below_since.as_ref()).map(|t| t.0),
            drained: s.map(|s| s.drained.iter().cloned().collect()).unwrap_or_default(),
        }
    }

    pub fn to_status(&self) -> Option<ScaleDownStatus> {
        (self.below_since.is_some() || !self.drained.is_empty()).then(|| ScaleDownStatus {
            below_since: self.below_since.map(Time),
            drained: self.drained.iter().cloned().collect(),
        })
    }

    /// Whether a scale-down may go ahead now: demand has been below `current` for `delay`.
    /// Starts the clock when demand first falls below, stops it when demand is back.
    pub fn below(
        &mut self,
        desired: i32,
        current: i32,
        delay: chrono::Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        if desired >= current {
            self.below_since = None;
            return false;
        }
        let since = *self.below_since.get_or_insert(now);
        now - since >= delay
    }

    /// After a pass that left `replicas` pods for `desired`: the delay is over once the pool
    /// is down to size; forget drained workers whose pods are gone (ordinal at or past
    /// `replicas`), that were restarted, or that the server no longer has draining (their
    /// pod restarted and registered afresh), then remember the ones just drained. `workers`
    /// is `None` when the server could not be asked: nothing is forgotten then.
    pub fn settle(
        &mut self,
        pool: &str,
        (replicas, desired): (i32, i32),
        workers: Option<&[Worker]>,
        restarted: &[String],
        just_drained: &[String],
    ) {
        if replicas <= desired {
            self.below_since = None;
        }
        let present: BTreeSet<String> = (0..replicas.max(0)).map(|o| worker_id(pool, o)).collect();
        self.drained.retain(|id| {
            let draining = workers.is_none_or(|ws| {
                ws.iter()
                    .any(|w| w.id.as_str() == id && w.status == WorkerStatus::Draining)
            });
            present.contains(id) && !restarted.contains(id) && draining
        });
        self.drained
            .extend(just_drained.iter().filter(|id| present.contains(*id)).cloned());
    }
}
