//! Workers as the queue sees them: identity, capabilities and status.

use serde::{Deserialize, Serialize};

use crate::{Labels, Timestamp, WorkerId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Idle,
    Busy,
    /// Finishing what it runs; claims nothing new.
    Draining,
    /// Missed heartbeats, or deregistered.
    Offline,
    /// Could not start git or an agent several times in a row; claims nothing until it is
    /// restarted (and registers again).
    Unhealthy,
}

crate::enum_names!(WorkerStatus, UnknownWorkerStatus("worker status") {
    Idle => "idle",
    Busy => "busy",
    Draining => "draining",
    Offline => "offline",
    Unhealthy => "unhealthy",
});

/// An agent CLI a worker has, with the version it reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What a worker tells the queue when it registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerRegistration {
    /// Chosen by the worker so that a restart can re-register under the same id; assigned by
    /// the server when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<WorkerId>,
    pub hostname: String,
    pub version: String,
    pub agents: Vec<AgentInfo>,
    #[serde(default)]
    pub labels: Labels,
    pub slots: u32,
    /// Only tasks of these projects (empty: tasks of any project and of none). A worker
    /// registered with a token limited to projects is limited to them (to the ones it names
    /// here, or to all of the token's when it names none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// This registration starts a new life of the worker, which runs nothing yet: every attempt
    /// still held under its id is released at once (ended as `LEASE_EXPIRED` and retried)
    /// instead of waiting for its lease to expire. A worker that re-registers while it still
    /// runs tasks (the server forgot it), or a launcher whose Jobs outlive it, leaves it false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh_start: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub id: WorkerId,
    pub hostname: String,
    pub version: String,
    pub agents: Vec<AgentInfo>,
    pub labels: Labels,
    pub slots: u32,
    /// The projects whose tasks it takes; empty: any task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    pub status: WorkerStatus,
    /// Why the worker is unhealthy, as it said when it turned so; absent otherwise (and for a
    /// worker too old to say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// Tasks this worker holds a live lease on.
    pub running: u32,
    pub registered_at: Timestamp,
    pub last_heartbeat_at: Timestamp,
    /// The worker's mirror cache as it last reported it; absent for a worker without one (or
    /// one too old to report it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStats>,
}

/// A worker's warm mirror cache: how often tasks found their repository's mirror (a fetch)
/// or had to create it (a clone) since the cache was created (the counts are kept in the cache,
/// so a restarted worker goes on from them), and what the cache holds on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Bytes the mirrors take on disk.
    pub bytes: u64,
    pub mirrors: u32,
}

impl CacheStats {
    /// Hits over uses; `None` before the first use.
    pub fn hit_rate(&self) -> Option<f64> {
        let uses = self.hits.saturating_add(self.misses);
        (uses > 0).then(|| self.hits as f64 / uses as f64)
    }

    /// The sum of several caches (a pool's).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a CacheStats>) -> CacheStats {
        all.into_iter().fold(CacheStats::default(), |a, c| CacheStats {
            hits: a.hits.saturating_add(c.hits),
            misses: a.misses.saturating_add(c.misses),
            bytes: a.bytes.saturating_add(c.bytes),
            mirrors: a.mirrors.saturating_add(c.mirrors),
        })
    }
}

impl Worker {
    pub fn agent_names(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.name.clone()).collect()
    }
}
