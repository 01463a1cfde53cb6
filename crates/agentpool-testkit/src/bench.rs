//! What the benchmarks share: reading their `--name value` arguments and registering a worker
//! for the command agent.

use std::str::FromStr;

use agentpool_core::WorkerId;
use agentpool_core::worker::WorkerRegistration;

use crate::db::Backend;

/// A benchmark's arguments (`cargo bench -- ...`). What cargo itself adds (`--bench`) is
/// ignored like any other name nobody asks for.
pub struct BenchArgs(Vec<String>);

impl BenchArgs {
    pub fn from_env() -> Self {
        Self(std::env::args().skip(1).collect())
    }

    fn after(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }

    /// The value after `name`, parsed; `default` when absent or not parsable.
    pub fn value<T: FromStr>(&self, name: &str, default: T) -> T {
        self.after(name).and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// Whether the bare flag `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    /// `--backend postgres|sqlite`; `default` when absent or neither.
    pub fn backend(&self, default: Backend) -> Backend {
        match self.after("--backend") {
            Some(v) if v.starts_with("sqlite") => Backend::Sqlite,
            Some(v) if v.starts_with("postgres") => Backend::Postgres,
            _ => default,
        }
    }
}

/// A worker with room for 1000 tasks that runs the command agent (`id` None: the server names
/// it).
pub fn command_worker(id: Option<WorkerId>) -> WorkerRegistration {
    WorkerRegistration {
        hostname: "bench".into(),
        ..crate::worker::registration(id, &["command"], 1000)
    }
}
