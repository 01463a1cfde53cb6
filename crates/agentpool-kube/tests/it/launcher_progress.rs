//! What the launcher tells a task before its pod runs: the Job that runs it, and where its
//! pod stands with its latest event, each change once; and a pod whose volume will not mount.

use std::sync::Arc;

use agentpool_core::ErrorClass;
use agentpool_kube::fake::FakeApi;

use crate::launcher::{config, eventually, launched, pod_of, start};
use crate::queue::{Queue, work};

#[tokio::test]
async fn a_task_is_told_its_job_and_where_its_pod_stands_once_each() {
    let fake = FakeApi::new();
    let w = work(1);
    let id = w.claimed.lease.task_id;
    let queue = Arc::new(Queue::with(vec![w.clone()]));
    let l = start(config("launcher-a"), &queue, &fake);
    let name = launched(&fake, &w).await;
    eventually("the Job named", || !queue.lines(id).is_empty()).await;
    assert_eq!(
        queue.lines(id),
        vec![format!(
            "Job {name} created in namespace agentpool (its log: kubectl -n agentpool logs job/{name})"
        )]
    );

    // No node has room: the task says so, in the scheduler's words, and the attempt waits.
    let pod = pod_of(&fake, &name, "pod-unschedulable.json");
    let pod_name = pod.metadata.name.clone().unwrap();
    fake.put_pod(&pod);
    eventually("told it waits", || queue.lines(id).len() == 2).await;
    let said = &queue.lines(id)[1];
    assert!(
        said.starts_with(&format!(
            "pod {pod_name} is waiting to be scheduled: Unschedulable: 0/3 nodes are available"
        )) && said.contains("2 Insufficient cpu"),
        "{said}"
    );
    let lists = || {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.resource == "pods")
            .count()
    };
    let seen = lists();
    eventually("two more reconciles", || lists() >= seen + 2).await;
    assert_eq!(queue.lines(id).len(), 2, "an unchanged state is said once");
    assert!(queue.fails().is_empty(), "waiting for a node is not a failure");

    // Placed on a node: said once more.
    fake.put_pod(&pod_of(&fake, &name, "pod-container-creating.json"));
    eventually("told it starts", || queue.lines(id).len() == 3).await;
    assert_eq!(
        queue.lines(id)[2],
        format!("pod {pod_name} is starting on node pool-node-2 (ContainerCreating)")
    );

    // Its latest event, once it has one: here a volume that cannot be mounted, which the pod's
    // status does not show.
    fake.put("events", crate::fixture("event-failed-mount.json"));
    eventually("told its event", || queue.lines(id).len() == 4).await;
    assert_eq!(
        queue.lines(id)[3],
        format!(
            "pod {pod_name} is starting on node pool-node-2 (ContainerCreating); last event: \
             FailedMount: MountVolume.SetUp failed for volume \"attempt\" : secret \
             \"agentpool-0190c3d2-7e4b-7a11-9c1e-2f5d3b8a6c01-a1\" not found (4 times)"
        )
    );
    let listed = fake
        .requests()
        .into_iter()
        .filter(|r| r.resource == "events")
        .map(|r| r.query)
        .next_back()
        .unwrap();
    assert!(
        listed.contains("fieldSelector=involvedObject.kind%3DPod%2CinvolvedObject.name%3D"),
        "{listed}"
    );
    assert!(queue.fails().is_empty(), "32 s of failed mounts is not stuck yet");

    // Still failing a minute on: the pod will not start by itself. The attempt fails as a
    // set-up error, with the kubelet's words, and its Job is deleted.
    let mut mount: serde_json::Value = crate::fixture("event-failed-mount.json");
    mount["lastTimestamp"] = "2026-01-05T10:01:32Z".into();
    mount["count"] = 7.into();
    fake.put("events", mount);
    eventually("attempt failed", || !queue.fails().is_empty()).await;
    let (task, class, message) = queue.fails()[0].clone();
    assert_eq!((task, class), (id, ErrorClass::InfraConfigError));
    assert!(
        message.starts_with(&format!(
            "pod {pod_name}: FailedMount for 90 s: MountVolume.SetUp failed"
        )),
        "{message}"
    );
    crate::launcher::job_being_deleted(&fake, &name).await;
    // Stopping checks every request against the launcher's Role: listing events included.
    let summary = l.stop().await;
    assert_eq!((summary.created, summary.failed), (1, 1));
}
