//! Worker registrations and registered workers for tests and benchmarks: the fields nobody
//! under test cares about filled in once.

use agentpool_core::worker::{Worker, WorkerRegistration};
use agentpool_core::{AgentInfo, WorkerId};

/// A worker on host `test-host` that runs `agents` in up to `slots` tasks at once, with no
/// labels (`id` None: the server names it).
pub fn registration(id: Option<WorkerId>, agents: &[&str], slots: u32) -> WorkerRegistration {
    WorkerRegistration {
        id,
        hostname: "test-host".into(),
        version: "0".into(),
        agents: agents.iter().map(|a| AgentInfo::unversioned(*a)).collect(),
        labels: Default::default(),
        slots,
        projects: Vec::new(),
        fresh_start: false,
    }
}

/// The worker `registration` makes under `id`, registered now: idle, running nothing. Tests
/// set the status, the running count or the labels they are about with `..` on it.
pub fn worker(id: &str, agents: &[&str], slots: u32) -> Worker {
    let id = WorkerId::parse(id).expect("a valid worker id");
    Worker::registered(
        registration(Some(id.clone()), agents, slots),
        id,
        chrono::Utc::now(),
    )
}
