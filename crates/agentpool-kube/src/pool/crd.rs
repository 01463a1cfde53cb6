//! The `WorkerPool` custom resource (`agentpool.dev/v1alpha1`): a set of persistent, warm
//! agentpool workers that the operator runs as a StatefulSet and scales on the depth of the
//! queue they serve. The CRD YAML is generated from these types (`agentpool crd`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The same Secret reference the launcher's Job template uses, here to a Secret in the pool's
/// namespace.
pub use crate::job::SecretKeyRef;

/// A persistent pool of agentpool workers, scaled on the queue depth of the tasks it serves.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "agentpool.dev",
    version = "v1alpha1",
    kind = "WorkerPool",
    namespaced,
    status = "WorkerPoolStatus",
    shortname = "wp",
    category = "agentpool",
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Busy","type":"integer","jsonPath":".status.busyWorkers"}"#,
    printcolumn = r#"{"name":"Queued","type":"integer","jsonPath":".status.queuedTasks"}"#,
    printcolumn = r#"{"name":"Runnable","type":"integer","jsonPath":".status.runnableTasks"}"#,
    printcolumn = r#"{"name":"Unhealthy","type":"integer","jsonPath":".status.unhealthyWorkers","priority":1}"#,
    printcolumn = r#"{"name":"Cache hit rate","type":"number","jsonPath":".status.cache.hitRate","priority":1}"#,
    printcolumn = r#"{"name":"Cache bytes","type":"integer","jsonPath":".status.cache.bytes","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.replicas) != has(self.autoscale)").message("set exactly one of replicas and autoscale"))]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// The agentpool server URL as the pods reach it (a Service; `https://` with TLS).
    pub server: String,
    /// The worker token the pods (and the operator, for queue statistics and drains) use.
    pub token_secret: SecretKeyRef,
    /// A PEM CA certificate to trust for an `https://` server with a private CA.
    pub ca_secret: Option<SecretKeyRef>,
    /// A fixed number of pods (exclusive with `autoscale`).
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Scale on queue depth between `min` and `max` pods (exclusive with `replicas`).
    pub autoscale: Option<Autoscale>,
    /// Tasks each pod runs at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub slots_per_pod: i32,
    /// Worker labels: a task runs here when its labels are a subset of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Agent CLIs the pods offer (`command` is always offered); all the image has when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// Take only tasks of these projects (the pool is scaled on their queued tasks alone); any
    /// task when empty. A token limited to projects limits the pods to those anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub projects: Vec<String>,
    /// The image with `agentpool`, git and the agent CLIs.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// The per-pod mirror cache volume (a PersistentVolumeClaim per pod).
    #[serde(default)]
    pub cache: CacheSpec,
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub service_account_name: Option<String>,
    /// Extra environment: agent settings, and agent credentials as `secretKeyRef`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// How long a stopping pod may take to finish its running tasks before they are canceled
    /// (the worker's drain grace; the pod's termination grace adds a margin for reporting).
    #[serde(default = "default_drain_grace")]
    #[schemars(range(min = 0))]
    pub drain_grace_period_seconds: i64,
}

/// Queue-depth autoscaling bounds.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("autoscale.min must not exceed autoscale.max"))]
#[serde(rename_all = "camelCase")]
pub struct Autoscale {
    #[schemars(range(min = 0))]
    pub min: i32,
    #[schemars(range(min = 1))]
    pub max: i32,
    /// How long demand must stay below the current size before the pool drains pods.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: i64,
}

/// The mirror cache each pod keeps on its own volume.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Requested size of each pod's cache volume (a Kubernetes quantity).
    #[serde(default = "default_cache_size")]
    pub size: String,
    /// The StorageClass of the cache volumes; the cluster default when absent.
    pub storage_class_name: Option<String>,
    /// Mirrors unused for this many days are pruned.
    #[serde(default = "default_max_age_days")]
    #[schemars(range(min = 1))]
    pub max_age_days: i64,
    /// The cache is pruned, least recently used first, down to this many MiB (0: no limit).
    #[schemars(range(min = 0))]
    pub max_size_mib: Option<i64>,
}

impl Default for CacheSpec {
    fn default() -> Self {
        Self {
            size: default_cache_size(),
            storage_class_name: None,
            max_age_days: default_max_age_days(),
            max_size_mib: None,
        }
    }
}

/// What the operator last saw and did.
#[serde_with::skip_serializing_none]
#[derive(JsonSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    /// Pods the StatefulSet has.
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Pods the pool should have now (the autoscaler's answer within [min, max]).
    pub desired_replicas: i32,
    pub busy_workers: i32,
    pub idle_workers: i32,
    /// Workers being drained before their pods go.
    pub draining_workers: i32,
    /// Workers that stopped claiming because git, their agents or their own agent key kept
    /// failing (why: the `Degraded` condition): until git and the agents start again, or for
    /// a refused key until the pod restarts.
    pub unhealthy_workers: i32,
    /// Queued tasks this pool could run.
    pub queued_tasks: i64,
    /// Of those, the ones a worker could claim now (no dependency pending, branch free,
    /// project slots and budget left): what the pool is sized by. Absent when the server does
    /// not say (the pool is then sized by the due ones).
    pub runnable_tasks: Option<i64>,
    /// Of the runnable ones, those none of the pool's workers taking tasks could take (an agent
    /// its image lacks, a label, a project): once one of them takes tasks, they are left out of
    /// its size and `Degraded` says `TasksNoWorkerTakes`. Absent when the server does not say.
    pub runnable_tasks_no_worker: Option<i64>,
    /// Tasks running on the pool's workers.
    pub running_tasks: i64,
    /// The pods' mirror caches, summed over the pool's online workers as they last reported.
    pub cache: Option<PoolCacheStatus>,
    /// A scale-down in progress, kept here (not in the operator's memory) so that the
    /// operator continues it after a restart or a change of leader.
    pub scale_down: Option<ScaleDownStatus>,
    pub observed_generation: Option<i64>,
    /// `Ready`, `Scaling` and `Degraded`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The pool's warm mirror caches: how often a task found its repository's mirror on its pod,
/// and what the caches hold.
#[derive(JsonSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoolCacheStatus {
    /// Tasks that found their repository's mirror (fetched into it) since their pod started.
    pub hits: i64,
    /// Tasks that had to create it (a full clone).
    pub misses: i64,
    /// Hits over hits and misses, 0 to 1; absent before the first task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<f64>,
    /// Bytes the mirrors take on the pods' cache volumes.
    pub bytes: i64,
    pub mirrors: i32,
    /// Workers whose figures are counted (those that reported them).
    pub workers: i32,
}

/// Where a scale-down stands.
#[derive(JsonSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownStatus {
    /// Since when demand has been below the pool's size: the scale-down delay counts from
    /// here. Absent once demand is back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below_since: Option<Time>,
    /// Workers the operator asked to drain whose pods are still there: it waits for them to
    /// go idle, and brings back (restarts) the ones demand needs again. Workers drained by
    /// anyone else are left drained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drained: Vec<String>,
}

fn one() -> i32 {
    1
}
fn default_drain_grace() -> i64 {
    600
}
fn default_scale_down_delay() -> i64 {
    60
}
fn default_cache_size() -> String {
    "20Gi".into()
}
fn default_max_age_days() -> i64 {
    14
}

impl WorkerPoolSpec {
    /// The rules the CRD's CEL validations enforce, checked again here so that a pool created
    /// before the CRD had them (or on a server without CEL) is reported, not acted on.
    pub fn check(&self) -> Result<(), String> {
        match (&self.replicas, &self.autoscale) {
            (Some(_), Some(_)) | (None, None) => {
                return Err("set exactly one of replicas and autoscale".into());
            }
            (_, Some(a)) if a.min > a.max => {
                return Err("autoscale.min must not exceed autoscale.max".into());
            }
            (_, Some(a)) if a.min < 0 => return Err("autoscale.min must not be negative".into()),
            (Some(r), _) if *r < 0 => return Err("replicas must not be negative".into()),
            _ => {}
        }
        if self.slots_per_pod < 1 {
            return Err("slotsPerPod must be at least 1".into());
        }
        Ok(())
    }
}

/// The CustomResourceDefinition as YAML, exactly as `deploy/kustomize/base/workerpool-crd.yaml`
/// commits it.
pub fn crd_yaml() -> String {
    let crd = WorkerPool::crd();
    let body = serde_yaml::to_string(&crd).unwrap_or_default();
    format!("# Generated by `agentpool crd` from the WorkerPool types; do not edit by hand.\n{body}")
}
