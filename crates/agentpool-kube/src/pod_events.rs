//! A pod's events, read for what its status does not say (an image being pulled, a volume
//! that cannot be mounted): [`crate::classify`] judges them.

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;

/// The events of pod `name`. Best effort: a Role without the right to list events (one that
/// predates it) gives none, and the callers go without.
pub(crate) async fn of_pod(events: &Api<Event>, name: &str) -> Vec<Event> {
    let fields = format!("involvedObject.kind=Pod,involvedObject.name={name}");
    match events.list(&ListParams::default().fields(&fields)).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(pod = name, "cannot list the pod's events: {e}");
            Vec::new()
        }
    }
}
