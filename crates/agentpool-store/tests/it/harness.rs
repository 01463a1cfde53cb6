//! Test harness: a fresh store on either backend with a clock the test moves, plus builders
//! for specs and workers.

use std::sync::Arc;
use std::time::Duration;

use agentpool_core::project::ProjectSpec;
use agentpool_core::protocol::{ClaimedTask, FailOutcome};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{ErrorClass, Labels, Lease, NewEvent, TaskId, TaskResult, TaskSpec, WorkerId};
use agentpool_store::{ClaimFilter, Clock, Failure, Store, StoreConfig, open_store_with};
use agentpool_testkit::db::{Backend, TestDb};
use agentpool_testkit::worker::registration;

/// Generate one test per backend for a scenario `async fn name(h: Harness)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(h) = $crate::harness::Harness::new(agentpool_testkit::db::Backend::Sqlite).await {
                    super::$name(h).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) = $crate::harness::Harness::new(agentpool_testkit::db::Backend::Postgres).await {
                    super::$name(h).await;
                }
            }
        }
    )*};
}

pub const TTL: Duration = Duration::from_secs(30);

pub struct Harness {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub db: TestDb,
}

impl Harness {
    pub async fn new(backend: Backend) -> Option<Harness> {
        let db = TestDb::new(backend).await?;
        let clock = Clock::system();
        let store = open_store_with(
            db.url(),
            StoreConfig {
                clock: clock.clone(),
                ..StoreConfig::default()
            },
        )
        .await
        .expect("open store");
        Some(Harness { store, clock, db })
    }

    /// Another store on the same database, as a second server replica would have.
    pub async fn replica(&self) -> Arc<dyn Store> {
        open_store_with(
            self.db.url(),
            StoreConfig {
                clock: self.clock.clone(),
                ..StoreConfig::default()
            },
        )
        .await
        .expect("open replica")
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Create project `name` (repository `https://git.example.com/<name>.git`) with `slots`.
    pub async fn project_with_slots(&self, name: &str, slots: u32) {
        self.store
            .put_project(ProjectSpec {
                name: name.into(),
                repo: format!("https://git.example.com/{name}.git"),
                slots: Some(slots),
                ..ProjectSpec::default()
            })
            .await
            .expect("put project");
    }

    /// Enqueue `spec`; the new task's id.
    pub async fn submit(&self, spec: TaskSpec) -> TaskId {
        self.store.enqueue(spec).await.expect("enqueue").task.id
    }

    /// Enqueue `specs` in one batch; the new tasks' ids, in order.
    pub async fn submit_all(&self, specs: impl IntoIterator<Item = TaskSpec>) -> Vec<TaskId> {
        let batch = self.store.enqueue_batch(specs.into_iter().collect());
        let enqueued = batch.await.expect("enqueue batch");
        enqueued.into_iter().map(|e| e.task.id).collect()
    }

    /// Register a worker with the given agents and labels.
    pub async fn worker(&self, name: &str, agents: &[&str], lbls: &[(&str, &str)]) -> Worker {
        self.worker_of(name, agents, lbls, &[]).await
    }

    /// Register a worker with the given agents and labels, limited to `projects`' tasks.
    pub async fn worker_of(
        &self,
        name: &str,
        agents: &[&str],
        lbls: &[(&str, &str)],
        projects: &[&str],
    ) -> Worker {
        let id = WorkerId::parse(name).expect("worker id");
        let projects: Vec<String> = projects.iter().map(|p| p.to_string()).collect();
        self.store
            .register_worker(WorkerRegistration {
                labels: labels(lbls),
                projects: projects.clone(),
                ..registration(Some(id.clone()), agents, 4)
            })
            .await
            .expect("register worker");
        Worker {
            id,
            agents: agents.iter().map(|s| s.to_string()).collect(),
            labels: labels(lbls),
            projects,
            store: self.store.clone(),
        }
    }
}

pub fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A worker as the tests drive it.
#[derive(Clone)]
pub struct Worker {
    pub id: WorkerId,
    pub agents: Vec<String>,
    pub labels: Labels,
    pub projects: Vec<String>,
    pub store: Arc<dyn Store>,
}

impl Worker {
    pub fn filter(&self, max: u32) -> ClaimFilter {
        ClaimFilter {
            worker_id: self.id.clone(),
            agents: self.agents.clone(),
            labels: self.labels.clone(),
            projects: self.projects.clone(),
            max,
            lease_ttl: TTL,
        }
    }

    pub async fn claim(&self, max: u32) -> Vec<ClaimedTask> {
        self.store.claim(&self.filter(max)).await.expect("claim")
    }

    /// Report the attempt under `lease` succeeded, with an empty result.
    pub async fn complete(&self, lease: Lease) {
        self.complete_with(lease, TaskResult::default()).await;
    }

    pub async fn complete_with(&self, lease: Lease, result: TaskResult) {
        self.store
            .complete(&self.id, lease, result)
            .await
            .expect("complete");
    }

    /// Append a line of stdout to the task under `lease`.
    pub async fn log(&self, lease: Lease, line: &str) {
        let events = vec![NewEvent::log("stdout", line)];
        self.store
            .append_events(lease.task_id, Some(lease), events)
            .await
            .expect("append events");
    }

    /// Report the attempt under `lease` failed; what became of the task.
    pub async fn fail(&self, lease: Lease, failure: Failure) -> FailOutcome {
        self.store.fail(&self.id, lease, failure).await.expect("fail")
    }
}

/// A failure of `class` saying `message`, with nothing else reported.
pub fn failure(class: ErrorClass, message: &str) -> Failure {
    Failure {
        class,
        message: message.into(),
        retry_after: None,
        result: None,
    }
}

/// A command task (matched by workers that have the `command` agent).
pub fn cmd(c: &str) -> TaskSpec {
    TaskSpec::command("https://git.example.com/r.git", c)
}

pub fn ids(c: &[ClaimedTask]) -> Vec<agentpool_core::TaskId> {
    c.iter().map(|c| c.task.id).collect()
}

/// The lifecycle events of `id`, in order.
pub async fn lifecycle(store: &dyn Store, id: TaskId) -> Vec<agentpool_core::Lifecycle> {
    store
        .list_events(id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.payload.lifecycle().cloned())
        .collect()
}

/// The `claimed` event of `w`'s attempt number `attempt`.
pub fn claimed(w: &Worker, attempt: u32) -> agentpool_core::Lifecycle {
    agentpool_core::Lifecycle::Claimed {
        attempt,
        worker: w.id.clone(),
    }
}
