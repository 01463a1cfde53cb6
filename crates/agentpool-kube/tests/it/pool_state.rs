//! What a WorkerPool's status carries beyond its sizes: its workers' mirror caches summed
//! (and in the operator's metrics), why its pods fail or its workers turned unhealthy when they
//! do, and the scale-down state that lets a new operator instance continue a scale-down
//! another one started, without waiting the delay over again, without shrinking early, and
//! without removing a pod that runs a task.

use std::sync::Arc;

use agentpool_core::{CacheStats, WorkerStatus};
use agentpool_kube::pool::objects::LABEL_POOL;
use agentpool_kube::pool::{Context, Metrics};
use serde_json::{Value, json};

use crate::pool::{Fixed, Setup, setup, worker};

fn cached(id: &str, status: WorkerStatus, hits: u64, misses: u64, bytes: u64) -> agentpool_core::Worker {
    let mut w = worker(id, status, 0);
    w.cache = Some(CacheStats {
        hits,
        misses,
        bytes,
        mirrors: 1,
    });
    w
}

#[tokio::test]
async fn the_status_and_the_metrics_show_the_pools_cache_hit_rate_and_size() {
    let s = setup(json!({"replicas": 3}));
    s.queue.set(
        0,
        vec![
            cached("agents-0", WorkerStatus::Idle, 3, 1, 1000),
            cached("agents-1", WorkerStatus::Busy, 0, 1, 500),
            // Gone: its figures are not the pool's any more.
            cached("agents-2", WorkerStatus::Offline, 50, 0, 9000),
            // Never reported (an older worker): not counted.
            worker("agents-3", WorkerStatus::Idle, 0),
        ],
    );
    s.pass().await;
    let c = s.pool().status.unwrap().cache.expect("cache status");
    assert_eq!(
        (c.hits, c.misses, c.bytes, c.mirrors, c.workers),
        (3, 2, 1500, 2, 2)
    );
    assert_eq!(c.hit_rate, Some(0.6));
    let text = s.ctx.metrics.render();
    for line in [
        r#"agentpool_workerpool{namespace="agentpool",pool="agents",quantity="cache_bytes"} 1500"#,
        r#"agentpool_workerpool{namespace="agentpool",pool="agents",quantity="cache_hits"} 3"#,
        r#"agentpool_workerpool_cache_hit_ratio{namespace="agentpool",pool="agents"} 0.6"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
    // The server unreachable: the figures it last gave stay.
    *s.queue.down.lock().unwrap() = true;
    s.pass().await;
    assert_eq!(s.pool().status.unwrap().cache, Some(c));
}

/// Pods that crash-loop or cannot start make the pool `Degraded`, naming the first and why,
/// in its container's last words (its termination message); another pool's pods do not count.
#[tokio::test]
async fn failing_pods_make_the_pool_degraded_with_their_last_words() {
    let s = setup(json!({"replicas": 3}));
    s.pass().await;
    assert_eq!(s.condition("Degraded"), ("False".into(), "AsExpected".into()));
    let crashing: Value = crate::fixture("pod-crashloop.json");
    s.fake.put("pods", crashing.clone());
    let mut elsewhere = crashing.clone();
    elsewhere["metadata"]["name"] = json!("others-0");
    elsewhere["metadata"]["labels"][LABEL_POOL] = json!("others");
    s.fake.put("pods", elsewhere);
    s.pass().await;
    assert_eq!(
        s.condition_said("Degraded"),
        (
            "True".into(),
            "PodsFailing".into(),
            "1 pod failing; pod agents-1: CrashLoopBackOff after 3 restarts: exited with code 4: \
             agentpool: registration refused: unknown or revoked token"
                .into()
        )
    );

    // A pod whose image cannot be pulled fails too; the first by name is the one described.
    let mut pulling = crashing;
    pulling["metadata"]["name"] = json!("agents-0");
    pulling["status"]["containerStatuses"][0]["state"] = json!({"waiting": {
        "reason": "ImagePullBackOff",
        "message": "Back-off pulling image \"registry.example/agentpool:0.9.9\""
    }});
    s.fake.put("pods", pulling);
    s.pass().await;
    let (_, reason, message) = s.condition_said("Degraded");
    assert_eq!(reason, "PodsFailing");
    assert_eq!(
        message,
        "2 pods failing; pod agents-0: ImagePullBackOff: Back-off pulling image \"registry.example/agentpool:0.9.9\""
    );

    // Running again: the pool is as expected.
    for name in ["agents-0", "agents-1"] {
        s.fake.remove("pods", name);
    }
    s.pass().await;
    assert_eq!(s.condition("Degraded"), ("False".into(), "AsExpected".into()));
}

/// A pool pod held on its node by a volume that has not mounted for a minute is failing, by
/// its `FailedMount` event (its status shows only `ContainerCreating`); for less, it is not.
#[tokio::test]
async fn a_pod_whose_volume_will_not_mount_makes_the_pool_degraded() {
    let s = setup(json!({"replicas": 2}));
    let pool_pod: Value = crate::fixture("pod-crashloop.json");
    let mut creating: Value = crate::fixture("pod-container-creating.json");
    creating["metadata"]["name"] = json!("agents-1");
    creating["metadata"]["labels"] = pool_pod["metadata"]["labels"].clone();
    s.fake.put("pods", creating);
    let mut mount: Value = crate::fixture("event-failed-mount.json");
    mount["involvedObject"]["name"] = json!("agents-1");
    mount["message"] = json!(
        "MountVolume.SetUp failed for volume \"cache\" : persistentvolumeclaim \"cache-agents-1\" not found"
    );
    s.fake.put("events", mount.clone());
    s.pass().await;
    assert_eq!(
        s.condition("Degraded"),
        ("False".into(), "AsExpected".into()),
        "32 s so far"
    );

    mount["lastTimestamp"] = json!("2026-01-05T10:01:32Z");
    s.fake.put("events", mount);
    s.pass().await;
    assert_eq!(
        s.condition_said("Degraded"),
        (
            "True".into(),
            "PodsFailing".into(),
            "1 pod failing; pod agents-1: FailedMount for 90 s: MountVolume.SetUp failed for \
             volume \"cache\" : persistentvolumeclaim \"cache-agents-1\" not found"
                .into()
        )
    );
}

/// Pods the scheduler cannot place are not a failure (an autoscaler may add a node), but the
/// pool's `Ready` condition says how many wait and why the first does.
#[tokio::test]
async fn pods_waiting_for_a_node_are_named_in_the_ready_condition() {
    let s = setup(json!({"replicas": 3}));
    s.pass().await;
    s.fake.set_status(
        "statefulsets",
        "agents",
        json!({"replicas": 3, "readyReplicas": 1}),
    );
    // The pool's pods (labelled as its StatefulSet labels them), with the scheduler's answer.
    let pool_pod: Value = crate::fixture("pod-crashloop.json");
    let mut waiting: Value = crate::fixture("pod-unschedulable.json");
    waiting["metadata"]["labels"] = pool_pod["metadata"]["labels"].clone();
    for name in ["agents-2", "agents-1"] {
        waiting["metadata"]["name"] = json!(name);
        s.fake.put("pods", waiting.clone());
    }
    s.pass().await;
    assert_eq!(
        s.condition_said("Ready"),
        (
            "False".into(),
            "PodsNotReady".into(),
            "1 of 3 pods ready; 2 pods waiting to be scheduled; pod agents-1: Unschedulable: \
             0/3 nodes are available: 1 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 \
             nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption \
             victims found for incoming pod."
                .into()
        )
    );
    assert_eq!(s.condition("Degraded"), ("False".into(), "AsExpected".into()));

    // Placed and ready: the condition says only the count.
    for name in ["agents-1", "agents-2"] {
        s.fake.remove("pods", name);
    }
    s.fake.set_status(
        "statefulsets",
        "agents",
        json!({"replicas": 3, "readyReplicas": 3}),
    );
    s.pass().await;
    assert_eq!(
        s.condition_said("Ready"),
        ("True".into(), "PodsReady".into(), "3 of 3 pods ready".into())
    );
}

/// Workers that run but turned unhealthy make the pool `Degraded` with the reason each gave the
/// server, after any failing pod; they are counted in the status and the metrics.
#[tokio::test]
async fn unhealthy_workers_make_the_pool_degraded_with_their_reasons() {
    let s = setup(json!({"replicas": 3}));
    let sick = |id: &str, why: Option<&str>| {
        let mut w = worker(id, WorkerStatus::Unhealthy, 0);
        w.status_message = why.map(String::from);
        w
    };
    let why = "the agent's provider refused this worker's own key 3 times in a row; the last: \
               claude-code: authentication failed (401)";
    s.queue.set(
        0,
        vec![
            worker("agents-0", WorkerStatus::Idle, 0),
            sick("agents-1", Some(why)),
        ],
    );
    s.pass().await;
    assert_eq!(
        s.condition_said("Degraded"),
        (
            "True".into(),
            "WorkersUnhealthy".into(),
            format!("1 worker unhealthy, claiming no tasks; agents-1: {why}")
        )
    );
    assert_eq!(s.pool().status.unwrap().unhealthy_workers, 1);
    let text = s.ctx.metrics.render();
    let line = r#"agentpool_workerpool{namespace="agentpool",pool="agents",quantity="unhealthy_workers"} 1"#;
    assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");

    // A crash-looping pod is the first thing to fix: its reason leads, and both are said.
    s.queue.set(
        0,
        vec![
            worker("agents-0", WorkerStatus::Idle, 0),
            sick("agents-1", Some(why)),
            sick("agents-2", None),
        ],
    );
    s.fake.put("pods", crate::fixture("pod-crashloop.json"));
    s.pass().await;
    let (_, reason, message) = s.condition_said("Degraded");
    assert_eq!(reason, "PodsFailing");
    assert!(
        message.starts_with("1 pod failing; pod agents-1: CrashLoopBackOff")
            && message.ends_with(&format!(
                "; 2 workers unhealthy, claiming no tasks; agents-1: {why}; \
                 agents-2: it gave no reason"
            )),
        "{message}"
    );

    // Restarted, they register as healthy workers again.
    s.fake.remove("pods", "agents-1");
    s.queue.set(0, vec![worker("agents-0", WorkerStatus::Idle, 0)]);
    s.pass().await;
    assert_eq!(s.condition("Degraded"), ("False".into(), "AsExpected".into()));
    assert_eq!(s.pool().status.unwrap().unhealthy_workers, 0);
}

/// A worker that claims but stopped running an agent (its provider refused the worker's own
/// key) makes the pool `Degraded` with what it said, after an unhealthy one; it is not counted
/// unhealthy, since it still takes its other agents' tasks.
#[tokio::test]
async fn a_worker_that_stopped_running_an_agent_makes_the_pool_degraded() {
    let s = setup(json!({"replicas": 2}));
    let said = "runs no claude-code tasks: claude-code's provider refused this worker's own key \
                3 times in a row; the last: claude-code: authentication failed (401)";
    let mut limited = worker("agents-1", WorkerStatus::Busy, 1);
    limited.status_message = Some(said.into());
    s.queue.set(
        0,
        vec![worker("agents-0", WorkerStatus::Idle, 0), limited.clone()],
    );
    s.pass().await;
    assert_eq!(
        s.condition_said("Degraded"),
        (
            "True".into(),
            "AgentKeyRefused".into(),
            format!("1 worker stopped running an agent, its key was refused; agents-1: {said}")
        )
    );
    assert_eq!(s.pool().status.unwrap().unhealthy_workers, 0);

    let mut sick = worker("agents-0", WorkerStatus::Unhealthy, 0);
    sick.status_message = Some("git could not be started".into());
    s.queue.set(0, vec![sick, limited]);
    s.pass().await;
    let (_, reason, message) = s.condition_said("Degraded");
    assert_eq!(reason, "WorkersUnhealthy");
    assert!(message.ends_with(&format!("; agents-1: {said}")), "{message}");
}

/// A new operator instance (a restart, or another replica taking the lead) on the same
/// API server and queue: nothing carried over in memory.
fn new_instance(s: &Setup) -> Setup {
    Setup {
        fake: s.fake.clone(),
        queue: s.queue.clone(),
        ctx: Arc::new(Context::new(
            s.fake.client(),
            Arc::new(Fixed(s.queue.clone())),
            Arc::new(Metrics::new()),
        )),
    }
}

fn scale_down(s: &Setup) -> Value {
    let pool: Value = s.fake.get("workerpools", "agents").unwrap();
    pool["status"]["scaleDown"].clone()
}

#[tokio::test]
async fn a_new_operator_instance_continues_a_scale_down_from_the_pools_status() {
    let a = setup(json!({"autoscale": {"min": 1, "max": 4, "scaleDownDelaySeconds": 600}}));
    a.burst_then_only_pod_3_busy().await;
    // Demand fell below the size: the delay starts, and is in the status.
    a.pass().await;
    let since = scale_down(&a)["belowSince"].clone();
    assert!(since.is_string(), "{:#}", scale_down(&a));
    assert!(a.queue.drained.lock().unwrap().is_empty());

    // Another instance does not start the delay over, nor act before it is over.
    let b = new_instance(&a);
    drop(a);
    b.pass().await;
    assert_eq!(scale_down(&b)["belowSince"], since, "the same delay");
    assert!(b.queue.drained.lock().unwrap().is_empty(), "not before the delay");
    assert_eq!(b.replicas(), 4);

    // The delay is over (its start moved back, as time would).
    let mut pool: Value = b.fake.get("workerpools", "agents").unwrap();
    pool["status"]["scaleDown"]["belowSince"] = json!("2020-01-01T00:00:00Z");
    b.fake.put("workerpools", pool);
    for p in ["agents-0", "agents-1", "agents-2", "agents-3"] {
        b.fake.put("pods", json!({"metadata": {"name": p}}));
    }
    let c = new_instance(&b);
    drop(b);
    c.pass().await;
    assert_eq!(
        *c.queue.drained.lock().unwrap(),
        vec!["agents-3", "agents-2", "agents-1"]
    );
    assert_eq!(c.replicas(), 4, "agents-3 runs a task: nothing goes yet");
    assert_eq!(
        scale_down(&c)["drained"],
        json!(["agents-1", "agents-2", "agents-3"])
    );

    // The instance that drained them goes; the next one waits for the busy pod as well.
    let d = new_instance(&c);
    drop(c);
    d.pass().await;
    assert_eq!(d.replicas(), 4, "the busy pod is not removed");
    assert_eq!(d.queue.drained.lock().unwrap().len(), 3, "drained once");
    for p in ["agents-1", "agents-2", "agents-3"] {
        assert!(
            d.fake.get::<Value>("pods", p).is_some(),
            "{p} was not restarted or deleted"
        );
    }

    // The task ends: the next instance finishes the scale-down and the state is cleared.
    d.queue.worker_mut("agents-3", |w| w.running = 0);
    let e = new_instance(&d);
    drop(d);
    e.pass().await;
    assert_eq!(e.replicas(), 1);
    assert_eq!(scale_down(&e), Value::Null, "nothing in progress");
    assert_eq!(
        e.replica_writes(),
        vec![4, 4, 4, 4, 4, 1],
        "never below a busy pod"
    );
}

#[tokio::test]
async fn demand_coming_back_stops_the_scale_down_delay() {
    let s = setup(json!({"autoscale": {"min": 1, "max": 4, "scaleDownDelaySeconds": 600}}));
    s.queue.set(8, vec![]);
    s.pass().await;
    s.queue.set(0, vec![]);
    s.pass().await;
    assert!(scale_down(&s)["belowSince"].is_string());
    s.queue.set(8, vec![]);
    s.pass().await;
    assert_eq!(scale_down(&s), Value::Null, "demand is back: no delay running");
    // Falling again starts a new delay rather than resuming the old one.
    s.queue.set(0, vec![]);
    s.pass().await;
    assert!(s.queue.drained.lock().unwrap().is_empty());
    assert_eq!(s.replicas(), 4);
}
