//! A launcher whose set-up broke and was mended, end to end: its pods' token refused, it stops
//! claiming; its check Jobs run the real `agentpool run-task --check` in pods of its template
//! and fail the same way, saying so on the server; once the Secret holds a token the server
//! accepts, a check passes and the next task runs in a Job again — with no restart. And an
//! image that could not be pulled for a while: the task loses nothing and runs once it can.

use std::time::Duration;

use agentpool_core::{ErrorClass, TaskState, WorkerId, WorkerStatus};
use agentpool_kube::SecretKeyRef;

use super::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_whose_pod_token_is_mended_claims_again_after_a_check_job() {
    let Some(h) = Harness::start().await else { return };
    let revoked = h.new_worker_token("old-pods").await;
    h.client.revoke_token(&revoked.id).await.unwrap();
    super::put_secret(&h.fake, "pod-token", "token", &revoked.token);
    let mut cfg = h.launcher_config("launcher-a", 1);
    cfg.template.token_secret = SecretKeyRef {
        name: "pod-token".into(),
        key: "token".into(),
    };
    cfg.unhealthy_after = 1;
    cfg.recheck_after = Duration::from_millis(300);
    let launcher = h.launch(cfg);
    let id = WorkerId::parse("launcher-a").unwrap();

    let first = h.submit("true", "k8s/mend-1").await;
    let d = h.wait_for(first, TaskState::Failed, 60).await;
    assert_eq!(d.task.error_class, Some(ErrorClass::InfraConfigError));

    // A check Job's pod is refused the same way, and the server hears it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let why = loop {
        let w = h.client.get_worker(&id).await.unwrap();
        if let Some(m) = w.status_message.clone().filter(|m| m.contains("its check Job")) {
            assert_eq!(w.status, WorkerStatus::Unhealthy);
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no check reported: {w:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        why.starts_with("this launcher's set-up still fails: its check Job agentpool-check-")
            && why.contains("the server refused the pod's worker token")
            && why.contains("the server does not accept this pod's token"),
        "{why}"
    );

    // Mended: the Secret now holds a token the server accepts.
    let pods = h.new_worker_token("pods").await;
    super::put_secret(&h.fake, "pod-token", "token", &pods.token);
    let second = h.submit("true", "k8s/mend-2").await;
    h.wait_for(second, TaskState::Succeeded, 120).await;
    let w = h.client.get_worker(&id).await.unwrap();
    assert_ne!(w.status, WorkerStatus::Unhealthy);
    assert_eq!(w.status_message, None);

    let summary = launcher.stop().await;
    assert_eq!(summary.recovered, 1);
    let started = h.kubelet.started();
    let checks = started
        .iter()
        .filter(|n| n.starts_with("agentpool-check-"))
        .count();
    assert!(
        checks >= 2,
        "a failed check, then the one that passed: {started:?}"
    );
    // Two attempts: the one that failed, and the one that ran after the check.
    assert_eq!(started.len(), checks + 2, "{started:?}");
}

/// A registry that fails for a while costs the task nothing: the attempt whose image could not
/// be pulled is handed back without using one of the task's, the launcher (here after one such
/// failure) stops claiming until a check Job's pod starts, and the same task then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_image_could_not_be_pulled_runs_once_it_can() {
    let Some(h) = Harness::start().await else { return };
    h.kubelet.fail_pulls(1);
    let mut cfg = h.launcher_config("launcher-a", 1);
    cfg.unhealthy_after = 1;
    cfg.recheck_after = Duration::from_millis(300);
    let launcher = h.launch(cfg);

    let id = h.submit("true", "k8s/pull").await;
    // The only launcher takes the task back once the grace a task given back is left to other
    // workers has passed (agentpool_store::GIVEN_BACK_GRACE, 30 s).
    let d = h.wait_for(id, TaskState::Succeeded, 120).await;
    assert_eq!(d.task.attempts, 1, "the spoiled attempt used none: {d:#?}");
    let [spoiled, ran] = d.attempts_detail.as_slice() else {
        panic!("two attempts: {:#?}", d.attempts_detail)
    };
    assert_eq!(spoiled.error_class, Some(ErrorClass::InfraError));
    let why = spoiled.error_message.as_deref().unwrap_or_default();
    assert!(
        why.contains("ErrImagePull") && why.contains("registry unavailable"),
        "{why}"
    );
    assert_eq!(ran.error_class, None);

    let summary = launcher.stop().await;
    assert_eq!(
        summary.recovered, 1,
        "it turned unhealthy, and a check Job mended it"
    );
    assert_eq!(h.kubelet.pull_failed().len(), 1);
}
