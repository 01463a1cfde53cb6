//! The objects one WorkerPool becomes: a headless Service and a StatefulSet whose pods run
//! `agentpool worker` under a stable id (the pod name: a restarted pod re-registers as the
//! same worker), each with its own mirror-cache volume, all owned by the pool.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource,
    Service, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use super::crd::WorkerPool;
use crate::job::{
    LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_NAME, REAP_ORPHANS, env, env_from_secret,
    restricted_container_security, restricted_pod_security,
};

/// The label every pool worker carries (to the server and on its pod): tasks may select one
/// pool by it, and the operator asks for the pool's statistics by it.
pub const LABEL_POOL: &str = "agentpool.dev/pool";
/// The field manager of the operator's server-side applies.
pub const MANAGER: &str = "agentpool-operator";
pub const CACHE_MOUNT: &str = "/cache";
pub const WORK_MOUNT: &str = "/work";
pub const CA_MOUNT: &str = "/var/run/agentpool/ca";
/// Seconds the pod's termination grace adds to the drain grace, for the final reports.
pub const REPORT_MARGIN_SECS: i64 = 30;

/// The worker id of the pod with `ordinal` in pool `pool`: the pod's name.
pub fn worker_id(pool: &str, ordinal: i32) -> String {
    format!("{pool}-{ordinal}")
}

/// The labels a pool's worker registers with: the pool's own plus [`LABEL_POOL`].
pub fn worker_labels(pool: &WorkerPool) -> BTreeMap<String, String> {
    let mut l = pool.spec.labels.clone();
    l.insert(LABEL_POOL.into(), name(pool));
    l
}

fn name(pool: &WorkerPool) -> String {
    pool.metadata.name.clone().unwrap_or_default()
}

/// Labels that select the pool's pods.
pub fn selector_labels(pool: &WorkerPool) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), "agentpool".into()),
        (LABEL_COMPONENT.into(), "pool-worker".into()),
        (LABEL_POOL.into(), name(pool)),
    ])
}

/// The label selector of the pool's pods, as the API's `labelSelector` takes it.
pub fn pod_selector(pool: &WorkerPool) -> String {
    joined(&selector_labels(pool))
}

/// `labels` as `k=v,k=v` (a label selector, or the worker's `--labels`).
fn joined(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn object_labels(pool: &WorkerPool) -> BTreeMap<String, String> {
    let mut l = selector_labels(pool);
    l.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    l
}

/// The owner reference that makes the garbage collector remove an object with its pool.
pub fn owner(pool: &WorkerPool) -> Option<OwnerReference> {
    pool.controller_owner_ref(&())
}

/// Why an existing object (a `kind` with `meta`) named as `pool`'s Service or StatefulSet is
/// not the pool's to change, or `None` when the pool is its controller (by uid: a pool deleted
/// and created again under the same name is another pool). An object of another app that
/// happens to bear the pool's name must not be taken over by the apply, nor garbage-collected
/// with the pool through an owner reference the apply would add.
pub fn not_ours(kind: &str, meta: &ObjectMeta, pool: &WorkerPool) -> Option<String> {
    let object = format!("the {kind} {}", meta.name.as_deref().unwrap_or_default());
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(o) if pool.metadata.uid.as_deref() == Some(o.uid.as_str()) => None,
        Some(o) if o.kind == "WorkerPool" && Some(&o.name) == pool.metadata.name.as_ref() => Some(format!(
            "{object} belongs to an earlier WorkerPool of this name (the garbage collector removes it)"
        )),
        Some(o) => Some(format!("{object} is controlled by {} {}", o.kind, o.name)),
        None => Some(format!("{object} exists and is not this WorkerPool's")),
    }
}

fn meta(pool: &WorkerPool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name(pool)),
        namespace: pool.metadata.namespace.clone(),
        labels: Some(object_labels(pool)),
        owner_references: owner(pool).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The headless Service that gives each pod a stable DNS name (required by a StatefulSet).
pub fn build_service(pool: &WorkerPool) -> Service {
    Service {
        metadata: meta(pool),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(pool)),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn env_from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(source),
    }
}

/// The StatefulSet of `pool` with `replicas` pods.
pub fn build_statefulset(pool: &WorkerPool, replicas: i32) -> StatefulSet {
    let s = &pool.spec;
    let labels = joined(&worker_labels(pool));
    let mut args = vec![
        "worker".to_string(),
        "--concurrency".into(),
        s.slots_per_pod.to_string(),
        "--labels".into(),
        labels,
        "--work-dir".into(),
        WORK_MOUNT.into(),
        "--mirror-dir".into(),
        format!("{CACHE_MOUNT}/mirrors"),
        "--mirror-max-age-days".into(),
        s.cache.max_age_days.to_string(),
        "--drain-grace-secs".into(),
        s.drain_grace_period_seconds.to_string(),
        // A pod the operator drained stays registered (as draining) until its pod is removed,
        // instead of exiting and being restarted into an idle worker that would claim again.
        "--stay-drained".into(),
    ];
    if let Some(mib) = s.cache.max_size_mib {
        args.extend(["--mirror-max-size-mib".into(), mib.to_string()]);
    }
    if !s.agents.is_empty() {
        args.extend(["--agents".into(), s.agents.join(",")]);
    }
    if !s.projects.is_empty() {
        args.extend(["--project".into(), s.projects.join(",")]);
    }
    let mut envs = vec![
        env("AGENTPOOL_SERVER", &s.server),
        env_from_secret("AGENTPOOL_TOKEN", &s.token_secret.name, &s.token_secret.key),
        // The pod's name is the worker id: stable across restarts of the pod.
        env_from(
            "AGENTPOOL_WORKER_ID",
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: "metadata.name".into(),
                }),
                ..EnvVarSource::default()
            },
        ),
        env("AGENTPOOL_LOG", "info"),
        // The worker's own probe: ready only while registered and claiming, so a pod that is
        // starting, draining or unhealthy (git or its agents cannot start) is out of service.
        env("AGENTPOOL_HEALTH_LISTEN", format!("0.0.0.0:{HEALTH_PORT}")),
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "cache".into(),
            mount_path: CACHE_MOUNT.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "work".into(),
            mount_path: WORK_MOUNT.into(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![Volume {
        name: "work".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if let Some(ca) = &s.ca_secret {
        envs.push(env("AGENTPOOL_CA_CERT", format!("{CA_MOUNT}/{}", ca.key)));
        mounts.push(VolumeMount {
            name: "ca".into(),
            mount_path: CA_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    envs.extend(s.env.iter().cloned());
    let container = Container {
        name: "worker".into(),
        image: Some(s.image.clone()),
        image_pull_policy: s.image_pull_policy.clone(),
        command: Some(vec!["agentpool".into()]),
        args: Some(args),
        env: Some(envs),
        resources: s.resources.clone(),
        volume_mounts: Some(mounts),
        ports: Some(vec![ContainerPort {
            name: Some("health".into()),
            container_port: HEALTH_PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", 5)),
        // A worker that exits on an error leaves the tail of its log as its termination
        // message: the operator quotes its last line in the pool's Degraded condition.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        liveness_probe: Some(http_probe("/healthz", 20)),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: s.service_account_name.clone(),
        // The worker talks to the agentpool server, never to the Kubernetes API.
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(s.drain_grace_period_seconds + REPORT_MARGIN_SECS),
        node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
        tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
        affinity: s.affinity.clone(),
        security_context: Some(restricted_pod_security()),
        // The pause container reaps what agents and commands leave behind (see REAP_ORPHANS).
        share_process_namespace: Some(REAP_ORPHANS),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("cache".into()),
            labels: Some(selector_labels(pool)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: s.cache.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(s.cache.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    StatefulSet {
        metadata: meta(pool),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(name(pool)),
            // Pods start and stop in parallel; ordering is not needed, and a scale-down only
            // ever removes pods the operator has drained.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(pool)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector_labels(pool)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim]),
            // A warm cache survives a scale-down and is there again when the ordinal returns;
            // deleting the pool deletes the caches.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Delete".into()),
                when_scaled: Some("Retain".into()),
            }),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Port of the worker's health probe (`agentpool worker --health-listen`) in pool pods.
pub const HEALTH_PORT: i32 = 8081;

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("health".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}
