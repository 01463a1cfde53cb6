//! How an unhealthy launcher learns that its set-up works again without failing a task: it
//! runs a check Job, a pod from the same template whose `agentpool run-task --check` runs no
//! attempt. The pod starting at all shows what attempts kept failing on (the image pulls, the
//! Secrets it references exist, admission and scheduling let it run); the check itself shows
//! that git and the offered agents start in it and that the server accepts its token. Once a
//! check Job succeeds, the launcher registers again (the server keeps a worker unhealthy until
//! then) and claims. A check that fails says why in the launcher's status and the next one
//! waits twice as long, up to [`MAX_PAUSE`].

use std::time::Duration;

use agentpool_core::worker::WorkerRegistration;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};
use tokio::time::Instant;

use super::{Launcher, label};
use crate::classify::{self, JobState};
use crate::job;

/// The longest pause between two check Jobs.
pub const MAX_PAUSE: Duration = Duration::from_secs(30 * 60);

/// While unhealthy: the check Job running, or when the next one starts.
#[derive(Debug, Default)]
pub(super) struct Checking {
    job: Option<String>,
    next_at: Option<Instant>,
    /// The wait before the check after the next one fails.
    pause: Duration,
    /// Where the running check's pod stood when the launcher last said so.
    said: Option<String>,
}

impl Checking {
    /// The first check, `pause` from now.
    pub(super) fn after(pause: Duration) -> Self {
        Self {
            job: None,
            next_at: Some(Instant::now() + pause),
            pause: (pause * 2).min(MAX_PAUSE),
            said: None,
        }
    }
}

/// Whether `j` is one of the launchers' check Jobs, not an attempt.
pub(super) fn is_check(j: &Job) -> bool {
    label(&j.metadata, job::LABEL_COMPONENT).as_deref() == Some(job::COMPONENT_CHECK)
}

impl Launcher {
    /// One step of the checks, once a loop: start a check Job when it is time, or judge the
    /// one running.
    pub(super) async fn check(&mut self, reg: &WorkerRegistration) {
        if self.cfg.recheck_after.is_zero() {
            return;
        }
        let Some(name) = self.checking.job.clone() else {
            if self.checking.next_at.is_none_or(|at| Instant::now() >= at) {
                self.start_check().await;
            }
            return;
        };
        let found = match self.jobs.get_opt(&name).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(job = %name, "cannot read the check Job: {e}");
                return;
            }
        };
        let Some(j) = found else {
            self.check_failed(&name, "it was deleted before it ended".into());
            return;
        };
        let pods = match self
            .pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
        {
            Ok(p) => p.items,
            Err(e) => {
                tracing::warn!(job = %name, "cannot list the check Job's pods: {e}");
                return;
            }
        };
        match classify::judge(&j, &pods) {
            // A check waits like an attempt (a full cluster may make room): say where it
            // stands, once each time that changes, so a check that cannot be scheduled is seen.
            JobState::Active => {
                let now = classify::waiting(&pods);
                if now.is_some() && now != self.checking.said {
                    tracing::info!(job = %name, "the check Job's {}", now.as_deref().unwrap_or(""));
                    self.checking.said = now;
                }
            }
            JobState::Succeeded => {
                self.delete(&name).await;
                self.recover(&name, reg).await;
            }
            JobState::Failed(v) => {
                self.delete(&name).await;
                self.check_failed(&name, v.message);
            }
        }
    }

    async fn start_check(&mut self) {
        let name = job::check_job_name(&self.cfg.id, chrono::Utc::now());
        let agents: Vec<String> = self
            .cfg
            .agents
            .iter()
            .map(|a| a.name.clone())
            .filter(|n| n != agentpool_core::spec::COMMAND_AGENT)
            .collect();
        let spec = job::build_check_job(&self.cfg.template, &self.cfg.id, &agents, &name);
        match self.jobs.create(&PostParams::default(), &spec).await {
            Ok(_) => {
                tracing::info!(job = %name, "checking whether a pod of this launcher's template runs again");
                self.checking.job = Some(name);
            }
            Err(e) => {
                let why = classify::creation_refused(&e).message;
                self.check_failed(&name, why);
            }
        }
    }

    /// The set-up works again: claim again, under a fresh registration.
    async fn recover(&mut self, name: &str, reg: &WorkerRegistration) {
        if let Err(e) = self.api.register(reg.clone()).await {
            // Still unhealthy on the server: try the registration with the next check.
            tracing::warn!("the check Job {name} succeeded but the launcher could not register again: {e}");
            self.checking.job = None;
            self.checking.next_at = Some(Instant::now() + self.cfg.reconcile_interval);
            return;
        }
        self.summary.unhealthy = None;
        self.summary.recovered += 1;
        self.config_failures = 0;
        self.checking = Checking::default();
        tracing::info!(job = %name, launcher = %self.cfg.id, "the check Job succeeded: this launcher claims tasks again");
    }

    fn check_failed(&mut self, name: &str, why: String) {
        let pause = self.checking.pause.max(self.cfg.recheck_after);
        let said = format!(
            "this launcher's set-up still fails: its check Job {name}: {why}; claiming stays \
             stopped: fix the Job template, its Secret or the cluster's policy (next check in {}s)",
            pause.as_secs()
        );
        tracing::warn!(launcher = %self.cfg.id, "{said}");
        self.summary.unhealthy = Some(said);
        self.checking = Checking {
            job: None,
            next_at: Some(Instant::now() + pause),
            pause: (pause * 2).min(MAX_PAUSE),
            said: None,
        };
    }
}
