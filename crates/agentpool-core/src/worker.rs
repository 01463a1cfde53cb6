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

/// What the claim matches a task that names no agent against: a worker that offers any agent
/// but `command` (whose default agent then runs it). Agent names cannot take this form.
pub const ANY_AGENT: &str = "*";

/// Whether a worker offering `agents` offers `wanted`; [`ANY_AGENT`]: any agent but
/// `command`, which runs commands, not prompts.
pub fn offers<'a>(mut agents: impl Iterator<Item = &'a str>, wanted: &str) -> bool {
    if wanted == ANY_AGENT {
        agents.any(|a| a != crate::spec::COMMAND_AGENT)
    } else {
        agents.any(|a| a == wanted)
    }
}

/// What a task needs of a worker: the agent it runs (none: any agent, the worker's default),
/// labels the worker must all have, and its project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Needs<'a> {
    pub agent: Option<&'a str>,
    pub labels: &'a Labels,
    pub project: Option<&'a str>,
}

impl Needs<'_> {
    /// Whether a worker with `labels`, offering the agents `offers` says yes to (asked for
    /// [`ANY_AGENT`] when the task names none) and limited to `projects` (empty: any task, of a
    /// project or of none), could take the task: the claim's own rule. A worker labelled
    /// [`DEDICATED_LABEL`](crate::spec::DEDICATED_LABEL) takes only tasks with that same label.
    pub fn met_by(&self, offers: impl Fn(&str) -> bool, labels: &Labels, projects: &[String]) -> bool {
        let dedicated = crate::spec::DEDICATED_LABEL;
        offers(self.agent.unwrap_or(ANY_AGENT))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && labels
                .get(dedicated)
                .is_none_or(|v| self.labels.get(dedicated) == Some(v))
            && (projects.is_empty() || self.project.is_some_and(|p| projects.iter().any(|x| x == p)))
    }
}

impl Worker {
    /// Whether this worker takes tasks now (idle or busy: not draining, unhealthy or offline)
    /// and could take one that `needs` this.
    pub fn takes(&self, needs: &Needs<'_>) -> bool {
        matches!(self.status, WorkerStatus::Idle | WorkerStatus::Busy)
            && needs.met_by(
                |a| offers(self.agents.iter().map(|x| x.name.as_str()), a),
                &self.labels,
                &self.projects,
            )
    }
}

/// An agent CLI a worker has, with the version it reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl AgentInfo {
    /// An agent whose version is not known (not probed, or not said).
    pub fn unversioned(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: None,
        }
    }
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
    /// It takes the tasks whose labels are all among these; with `agentpool/dedicated=V`
    /// among them, only tasks that carry that label too (a dedicated worker).
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
    /// Why the worker is unhealthy, as it said when it turned so; for a worker that claims,
    /// which agent it no longer runs and why (a refused key). Absent when it has nothing to
    /// say, when it is offline, and for a worker too old to say.
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
    /// The worker a registration makes at `now`, under `id`: idle, running nothing, its
    /// registration's fields as given.
    pub fn registered(reg: WorkerRegistration, id: WorkerId, now: Timestamp) -> Self {
        Self {
            id,
            hostname: reg.hostname,
            version: reg.version,
            agents: reg.agents,
            labels: reg.labels,
            slots: reg.slots,
            projects: reg.projects,
            status: WorkerStatus::Idle,
            status_message: None,
            running: 0,
            registered_at: now,
            last_heartbeat_at: now,
            cache: None,
        }
    }

    pub fn agent_names(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.name.clone()).collect()
    }

    /// Whether it claims but stopped running an agent whose provider refused its own key:
    /// the only thing an idle or busy worker says of itself (`status_message` says which).
    pub fn retired_an_agent(&self) -> bool {
        matches!(self.status, WorkerStatus::Idle | WorkerStatus::Busy) && self.status_message.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(agents: &[&str], labels: &[(&str, &str)], projects: &[&str], status: WorkerStatus) -> Worker {
        let reg = WorkerRegistration {
            id: None,
            hostname: "h".into(),
            version: "v".into(),
            agents: agents.iter().map(|a| AgentInfo::unversioned(*a)).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            slots: 1,
            projects: projects.iter().map(|p| p.to_string()).collect(),
            fresh_start: false,
        };
        Worker {
            status,
            ..Worker::registered(reg, WorkerId::parse("w").unwrap(), chrono::Utc::now())
        }
    }

    #[test]
    fn a_worker_takes_what_it_offers_with_all_the_labels_of_its_projects_while_it_takes_tasks() {
        let gpu: Labels = [("gpu".to_string(), "a100".to_string())].into();
        let needs = Needs {
            agent: Some("codex"),
            labels: &gpu,
            project: Some("web"),
        };
        let w = worker(
            &["codex"],
            &[("gpu", "a100"), ("zone", "eu")],
            &[],
            WorkerStatus::Busy,
        );
        assert!(w.takes(&needs));
        assert!(!worker(&["claude-code"], &[("gpu", "a100")], &[], WorkerStatus::Idle).takes(&needs));
        assert!(
            !worker(&["codex"], &[], &[], WorkerStatus::Idle).takes(&needs),
            "a label missing"
        );
        assert!(worker(&["codex"], &[("gpu", "a100")], &["web"], WorkerStatus::Idle).takes(&needs));
        assert!(!worker(&["codex"], &[("gpu", "a100")], &["api"], WorkerStatus::Idle).takes(&needs));
        // A worker limited to projects never takes a task of none.
        let no_project = Needs {
            project: None,
            ..needs
        };
        assert!(!worker(&["codex"], &[("gpu", "a100")], &["web"], WorkerStatus::Idle).takes(&no_project));
        // A dedicated worker takes only the tasks dedicated to it.
        let mine: Labels = [("agentpool/dedicated".to_string(), "r1".to_string())].into();
        let dedicated = |v: &str| worker(&["codex"], &[("agentpool/dedicated", v)], &[], WorkerStatus::Idle);
        let none = Labels::new();
        let plain = Needs {
            agent: Some("codex"),
            labels: &none,
            project: None,
        };
        assert!(worker(&["codex"], &[], &[], WorkerStatus::Idle).takes(&plain));
        assert!(!dedicated("r1").takes(&plain), "a task not dedicated to it");
        let for_r1 = Needs {
            agent: Some("codex"),
            labels: &mine,
            project: None,
        };
        assert!(dedicated("r1").takes(&for_r1));
        assert!(!dedicated("r2").takes(&for_r1), "a task dedicated to another");
        assert!(
            !worker(&["codex"], &[], &[], WorkerStatus::Idle).takes(&for_r1),
            "a dedicated task needs its worker"
        );
        // A task that names no agent needs one that runs prompts: not `command` alone.
        let any = Needs {
            agent: None,
            labels: &Labels::new(),
            project: None,
        };
        assert!(worker(&["command", "codex"], &[], &[], WorkerStatus::Idle).takes(&any));
        assert!(!worker(&["command"], &[], &[], WorkerStatus::Idle).takes(&any));
        // Only a worker that claims: not draining, unhealthy or offline.
        for status in [
            WorkerStatus::Draining,
            WorkerStatus::Unhealthy,
            WorkerStatus::Offline,
        ] {
            assert!(
                !worker(&["codex"], &[("gpu", "a100")], &[], status).takes(&needs),
                "{status:?}"
            );
        }
    }
}
