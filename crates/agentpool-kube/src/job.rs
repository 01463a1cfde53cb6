//! The objects one attempt becomes: a Job with a deterministic name (task + lease token) whose pod
//! runs `agentpool run-task`, and the attempt Secret (owned by the Job) that carries the claim
//! and lease to the pod. The Job spec holds references only, never a secret value.

use std::collections::BTreeMap;

use agentpool_core::{LeaseToken, TaskId, WorkerId};
use agentpool_runner::ClaimedWork;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};

use crate::attempt_file::{ATTEMPT_KEY, AttemptFile};

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_LAUNCHER: &str = "agentpool.dev/launcher";
pub const LABEL_TASK: &str = "agentpool.dev/task-id";
pub const LABEL_ATTEMPT: &str = "agentpool.dev/attempt";
pub const ANNOTATION_WORKER: &str = "agentpool.dev/worker-id";
/// The lease token is a fencing number, not a credential (calls also need the worker token),
/// so it may sit in an annotation: a restarted launcher reads it back to adopt the Job.
pub const ANNOTATION_LEASE: &str = "agentpool.dev/lease-token";
pub const MANAGER: &str = "agentpool-launcher";
/// `agentpool run-task`'s exit code when the server refuses the pod's worker token: the Job
/// template's token Secret is wrong for every attempt, not just this one.
pub const EXIT_TOKEN_REFUSED: i32 = 5;

/// Where the pod sees the attempt Secret and its scratch space.
pub const ATTEMPT_MOUNT: &str = "/var/run/agentpool/attempt";
pub const WORK_MOUNT: &str = "/work";

/// A reference to one key of a Secret (in the namespace of what refers to it).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// How the launcher shapes each Job (from its configuration file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobTemplate {
    /// The container image with `agentpool`, git and the agent CLIs.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// The server URL as the pods reach it (a Service, `https://` through TLS).
    pub server_url: String,
    /// The worker token the pods authenticate with (a reference; the value never leaves the
    /// Secret).
    pub token_secret: SecretKeyRef,
    /// A Secret key holding a PEM CA certificate for an `https://` server with a private CA.
    pub ca_secret: Option<SecretKeyRef>,
    pub service_account: Option<String>,
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Extra environment for the pod (e.g. a model endpoint); values or references.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// How long a finished Job is kept for inspection.
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: i32,
    /// SIGTERM → SIGKILL for the pod; covers the agent's own kill grace plus the final report.
    #[serde(default = "default_grace")]
    pub termination_grace_period_seconds: i64,
    /// Added to the task's timeout for clone, commit and push.
    #[serde(default = "default_margin")]
    pub deadline_margin_seconds: i64,
    /// The command that starts agentpool in the image.
    #[serde(default = "default_command")]
    pub command: Vec<String>,
}

fn default_ttl() -> i32 {
    3600
}
fn default_grace() -> i64 {
    30
}
fn default_margin() -> i64 {
    600
}
fn default_command() -> Vec<String> {
    vec!["agentpool".into()]
}

impl JobTemplate {
    pub fn new(image: impl Into<String>, server_url: impl Into<String>, token_secret: SecretKeyRef) -> Self {
        Self {
            image: image.into(),
            image_pull_policy: None,
            server_url: server_url.into(),
            token_secret,
            ca_secret: None,
            service_account: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            env: Vec::new(),
            ttl_seconds_after_finished: default_ttl(),
            termination_grace_period_seconds: default_grace(),
            deadline_margin_seconds: default_margin(),
            command: default_command(),
        }
    }
}

/// The Job (and Secret) name of one claim of `task`, by its lease token: the same for every
/// launcher, so a second create for one claim is refused by the API server (`AlreadyExists`)
/// instead of running twice. The lease token, not the attempt number: the token grows with
/// every claim of the task and never goes back, while the attempt number starts again at 1
/// after `tasks retry` — a name by attempt would find the failed attempt's Job (kept for
/// `ttlSecondsAfterFinished`) and take it for the new one.
pub fn job_name(task: TaskId, lease: LeaseToken) -> String {
    format!("agentpool-{}-{}", task.0, lease.0)
}

fn labels(launcher: &str, task: TaskId, attempt: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), "agentpool".into()),
        (LABEL_COMPONENT.into(), "attempt".into()),
        (LABEL_MANAGED_BY.into(), MANAGER.into()),
        (LABEL_LAUNCHER.into(), launcher.into()),
        (LABEL_TASK.into(), task.0.to_string()),
        (LABEL_ATTEMPT.into(), attempt.to_string()),
    ])
}

/// `shareProcessNamespace` of every pod that runs agents or task commands (a launcher's Job
/// pods, a WorkerPool's pods): the pod's pause container is then PID 1 and reaps orphans.
/// The image has no init, and a process an agent or a command leaves running in the
/// background (`(setsid sleep 2 &)`) is re-parented to PID 1 when its parent exits; were
/// `agentpool` PID 1, nothing would wait for it and each would stay a zombie holding a PID
/// for the life of the pod, which a long-lived pool pod would slowly run out of. It also
/// spares `agentpool` PID 1's signal rules (a signal it has no handler for is ignored, SIGTERM
/// included). The pods have one container, so the only process it newly sees is the pause
/// container.
pub(crate) const REAP_ORPHANS: bool = true;

/// The pod security every pod agentpool creates runs with: not root (the image's `agentpool`
/// user, 10001), files group-owned by it, the runtime's default seccomp profile.
pub(crate) fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(10001),
        run_as_group: Some(10001),
        fs_group: Some(10001),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The container security every container agentpool creates runs with: no privilege
/// escalation and no Linux capabilities.
pub(crate) fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

pub(crate) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// A variable read from a Secret's key (never the value itself in the object).
pub(crate) fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The Job that runs `work` for `worker` (the launcher's id, also its label value).
pub fn build_job(t: &JobTemplate, worker: &WorkerId, work: &ClaimedWork) -> Job {
    let task = work.claimed.lease.task_id;
    let attempt = work.claimed.attempt;
    let name = job_name(task, work.claimed.lease.token);
    let labels = labels(worker.as_str(), task, attempt);
    let annotations = BTreeMap::from([
        (ANNOTATION_WORKER.into(), worker.to_string()),
        (ANNOTATION_LEASE.into(), work.claimed.lease.token.0.to_string()),
    ]);
    let timeout = i64::try_from(work.claimed.task.spec.timeout_secs()).unwrap_or(i64::MAX / 2);
    let envs = vec![
        env("AGENTPOOL_TASK_ID", task.0.to_string()),
        env("AGENTPOOL_ATTEMPT", attempt.to_string()),
    ];
    let args = vec![
        "run-task".into(),
        "--attempt-file".into(),
        format!("{ATTEMPT_MOUNT}/{ATTEMPT_KEY}"),
        "--work-dir".into(),
        WORK_MOUNT.into(),
    ];
    let mut c = container(t, args, envs);
    c.volume_mounts.get_or_insert_default().insert(
        0,
        VolumeMount {
            name: "attempt".into(),
            mount_path: ATTEMPT_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    );
    let mut pod = pod_spec(t, c);
    pod.volumes.get_or_insert_default().insert(
        0,
        Volume {
            name: "attempt".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    );
    let mut job = one_pod_job(
        t,
        name,
        labels,
        pod,
        timeout.saturating_add(t.deadline_margin_seconds),
    );
    job.metadata.annotations = Some(annotations);
    job
}

/// The longest a check Job may run: pulling the image and starting git and the agents.
pub const CHECK_DEADLINE_SECS: i64 = 600;

/// The Job that checks whether a pod made from the template can run an attempt (`run-task
/// --check`: the image pulls, the Secrets it references exist, admission and scheduling let
/// it run, git and `agents` start in it, the server accepts its token). It carries no attempt
/// and no lease, so a launcher never mistakes it for one of its attempts.
pub fn build_check_job(t: &JobTemplate, worker: &WorkerId, agents: &[String], name: &str) -> Job {
    let mut args = vec![
        "run-task".into(),
        "--check".into(),
        "--worker".into(),
        worker.to_string(),
        "--work-dir".into(),
        WORK_MOUNT.into(),
    ];
    if !agents.is_empty() {
        args.push("--agents".into());
        args.push(agents.join(","));
    }
    let labels = BTreeMap::from([
        (LABEL_NAME.into(), "agentpool".into()),
        (LABEL_COMPONENT.into(), COMPONENT_CHECK.into()),
        (LABEL_MANAGED_BY.into(), MANAGER.into()),
        (LABEL_LAUNCHER.into(), worker.to_string()),
    ]);
    let pod = pod_spec(t, container(t, args, Vec::new()));
    one_pod_job(t, name.to_string(), labels, pod, CHECK_DEADLINE_SECS)
}

/// The component label of a check Job.
pub const COMPONENT_CHECK: &str = "check";

/// A check Job's name: the launcher's (hashed, so that any id fits in a label value) and the
/// time, so that launchers sharing a namespace never take each other's.
pub fn check_job_name(worker: &WorkerId, at: chrono::DateTime<chrono::Utc>) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    worker.as_str().hash(&mut h);
    format!(
        "agentpool-check-{:08x}-{}",
        h.finish() as u32,
        at.timestamp_millis()
    )
}

/// The `agentpool` container of a launcher's pod: the template's image, command, resources
/// and environment, the server and its token (a reference), and `args`.
fn container(t: &JobTemplate, args: Vec<String>, extra_env: Vec<EnvVar>) -> Container {
    let mut envs = vec![
        env("AGENTPOOL_SERVER", &t.server_url),
        env_from_secret("AGENTPOOL_TOKEN", &t.token_secret.name, &t.token_secret.key),
    ];
    envs.extend(extra_env);
    envs.push(env("AGENTPOOL_LOG", "info"));
    if let Some(ca) = &t.ca_secret {
        envs.push(env_from_secret("AGENTPOOL_CA_CERT_PEM", &ca.name, &ca.key));
    }
    envs.extend(t.env.iter().cloned());
    Container {
        name: "run-task".into(),
        image: Some(t.image.clone()),
        image_pull_policy: t.image_pull_policy.clone(),
        command: Some(t.command.clone()),
        // Kubernetes keeps the tail of the log as the termination message of a container that
        // failed: the launcher quotes its last line when it reports the attempt.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        args: Some(args),
        env: Some(envs),
        resources: t.resources.clone(),
        volume_mounts: Some(vec![VolumeMount {
            name: "work".into(),
            mount_path: WORK_MOUNT.into(),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(false),
            ..restricted_container_security()
        }),
        ..Container::default()
    }
}

/// The pod of one launcher Job: `container`, the template's placement, and scratch space.
fn pod_spec(t: &JobTemplate, container: Container) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: t.service_account.clone(),
        // run-task talks to the agentpool server, never to the Kubernetes API.
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(t.termination_grace_period_seconds),
        node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
        tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
        security_context: Some(restricted_pod_security()),
        share_process_namespace: Some(REAP_ORPHANS),
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: "work".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    }
}

fn one_pod_job(
    t: &JobTemplate,
    name: String,
    labels: BTreeMap<String, String>,
    pod: PodSpec,
    deadline_secs: i64,
) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // agentpool owns retries: a failed pod is a failed attempt, reported and re-queued
            // through the server with its error class and backoff.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline_secs),
            ttl_seconds_after_finished: Some(t.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The attempt Secret for `work`, owned by the Job (`job_uid`) so it goes when the Job goes.
pub fn build_secret(worker: &WorkerId, work: &ClaimedWork, job_uid: &str) -> Secret {
    let task = work.claimed.lease.task_id;
    let attempt = work.claimed.attempt;
    let name = job_name(task, work.claimed.lease.token);
    let file = AttemptFile {
        worker_id: worker.clone(),
        work: work.clone(),
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels(worker.as_str(), task, attempt)),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: job_uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(ATTEMPT_KEY.into(), ByteString(file.to_json()))])),
        ..Secret::default()
    }
}

/// The label selector of every object one launcher owns.
pub fn selector(worker: &WorkerId) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_LAUNCHER}={worker}")
}

/// A worker id usable as a label value (at most 63 characters, alphanumeric at both ends).
pub fn valid_launcher_id(id: &WorkerId) -> bool {
    let s = id.as_str();
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63 && alnum(s.chars().next()) && alnum(s.chars().last())
}
