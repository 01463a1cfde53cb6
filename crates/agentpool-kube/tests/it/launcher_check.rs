//! An unhealthy launcher's check Jobs against the in-memory API server: what a check Job is
//! (and is not), what a failing one says, and how a succeeding one puts the launcher back to
//! work.

use std::sync::atomic::Ordering;
use std::time::Duration;

use agentpool_core::{AgentInfo, WorkerStatus};
use agentpool_kube::fake::FakeApi;
use agentpool_kube::job::{COMPONENT_CHECK, LABEL_COMPONENT, LABEL_LAUNCHER};
use k8s_openapi::api::batch::v1::Job;

use crate::launcher::{complete, eventually, failing_setup, job_being_deleted, launched, pod_of, start};

fn checks(fake: &FakeApi) -> Vec<Job> {
    fake.jobs()
        .into_iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_COMPONENT))
                .is_some_and(|c| c == COMPONENT_CHECK)
        })
        .collect()
}

/// The name of a check Job other than those in `seen`, once the launcher has created one.
async fn next_check(fake: &FakeApi, seen: &[String]) -> String {
    let mut found = None;
    eventually("a check Job", || {
        found = checks(fake)
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .find(|n| !seen.contains(n));
        found.is_some()
    })
    .await;
    found.unwrap_or_default()
}

/// After its attempts failed on its set-up, the launcher claims nothing but runs a check Job:
/// a pod of the same template that runs `run-task --check` and carries no attempt. While the
/// checks fail it stays unhealthy and says the check's reason; once one succeeds it registers
/// again, says it is healthy and claims the task that waited.
#[tokio::test]
async fn an_unhealthy_launcher_claims_again_once_a_check_job_succeeds() {
    let (fake, works, queue, mut cfg) = failing_setup(2, 1);
    cfg.recheck_after = Duration::from_millis(100);
    cfg.agents = vec![AgentInfo::unversioned("claude-code")];
    let l = start(cfg, &queue, &fake);
    let said = || queue.statuses.lock().unwrap().last().cloned();

    let name = launched(&fake, &works[0]).await;
    fake.put_pod(&pod_of(&fake, &name, "pod-image-pull-backoff.json"));
    let first = next_check(&fake, &[]).await;
    assert_eq!(
        queue.to_claim.lock().unwrap().len(),
        1,
        "no claim while unhealthy"
    );
    let job = fake.job(&first).unwrap();
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_LAUNCHER], "launcher-a");
    let pod = job.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.args.clone().unwrap(),
        [
            "run-task",
            "--check",
            "--worker",
            "launcher-a",
            "--work-dir",
            "/work",
            "--agents",
            "claude-code"
        ]
    );
    assert_eq!(c.image.as_deref(), Some("registry.example/agentpool:0.1.0"));
    let vols: Vec<String> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(vols, ["work"], "no attempt Secret");
    assert!(fake.secret(&first).is_none());

    // It fails as the attempts did: the launcher stays unhealthy with the check's reason.
    fake.put_pod(&pod_of(&fake, &first, "pod-err-image-pull.json"));
    eventually("the check's reason reported", || {
        said().is_some_and(|(s, m)| {
            s == Some(WorkerStatus::Unhealthy)
                && m.is_some_and(|m| {
                    m.contains(&format!("its check Job {first}: pod ")) && m.contains("ErrImagePull")
                })
        })
    })
    .await;
    job_being_deleted(&fake, &first).await;
    assert_eq!(queue.registrations.load(Ordering::SeqCst), 1);

    // The next one succeeds: registered again, healthy, claiming.
    let second = next_check(&fake, &[first]).await;
    fake.set_job_status(&second, &complete());
    let name = launched(&fake, &works[1]).await;
    job_being_deleted(&fake, &second).await;
    fake.set_job_status(&name, &complete());
    eventually("healthy again", || {
        said().is_some_and(|(s, m)| s != Some(WorkerStatus::Unhealthy) && m.is_none())
    })
    .await;
    let summary = l.stop().await;
    assert_eq!(queue.registrations.load(Ordering::SeqCst), 2);
    assert_eq!((summary.recovered, summary.unhealthy), (1, None));
    assert_eq!(
        queue.fails().len(),
        1,
        "only the first attempt failed; no check is reported"
    );
}

/// With checks off, an unhealthy launcher runs none and says a restart is needed; a restarted
/// launcher removes a check Job an earlier life left behind.
#[tokio::test]
async fn without_checks_a_restart_is_needed_and_a_restart_removes_a_left_check() {
    let (fake, works, queue, mut cfg) = failing_setup(1, 1);
    cfg.recheck_after = Duration::ZERO;
    let l = start(cfg.clone(), &queue, &fake);
    let name = launched(&fake, &works[0]).await;
    fake.put_pod(&pod_of(&fake, &name, "pod-image-pull-backoff.json"));
    eventually("unhealthy", || {
        queue
            .statuses
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.0 == Some(WorkerStatus::Unhealthy))
    })
    .await;
    // A few more loops: still no check.
    let beats = queue.statuses.lock().unwrap().len();
    eventually("more beats", || queue.statuses.lock().unwrap().len() > beats + 3).await;
    assert!(checks(&fake).is_empty());
    let summary = l.stop().await;
    assert!(summary.unhealthy.unwrap().ends_with("then restart the launcher"));

    // A check Job left by a launcher that stopped while it ran.
    let left = agentpool_kube::job::build_check_job(&cfg.template, &cfg.id, &[], "agentpool-check-left");
    fake.put("jobs", serde_json::to_value(&left).unwrap());
    let l = start(cfg, &queue, &fake);
    job_being_deleted(&fake, "agentpool-check-left").await;
    l.stop().await;
}
