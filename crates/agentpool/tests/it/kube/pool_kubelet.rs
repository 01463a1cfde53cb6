//! A StatefulSet controller and kubelet stand-in for WorkerPools: keeps pods `<set>-0 …
//! <set>-(replicas-1)` running as real local processes from the StatefulSet's pod template
//! (command, args, env with `secretKeyRef` and `fieldRef: metadata.name` resolved, the cache
//! claim mapped to a per-ordinal directory that outlives the pod, emptyDirs fresh per start),
//! SIGTERMs the pods a lower replica count removes (SIGKILL after the termination grace),
//! restarts exited pods that should run, carries out pod deletions, and writes the Pod objects
//! and the StatefulSet's status back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpool_kube::fake::FakeApi;
use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::json;

use super::kubelet::{container_env, signal, spawn_container};

pub struct PoolPod {
    child: Child,
    terminating: Option<Instant>,
    grace: Duration,
}

/// How a pod's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub pod: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Whether the stand-in had asked it to stop (scale-down or deletion).
    pub asked: bool,
}

#[derive(Clone)]
pub struct PoolKubelet {
    fake: FakeApi,
    root: PathBuf,
    pods: Arc<Mutex<HashMap<String, PoolPod>>>,
    pub exits: Arc<Mutex<Vec<Exit>>>,
    /// Every distinct replica count seen, in order.
    pub replica_history: Arc<Mutex<Vec<i32>>>,
}

impl PoolKubelet {
    pub fn new(fake: FakeApi, root: &Path) -> Self {
        Self {
            fake,
            root: root.to_path_buf(),
            pods: Arc::default(),
            exits: Arc::default(),
            replica_history: Arc::default(),
        }
    }

    pub fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pods.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn tick(&self) {
        for set in self.fake.all::<StatefulSet>("statefulsets") {
            let name = set.metadata.name.clone().unwrap_or_default();
            let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            {
                let mut h = self.replica_history.lock().unwrap();
                if h.last() != Some(&replicas) {
                    h.push(replicas);
                }
            }
            let mut pods = self.pods.lock().unwrap();
            // Exited processes: record, remove the Pod object.
            let mut gone = Vec::new();
            for (pod, p) in pods.iter_mut() {
                if !pod.starts_with(&format!("{name}-")) {
                    continue;
                }
                if let Ok(Some(st)) = p.child.try_wait() {
                    use std::os::unix::process::ExitStatusExt;
                    self.exits.lock().unwrap().push(Exit {
                        pod: pod.clone(),
                        code: st.code(),
                        signal: st.signal(),
                        asked: p.terminating.is_some(),
                    });
                    gone.push(pod.clone());
                }
            }
            for pod in gone {
                pods.remove(&pod);
                self.fake.remove("pods", &pod);
            }
            // Pods to stop: ordinals past replicas, and pods whose object was deleted.
            for (pod, p) in pods.iter_mut() {
                let Some(ordinal) = pod
                    .strip_prefix(&format!("{name}-"))
                    .and_then(|o| o.parse::<i32>().ok())
                else {
                    continue;
                };
                let deleted = self.fake.get::<serde_json::Value>("pods", pod).is_none();
                if ordinal >= replicas || deleted {
                    match p.terminating {
                        None => {
                            p.terminating = Some(Instant::now());
                            signal(p.child.id(), "TERM");
                        }
                        Some(t) if t.elapsed() > p.grace => signal(p.child.id(), "KILL"),
                        Some(_) => {}
                    }
                }
            }
            // Pods to start.
            for ordinal in 0..replicas {
                let pod = format!("{name}-{ordinal}");
                if !pods.contains_key(&pod) {
                    let p = self.start(&set, &pod);
                    pods.insert(pod.clone(), p);
                    let labels = set
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.metadata.as_ref())
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default();
                    self.fake.put(
                        "pods",
                        json!({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": pod, "labels": labels},
                               "status": {"phase": "Running"}}),
                    );
                }
            }
            let n = pods.keys().filter(|p| p.starts_with(&format!("{name}-"))).count() as i32;
            drop(pods);
            self.fake.set_status(
                "statefulsets",
                &name,
                json!({"replicas": n, "readyReplicas": n, "availableReplicas": n}),
            );
        }
    }

    fn start(&self, set: &StatefulSet, pod: &str) -> PoolPod {
        let spec = set.spec.clone().unwrap();
        let tpl = spec.template.spec.clone().unwrap();
        let c = &tpl.containers[0];
        let pod_dir = self.root.join("pods").join(pod);
        let _ = std::fs::remove_dir_all(&pod_dir);
        std::fs::create_dir_all(&pod_dir).unwrap();
        let claims: Vec<String> = spec
            .volume_claim_templates
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for m in c.volume_mounts.clone().unwrap_or_default() {
            let host = if claims.contains(&m.name) {
                // The PVC `<claim>-<pod>`: survives the pod.
                self.root.join("pvc").join(format!("{}-{pod}", m.name))
            } else {
                pod_dir.join(&m.name)
            };
            std::fs::create_dir_all(&host).unwrap();
            mounts.push((m.mount_path.clone(), host));
        }
        let mut env = container_env(&self.fake, c, pod);
        // Every "pod" shares this host's network: each gets its own probe port.
        if env.contains_key("AGENTPOOL_HEALTH_LISTEN") {
            env.insert("AGENTPOOL_HEALTH_LISTEN".into(), "127.0.0.1:0".into());
        }
        PoolPod {
            child: spawn_container(c, &env, &mounts, &pod_dir, None),
            terminating: None,
            grace: Duration::from_secs(tpl.termination_grace_period_seconds.unwrap_or(30) as u64),
        }
    }

    /// Stop every pod (test teardown).
    pub fn kill_all(&self) {
        for (_, mut p) in self.pods.lock().unwrap().drain() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
