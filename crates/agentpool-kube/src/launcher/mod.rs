//! The launcher: a worker whose slots are Jobs. It registers like any worker, claims through
//! the worker protocol while a slot is free, turns each claimed attempt into a Job plus its
//! attempt Secret, heartbeats the leases of its Jobs (so an attempt whose pod is still being
//! scheduled or pulled keeps its lease), deletes the Job of a canceled or lost attempt, and
//! reports the attempts whose pod failed without reporting — with the pod's reason.
//!
//! One loop does everything in turn (claim with a short long-poll — or, with every slot taken,
//! a heartbeat the server may hold until a cancel — then reconcile, heartbeat), so the
//! launcher's view of its Jobs never races with itself.
//!
//! Until a Job's pod runs, the launcher tells the task where it stands ([`progress`]). A
//! launcher whose attempts keep failing on its own set-up stops claiming and, now and then,
//! runs a check Job instead of an attempt ([`check`]).

mod check;
mod progress;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::protocol::{FailRequest, HeartbeatRequest};
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{AgentInfo, ErrorClass, Labels, Lease, LeaseToken, TaskId, WorkerId, WorkerStatus};
use agentpool_runner::{ApiError, ClaimedWork, WorkerApi};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::classify::{self, JobState, Verdict, verdict};
use crate::job::{self, JobTemplate};

/// Everything a launcher needs.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    /// Stable id: a restarted launcher re-registers under it and adopts its Jobs by label, so
    /// it must also be a valid label value.
    pub id: WorkerId,
    pub hostname: String,
    pub labels: Labels,
    /// The agents the image has (`command` is always offered).
    pub agents: Vec<AgentInfo>,
    /// Jobs run at once.
    pub slots: u32,
    /// Take only tasks of these projects (empty: any; a token limited to projects limits the
    /// launcher to those anyway, the server filling them in).
    pub projects: Vec<String>,
    pub namespace: String,
    pub template: JobTemplate,
    pub heartbeat_interval: Duration,
    /// How often Jobs and pods are listed; also the claim long-poll's wait.
    pub reconcile_interval: Duration,
    /// After this many attempts in a row failed on the launcher's own set-up
    /// (`INFRA_CONFIG_ERROR`: an image that cannot be pulled, a missing Secret, an admission
    /// policy refusing the Job, a pod token the server refuses), the launcher reports itself
    /// unhealthy and claims nothing more, rather than fail the whole queue the same way.
    /// 0: never.
    pub unhealthy_after: u32,
    /// How long an unhealthy launcher waits before it runs a check Job (a pod from the same
    /// template running `run-task --check`); doubled after each check that fails, up to 30
    /// minutes. Once one succeeds it claims again. Zero: never; only a restart mends it.
    pub recheck_after: Duration,
}

impl LauncherConfig {
    pub fn new(id: WorkerId, namespace: impl Into<String>, template: JobTemplate, slots: u32) -> Self {
        Self {
            hostname: id.to_string(),
            id,
            labels: Labels::new(),
            agents: Vec::new(),
            slots: slots.max(1),
            projects: Vec::new(),
            namespace: namespace.into(),
            template,
            heartbeat_interval: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(5),
            unhealthy_after: 3,
            recheck_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error(
        "the launcher id {0} is not a valid Kubernetes label value (at most 63 characters, alphanumeric at both ends)"
    )]
    BadId(WorkerId),
    #[error("registration refused: {0}")]
    Register(ApiError),
    #[error("cannot list the launcher's Jobs: {0}")]
    Kube(#[from] kube::Error),
    /// The server stopped accepting the launcher's token while it ran (revoked: 401, or a
    /// 403): it claims nothing more. Its Jobs are left as they are, as on any stop.
    #[error("the server no longer accepts this launcher's token ({0}); its Jobs keep running")]
    Refused(String),
}

/// What a launcher did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LauncherSummary {
    pub created: u64,
    /// Jobs found at start (or on a create refused as existing) and taken over.
    pub adopted: u64,
    /// Attempts the launcher failed itself (pod failure, creation refused, cancel).
    pub failed: u64,
    /// Why the launcher stopped claiming: too many attempts in a row failed on its set-up.
    pub unhealthy: Option<String>,
    /// How many times a check Job found the set-up working again and claiming resumed.
    pub recovered: u64,
}

struct Tracked {
    lease: Lease,
    name: String,
    /// A cancel or a lost lease made us delete the Job; waiting for it to go.
    deleting: Option<ErrorClass>,
    /// When a heartbeat first answered that the lease is no longer held. The pod may simply
    /// have reported its outcome and be exiting (the server cannot tell that apart from a
    /// lease taken over), so the Job is deleted only if it is still running a reconcile
    /// interval later: a finished Job keeps its pod and logs until its TTL.
    lost_at: Option<tokio::time::Instant>,
    /// Where its pod stood when the task was last told ([`progress`]).
    said: Option<String>,
}

impl Tracked {
    /// The Job `name` of the attempt under `lease`, just created or adopted: running as far as
    /// the launcher knows.
    fn new(lease: Lease, name: String) -> Self {
        Tracked {
            lease,
            name,
            deleting: None,
            lost_at: None,
            said: None,
        }
    }
}

struct Launcher {
    cfg: LauncherConfig,
    api: Arc<dyn WorkerApi>,
    jobs: Api<Job>,
    pods: Api<Pod>,
    events: Api<Event>,
    secrets: Api<Secret>,
    tracked: HashMap<TaskId, Tracked>,
    summary: LauncherSummary,
    /// Why the server refused the launcher's token, once it has: the loop ends.
    refused: Option<String>,
    /// Attempts in a row that failed on the launcher's set-up (reset by a Job that succeeds).
    config_failures: u32,
    /// While unhealthy: the check Job running, or when the next one starts.
    checking: check::Checking,
}

/// Run the launcher until `shutdown` fires. It does not deregister: its Jobs keep running and
/// heartbeating under its id, and the next launcher with the same id adopts them.
pub async fn run_launcher(
    cfg: LauncherConfig,
    api: Arc<dyn WorkerApi>,
    kube: Client,
    shutdown: CancellationToken,
) -> Result<LauncherSummary, LauncherError> {
    if !job::valid_launcher_id(&cfg.id) {
        return Err(LauncherError::BadId(cfg.id));
    }
    let mut agents = vec![AgentInfo::unversioned(agentpool_core::spec::COMMAND_AGENT)];
    agents.extend(
        cfg.agents
            .iter()
            .filter(|a| a.name != agentpool_core::spec::COMMAND_AGENT)
            .cloned(),
    );
    let reg = WorkerRegistration {
        id: Some(cfg.id.clone()),
        hostname: cfg.hostname.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        agents,
        labels: cfg.labels.clone(),
        slots: cfg.slots,
        projects: cfg.projects.clone(),
        fresh_start: false,
    };
    let mut l = Launcher {
        jobs: Api::namespaced(kube.clone(), &cfg.namespace),
        pods: Api::namespaced(kube.clone(), &cfg.namespace),
        events: Api::namespaced(kube.clone(), &cfg.namespace),
        secrets: Api::namespaced(kube, &cfg.namespace),
        cfg,
        api,
        tracked: HashMap::new(),
        summary: LauncherSummary::default(),
        refused: None,
        config_failures: 0,
        checking: check::Checking::default(),
    };
    loop {
        match l.api.register(reg.clone()).await {
            Ok(_) => break,
            Err(e) if e.is_transient() => {
                tracing::warn!("cannot register yet: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(l.cfg.reconcile_interval) => {}
                    _ = shutdown.cancelled() => return Ok(l.summary),
                }
            }
            Err(e) => return Err(LauncherError::Register(e)),
        }
    }
    l.adopt().await?;
    tracing::info!(launcher = %l.cfg.id, adopted = l.summary.adopted, "launcher registered");
    let mut next_beat = tokio::time::Instant::now();
    while !shutdown.is_cancelled() {
        let free = l.cfg.slots.saturating_sub(l.tracked.len() as u32);
        if free > 0 && l.summary.unhealthy.is_none() {
            // Not interrupted by shutdown: a claim the server has granted must become a Job (or
            // its lease would only expire, costing the task an attempt). The long poll is short.
            let claimed = l.api.claim(&l.cfg.id, free, l.cfg.reconcile_interval).await;
            match claimed {
                Ok(works) => {
                    for w in works {
                        l.launch(w).await;
                    }
                }
                Err(ApiError::NotFound(_)) => {
                    let _ = l.api.register(reg.clone()).await;
                }
                Err(e) if agentpool_runner::api::is_refusal(&e) => l.refused = Some(e.to_string()),
                Err(e) => {
                    tracing::warn!("claim failed: {e}");
                    l.pause(&shutdown).await;
                }
            }
        } else {
            // Every slot is taken (or the launcher claims no more): rather than sleep, keep a
            // heartbeat waiting on the server, so a cancel reaches a Job whose pod has not
            // started (image pull, node scale-up) at once instead of at the next beat.
            let wait = l.cfg.reconcile_interval;
            tokio::select! {
                _ = l.heartbeat(&reg, wait) => {
                    next_beat = tokio::time::Instant::now() + l.cfg.heartbeat_interval;
                }
                _ = shutdown.cancelled() => {}
            }
        }
        if let Err(e) = l.reconcile().await {
            tracing::warn!("reconcile failed: {e}");
        }
        if l.summary.unhealthy.is_some() {
            l.check(&reg).await;
        }
        if tokio::time::Instant::now() >= next_beat {
            l.heartbeat(&reg, Duration::ZERO).await;
            next_beat = tokio::time::Instant::now() + l.cfg.heartbeat_interval;
        }
        if let Some(why) = l.refused.take() {
            tracing::error!(
                jobs = l.tracked.len(),
                "the server no longer accepts this launcher's token ({why}): stopping"
            );
            return Err(LauncherError::Refused(why));
        }
    }
    tracing::info!(summary = ?l.summary, "launcher stopped; its Jobs keep running");
    Ok(l.summary)
}

impl Launcher {
    async fn pause(&self, shutdown: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::sleep(self.cfg.reconcile_interval) => {}
            _ = shutdown.cancelled() => {}
        }
    }

    /// Take over the unfinished Jobs a previous life of this launcher created.
    async fn adopt(&mut self) -> Result<(), kube::Error> {
        let lp = ListParams::default().labels(&job::selector(&self.cfg.id));
        for j in self.jobs.list(&lp).await? {
            if check::is_check(&j) {
                // A previous life's check: this life starts healthy and has no use for it.
                if let Some(name) = &j.metadata.name {
                    self.delete(name).await;
                }
                continue;
            }
            if matches!(classify::judge(&j, &[]), JobState::Succeeded) {
                continue;
            }
            if let Some((lease, name)) = lease_of(&j) {
                self.summary.adopted += 1;
                self.tracked
                    .entry(lease.task_id)
                    .or_insert_with(|| Tracked::new(lease, name));
            }
        }
        Ok(())
    }

    /// Create the Job and Secret of one claimed attempt.
    async fn launch(&mut self, work: ClaimedWork) {
        // The launcher's beats hold the lease until the pod's own take over: often enough for
        // the server's lease length, as a worker's do.
        let interval = self.cfg.heartbeat_interval;
        if let Some(fit) = agentpool_runner::api::shorter_beats_for_lease(interval, &work.claimed.task) {
            self.cfg.heartbeat_interval = fit;
        }
        let lease = work.claimed.lease;
        let name = job::job_name(lease.task_id, lease.token);
        let spec = job::build_job(&self.cfg.template, &self.cfg.id, &work);
        let (created, fresh) = match self.jobs.create(&PostParams::default(), &spec).await {
            Ok(j) => {
                self.summary.created += 1;
                (j, true)
            }
            // Another life of this launcher created it: the attempt has its Job; adopt it.
            Err(kube::Error::Api(e)) if e.code == 409 => match self.jobs.get(&name).await {
                Ok(j) => {
                    self.summary.adopted += 1;
                    (j, false)
                }
                Err(e) => {
                    tracing::warn!(job = %name, "existing Job cannot be read: {e}");
                    self.track(lease, name);
                    return;
                }
            },
            Err(e) => {
                let v = classify::creation_refused(&e);
                tracing::warn!(job = %name, "{}", v.message);
                self.fail(lease, v).await;
                return;
            }
        };
        if fresh {
            // Said before the Secret exists: the pod cannot start without it, so this line
            // comes before anything the pod's `run-task` reports.
            self.tell_created(lease, &name).await;
        }
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let secret = job::build_secret(&self.cfg.id, &work, &uid);
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                let v = Verdict {
                    message: format!("the attempt Secret {name} could not be created: {e}"),
                    ..classify::creation_refused(&e)
                };
                self.fail(lease, v).await;
                self.delete(&name).await;
                return;
            }
        }
        tracing::info!(job = %name, task = %lease.task_id, "Job created");
        self.track(lease, name);
    }

    fn track(&mut self, lease: Lease, name: String) {
        self.tracked.insert(lease.task_id, Tracked::new(lease, name));
    }

    async fn reconcile(&mut self) -> Result<(), kube::Error> {
        if self.tracked.is_empty() {
            return Ok(());
        }
        let lp = ListParams::default().labels(&job::selector(&self.cfg.id));
        let jobs: HashMap<String, Job> = self
            .jobs
            .list(&lp)
            .await?
            .into_iter()
            .filter_map(|j| Some((j.metadata.name.clone()?, j)))
            .collect();
        let pods = self.pods.list(&lp).await?.items;
        let ids: Vec<TaskId> = self.tracked.keys().copied().collect();
        for id in ids {
            let Some(t) = self.tracked.get(&id) else { continue };
            let (lease, name, deleting, lost_at) = (t.lease, t.name.clone(), t.deleting, t.lost_at);
            let Some(j) = jobs.get(&name) else {
                self.tracked.remove(&id);
                match deleting {
                    // Canceled: the pod is gone; if run-task reported first this is refused.
                    Some(ErrorClass::Canceled) => {
                        self.fail(
                            lease,
                            verdict(ErrorClass::Canceled, "canceled; the Job was deleted"),
                        )
                        .await
                    }
                    Some(_) => {}
                    None => {
                        self.fail(
                            lease,
                            verdict(
                                ErrorClass::InfraError,
                                format!("the Job {name} was deleted before the attempt reported"),
                            ),
                        )
                        .await
                    }
                }
                continue;
            };
            if deleting.is_some() || j.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let own: Vec<Pod> = pods
                .iter()
                .filter(|p| label(&p.metadata, job::LABEL_TASK) == Some(id.0.to_string()))
                .filter(|p| label(&p.metadata, "job-name").is_none_or(|n| n == name))
                .cloned()
                .collect();
            let state = match classify::judge(j, &own) {
                // A pod that has not started says where it stands; one whose volume cannot be
                // mounted fails as one whose image cannot be pulled does.
                JobState::Active => match self.tell_waiting(id, &own).await {
                    Some(stuck) => JobState::Failed(stuck),
                    None => JobState::Active,
                },
                judged => judged,
            };
            match state {
                JobState::Active => {
                    if lost_at.is_some_and(|at| at.elapsed() >= self.cfg.reconcile_interval) {
                        // Still running long after its lease went: not ours any more. Stop
                        // the pod, report nothing.
                        self.stop(id, ErrorClass::LeaseExpired).await;
                    }
                }
                JobState::Succeeded => {
                    self.tracked.remove(&id);
                    self.config_failures = 0;
                }
                JobState::Failed(v) => {
                    tracing::warn!(job = %name, "{}", v.message);
                    self.tracked.remove(&id);
                    // Deleted before the task may run again elsewhere: a pod waiting on its
                    // image, once marked for deletion, is not started if the pull then works.
                    self.delete(&name).await;
                    self.fail(lease, v).await;
                }
            }
        }
        Ok(())
    }

    /// Extend the leases of the tracked Jobs and act on the reply (cancel, lost). With a
    /// `wait`, the server may hold a quiet reply that long, answering as soon as one of the
    /// tasks is canceled.
    async fn heartbeat(&mut self, reg: &WorkerRegistration, wait: Duration) {
        let leases: Vec<Lease> = self.tracked.values().map(|t| t.lease).collect();
        let status = if self.summary.unhealthy.is_some() {
            WorkerStatus::Unhealthy
        } else if leases.is_empty() {
            WorkerStatus::Idle
        } else {
            WorkerStatus::Busy
        };
        let req = HeartbeatRequest {
            leases,
            status: Some(status),
            status_message: self
                .summary
                .unhealthy
                .as_deref()
                .map(|m| agentpool_core::render::clip(m, agentpool_core::protocol::MAX_STATUS_MESSAGE)),
            cache: None,
        };
        let reply = agentpool_runner::api::heartbeat(&*self.api, &self.cfg.id, req, None, wait).await;
        match reply {
            Ok(reply) => {
                for id in reply.cancel {
                    self.stop(id, ErrorClass::Canceled).await;
                }
                let now = tokio::time::Instant::now();
                for id in reply.lost {
                    if let Some(t) = self.tracked.get_mut(&id) {
                        t.lost_at.get_or_insert(now);
                    }
                }
            }
            Err(ApiError::NotFound(_)) => {
                let _ = self.api.register(reg.clone()).await;
            }
            Err(e) if agentpool_runner::api::is_refusal(&e) => self.refused = Some(e.to_string()),
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }

    /// Count an attempt that failed on the launcher's set-up; at the limit, stop claiming.
    fn set_up_failed(&mut self, why: &str) {
        self.config_failures += 1;
        let limit = self.cfg.unhealthy_after;
        if limit == 0 || self.config_failures < limit || self.summary.unhealthy.is_some() {
            return;
        }
        let then = if self.cfg.recheck_after.is_zero() {
            "then restart the launcher".to_string()
        } else {
            format!(
                "a check Job runs in {}s and claiming resumes once one succeeds",
                self.cfg.recheck_after.as_secs()
            )
        };
        let said = format!(
            "{limit} attempts in a row failed on this launcher's set-up (the last: {why}); \
             claiming stopped: fix the Job template, its Secret or the cluster's policy; {then}"
        );
        tracing::error!(launcher = %self.cfg.id, "{said}");
        self.summary.unhealthy = Some(said);
        self.checking = check::Checking::after(self.cfg.recheck_after);
    }

    /// Delete the Job of `id` (its pod gets SIGTERM, then SIGKILL after the grace period).
    async fn stop(&mut self, id: TaskId, why: ErrorClass) {
        let Some(t) = self.tracked.get_mut(&id) else {
            return;
        };
        if t.deleting.is_some() {
            return;
        }
        t.deleting = Some(why);
        let name = t.name.clone();
        tracing::info!(job = %name, reason = %why, "deleting Job");
        self.delete(&name).await;
    }

    async fn delete(&self, name: &str) {
        match self.jobs.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(job = %name, "delete failed: {e}"),
        }
    }

    async fn fail(&mut self, lease: Lease, v: Verdict) {
        if v.set_up {
            self.set_up_failed(&v.message);
        }
        let req = FailRequest {
            lease_token: lease.token,
            class: v.class,
            message: v.message,
            retry_after_secs: None,
            result: None,
        };
        for _ in 0..5 {
            match self.api.fail(&self.cfg.id, lease.task_id, req.clone()).await {
                Ok(_) => {
                    self.summary.failed += 1;
                    return;
                }
                // run-task reported first, or the lease moved on: its word stands.
                Err(ApiError::StaleLease(_)) | Err(ApiError::NotFound(_)) => return,
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => {
                    tracing::warn!(task = %lease.task_id, "fail not accepted: {e}");
                    return;
                }
            }
        }
    }
}

fn label(meta: &kube::api::ObjectMeta, key: &str) -> Option<String> {
    meta.labels.as_ref()?.get(key).cloned()
}

/// The lease an adopted Job runs under, from its labels and annotations.
fn lease_of(j: &Job) -> Option<(Lease, String)> {
    let name = j.metadata.name.clone()?;
    let task_id: TaskId = label(&j.metadata, job::LABEL_TASK)?.parse().ok()?;
    let token: i64 = j
        .metadata
        .annotations
        .as_ref()?
        .get(job::ANNOTATION_LEASE)?
        .parse()
        .ok()?;
    Some((
        Lease {
            task_id,
            token: LeaseToken(token),
        },
        name,
    ))
}
