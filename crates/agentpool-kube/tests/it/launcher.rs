//! The launcher against the in-memory API server and an in-memory queue: every request it
//! makes to Kubernetes, and every failure it reports, for each way an attempt's Job can end.

use std::sync::Arc;
use std::time::Duration;

use agentpool_core::{ErrorClass, WorkerId};
use agentpool_kube::fake::FakeApi;
use agentpool_kube::job::{build_job, job_name};
use agentpool_kube::launcher::LauncherSummary;
use agentpool_kube::{AttemptFile, JobTemplate, LauncherConfig, LauncherError, SecretKeyRef, run_launcher};
use agentpool_runner::ClaimedWork;
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use crate::fixture;
use crate::queue::{Queue, SECRET, work};

pub fn template() -> JobTemplate {
    JobTemplate::new(
        "registry.example/agentpool:0.1.0",
        "https://agentpool.agentpool.svc:7070",
        SecretKeyRef {
            name: "agentpool-worker-token".into(),
            key: "token".into(),
        },
    )
}

pub(crate) fn config(id: &str) -> LauncherConfig {
    let mut c = LauncherConfig::new(WorkerId::parse(id).unwrap(), "agentpool", template(), 2);
    c.reconcile_interval = Duration::from_millis(50);
    c.heartbeat_interval = Duration::from_millis(50);
    c
}

/// A one-slot launcher `launcher-a` that reports itself unhealthy after `unhealthy_after`
/// attempts in a row failed on its set-up, not yet started, on a fresh API server and a queue
/// holding `claims` claims of attempt 1: the API server, the claims, the queue and the
/// configuration (to adjust before [`start`]).
pub(crate) fn failing_setup(
    claims: usize,
    unhealthy_after: u32,
) -> (FakeApi, Vec<ClaimedWork>, Arc<Queue>, LauncherConfig) {
    let works: Vec<ClaimedWork> = (0..claims).map(|_| work(1)).collect();
    let queue = Arc::new(Queue::with(works.clone()));
    let mut cfg = config("launcher-a");
    cfg.slots = 1;
    cfg.unhealthy_after = unhealthy_after;
    (FakeApi::new(), works, queue, cfg)
}

pub(crate) struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Result<LauncherSummary, LauncherError>>,
    fake: FakeApi,
}

impl Running {
    /// Stop the launcher; everything it asked of the API server was allowed by its Role.
    pub(crate) async fn stop(self) -> LauncherSummary {
        self.stop.cancel();
        let summary = self.handle.await.unwrap().unwrap();
        crate::rbac::assert_allowed(&self.fake, crate::rbac::LAUNCHER);
        summary
    }
}

pub(crate) fn start(cfg: LauncherConfig, queue: &Arc<Queue>, fake: &FakeApi) -> Running {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(run_launcher(cfg, queue.clone(), fake.client(), stop.clone()));
    Running {
        stop,
        handle,
        fake: fake.clone(),
    }
}

pub(crate) async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn writes(fake: &FakeApi) -> Vec<String> {
    fake.writes()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.method,
                r.resource,
                r.name.clone().unwrap_or_default()
            )
        })
        .collect()
}

/// A pod of `job` as the Job controller makes it (template labels + job-name), with the
/// status of a fixture.
pub(crate) fn pod_of(fake: &FakeApi, job: &str, status_fixture: &str) -> Pod {
    let j = fake.job(job).unwrap();
    let mut pod: Pod = fixture(status_fixture);
    let mut labels = j.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    labels.insert("job-name".into(), job.into());
    labels.insert("batch.kubernetes.io/job-name".into(), job.into());
    pod.metadata.labels = Some(labels);
    pod
}

pub(crate) async fn launched(fake: &FakeApi, w: &ClaimedWork) -> String {
    let name = job_name(w.claimed.lease.task_id, w.claimed.lease.token);
    eventually("Job and Secret created", || fake.secret(&name).is_some()).await;
    name
}

/// A launcher started on a queue holding one claim, once that claim's Job and Secret exist:
/// the API server, the claim, the queue, the launcher, and the Job's (and Secret's) name.
type Launched = (FakeApi, ClaimedWork, Arc<Queue>, Running, String);

async fn launch_with(fake: FakeApi, w: ClaimedWork, cfg: LauncherConfig) -> Launched {
    let queue = Arc::new(Queue::with(vec![w.clone()]));
    let launcher = start(cfg, &queue, &fake);
    let name = launched(&fake, &w).await;
    (fake, w, queue, launcher, name)
}

/// [`launch_with`] a fresh API server and launcher `launcher-a`.
async fn launch(w: ClaimedWork) -> Launched {
    launch_with(FakeApi::new(), w, config("launcher-a")).await
}

pub(crate) async fn job_being_deleted(fake: &FakeApi, name: &str) {
    eventually("Job being deleted", || {
        fake.job(name)
            .is_some_and(|j| j.metadata.deletion_timestamp.is_some())
    })
    .await;
}

/// A launcher limited to projects registers so (its Jobs then get only their tasks), with its
/// labels, slots and the command agent always offered.
#[tokio::test]
async fn a_launcher_limited_to_projects_registers_with_them() {
    let fake = FakeApi::new();
    let queue = Arc::new(Queue::default());
    let mut cfg = config("web-launcher");
    cfg.projects = vec!["web".into(), "docs".into()];
    cfg.labels = [("pool".to_string(), "k8s".to_string())].into();
    let l = start(cfg, &queue, &fake);
    eventually("registered", || queue.registered.lock().unwrap().is_some()).await;
    let reg = queue.registered.lock().unwrap().clone().unwrap();
    assert_eq!(reg.projects, ["web", "docs"]);
    assert_eq!(reg.labels.get("pool").map(String::as_str), Some("k8s"));
    assert_eq!(reg.slots, 2);
    assert!(reg.agents.iter().any(|a| a.name == "command"));
    l.stop().await;
}

#[tokio::test]
async fn a_pod_stuck_pulling_its_image_fails_the_attempt_and_its_job_is_deleted() {
    let (fake, w, queue, l, name) = launch(work(1)).await;

    // What the pod receives: the attempt file, with the lease and the credentials.
    let secret = fake.secret(&name).unwrap();
    let file: AttemptFile = serde_json::from_slice(&secret.data.unwrap()["attempt.json"].0).unwrap();
    assert_eq!(file.worker_id.as_str(), "launcher-a");
    assert_eq!(file.work, w);
    let job_json = serde_json::to_string(&fake.job(&name).unwrap()).unwrap();
    assert!(!job_json.contains(SECRET), "no credential in the Job");

    fake.put_pod(&pod_of(&fake, &name, "pod-image-pull-backoff.json"));
    eventually("attempt failed", || !queue.fails().is_empty()).await;
    let (task, class, msg) = queue.fails()[0].clone();
    assert_eq!((task, class), (w.claimed.lease.task_id, ErrorClass::InfraError));
    assert!(
        msg.contains("ImagePullBackOff") && msg.contains("registry.example/agentpool:0.1.0"),
        "{msg}"
    );
    job_being_deleted(&fake, &name).await;
    let summary = l.stop().await;
    assert_eq!(
        writes(&fake),
        vec![
            format!("POST jobs "),
            format!("POST secrets "),
            format!("DELETE jobs {name}"),
        ]
    );
    let delete = fake.writes().pop().unwrap();
    assert_eq!(delete.body.unwrap()["propagationPolicy"], "Foreground");
    assert_eq!((summary.created, summary.failed), (1, 1));
    assert_eq!(queue.fails().len(), 1, "reported once");
}

pub(crate) fn complete() -> JobStatus {
    JobStatus {
        succeeded: Some(1),
        conditions: Some(vec![JobCondition {
            type_: "Complete".into(),
            status: "True".into(),
            ..JobCondition::default()
        }]),
        ..JobStatus::default()
    }
}

/// Attempts that fail on the launcher's own set-up (here an image that cannot be pulled) do
/// not drain the queue: a Job that succeeds in between resets the count, and after
/// `unhealthy_after` in a row the launcher reports itself unhealthy and claims nothing more.
#[tokio::test]
async fn a_launcher_whose_jobs_keep_failing_on_its_set_up_stops_claiming() {
    let (fake, works, queue, cfg) = failing_setup(5, 2);
    let l = start(cfg, &queue, &fake);
    let failed = |w: &ClaimedWork| {
        let id = w.claimed.lease.task_id;
        queue.fails().iter().any(|f| f.0 == id)
    };
    let told = || {
        let statuses = queue.statuses.lock().unwrap();
        statuses
            .iter()
            .find(|s| s.0 == Some(agentpool_core::WorkerStatus::Unhealthy))
            .map(|s| s.1.clone())
    };
    // Fails, succeeds, fails: never two in a row.
    let name = launched(&fake, &works[0]).await;
    fake.put_pod(&pod_of(&fake, &name, "pod-image-pull-backoff.json"));
    eventually("the first attempt failed", || failed(&works[0])).await;
    let name = launched(&fake, &works[1]).await;
    fake.set_job_status(&name, &complete());
    let name = launched(&fake, &works[2]).await;
    fake.put_pod(&pod_of(&fake, &name, "pod-image-pull-backoff.json"));
    eventually("the third attempt failed", || failed(&works[2])).await;
    // Two in a row: unhealthy, and the last two claims stay in the queue.
    let name = launched(&fake, &works[3]).await;
    fake.put_pod(&pod_of(&fake, &name, "pod-err-image-pull.json"));
    eventually("unhealthy reported", || told().is_some()).await;
    let summary = l.stop().await;
    assert!(failed(&works[3]));
    assert_eq!(queue.to_claim.lock().unwrap().len(), 1, "claimed no more");
    assert_eq!((summary.created, summary.failed), (4, 3));
    let why = summary.unhealthy.expect("unhealthy");
    assert!(
        why.starts_with("2 attempts in a row failed on this launcher's set-up (the last: pod ")
            && why.contains("ErrImagePull"),
        "{why}"
    );
    assert_eq!(told(), Some(Some(why)), "the server is told why");
}

#[tokio::test]
async fn job_creation_refused_by_quota_or_admission_is_classified() {
    for (status, class, needle) in [
        ("status-quota.json", ErrorClass::InfraError, "exceeded quota"),
        (
            "status-admission.json",
            ErrorClass::InfraConfigError,
            "admission webhook",
        ),
    ] {
        let fake = FakeApi::new();
        let s: serde_json::Value = fixture(status);
        fake.refuse_job_creation(
            s["code"].as_u64().unwrap() as u16,
            s["reason"].as_str().unwrap(),
            s["message"].as_str().unwrap(),
        );
        let w = work(1);
        let queue = Arc::new(Queue::with(vec![w.clone()]));
        let l = start(config("launcher-a"), &queue, &fake);
        eventually("attempt failed", || !queue.fails().is_empty()).await;
        let (_, got, msg) = queue.fails()[0].clone();
        assert_eq!(got, class, "{status}");
        assert!(msg.contains(needle), "{msg}");
        l.stop().await;
        // Nothing else was created: no Secret without its Job.
        assert_eq!(writes(&fake), vec!["POST jobs ".to_string()]);
    }
}

#[tokio::test]
async fn a_job_deleted_behind_the_launchers_back_is_retried() {
    let (fake, _, queue, l, name) = launch(work(2)).await;
    fake.remove_job(&name);
    assert!(fake.secret(&name).is_none(), "the owned Secret goes with its Job");
    eventually("attempt failed", || !queue.fails().is_empty()).await;
    let (_, class, msg) = queue.fails()[0].clone();
    assert_eq!(class, ErrorClass::InfraError);
    assert!(msg.contains(&name) && msg.contains("deleted"), "{msg}");
    l.stop().await;
}

#[tokio::test]
async fn cancel_deletes_the_job_in_the_foreground_then_reports_canceled() {
    let (fake, w, queue, l, name) = launch(work(1)).await;
    queue.cancel.lock().unwrap().push(w.claimed.lease.task_id);
    job_being_deleted(&fake, &name).await;
    // Until the pod is gone, nothing is reported (run-task may still report first).
    assert!(queue.fails().is_empty());
    fake.remove_job(&name);
    eventually("canceled reported", || !queue.fails().is_empty()).await;
    assert_eq!(queue.fails()[0].1, ErrorClass::Canceled);
    l.stop().await;
    let deletes: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(
        deletes[0].body.as_ref().unwrap()["propagationPolicy"],
        "Foreground"
    );
}

/// A launcher with every slot taken keeps a heartbeat waiting on the server: a cancel reaches
/// the Job at once, here with beats and reconciles an hour apart.
#[tokio::test]
async fn a_cancel_reaches_a_full_launcher_without_waiting_for_its_next_beat() {
    let mut cfg = config("launcher-a");
    cfg.slots = 1;
    cfg.heartbeat_interval = Duration::from_secs(3600);
    cfg.reconcile_interval = Duration::from_secs(3600);
    let (fake, w, queue, l, name) = launch_with(FakeApi::new(), work(1), cfg).await;
    // The first beat (at start) has gone out; the next would be an hour later.
    eventually("the first heartbeat", || {
        !queue.heartbeats.lock().unwrap().is_empty()
    })
    .await;
    queue.cancel.lock().unwrap().push(w.claimed.lease.task_id);
    queue.bell.notify_one();
    job_being_deleted(&fake, &name).await;
    l.stop().await;
}

#[tokio::test]
async fn a_lost_lease_stops_the_job_and_reports_nothing() {
    let (fake, w, queue, l, name) = launch(work(1)).await;
    queue.lost.lock().unwrap().push(w.claimed.lease.task_id);
    job_being_deleted(&fake, &name).await;
    fake.remove_job(&name);
    // Several reconcile rounds pass without a report.
    let beats = queue.heartbeats.lock().unwrap().len();
    eventually("more heartbeats", || {
        queue.heartbeats.lock().unwrap().len() > beats + 3
    })
    .await;
    assert!(queue.fails().is_empty());
    l.stop().await;
}

#[tokio::test]
async fn a_job_whose_pod_reported_and_is_exiting_is_not_deleted_when_its_lease_reads_as_lost() {
    // A reconcile interval far above the heartbeat's: the pod's exit lands inside it.
    let mut cfg = config("launcher-a");
    cfg.reconcile_interval = Duration::from_millis(1500);
    let (fake, w, queue, l, name) = launch_with(FakeApi::new(), work(1), cfg).await;
    // run-task completed the task: the server now answers the lease as no longer held...
    queue.lost.lock().unwrap().push(w.claimed.lease.task_id);
    eventually("a heartbeat answered lost", || {
        queue.lost.lock().unwrap().is_empty()
    })
    .await;
    // ...and the pod exits 0 a moment later.
    fake.set_job_status(&name, &complete());
    eventually("the finished Job untracked", || {
        queue
            .heartbeats
            .lock()
            .unwrap()
            .last()
            .is_some_and(|leases| leases.is_empty())
    })
    .await;
    assert!(
        !writes(&fake).iter().any(|w| w.starts_with("DELETE")),
        "a finished Job was deleted: {:?}",
        writes(&fake)
    );
    assert!(
        fake.job(&name)
            .is_some_and(|j| j.metadata.deletion_timestamp.is_none())
    );
    assert!(queue.fails().is_empty());
    l.stop().await;
}

#[tokio::test]
async fn a_restarted_launcher_adopts_its_jobs_and_an_existing_job_is_adopted_not_duplicated() {
    let (fake, w, queue, first, name) = launch(work(1)).await;
    assert_eq!(first.stop().await.created, 1);

    // The next life lists its Jobs by label and heartbeats their leases; it creates nothing.
    let second = start(config("launcher-a"), &queue, &fake);
    eventually("adopted lease heartbeated", || {
        queue
            .heartbeats
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&w.claimed.lease))
    })
    .await;
    let s = second.stop().await;
    assert_eq!((s.created, s.adopted), (0, 1));
    let posts = fake
        .writes()
        .iter()
        .filter(|r| r.method == "POST" && r.resource == "jobs")
        .count();
    assert_eq!(posts, 1);
    // Another launcher's Jobs are not its business.
    let other = start(config("launcher-b"), &Arc::new(Queue::default()), &fake);
    assert_eq!(other.stop().await.adopted, 0);

    // A claim whose Job already exists (created by a life that died before tracking it):
    // the create is refused as AlreadyExists and the Job is adopted.
    let fake = FakeApi::new();
    let w2 = work(1);
    let existing = build_job(&template(), &WorkerId::parse("launcher-a").unwrap(), &w2);
    fake.put("jobs", serde_json::to_value(&existing).unwrap());
    let (fake, _, q2, third, name2) = launch_with(fake, w2, config("launcher-a")).await;
    let s = third.stop().await;
    // Adopted once at start (found by label) and once when the create was refused.
    assert_eq!((s.created, s.adopted), (0, 2), "{name} and {name2}");
    assert_eq!(
        writes(&fake),
        vec!["POST jobs ".to_string(), "POST secrets ".to_string()]
    );
    assert!(q2.fails().is_empty());
}

/// A launcher whose token the server stops accepting ends with the refusal instead of
/// retrying it forever, and leaves its Jobs as they are (as on any stop).
#[tokio::test]
async fn a_launcher_whose_token_is_refused_stops_and_leaves_its_jobs() {
    let (fake, _w, queue, launcher, name) = launch(work(1)).await;
    queue.revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    let ended = tokio::time::timeout(Duration::from_secs(10), launcher.handle)
        .await
        .expect("the launcher stops")
        .unwrap();
    match ended {
        Err(LauncherError::Refused(why)) => assert_eq!(why, "unknown or revoked token"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let job = fake.job(&name).expect("the Job is left");
    assert!(
        job.metadata.deletion_timestamp.is_none(),
        "the Job is not deleted"
    );
}

#[tokio::test]
async fn a_launcher_id_that_is_not_a_label_value_is_refused() {
    let fake = FakeApi::new();
    let cfg = config("-launcher");
    let err = run_launcher(
        cfg,
        Arc::new(Queue::default()),
        fake.client(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("label value"), "{err}");
    assert!(fake.requests().is_empty());
}
