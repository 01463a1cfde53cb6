//! Why a pool's pods are not working: the ones crash-looping or stuck before they start, with
//! what their containers last said (or, for a volume that will not mount, their events), and
//! the workers that run but turned unhealthy, with the reason they gave the server — so the pool's `Degraded` condition tells an operator the cause
//! without reading pod logs (which a restart may already have replaced).

use agentpool_core::{Worker, WorkerStatus};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::Api;

use crate::classify::{STUCK, last_words, mount_failure, placed_pod, unscheduled as unscheduled_pod};

/// A line naming the failing pods among `pods` and why the first of them fails, or `None`
/// when none is failing. A pod failing only while it is restarted once (its container
/// waiting in `CrashLoopBackOff`, or one that cannot start) counts; one still starting does
/// not. `mounting` adds the pods held by a volume that will not mount ([`stuck_mounting`]),
/// which their status does not show.
pub fn failing(pods: &[Pod], mounting: Vec<(String, String)>) -> Option<String> {
    let mut why: Vec<(String, String)> = pods
        .iter()
        .filter_map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let statuses = p.status.as_ref()?.container_statuses.as_deref()?;
            statuses.iter().find_map(container_problem).map(|w| (name, w))
        })
        .collect();
    why.extend(mounting);
    first_of(why, "failing")
}

/// The pods among `pods` placed on a node but held there by a volume that has not mounted
/// for a minute (see [`crate::classify::stuck_mounting`]), each with why: one events list per
/// pod placed and not started.
pub async fn stuck_mounting(events: &Api<Event>, pods: &[Pod]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pod in pods {
        let Some(name) = placed_pod(pod) else {
            continue;
        };
        if let Some(why) = mount_failure(&crate::pod_events::of_pod(events, name).await) {
            out.push((name.to_string(), why));
        }
    }
    out
}

/// A line naming the pods among `pods` the scheduler cannot place yet and why the first of
/// them waits ("2 pods waiting to be scheduled; pod agents-3: Unschedulable: 0/3 nodes are
/// available: 3 Insufficient cpu."), or `None` when every pod has a node. Not a failure: a
/// cluster autoscaler may be adding a node for them.
pub fn unscheduled(pods: &[Pod]) -> Option<String> {
    let why = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.metadata.name.clone().unwrap_or_default(), unscheduled_pod(p)?)))
        .collect();
    first_of(why, "waiting to be scheduled")
}

/// "2 pods `what`; pod agents-0: its reason" — how many pods, and the first by name with its
/// reason (`why`: pod name and reason) — or `None` for none.
fn first_of(mut why: Vec<(String, String)>, what: &str) -> Option<String> {
    why.sort();
    let (first, reason) = why.first()?;
    let pods = agentpool_core::render::count(why.len(), "pod", "pods");
    Some(format!("{pods} {what}; pod {first}: {reason}"))
}

/// Why a container is not running, when it will not start again by itself soon.
fn container_problem(cs: &ContainerStatus) -> Option<String> {
    let waiting = cs.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if reason == "CrashLoopBackOff" {
        // The restart that failed is in lastState: its exit code and its last words.
        let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let exited = last.map(|t| format!(": exited with code {}", t.exit_code));
        let said = last
            .and_then(|t| t.message.as_deref())
            .and_then(last_words)
            .map(|w| format!(": {w}"));
        return Some(format!(
            "{reason} after {} restarts{}{}",
            cs.restart_count,
            exited.unwrap_or_default(),
            said.unwrap_or_default()
        ));
    }
    STUCK.contains(&reason).then(|| match waiting.message.as_deref() {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_string(),
    })
}

/// How much of one worker's reason a condition quotes: it says which part failed and how,
/// and the rest is on the worker (`agentpool workers show`).
const REASON_CHARS: usize = 300;

/// A line naming the pool's unhealthy workers and why each stopped claiming, or `None` when
/// none is unhealthy.
pub fn unhealthy(workers: &[Worker]) -> Option<String> {
    said_by(
        workers,
        |w| w.status == WorkerStatus::Unhealthy,
        ("worker unhealthy", "workers unhealthy"),
        "claiming no tasks",
    )
}

/// A line naming the pool's workers that claim but stopped running an agent (its provider
/// refused their own key), with what each said, or `None` when there are none. Their tasks
/// of that agent wait: another pod of the same Secret would most likely be refused too.
pub fn agents_retired(workers: &[Worker]) -> Option<String> {
    said_by(
        workers,
        Worker::retired_an_agent,
        (
            "worker stopped running an agent",
            "workers stopped running an agent",
        ),
        "its key was refused",
    )
}

/// "N workers …, why; id: what it said; …" for the workers `pick` takes.
fn said_by(
    workers: &[Worker],
    pick: impl Fn(&Worker) -> bool,
    (one, many): (&str, &str),
    why: &str,
) -> Option<String> {
    let said: Vec<String> = workers
        .iter()
        .filter(|w| pick(w))
        .map(|w| {
            let what = w.status_message.as_deref().unwrap_or("it gave no reason");
            format!("{}: {}", w.id, agentpool_core::render::clip(what, REASON_CHARS))
        })
        .collect();
    let count = match said.len() {
        0 => return None,
        1 => format!("1 {one}, {why}"),
        n => format!("{n} {many}, {why}"),
    };
    Some(format!("{count}; {}", said.join("; ")))
}
