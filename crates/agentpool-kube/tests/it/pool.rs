//! The WorkerPool reconciler against the in-memory API server and an in-memory queue: the
//! objects a pool becomes, spec updates, scaling on queue depth, a scale-down that drains and
//! waits for a busy pod, garbage collection through owner references, status conditions,
//! leader election, and the controller itself reacting to a new pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentpool_core::protocol::QueueStats;
use agentpool_core::{Labels, Worker, WorkerId, WorkerStatus};
use agentpool_kube::fake::{FakeApi, NAMESPACE};
use agentpool_kube::pool::objects::LABEL_POOL;
use agentpool_kube::pool::{
    Connect, Context, LeaderElector, Metrics, OperatorConfig, QueueApi, WorkerPool, reconcile, run_operator,
};
use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The server as the operator sees it: statistics the test sets, drains it records (and
/// applies to the workers, as the server does).
#[derive(Default)]
pub struct Queue {
    pub stats: Mutex<QueueStats>,
    pub drained: Mutex<Vec<String>>,
    pub down: Mutex<bool>,
    pub seen_labels: Mutex<Option<Labels>>,
    pub seen_projects: Mutex<Option<Vec<String>>>,
}

impl Queue {
    pub fn set(&self, queued: u64, workers: Vec<Worker>) {
        let mut s = self.stats.lock().unwrap();
        s.queued = queued;
        s.queued_due = queued;
        s.running = workers.iter().map(|w| u64::from(w.running)).sum();
        s.workers = workers;
        recount(&mut s);
    }

    pub fn worker_mut(&self, id: &str, f: impl FnOnce(&mut Worker)) {
        let mut s = self.stats.lock().unwrap();
        if let Some(w) = s.workers.iter_mut().find(|w| w.id.as_str() == id) {
            f(w);
        }
        s.running = s.workers.iter().map(|w| u64::from(w.running)).sum();
        recount(&mut s);
    }
}

/// The workers counted by status as the server counts them.
fn recount(s: &mut QueueStats) {
    let all = QueueStats::compute(Some(&Labels::new()), &[], [], s.workers.clone());
    s.worker_counts = all.worker_counts;
}

#[async_trait]
impl QueueApi for Queue {
    async fn queue_stats(
        &self,
        labels: &Labels,
        _agents: &[String],
        projects: &[String],
    ) -> Result<QueueStats, String> {
        if *self.down.lock().unwrap() {
            return Err("connection refused".into());
        }
        *self.seen_labels.lock().unwrap() = Some(labels.clone());
        *self.seen_projects.lock().unwrap() = Some(projects.to_vec());
        Ok(self.stats.lock().unwrap().clone())
    }

    async fn drain(&self, worker: &WorkerId) -> Result<(), String> {
        self.drained.lock().unwrap().push(worker.to_string());
        self.worker_mut(worker.as_str(), |w| w.status = WorkerStatus::Draining);
        Ok(())
    }
}

pub struct Fixed(pub Arc<Queue>);

impl Connect for Fixed {
    fn connect(&self, _server: &str, token: &str) -> Result<Arc<dyn QueueApi>, String> {
        assert_eq!(token, "pool-token", "the token comes from the pool's Secret");
        Ok(self.0.clone())
    }
}

pub fn worker(id: &str, status: WorkerStatus, running: u32) -> Worker {
    Worker {
        labels: Labels::from([(LABEL_POOL.to_string(), "agents".to_string())]),
        status,
        running,
        ..agentpool_testkit::worker::worker(id, &[], 2)
    }
}

pub fn pool_json(spec: Value) -> Value {
    let mut base = json!({
        "server": "http://agentpool.agentpool.svc:7070",
        "tokenSecret": {"name": "agentpool-worker-token", "key": "token"},
        "image": "registry.example/agentpool:0.1.0",
        "slotsPerPod": 2,
        "labels": {"team": "web"},
        "agents": ["claude-code"],
    });
    for (k, v) in spec.as_object().unwrap() {
        base[k] = v.clone();
    }
    json!({"apiVersion": "agentpool.dev/v1alpha1", "kind": "WorkerPool",
           "metadata": {"name": "agents", "generation": 1}, "spec": base})
}

pub fn token_secret(fake: &FakeApi) {
    fake.put_secret(&Secret {
        metadata: ObjectMeta {
            name: Some("agentpool-worker-token".into()),
            ..ObjectMeta::default()
        },
        data: Some([("token".to_string(), ByteString(b"pool-token\n".to_vec()))].into()),
        ..Secret::default()
    });
}

pub struct Setup {
    pub fake: FakeApi,
    pub queue: Arc<Queue>,
    pub ctx: Arc<Context>,
}

pub fn setup(spec: Value) -> Setup {
    let fake = FakeApi::new();
    token_secret(&fake);
    fake.put("workerpools", pool_json(spec));
    let queue = Arc::new(Queue::default());
    let ctx = Arc::new(Context::new(
        fake.client(),
        Arc::new(Fixed(queue.clone())),
        Arc::new(Metrics::new()),
    ));
    Setup { fake, queue, ctx }
}

/// Everything the operator asked of the API server was allowed by its Role.
impl Drop for Setup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            crate::rbac::assert_allowed(&self.fake, crate::rbac::OPERATOR);
        }
    }
}

impl Setup {
    pub async fn pass(&self) -> Action {
        let pool: WorkerPool = self.fake.get("workerpools", "agents").unwrap();
        reconcile(Arc::new(pool), self.ctx.clone()).await.unwrap()
    }

    pub fn replicas(&self) -> i32 {
        let s: StatefulSet = self.fake.get("statefulsets", "agents").unwrap();
        s.spec.unwrap().replicas.unwrap()
    }

    /// A burst of 8 queued tasks scales a pool of max 4 up to 4 pods; then the queue is empty,
    /// pods 0 to 2 are idle and pod 3 still runs a task.
    pub async fn burst_then_only_pod_3_busy(&self) {
        self.queue.set(8, vec![]);
        self.pass().await;
        assert_eq!(self.replicas(), 4);
        self.queue.set(
            0,
            vec![
                worker("agents-0", WorkerStatus::Idle, 0),
                worker("agents-1", WorkerStatus::Idle, 0),
                worker("agents-2", WorkerStatus::Idle, 0),
                worker("agents-3", WorkerStatus::Busy, 1),
            ],
        );
    }

    /// The replica counts of every StatefulSet write so far, in order.
    pub fn replica_writes(&self) -> Vec<i64> {
        self.fake
            .writes()
            .iter()
            .filter(|r| r.resource == "statefulsets")
            .map(|r| r.body.as_ref().unwrap()["spec"]["replicas"].as_i64().unwrap())
            .collect()
    }

    pub fn pool(&self) -> WorkerPool {
        self.fake.get("workerpools", "agents").unwrap()
    }

    pub fn condition(&self, t: &str) -> (String, String) {
        let (status, reason, _) = self.condition_said(t);
        (status, reason)
    }

    /// Condition `t`'s status, reason and message.
    pub fn condition_said(&self, t: &str) -> (String, String, String) {
        let c = self
            .pool()
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no {t} condition"));
        (c.status, c.reason, c.message)
    }
}

pub fn autoscale(min: i32, max: i32) -> Value {
    json!({"autoscale": {"min": min, "max": max, "scaleDownDelaySeconds": 0}})
}

#[tokio::test]
async fn a_new_pool_becomes_an_owned_statefulset_and_headless_service_by_server_side_apply() {
    let s = setup(autoscale(1, 4));
    s.pass().await;
    let writes: Vec<_> = s.fake.writes();
    let applied: Vec<(String, Option<String>)> = writes
        .iter()
        .map(|r| (r.resource.clone(), r.subresource.clone()))
        .collect();
    assert_eq!(
        applied,
        vec![
            ("services".to_string(), None),
            ("statefulsets".to_string(), None),
            ("workerpools".to_string(), Some("status".to_string())),
        ]
    );
    for r in &writes {
        assert_eq!(r.method, "PATCH");
        assert_eq!(r.content_type.as_deref(), Some("application/apply-patch+yaml"));
        assert!(r.query.contains("fieldManager=agentpool-operator"), "{}", r.query);
        assert!(r.query.contains("force=true"), "{}", r.query);
    }
    let pool = s.pool();
    let uid = pool.metadata.uid.clone().unwrap();
    let set: StatefulSet = s.fake.get("statefulsets", "agents").unwrap();
    let svc: Service = s.fake.get("services", "agents").unwrap();
    for owners in [
        set.metadata.owner_references.clone().unwrap(),
        svc.metadata.owner_references.clone().unwrap(),
    ] {
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, uid);
        assert_eq!(owners[0].kind, "WorkerPool");
        assert_eq!(owners[0].controller, Some(true));
    }
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let spec = set.spec.unwrap();
    assert_eq!(spec.replicas, Some(1), "an empty queue: the minimum");
    assert_eq!(spec.service_name.as_deref(), Some("agents"));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap().join(" ");
    assert!(
        args.starts_with("worker --concurrency 2 --labels agentpool.dev/pool=agents,team=web"),
        "{args}"
    );
    assert!(args.contains("--mirror-dir /cache/mirrors"), "{args}");
    assert!(args.contains("--stay-drained"), "{args}");
    assert!(args.contains("--agents claude-code"), "{args}");
    assert!(!args.contains("--project"), "any project's tasks: {args}");
    let env = c.env.clone().unwrap();
    let id = env.iter().find(|e| e.name == "AGENTPOOL_WORKER_ID").unwrap();
    assert_eq!(
        id.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name",
        "the worker id is the pod name: stable across restarts"
    );
    let token = env.iter().find(|e| e.name == "AGENTPOOL_TOKEN").unwrap();
    assert!(token.value.is_none(), "a reference, never the value");
    // The worker's own probe decides readiness: starting, draining or unhealthy is not ready.
    let probe = env.iter().find(|e| e.name == "AGENTPOOL_HEALTH_LISTEN").unwrap();
    assert_eq!(probe.value.as_deref(), Some("0.0.0.0:8081"));
    let ready = c.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(pod.termination_grace_period_seconds, Some(600 + 30));
    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims[0].metadata.name.as_deref(), Some("cache"));
    let status = pool.status.unwrap();
    assert_eq!(status.desired_replicas, 1);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(s.condition("Degraded").0, "False");
    // The statistics asked for are the pool's worker labels.
    let seen = s.queue.seen_labels.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get(LABEL_POOL).map(String::as_str), Some("agents"));
    assert_eq!(seen.get("team").map(String::as_str), Some("web"));
    assert_eq!(s.queue.seen_projects.lock().unwrap().clone(), Some(vec![]));
}

/// A pool limited to projects: its workers take only their tasks (`--project`), and it is
/// scaled on their queued tasks alone.
#[tokio::test]
async fn a_pool_limited_to_projects_takes_and_is_scaled_on_their_tasks_only() {
    let mut spec = autoscale(1, 4);
    spec["projects"] = json!(["web", "docs"]);
    let s = setup(spec);
    s.pass().await;
    let set: StatefulSet = s.fake.get("statefulsets", "agents").unwrap();
    let pod = set.spec.unwrap().template.spec.unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    let at = args.iter().position(|a| a == "--project").expect("--project");
    assert_eq!(args[at + 1], "web,docs");
    assert_eq!(
        s.queue.seen_projects.lock().unwrap().clone(),
        Some(vec!["web".to_string(), "docs".to_string()])
    );
}

#[tokio::test]
async fn a_spec_update_reaches_the_statefulset_and_the_observed_generation() {
    let s = setup(json!({"replicas": 2}));
    s.pass().await;
    assert_eq!(s.replicas(), 2);
    let mut p = serde_json::to_value(s.pool()).unwrap();
    p["spec"]["image"] = json!("registry.example/agentpool:0.2.0");
    p["spec"]["replicas"] = json!(3);
    p["metadata"]["generation"] = json!(2);
    s.fake.put("workerpools", p);
    s.pass().await;
    let set: StatefulSet = s.fake.get("statefulsets", "agents").unwrap();
    let spec = set.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.example/agentpool:0.2.0")
    );
    assert_eq!(s.pool().status.unwrap().observed_generation, Some(2));
}

/// Queued tasks that wait for a dependency, a branch or their project's slots or budget do
/// not grow the pool: only those a worker could run now count (when the server says which).
#[tokio::test]
async fn the_pool_is_sized_by_the_queued_tasks_a_worker_could_run_now() {
    let s = setup(autoscale(1, 10));
    s.queue.set(12, vec![worker("agents-0", WorkerStatus::Busy, 2)]);
    s.queue.stats.lock().unwrap().queued_runnable = Some(3);
    // 3 runnable + 2 running = 5 slots = 3 pods of 2 (not 7 for all 12 queued).
    s.pass().await;
    assert_eq!(s.replicas(), 3);
    let status = s.pool().status.unwrap();
    assert_eq!((status.queued_tasks, status.runnable_tasks), (12, Some(3)));
    // An older server that does not say: sized by the due tasks, as before.
    s.queue.stats.lock().unwrap().queued_runnable = None;
    s.pass().await;
    assert_eq!(s.replicas(), 7);
    assert_eq!(s.pool().status.unwrap().runnable_tasks, None);
}

/// Runnable tasks none of the pool's workers could take (its image lacks their agent, say) do
/// not grow it once a worker of it takes tasks — its pods are alike — and the pool says so;
/// while none takes tasks they count, since its first pod may take them.
#[tokio::test]
async fn runnable_tasks_no_worker_of_the_pool_takes_do_not_grow_it_and_are_reported() {
    let s = setup(autoscale(1, 10));
    s.queue.set(6, Vec::new());
    {
        let mut st = s.queue.stats.lock().unwrap();
        st.queued_runnable = Some(6);
        st.runnable_no_worker = Some(6);
    }
    // No worker yet: 6 runnable = 3 pods of 2.
    s.pass().await;
    assert_eq!(s.replicas(), 3);
    assert_eq!(s.condition("Degraded").0, "False");
    // A worker is up and takes tasks: 4 of the 6 need what it lacks.
    s.queue.set(6, vec![worker("agents-0", WorkerStatus::Idle, 0)]);
    {
        let mut st = s.queue.stats.lock().unwrap();
        st.queued_runnable = Some(6);
        st.runnable_no_worker = Some(4);
    }
    s.pass().await;
    assert_eq!(
        s.pool().status.unwrap().desired_replicas,
        1,
        "2 runnable it takes = 1 pod"
    );
    assert_eq!(
        s.condition("Degraded"),
        ("True".into(), "TasksNoWorkerTakes".into())
    );
    assert_eq!(s.pool().status.unwrap().runnable_tasks_no_worker, Some(4));
    assert!(
        s.ctx
            .metrics
            .render()
            .contains(r#"quantity="runnable_tasks_no_worker"} 4"#),
        "the metric an alert watches"
    );
}

#[tokio::test]
async fn the_pool_scales_up_with_its_queue_within_its_bounds() {
    let s = setup(autoscale(1, 4));
    s.pass().await;
    assert_eq!(s.replicas(), 1);
    s.queue.set(5, vec![worker("agents-0", WorkerStatus::Busy, 2)]);
    // 5 queued + 2 running = 7 slots = 4 pods of 2.
    let action = s.pass().await;
    assert_eq!(s.replicas(), 4);
    assert_eq!(s.pool().status.unwrap().desired_replicas, 4);
    assert_eq!(s.condition("Scaling").0, "True");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(3)),
        "looks again soon while scaling"
    );
    s.queue.set(100, vec![worker("agents-0", WorkerStatus::Busy, 2)]);
    s.pass().await;
    assert_eq!(s.replicas(), 4, "never beyond max");
}

#[tokio::test]
async fn a_scale_down_drains_the_highest_pods_and_waits_for_a_busy_one() {
    let s = setup(autoscale(1, 4));
    s.burst_then_only_pod_3_busy().await;
    // Demand: 1 running task = 1 pod. Pods 3, 2 and 1 go — but pod 3 runs a task.
    s.pass().await;
    assert_eq!(
        *s.queue.drained.lock().unwrap(),
        vec!["agents-3", "agents-2", "agents-1"],
        "the highest ordinals are drained first"
    );
    assert_eq!(s.replicas(), 4, "pod 3 still runs a task: nobody is removed");
    let (st, _) = s.condition("Scaling");
    assert_eq!(st, "True");
    let msg = s
        .pool()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Scaling")
        .unwrap()
        .message;
    assert!(msg.contains("agents-3"), "{msg}");
    s.pass().await;
    assert_eq!(s.replicas(), 4);
    assert_eq!(s.queue.drained.lock().unwrap().len(), 3, "drained once");
    // The task finishes: now the pods can go, and nothing is ever removed mid-task.
    s.queue.worker_mut("agents-3", |w| w.running = 0);
    s.pass().await;
    assert_eq!(s.replicas(), 1);
    assert_eq!(s.replica_writes(), vec![4, 4, 4, 1]);
}

#[tokio::test]
async fn demand_returning_during_a_scale_down_restarts_drained_idle_pods() {
    let s = setup(autoscale(1, 4));
    s.queue.set(8, vec![]);
    s.pass().await;
    s.queue.set(
        0,
        vec![
            // Drained by someone else (`agentpool workers drain`), not for a scale-down.
            worker("agents-0", WorkerStatus::Draining, 0),
            worker("agents-1", WorkerStatus::Busy, 1),
        ],
    );
    s.fake.put("pods", json!({"metadata": {"name": "agents-0"}}));
    s.fake.put("pods", json!({"metadata": {"name": "agents-1"}}));
    s.pass().await;
    assert_eq!(s.replicas(), 2, "pods 3 and 2 never registered; agents-1 is busy");
    // Work comes back: the pool wants 4 again; agents-1, drained but now idle, is restarted
    // (its pod deleted) so that it registers again as an idle worker.
    s.queue.worker_mut("agents-1", |w| w.running = 0);
    s.queue.stats.lock().unwrap().queued_due = 8;
    s.pass().await;
    assert_eq!(s.replicas(), 4);
    assert!(
        s.fake.get::<Value>("pods", "agents-1").is_none(),
        "the drained pod was deleted"
    );
    assert!(
        s.fake.get::<Value>("pods", "agents-0").is_some(),
        "a worker the operator did not drain stays drained"
    );
    assert_eq!(
        s.pool().status.unwrap().scale_down,
        None,
        "nothing left to follow"
    );
}

#[tokio::test]
async fn deleting_the_pool_takes_what_it_owns_with_it() {
    let s = setup(json!({"replicas": 1}));
    s.pass().await;
    assert!(s.fake.get::<StatefulSet>("statefulsets", "agents").is_some());
    s.fake.remove("workerpools", "agents");
    assert!(s.fake.get::<StatefulSet>("statefulsets", "agents").is_none());
    assert!(s.fake.get::<Service>("services", "agents").is_none());
    assert!(
        s.fake
            .get::<Secret>("secrets", "agentpool-worker-token")
            .is_some(),
        "not owned"
    );
}

#[tokio::test]
async fn status_conditions_report_an_invalid_spec_and_an_unreachable_server() {
    let s = setup(json!({"replicas": 1, "autoscale": {"min": 1, "max": 2}}));
    s.pass().await;
    assert_eq!(s.condition("Degraded"), ("True".into(), "InvalidSpec".into()));
    assert_eq!(s.condition("Ready").0, "False");
    assert!(
        s.fake.get::<StatefulSet>("statefulsets", "agents").is_none(),
        "nothing acted on"
    );

    let s = setup(autoscale(2, 5));
    *s.queue.down.lock().unwrap() = true;
    s.pass().await;
    assert_eq!(
        s.condition("Degraded"),
        ("True".into(), "ServerUnavailable".into())
    );
    assert_eq!(
        s.replicas(),
        2,
        "without statistics the pool starts at its minimum"
    );
    // Ready follows the StatefulSet's ready pods once the server answers.
    *s.queue.down.lock().unwrap() = false;
    s.fake.set_status(
        "statefulsets",
        "agents",
        json!({"replicas": 2, "readyReplicas": 2}),
    );
    s.pass().await;
    assert_eq!(s.condition("Degraded").0, "False");
    assert_eq!(s.condition("Ready"), ("True".into(), "PodsReady".into()));
    assert_eq!(s.condition("Scaling").0, "False");
    let st = s.pool().status.unwrap();
    assert_eq!((st.replicas, st.ready_replicas), (2, 2));
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over_only_after_the_lease_expires() {
    let fake = FakeApi::new();
    let api = || Api::<Lease>::namespaced(fake.client(), NAMESPACE);
    let a = LeaderElector::new(api(), "agentpool-operator", "op-a", Duration::from_secs(1));
    let b = LeaderElector::new(api(), "agentpool-operator", "op-b", Duration::from_secs(1));
    assert!(a.try_lead().await.unwrap());
    assert!(!b.try_lead().await.unwrap(), "a holds it");
    assert!(a.try_lead().await.unwrap(), "a renews");
    tokio::time::sleep(Duration::from_millis(2100)).await; // the lease runs out (wall clock)
    assert!(b.try_lead().await.unwrap(), "b takes over an expired lease");
    assert!(!a.try_lead().await.unwrap(), "a has lost it");
    let l: Lease = fake.get("leases", "agentpool-operator").unwrap();
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("op-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    // A replace based on a stale read is refused (optimistic concurrency).
    let puts: Vec<_> = fake.writes().into_iter().filter(|r| r.method == "PUT").collect();
    assert!(
        puts.iter()
            .all(|r| r.body.as_ref().unwrap()["metadata"]["resourceVersion"].is_string())
    );
    crate::rbac::assert_allowed(&fake, crate::rbac::OPERATOR);
}

#[tokio::test]
async fn the_operator_leads_and_its_controller_reconciles_a_new_pool() {
    let fake = FakeApi::new();
    token_secret(&fake);
    let queue = Arc::new(Queue::default());
    let metrics = Arc::new(Metrics::new());
    let mut cfg = OperatorConfig::new(NAMESPACE, "op-a");
    cfg.renew_every = Duration::from_millis(200);
    let stop = CancellationToken::new();
    let op = tokio::spawn(run_operator(
        fake.client(),
        cfg,
        Arc::new(Fixed(queue.clone())),
        metrics.clone(),
        stop.clone(),
    ));
    // Created after the operator started: the watch brings it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    queue.set(3, vec![]);
    fake.put("workerpools", pool_json(autoscale(1, 4)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let set: Option<StatefulSet> = fake.get("statefulsets", "agents");
        if set.and_then(|s| s.spec?.replicas) == Some(2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reconciled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics.render();
    assert!(text.contains("agentpool_operator_leader 1"), "{text}");
    assert!(
        text.contains("agentpool_operator_reconciles_total{result=\"ok\"}"),
        "{text}"
    );
    stop.cancel();
    op.await.unwrap();
    let l: Lease = fake.get("leases", "agentpool-operator").unwrap();
    assert_eq!(l.spec.unwrap().holder_identity, None, "released on shutdown");
    crate::rbac::assert_allowed(&fake, crate::rbac::OPERATOR);
}
