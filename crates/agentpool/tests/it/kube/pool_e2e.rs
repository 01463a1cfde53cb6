//! A WorkerPool end to end without a cluster: the operator (library, leader-elected) against
//! the in-memory API server, the StatefulSet stand-in running the pool's pod template as real
//! `agentpool worker` processes, a real `agentpool serve` on PostgreSQL and the real git
//! server. A burst with a dependency chain and two tasks on one branch scales the pool from
//! its minimum to its maximum; every task runs once, in order, the branch's two never at the
//! same time; the pool then drains back to its minimum with no pod killed mid-task.

use std::sync::Arc;
use std::time::Duration;

use agentpool_client::Client;
use agentpool_core::spec::TaskKind;
use agentpool_core::{Labels, TaskId, TaskSpec, TaskState};
use agentpool_kube::fake::NAMESPACE;
use agentpool_kube::pool::{Connect, Metrics, OperatorConfig, QueueApi, run_operator};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Harness;
use super::kubelet::SyncLoop;
use super::pool_kubelet::PoolKubelet;

struct Connector;

impl Connect for Connector {
    fn connect(&self, server: &str, token: &str) -> Result<Arc<dyn QueueApi>, String> {
        Ok(Arc::new(
            Client::new(server, Some(token.to_string())).map_err(|e| e.to_string())?,
        ))
    }
}

async fn submit(h: &Harness, command: &str, branch: &str, after: &[TaskId]) -> TaskId {
    let spec = TaskSpec {
        kind: TaskKind::Command,
        repo: Some(h.git.url("app")),
        branch: Some(branch.into()),
        command: Some(command.into()),
        credentials: vec!["git-token".into()],
        labels: Labels::from([("team".to_string(), "web".to_string())]),
        depends_on: after.to_vec(),
        ..TaskSpec::default()
    };
    h.client.submit(&spec).await.unwrap().task.id
}

/// Wait until `done` holds for the server's workers and the pool object (both change on
/// their own, as the pods register and heartbeat and the operator writes the status).
async fn until(
    h: &Harness,
    secs: u64,
    what: &str,
    done: impl Fn(&[agentpool_core::Worker], &serde_json::Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let workers = h.client.list_workers().await.unwrap();
        let pool: serde_json::Value = h.fake.get("workerpools", "web").unwrap_or_default();
        if done(&workers, &pool) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {secs} s for {what}: {workers:#?} {pool:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_scales_with_a_burst_runs_every_task_once_and_drains_back_down() {
    let Some(h) = Harness::start().await else { return };
    let root = tempfile::tempdir().unwrap();
    let kubelet = PoolKubelet::new(h.fake.clone(), root.path());
    let sync = {
        let k = kubelet.clone();
        SyncLoop::start(move || k.tick())
    };
    let metrics = Arc::new(Metrics::new());
    let mut cfg = OperatorConfig::new(NAMESPACE, "operator-0");
    cfg.renew_every = Duration::from_millis(500);
    cfg.interval = Duration::from_millis(500);
    cfg.scaling_interval = Duration::from_millis(300);
    let stop = CancellationToken::new();
    let operator = tokio::spawn(run_operator(
        h.fake.client(),
        cfg,
        Arc::new(Connector),
        metrics.clone(),
        stop.clone(),
    ));
    h.fake.put(
        "workerpools",
        json!({"apiVersion": "agentpool.dev/v1alpha1", "kind": "WorkerPool",
               "metadata": {"name": "web", "generation": 1},
               "spec": {"server": h.server.url, "image": "agentpool:test",
                        "tokenSecret": {"name": "agentpool-worker-token", "key": "token"},
                        "autoscale": {"min": 1, "max": 3, "scaleDownDelaySeconds": 0},
                        "slotsPerPod": 1, "labels": {"team": "web"},
                        "drainGracePeriodSeconds": 60}}),
    );
    // The minimum comes up first and registers under its pod name. Registration waits only
    // briefly for the agent CLIs' versions, so this is quick even on a loaded machine.
    until(&h, 60, "web-0 to register", |ws, _| {
        ws.iter().any(|w| w.id.as_str() == "web-0")
    })
    .await;
    assert_eq!(kubelet.running(), vec!["web-0".to_string()]);

    // The burst: a chain a → b → c, two tasks on one branch, two independent ones.
    let work = |name: &str| format!("sleep 3; echo {name} >> log.txt");
    let a = submit(&h, &work("a"), "pool/chain-a", &[]).await;
    let b = submit(&h, &work("b"), "pool/chain-b", &[a]).await;
    let c = submit(&h, &work("c"), "pool/chain-c", &[b]).await;
    let s1 = submit(&h, &work("s1"), "pool/shared", &[]).await;
    let s2 = submit(&h, &work("s2"), "pool/shared", &[]).await;
    let i1 = submit(&h, &work("i1"), "pool/i1", &[]).await;
    let i2 = submit(&h, &work("i2"), "pool/i2", &[]).await;
    let all = [a, b, c, s1, s2, i1, i2];
    let mut details = Vec::new();
    for id in all {
        details.push(h.wait_for(id, TaskState::Succeeded, 240).await);
    }
    // Every task ran exactly once: no pod was killed under a task, none ran twice.
    for d in &details {
        assert_eq!(d.attempts_detail.len(), 1, "{d:#?}");
        assert!(d.attempts_detail[0].worker_id.as_str().starts_with("web-"));
    }
    let at = |i: usize| &details[i].attempts_detail[0];
    // Dependencies: each link started after the one before ended.
    assert!(at(1).started_at >= at(0).ended_at.unwrap());
    assert!(at(2).started_at >= at(1).ended_at.unwrap());
    // The branch lock: the two tasks on one branch never overlapped.
    let (x, y) = if at(3).started_at <= at(4).started_at {
        (at(3), at(4))
    } else {
        (at(4), at(3))
    };
    assert!(y.started_at >= x.ended_at.unwrap(), "{x:?} {y:?}");
    assert_eq!(
        h.git
            .read_file("app", "pool/shared", "log.txt")
            .map(|s| s.lines().count()),
        Some(2),
        "both commits on the shared branch"
    );

    // The queue is empty: back to the minimum, by drained pods only.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while kubelet.running() != vec!["web-0".to_string()] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never scaled down: {:?}",
            kubelet.running()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = kubelet.replica_history.lock().unwrap().clone();
    assert_eq!(history.first(), Some(&1), "{history:?}");
    assert_eq!(
        history.iter().max(),
        Some(&3),
        "scaled to the maximum: {history:?}"
    );
    assert_eq!(history.last(), Some(&1), "{history:?}");
    let exits = kubelet.exits.lock().unwrap().clone();
    assert!(!exits.is_empty());
    for e in &exits {
        assert!(e.asked, "a pod exited on its own: {e:?}");
        assert_eq!(e.code, Some(0), "a pod was not stopped cleanly: {e:?}");
    }
    let pool: serde_json::Value = h.fake.get("workerpools", "web").unwrap();
    assert_eq!(pool["status"]["desiredReplicas"], 1, "{pool:#}");
    assert_eq!(pool["status"]["queuedTasks"], 0);
    // The pod that stays reports its mirror cache on a heartbeat; the operator puts it in
    // the pool's status.
    until(&h, 60, "the pool's cache in its status", |_, pool| {
        let c = &pool["status"]["cache"];
        c["misses"].as_i64() >= Some(1) && c["bytes"].as_i64() > Some(0)
    })
    .await;
    let text = metrics.render();
    let drains: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("agentpool_operator_drains_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(drains >= 2, "the two pods that went were drained first: {text}");

    stop.cancel();
    operator.await.unwrap();
    sync.stop();
    kubelet.kill_all();
}
