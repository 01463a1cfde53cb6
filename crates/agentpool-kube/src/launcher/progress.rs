//! What the launcher tells a task while its Job's pod has not started: the Job it created
//! (with the command that shows its log), and where the pod stands — waiting to be scheduled
//! and why, or starting on a node, with the pod's latest event (an image being pulled, a volume
//! that cannot be mounted). Without it a task on Kubernetes says only "claimed" until
//! the pod's `run-task` takes over, which takes minutes when the cluster has no room, and its
//! events never name the Job to look at.

use agentpool_core::protocol::AppendEventsRequest;
use agentpool_core::{Lease, NewEvent, TaskId};
use k8s_openapi::api::core::v1::Pod;

use super::Launcher;
use crate::classify::{self, Verdict};

/// The stream of the lines agentpool itself writes into a task's log.
const STREAM: &str = "agentpool";

impl Launcher {
    /// Add `line` to the task's events under its lease. Best effort: a line that does not
    /// reach the server changes nothing about the attempt, so it is neither retried nor
    /// waited for.
    pub(super) async fn tell(&self, lease: Lease, line: String) {
        let req = AppendEventsRequest {
            lease_token: lease.token,
            events: vec![NewEvent::log(STREAM, line)],
        };
        if let Err(e) = self.api.append_events(&self.cfg.id, lease.task_id, req).await {
            tracing::debug!(task = %lease.task_id, "could not add to the task's events: {e}");
        }
    }

    /// Say in its task's events that the attempt's Job `name` was created.
    pub(super) async fn tell_created(&self, lease: Lease, name: &str) {
        let ns = &self.cfg.namespace;
        self.tell(
            lease,
            format!("Job {name} created in namespace {ns} (its log: kubectl -n {ns} logs job/{name})"),
        )
        .await;
    }

    /// Tell task `id` where its pod stands, when that changed since it was last told: for a
    /// pod placed on a node, with its latest event. A pod whose volume has not mounted for a
    /// minute is stuck: its verdict is returned, to fail the attempt.
    pub(super) async fn tell_waiting(&mut self, id: TaskId, pods: &[Pod]) -> Option<Verdict> {
        let mut line = classify::waiting(pods)?;
        let mut stuck = None;
        if let Some(pod) = classify::placed(pods) {
            let events = crate::pod_events::of_pod(&self.events, pod).await;
            if let Some(event) = classify::latest_event(&events) {
                line = format!("{line}; last event: {event}");
            }
            stuck = classify::stuck_mounting(pod, &events);
        }
        let t = self.tracked.get_mut(&id)?;
        if t.said.as_deref() != Some(line.as_str()) {
            t.said = Some(line.clone());
            let lease = t.lease;
            tracing::info!(task = %id, job = %t.name, "{line}");
            self.tell(lease, line).await;
        }
        stuck
    }
}
