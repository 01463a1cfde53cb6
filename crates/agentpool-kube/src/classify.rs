//! How Job and pod state become an attempt's outcome: which states mean "still running",
//! "reported by run-task", or a failure the launcher reports with an error class and the
//! pod's reason in the message. Pure functions over the objects the API server returns.

use agentpool_core::ErrorClass;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};

/// A failure to report for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: ErrorClass,
    pub message: String,
    /// Whether the launcher's own set-up failed (image, Secrets, admission, limits): what
    /// counts toward turning it unhealthy, whatever the class.
    pub set_up: bool,
}

/// A verdict whose class says whether it is a set-up failure (`INFRA_CONFIG_ERROR`).
pub(crate) fn verdict(class: ErrorClass, message: impl Into<String>) -> Verdict {
    Verdict {
        class,
        message: message.into(),
        set_up: class == ErrorClass::InfraConfigError,
    }
}

/// Where an attempt's Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Pending or running: nothing to do.
    Active,
    /// The pod exited 0: `run-task` reported the attempt itself.
    Succeeded,
    /// The Job failed, or its pod cannot start: report this and delete the Job.
    Failed(Verdict),
}

/// Waiting reasons of an image that could not be pulled: perhaps a bad name or tag, perhaps a
/// registry that failed for a while. The attempt is handed back (as `INFRA_ERROR`, without
/// using one of the task's attempts, a bounded number of times) rather than failed for good;
/// it still counts as a set-up failure, so a launcher whose image never pulls turns unhealthy
/// and the tasks wait for one that works.
const PULL_FAILED: [&str; 2] = ["ImagePullBackOff", "ErrImagePull"];

/// Waiting reasons after which a pod will not start without someone changing the cluster.
pub(crate) const STUCK: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Judge the attempt's Job from it and its pods.
pub fn judge(job: &Job, pods: &[Pod]) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if holds("Complete").is_some() || holds("SuccessCriteriaMet").is_some() {
        return JobState::Succeeded;
    }
    let failed = holds("Failed").or_else(|| holds("FailureTarget"));
    if let Some(c) = failed {
        let reason = c.reason.as_deref().unwrap_or("");
        if reason == "DeadlineExceeded" {
            return JobState::Failed(verdict(
                ErrorClass::Timeout,
                format!(
                    "Job {}: DeadlineExceeded: {}",
                    job.metadata.name.as_deref().unwrap_or(""),
                    c.message
                        .as_deref()
                        .unwrap_or("the Job ran past activeDeadlineSeconds")
                ),
            ));
        }
        let from_pod = pods.iter().find_map(pod_failure);
        return JobState::Failed(from_pod.unwrap_or_else(|| {
            verdict(
                ErrorClass::InfraError,
                format!(
                    "Job {} failed ({reason}) and its pod is gone: it was deleted or its node was lost",
                    job.metadata.name.as_deref().unwrap_or("")
                ),
            )
        }));
    }
    // Not failed yet, but a pod that cannot start would wait until the deadline.
    for pod in pods {
        if let Some(v) = pod_stuck(pod).or_else(|| pod_failure(pod)) {
            return JobState::Failed(v);
        }
    }
    JobState::Active
}

/// Where an attempt's pod stands before its container runs, in words for the task's events:
/// waiting to be scheduled (with the scheduler's reason: no node has the CPU it asks for, a
/// taint, a node selector), or placed on a node and starting there. `None` with no pod yet,
/// once the container runs (`run-task` speaks for the attempt then), or for a pod going away.
pub fn waiting(pods: &[Pod]) -> Option<String> {
    let pod = pods.iter().find(|p| p.metadata.deletion_timestamp.is_none())?;
    let status = pod.status.as_ref()?;
    if status.phase.as_deref().is_some_and(|p| p != "Pending") {
        return None;
    }
    let name = pod_name(pod);
    if let Some(why) = unscheduled(pod) {
        return Some(format!("pod {name} is waiting to be scheduled: {why}"));
    }
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let starting = status
        .container_statuses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.reason.as_deref());
    Some(match starting {
        Some(reason) => format!("pod {name} is starting on node {node} ({reason})"),
        None => format!("pod {name} was scheduled on node {node}"),
    })
}

/// The name of a Job's pod (the first of `pods` not being deleted) when it has a node but has
/// not started yet: the one whose events (an image pull, a volume that cannot be mounted) say
/// what it waits for.
pub fn placed(pods: &[Pod]) -> Option<&str> {
    pods.iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(placed_pod)
}

/// `pod`'s name when it has a node but has not started yet.
pub fn placed_pod(pod: &Pod) -> Option<&str> {
    let pending = pod.status.as_ref()?.phase.as_deref() == Some("Pending");
    let node = pod.spec.as_ref()?.node_name.as_deref();
    (pending && node.is_some()).then(|| pod_name(pod))
}

/// The latest of a pod's events, as "Reason: message" ("FailedMount: MountVolume.SetUp failed
/// for volume \"attempt\" : secret … not found (4 times)", "Pulling: Pulling image …"). Not
/// the scheduler's: the pod's `PodScheduled` condition says the same (see [`waiting`]).
pub fn latest_event(events: &[Event]) -> Option<String> {
    let e = latest(events)?;
    let reason = e.reason.as_deref().unwrap_or("Event");
    let message = e.message.as_deref().and_then(last_words).unwrap_or_default();
    let times = match e.count {
        Some(n) if n > 1 => format!(" ({n} times)"),
        _ => String::new(),
    };
    Some(format!("{reason}: {message}{times}"))
}

/// How long a pod's volume may keep failing to mount before the pod counts as stuck. The
/// kubelet retries, so a Secret or claim that appears meanwhile (created a little after the
/// Job) still lets the pod start; one still missing after this is the template's fault.
pub const MOUNT_GRACE_SECS: i64 = 60;

/// Pod `pod` whose latest event is a volume failing to mount, for [`MOUNT_GRACE_SECS`] or more
/// between that event's first and last time (both the cluster's clock): it will not start
/// until someone changes the cluster, as one stuck pulling its image will not.
pub fn stuck_mounting(pod: &str, events: &[Event]) -> Option<Verdict> {
    let why = mount_failure(events)?;
    Some(verdict(ErrorClass::InfraConfigError, format!("pod {pod}: {why}")))
}

/// Why a pod's volume has not mounted for [`MOUNT_GRACE_SECS`] or more, from its `events`
/// ("FailedMount for 68 s: MountVolume.SetUp failed for volume …"), or `None`.
pub(crate) fn mount_failure(events: &[Event]) -> Option<String> {
    let e = latest(events).filter(|e| e.reason.as_deref() == Some("FailedMount"))?;
    let first = e
        .first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))?;
    let secs = (last_seen(e)? - first).num_seconds();
    let message = e.message.as_deref().and_then(last_words).unwrap_or_default();
    (secs >= MOUNT_GRACE_SECS).then(|| format!("FailedMount for {secs} s: {message}"))
}

/// The most recent of `events`, leaving out the scheduler's.
fn latest(events: &[Event]) -> Option<&Event> {
    events
        .iter()
        .filter(|e| !matches!(e.reason.as_deref(), Some("Scheduled" | "FailedScheduling")))
        .max_by_key(|e| last_seen(e))
}

/// When `e` last happened: an event recorded the older way has `lastTimestamp`, one recorded
/// as a series (events.k8s.io) its series' last observation or its `eventTime`.
fn last_seen(e: &Event) -> Option<chrono::DateTime<chrono::Utc>> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.series.as_ref()?.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Why the scheduler has not placed `pod` ("Unschedulable: 0/3 nodes are available: …"), or
/// `None` when it has (or has not said).
pub(crate) fn unscheduled(pod: &Pod) -> Option<String> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    let reason = c.reason.as_deref().unwrap_or("Unschedulable");
    Some(match c.message.as_deref().and_then(last_words) {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_string(),
    })
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

/// A pod waiting in a state it will not leave by itself.
fn pod_stuck(pod: &Pod) -> Option<Verdict> {
    let statuses = pod.status.as_ref()?.container_statuses.as_deref()?;
    statuses.iter().find_map(|cs| {
        let w = cs.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.as_deref()?;
        STUCK.contains(&reason).then(|| {
            let message = format!(
                "pod {}: {reason}: {}",
                pod_name(pod),
                w.message.as_deref().unwrap_or("the container cannot start")
            );
            if PULL_FAILED.contains(&reason) {
                Verdict {
                    class: ErrorClass::InfraError,
                    message,
                    set_up: true,
                }
            } else {
                verdict(ErrorClass::InfraConfigError, message)
            }
        })
    })
}

/// The last line a failed container wrote, from its termination message: agentpool's
/// containers ask for the tail of their log there (`FallbackToLogsOnError`), and `run-task` and
/// `worker` end with a line saying why they stopped (a refused token, an unreachable server).
pub(crate) fn last_words(message: &str) -> Option<String> {
    const MAX: usize = 300;
    let line = message.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    })
}

/// A pod that ended without `run-task` reporting (it exits 0 whenever it reported).
fn pod_failure(pod: &Pod) -> Option<Verdict> {
    let status = pod.status.as_ref()?;
    let name = pod_name(pod);
    if status.reason.as_deref() == Some("Evicted") {
        return Some(verdict(
            ErrorClass::InfraError,
            format!(
                "pod {name}: Evicted: {}",
                status
                    .message
                    .as_deref()
                    .unwrap_or("the node reclaimed resources")
            ),
        ));
    }
    let disrupted = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True");
    for cs in status.container_statuses.as_deref().unwrap_or_default() {
        let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
            continue;
        };
        let reason = t.reason.as_deref().unwrap_or("Error");
        if reason == "OOMKilled" {
            return Some(verdict(
                ErrorClass::InfraConfigError,
                format!(
                    "pod {name}: OOMKilled: the container exceeded its memory limit (exit code {})",
                    t.exit_code
                ),
            ));
        }
        let said = t
            .message
            .as_deref()
            .and_then(last_words)
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        if t.exit_code == crate::job::EXIT_TOKEN_REFUSED {
            return Some(verdict(
                ErrorClass::InfraConfigError,
                format!(
                    "pod {name}: the server refused the pod's worker token (the Secret the Job \
                     template names){said}"
                ),
            ));
        }
        if t.exit_code != 0 {
            let why = match disrupted {
                Some(c) => format!(
                    " after {}: {}",
                    c.reason.as_deref().unwrap_or("a disruption"),
                    c.message.as_deref().unwrap_or("")
                ),
                None => String::new(),
            };
            return Some(verdict(
                ErrorClass::InfraError,
                format!(
                    "pod {name}: the container exited with code {} ({reason}) without reporting{why}{said}",
                    t.exit_code
                ),
            ));
        }
    }
    if status.phase.as_deref() == Some("Failed") {
        let reason = status.reason.as_deref().unwrap_or("Failed");
        return Some(verdict(
            ErrorClass::InfraError,
            format!(
                "pod {name}: {reason}: {}",
                status.message.as_deref().unwrap_or("the pod failed")
            ),
        ));
    }
    None
}

/// The class of a refused Job creation: a quota may free up (retried); an admission or
/// validation refusal will refuse the next attempt the same way (not retried).
pub fn creation_refused(err: &kube::Error) -> Verdict {
    match err {
        kube::Error::Api(s) => {
            let quota = s.message.contains("exceeded quota") || s.message.contains("forbidden: exceeded");
            let class = if quota || s.code >= 500 || s.code == 429 {
                ErrorClass::InfraError
            } else {
                ErrorClass::InfraConfigError
            };
            verdict(
                class,
                format!("Job creation refused ({} {}): {}", s.code, s.reason, s.message),
            )
        }
        other => verdict(ErrorClass::InfraError, format!("Job creation failed: {other}")),
    }
}
