//! Job and pod states, in the shapes Kubernetes reports them, to attempt outcomes.

use agentpool_core::ErrorClass;
use agentpool_kube::classify::{
    JobState, creation_refused, judge, latest_event, placed, stuck_mounting, waiting,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};

use crate::fixture;

fn failed(job: &str, pods: &[&str]) -> (ErrorClass, String) {
    let pods: Vec<Pod> = pods.iter().map(|p| fixture(p)).collect();
    match judge(&fixture::<Job>(job), &pods) {
        JobState::Failed(v) => (v.class, v.message),
        other => panic!("{job} {pods:?}: expected a failure, got {other:?}"),
    }
}

#[test]
fn running_and_completed_jobs_need_nothing_reported() {
    assert_eq!(judge(&fixture("job-active.json"), &[]), JobState::Active);
    assert_eq!(judge(&fixture("job-complete.json"), &[]), JobState::Succeeded);
}

#[test]
fn pods_that_cannot_start_fail_the_attempt_without_retry() {
    let (class, msg) = failed("job-active.json", &["pod-create-container-config-error.json"]);
    assert_eq!(class, ErrorClass::InfraConfigError);
    assert!(msg.contains("CreateContainerConfigError"), "{msg}");
    assert!(!class.is_retryable());
    let (_, msg) = failed("job-active.json", &["pod-create-container-config-error.json"]);
    assert!(
        msg.contains("secret \"agentpool-worker-token\" not found"),
        "{msg}"
    );
}

/// An image that cannot be pulled may be a registry's passing failure: the attempt is handed
/// back without using one of the task's (a bounded number of times), and it still counts as
/// the launcher's set-up failing.
#[test]
fn an_image_that_cannot_be_pulled_hands_the_attempt_back() {
    for (pod, reason) in [
        ("pod-image-pull-backoff.json", "ImagePullBackOff"),
        ("pod-err-image-pull.json", "ErrImagePull"),
    ] {
        let pods = [fixture::<Pod>(pod)];
        let JobState::Failed(v) = judge(&fixture::<Job>("job-active.json"), &pods) else {
            panic!("{pod}: expected a failure");
        };
        assert_eq!((v.class, v.set_up), (ErrorClass::InfraError, true), "{pod}");
        assert!(v.message.contains(reason), "{}", v.message);
        assert!(agentpool_core::task::releases_free(v.class, 0));
    }
}

#[test]
fn an_oom_killed_pod_is_a_configuration_failure() {
    let (class, msg) = failed("job-backoff-limit-exceeded.json", &["pod-oomkilled.json"]);
    assert_eq!(class, ErrorClass::InfraConfigError);
    assert!(msg.contains("OOMKilled") && msg.contains("137"), "{msg}");
}

#[test]
fn eviction_and_node_loss_are_retried() {
    let (class, msg) = failed("job-backoff-limit-exceeded.json", &["pod-evicted.json"]);
    assert_eq!(class, ErrorClass::InfraError);
    assert!(
        msg.contains("Evicted") && msg.contains("ephemeral-storage"),
        "{msg}"
    );
    // An evicted pod fails the attempt even before the Job controller marks the Job.
    assert_eq!(
        failed("job-active.json", &["pod-evicted.json"]).0,
        ErrorClass::InfraError
    );

    let (class, msg) = failed("job-backoff-limit-exceeded.json", &["pod-node-lost.json"]);
    assert_eq!(class, ErrorClass::InfraError);
    assert!(
        msg.contains("DeletionByPodGC") && msg.contains("node no longer exists"),
        "{msg}"
    );
    // Pod already garbage-collected: the Job's condition is all there is.
    let (class, msg) = failed("job-backoff-limit-exceeded.json", &[]);
    assert_eq!(class, ErrorClass::InfraError);
    assert!(
        msg.contains("BackoffLimitExceeded") && msg.contains("node was lost"),
        "{msg}"
    );
    assert!(class.is_retryable());
}

/// A `run-task` container whose token the server refused (exit code 5): the Job's set-up is
/// wrong, not the attempt — `INFRA_CONFIG_ERROR`, quoting the last line of its termination
/// message (the tail of its log, as `FallbackToLogsOnError` keeps it).
#[test]
fn a_refused_pod_token_is_a_set_up_error_reported_with_its_last_words() {
    let (class, msg) = failed(
        "job-backoff-limit-exceeded.json",
        &["pod-error-with-message.json"],
    );
    assert_eq!(class, ErrorClass::InfraConfigError);
    assert!(
        msg.ends_with(
            "the server refused the pod's worker token (the Secret the Job template names): \
             agentpool: task 0190c3d2-7e4b-7a11-9c1e-2f5d3b8a6c01 attempt 1: the server no longer \
             accepts this pod's token (unknown or revoked token)"
        ),
        "{msg}"
    );
}

/// Any other container that exited with an error without reporting: `INFRA_ERROR`, with its
/// exit code and last words.
#[test]
fn a_failed_container_is_reported_with_its_exit_code_and_last_words() {
    let mut pod: serde_json::Value = fixture("pod-error-with-message.json");
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = 4.into();
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] =
        "agentpool: cannot reach the server at https://agentpool:7070\n".into();
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let job: Job = fixture("job-backoff-limit-exceeded.json");
    let JobState::Failed(v) = judge(&job, &[pod]) else {
        panic!("not failed")
    };
    assert_eq!(v.class, ErrorClass::InfraError);
    assert!(
        v.message.ends_with(
            "the container exited with code 4 (Error) without reporting: agentpool: cannot reach \
             the server at https://agentpool:7070"
        ),
        "{}",
        v.message
    );
}

#[test]
fn a_deadline_exceeded_job_is_a_timeout() {
    let (class, msg) = failed("job-deadline-exceeded.json", &["pod-node-lost.json"]);
    assert_eq!(class, ErrorClass::Timeout);
    assert!(msg.contains("DeadlineExceeded"), "{msg}");
}

#[test]
fn refused_creations_are_classified_by_cause() {
    let quota = kube::Error::Api(fixture("status-quota.json"));
    let v = creation_refused(&quota);
    assert_eq!(v.class, ErrorClass::InfraError);
    assert!(
        v.message.contains("exceeded quota") && v.message.contains("403"),
        "{}",
        v.message
    );
    let admission = kube::Error::Api(fixture("status-admission.json"));
    let v = creation_refused(&admission);
    assert_eq!(v.class, ErrorClass::InfraConfigError);
    assert!(v.message.contains("admission webhook"), "{}", v.message);
}

/// A pod that has not started is described for the task's events: waiting to be scheduled
/// with the scheduler's words, or starting on its node. An unschedulable pod is not a failure
/// (a cluster autoscaler may add a node); a running or failed one is not described.
#[test]
fn a_pod_that_has_not_started_says_where_it_stands() {
    let pod = "agentpool-0190c3d2-7e4b-7a11-9c1e-2f5d3b8a6c01-a1-q8w4z";
    let unschedulable: Pod = fixture("pod-unschedulable.json");
    assert_eq!(
        judge(&fixture("job-active.json"), std::slice::from_ref(&unschedulable)),
        JobState::Active
    );
    assert_eq!(
        waiting(&[unschedulable]).unwrap(),
        format!(
            "pod {pod} is waiting to be scheduled: Unschedulable: 0/3 nodes are available: 1 \
             node(s) had untolerated taint {{node-role.kubernetes.io/control-plane: }}, 2 \
             Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful \
             for scheduling, 2 No preemption victims found for incoming pod."
        )
    );
    assert_eq!(
        waiting(&[fixture("pod-container-creating.json")]).unwrap(),
        format!("pod {pod} is starting on node pool-node-2 (ContainerCreating)")
    );
    for done in ["pod-oomkilled.json", "pod-evicted.json", "pod-crashloop.json"] {
        assert_eq!(waiting(&[fixture(done)]), None, "{done}");
    }
    assert_eq!(waiting(&[]), None);
}

/// A pod placed on a node but not started says what it waits for in its events: the latest,
/// with how often it happened; the scheduler's own are left to the pod's condition.
#[test]
fn a_placed_pod_is_described_by_its_latest_event() {
    let pod = "agentpool-0190c3d2-7e4b-7a11-9c1e-2f5d3b8a6c01-a1-q8w4z";
    assert_eq!(placed(&[fixture("pod-container-creating.json")]), Some(pod));
    assert_eq!(placed(&[fixture("pod-unschedulable.json")]), None);
    assert_eq!(placed(&[fixture("pod-oomkilled.json")]), None);

    let events: Vec<Event> = [
        "event-pulling.json",
        "event-failed-mount.json",
        "event-scheduled.json",
    ]
    .iter()
    .map(|f| fixture(f))
    .collect();
    assert_eq!(
        latest_event(&events).unwrap(),
        "FailedMount: MountVolume.SetUp failed for volume \"attempt\" : secret \
         \"agentpool-0190c3d2-7e4b-7a11-9c1e-2f5d3b8a6c01-a1\" not found (4 times)"
    );
    assert_eq!(
        latest_event(&events[..1]).unwrap(),
        "Pulling: Pulling image \"registry.example/agentpool:0.1.0\""
    );
    assert_eq!(latest_event(&events[2..]), None);
}

/// A volume that keeps failing to mount for a minute (by its event's own first and last time)
/// is stuck, as an image that cannot be pulled is; a shorter run of failures, or one a later
/// event superseded (the volume mounted, the image is being pulled), is not.
#[test]
fn a_volume_failing_to_mount_for_a_minute_is_a_configuration_failure() {
    let pod = "agentpool-0190c3d2-7e4b-7a11-9c1e-2f5d3b8a6c01-a1-q8w4z";
    let mut mount: serde_json::Value = fixture("event-failed-mount.json");
    let event = |v: &serde_json::Value| serde_json::from_value::<Event>(v.clone()).unwrap();
    assert_eq!(stuck_mounting(pod, &[event(&mount)]), None, "32 s so far");

    mount["lastTimestamp"] = "2026-01-05T10:01:10Z".into();
    mount["count"] = 6.into();
    let v = stuck_mounting(pod, &[event(&mount)]).expect("stuck");
    assert_eq!(v.class, ErrorClass::InfraConfigError);
    assert_eq!(
        v.message,
        format!(
            "pod {pod}: FailedMount for 68 s: MountVolume.SetUp failed for volume \"attempt\" : \
             secret \"agentpool-0190c3d2-7e4b-7a11-9c1e-2f5d3b8a6c01-a1\" not found"
        )
    );
    let mut pulling: serde_json::Value = fixture("event-pulling.json");
    pulling["lastTimestamp"] = "2026-01-05T10:01:20Z".into();
    assert_eq!(stuck_mounting(pod, &[event(&mount), event(&pulling)]), None);
}
