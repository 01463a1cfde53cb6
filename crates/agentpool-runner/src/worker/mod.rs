//! The worker loop (docs/architecture.md, "The worker protocol"): register with capabilities, heartbeat (extending leases, acting
//! on `cancel`, `lost` and `drain`), long-poll claims only while a slot is free, run up to N
//! tasks at once through the [`Pipeline`], report with retries, and on shutdown drain: stop
//! claiming, let running tasks finish within a grace period, cancel the rest, report,
//! deregister.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentpool_agents::{EventSink, Registry};
use agentpool_core::protocol::{HeartbeatReply, HeartbeatRequest};
use agentpool_core::spec::LOCAL_REPOS_LABEL;
use agentpool_core::worker::WorkerRegistration;
use agentpool_core::{ErrorClass, Labels, Lease, TaskId, WorkerId, WorkerStatus};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, ClaimedWork, WorkerApi};
use crate::events;
use crate::pipeline::{CancelCause, Pipeline, PipelineConfig, Report, TaskCancel};

mod backoff;
mod heartbeat;
mod identity;
mod recheck;
mod retired;
mod shared;
mod task;

use backoff::{Backoff, hostname};
use heartbeat::{heartbeat_loop, register};
use shared::Shared;
use task::run_task;

/// Everything a worker needs. Build with [`WorkerConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Fixed id. When `None`, the id kept in the work directory's state for this host (made
    /// there from the host name on first start), so a restarted worker re-registers as itself.
    pub id: Option<WorkerId>,
    pub hostname: String,
    pub labels: Labels,
    /// Only tasks of these projects (empty: any; a worker token limited to projects limits it
    /// to them anyway).
    pub projects: Vec<String>,
    /// Tasks run at once.
    pub concurrency: u32,
    /// Agent adapters available; `command` tasks are always supported.
    pub agents: Registry,
    pub heartbeat_interval: Duration,
    /// How long one claim long-poll waits for work.
    pub claim_wait: Duration,
    /// On shutdown, how long running tasks may take before they are stopped and handed back
    /// (`INFRA_ERROR`, which gives the attempt back).
    pub drain_grace: Duration,
    /// How long reports (complete/fail/events) are retried while the server is unreachable.
    pub report_retry_for: Duration,
    pub pipeline: PipelineConfig,
    /// After this many tasks in a row failed because git or an agent could not be started
    /// (`WORKER_ERROR`), the worker reports itself unhealthy and claims nothing more (likewise
    /// when the model's provider refused its own key); 0: never.
    pub unhealthy_after: u32,
    /// An unhealthy worker whose git or agents could not be started checks whether they start
    /// again this long after, then at doubling intervals up to 30 minutes, and claims again
    /// once they do; zero never checks (it stays unhealthy until restarted).
    pub recheck_after: Duration,
    /// How long registration waits for the agents' `--version`; those that answer later are
    /// registered again with theirs ([`crate::capabilities`]). `None`: versions are not asked
    /// (a pool that lives for one task, whose workers nobody lists).
    pub version_wait: Option<Duration>,
    /// Told the worker's id once it is registered, so that an embedding process (`agentpool
    /// up`) can announce itself ready only when its workers can take tasks.
    pub on_registered: Option<tokio::sync::mpsc::UnboundedSender<WorkerId>>,
    /// Where the worker reports starting / ready / draining / unhealthy (a local probe).
    pub health: Option<crate::HealthReporter>,
    /// After a drain the server asked for, stay registered (as draining, heartbeating) until
    /// `shutdown` instead of exiting: a supervisor that restarts exited processes (a
    /// StatefulSet pod) would otherwise bring the worker back idle, claiming again, before the
    /// scale-down that asked for the drain removes it.
    pub stay_drained: bool,
    /// Bounds on the mirror cache, pruned at start and every hour (no pruning when default).
    pub mirror_limits: crate::mirror_cache::CacheLimits,
    /// Canceled to end a drain at once, grace or not (a second Ctrl-C): running tasks are
    /// stopped and handed back as when the grace runs out.
    pub stop_now: CancellationToken,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("id", &self.id)
            .field("hostname", &self.hostname)
            .field("labels", &self.labels)
            .field("projects", &self.projects)
            .field("concurrency", &self.concurrency)
            .field("agents", &self.agents.names())
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("claim_wait", &self.claim_wait)
            .field("drain_grace", &self.drain_grace)
            .field("report_retry_for", &self.report_retry_for)
            .field("pipeline", &self.pipeline)
            .field("unhealthy_after", &self.unhealthy_after)
            .field("recheck_after", &self.recheck_after)
            .field("version_wait", &self.version_wait)
            .field("stay_drained", &self.stay_drained)
            .finish()
    }
}

impl WorkerConfig {
    /// Defaults: heartbeat every 10 s, 20 s long polls, 60 s drain grace, reports
    /// retried for 10 minutes; workspaces and state under `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>, concurrency: u32) -> Self {
        Self {
            id: None,
            hostname: hostname(),
            labels: Labels::new(),
            projects: Vec::new(),
            concurrency: concurrency.max(1),
            agents: Registry::new(),
            heartbeat_interval: Duration::from_secs(10),
            claim_wait: Duration::from_secs(20),
            drain_grace: Duration::from_secs(60),
            report_retry_for: Duration::from_secs(600),
            pipeline: PipelineConfig::new(dir),
            unhealthy_after: 3,
            recheck_after: Duration::from_secs(60),
            version_wait: Some(crate::capabilities::VERSION_WAIT),
            on_registered: None,
            health: None,
            stay_drained: false,
            mirror_limits: crate::mirror_cache::CacheLimits::default(),
            stop_now: CancellationToken::new(),
        }
    }
}

/// Why the worker could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("registration refused: {0}")]
    Register(ApiError),
    /// The server stopped accepting the worker's token (revoked, or its role changed) while
    /// it ran: it stopped its tasks, whose leases expire on the server so that they run again
    /// elsewhere.
    #[error(
        "the server no longer accepts this worker's token ({0}); its running tasks were stopped and run again elsewhere once their leases expire"
    )]
    Refused(String),
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub worker_id: Option<WorkerId>,
    pub succeeded: u64,
    /// Attempts that failed (whether the task is retried or not), hand-backs aside.
    pub failed: u64,
    pub canceled: u64,
    /// Attempts given back without using one of the task's attempts: stopped by a drain or a
    /// shutdown (`INFRA_ERROR`), or git or an agent could not be started (`WORKER_ERROR`).
    pub handed_back: u64,
    /// Reports refused because the lease had been taken (or abandoned after a `lost`).
    pub lost: u64,
    /// Running tasks abandoned because a heartbeat reply said their lease was lost.
    pub abandoned: u64,
    /// Reports that could not be delivered before giving up.
    pub unreported: u64,
    /// Whether the worker ended unhealthy (it could not start git or its agents, or its own
    /// key was refused for an agent it had no other to replace).
    pub unhealthy: bool,
}

/// The labels the worker registers with: its own, and [`LOCAL_REPOS_LABEL`] when it reads
/// local repositories, which the queue matches against the label such tasks carry. An
/// operator may also give that label by hand; without the setting such a task then fails,
/// saying which setting refused it.
fn worker_labels(config: &WorkerConfig) -> Labels {
    let mut labels = config.labels.clone();
    if config.pipeline.allow_file_repos {
        labels.insert(LOCAL_REPOS_LABEL.into(), "true".into());
    }
    labels
}

/// Run a worker until `shutdown` fires (or the server asks it to drain), then drain and
/// deregister. The CLI maps SIGTERM/SIGINT onto `shutdown`.
pub async fn run_worker(
    config: WorkerConfig,
    api: Arc<dyn WorkerApi>,
    shutdown: CancellationToken,
) -> Result<WorkerSummary, WorkerError> {
    let concurrency = config.concurrency.max(1);
    // Held until the worker stops: the lock keeps a kept id this process's alone.
    let identity = match &config.id {
        Some(id) => identity::Identity {
            id: id.clone(),
            _lock: None,
        },
        None => identity::stable(&config.pipeline.state_dir, &config.hostname),
    };
    let id = identity.id.clone();
    // Command tasks run in the pipeline itself, so every worker takes them.
    let probed = crate::capabilities::agent_infos(&config.agents, config.version_wait).await;
    let reg = WorkerRegistration {
        id: Some(id.clone()),
        hostname: config.hostname.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        agents: probed.infos.clone(),
        labels: worker_labels(&config),
        slots: concurrency,
        projects: config.projects.clone(),
        // It runs nothing yet: whatever a previous life held under this id is released.
        fresh_start: true,
    };
    // Commands a previous life of this worker left running when it died (SIGKILL, OOM).
    let orphans = crate::process::kill_orphans(&config.pipeline.running_records());
    if orphans > 0 {
        tracing::warn!(
            groups = orphans,
            "killed processes left by a previous run of this worker"
        );
    }
    let worker = register(&*api, reg.clone(), &shutdown).await?;
    let Some(worker) = worker else {
        return Ok(WorkerSummary::default());
    };
    tracing::info!(worker = %worker.id, slots = concurrency, "worker registered");
    if let Some(tx) = &config.on_registered {
        // The receiver may be gone (nobody waits any more); that is not the worker's problem.
        let _ = tx.send(worker.id.clone());
    }

    let shared = Arc::new(Shared {
        api: api.clone(),
        id: worker.id.clone(),
        pipeline: Pipeline::new(config.pipeline.clone(), config.agents.clone()),
        running: Mutex::new(HashMap::new()),
        summary: Mutex::new(WorkerSummary {
            worker_id: Some(worker.id.clone()),
            ..WorkerSummary::default()
        }),
        draining: AtomicBool::new(false),
        beat_now: Notify::new(),
        beat_ms: AtomicU64::new(u64::try_from(config.heartbeat_interval.as_millis()).unwrap_or(u64::MAX)),
        report_retry_for: config.report_retry_for,
        infra_failures: AtomicU32::new(0),
        key_refusals: Mutex::new(HashMap::new()),
        retired: Mutex::default(),
        // Registering again (the server forgot the worker, it recovered, or it retired an
        // agent) happens while tasks may run: keep them.
        registration: Mutex::new(WorkerRegistration {
            fresh_start: false,
            ..reg
        }),
        register_pending: AtomicBool::new(false),
        registering: tokio::sync::Mutex::new(()),
        unhealthy_after: config.unhealthy_after,
        rechecks: !config.recheck_after.is_zero(),
        unhealthy: tokio::sync::watch::Sender::new(None),
        refused: std::sync::OnceLock::new(),
        refused_now: CancellationToken::new(),
        health: config.health.clone(),
        cache: config
            .pipeline
            .workspace
            .mirror_dir
            .clone()
            .map(|d| crate::cache_stats::CacheMonitor::new(d, config.health.as_ref())),
    });
    shared.report_health(crate::WorkerHealth::Ready);
    // Fires when the server asks for a drain (no grace limit then: tasks finish).
    let server_drain = CancellationToken::new();
    let stop_heartbeat = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        shared.clone(),
        server_drain.clone(),
        stop_heartbeat.clone(),
    ));
    tokio::spawn(recheck::recheck_loop(
        shared.clone(),
        config.recheck_after,
        stop_heartbeat.clone(),
    ));
    if !probed.is_complete() {
        let (shared, stop) = (shared.clone(), stop_heartbeat.clone());
        tokio::spawn(async move {
            tokio::select! {
                infos = probed.finish() => shared.learn_versions(infos).await,
                _ = stop.cancelled() => {}
            }
        });
    }

    if let Some(dir) = config.pipeline.workspace.mirror_dir.clone()
        && config.mirror_limits != crate::mirror_cache::CacheLimits::default()
    {
        tokio::spawn(crate::mirror_cache::prune_loop(
            dir,
            config.mirror_limits,
            stop_heartbeat.clone(),
        ));
    }

    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = Backoff::new();
    let mut drain_reported = false;
    loop {
        if shared.is_unhealthy() {
            // Stay registered (so operators see why) but take nothing until it recovers.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = server_drain.cancelled() => break,
                _ = shared.refused_now.cancelled() => break,
                _ = shared.recovered() => continue,
            }
        }
        // Wait for a free slot first: a claim is made only when a task could start now.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
            _ = server_drain.cancelled() => break,
            _ = shared.refused_now.cancelled() => break,
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        // A slot frees when a task ends, which is when a worker turns unhealthy: checked
        // again here, so that no claim is sent (to be dropped below, perhaps after the server
        // granted it) by a worker that takes nothing now.
        if shared.is_unhealthy() {
            continue;
        }
        let claim = api.claim(&shared.id, permits.len() as u32, config.claim_wait);
        tokio::pin!(claim);
        let mut turned_unhealthy = false;
        let answered = tokio::select! {
            r = &mut claim => Some(r),
            _ = shutdown.cancelled() => None,
            _ = server_drain.cancelled() => None,
            _ = shared.refused_now.cancelled() => break,
            _ = shared.became_unhealthy() => {
                turned_unhealthy = true;
                None
            }
        };
        if turned_unhealthy {
            // The claim under way may have been granted already (the server ends the poll
            // once it hears the worker is unhealthy): what it hands over goes back to the
            // queue now, rather than stay leased to a worker that will not run it until the
            // lease expires.
            let answer = tokio::time::timeout(config.claim_wait + CLAIM_ANSWER_MARGIN, &mut claim);
            if let Ok(Ok(works)) = answer.await {
                let why = shared.status_message().unwrap_or_else(|| "unknown".into());
                let why = format!("this worker turned unhealthy before it started the task ({why})");
                for work in works {
                    hand_back_unstarted(&shared, work, &why).await;
                }
            }
            continue;
        }
        let stopping = answered.is_none();
        let claimed = match answered {
            Some(r) => r,
            None => {
                // The claim under way may have been granted on the server already: its answer
                // is awaited, so that a task it hands over runs (and drains with the rest)
                // instead of waiting out its lease. Told of the drain, the server ends the
                // poll at once.
                if !server_drain.is_cancelled() && !drain_reported {
                    drain_reported = true;
                    report_drain(&shared).await;
                }
                tokio::select! {
                    r = tokio::time::timeout(config.claim_wait + CLAIM_ANSWER_MARGIN, &mut claim) => {
                        r.unwrap_or(Ok(Vec::new()))
                    }
                    _ = config.stop_now.cancelled() => Ok(Vec::new()),
                }
            }
        };
        match claimed {
            Ok(works) => {
                backoff.reset();
                for mut work in works {
                    if let Err(why) = shared.fit_agent(&mut work) {
                        // Claimed before the server heard that this worker retired the agent.
                        hand_back_unstarted(&shared, work, &why).await;
                        continue;
                    }
                    shared.fit_beats_to(&work.claimed.task);
                    let cancel = shared.track(work.claimed.lease);
                    // More than asked for cannot happen with a correct server; such a task runs
                    // anyway (without a slot) rather than stay leased and idle.
                    tasks.spawn(run_task(shared.clone(), work, cancel, permits.pop()));
                }
                shared.beat_now.notify_one();
            }
            Err(ApiError::NotFound(_)) => {
                // The server forgot us (marked offline and removed): the heartbeat loop
                // re-registers; wait a moment.
                shared.beat_now.notify_one();
                backoff.sleep(&shutdown).await;
            }
            Err(e) if crate::api::is_refusal(&e) => {
                shared.refuse(&e);
                break;
            }
            Err(e) => {
                tracing::warn!("claim failed: {e}");
                backoff.sleep(&shutdown).await;
            }
        }
        // Reap finished task handles so the set does not grow.
        while tasks.try_join_next().is_some() {}
        if stopping {
            break;
        }
    }

    if let Some(why) = shared.refused.get() {
        // Nothing this worker reports is accepted any more, nor a drain or a deregistration:
        // stop the tasks at once, without reports; the server rescues them when their leases
        // expire, as it would those of a worker that died.
        tracing::error!(
            running = shared.lock_running().len(),
            "the server no longer accepts this worker's token ({why}): stopping"
        );
        shared.report_health(crate::WorkerHealth::Draining);
        shared.cancel_all(CancelCause::LeaseLost);
        drain_wait(&mut tasks).await;
        stop_heartbeat.cancel();
        let _ = heartbeat.await;
        return Err(WorkerError::Refused(why.clone()));
    }

    // ---- drain ----
    shared.draining.store(true, Ordering::SeqCst);
    shared.report_health(crate::WorkerHealth::Draining);
    shared.beat_now.notify_one();
    let all = concurrency as usize;
    let server_asked = server_drain.is_cancelled() && !shutdown.is_cancelled();
    tracing::info!(running = shared.lock_running().len(), "draining");
    if !server_asked && !drain_reported {
        report_drain(&shared).await;
    }
    let grace = async {
        if server_asked {
            shutdown.cancelled().await
        } else {
            tokio::time::sleep(config.drain_grace).await
        }
    };
    let finished_in_time = tokio::select! {
        _ = drain_wait(&mut tasks) => true,
        _ = grace => false,
        _ = config.stop_now.cancelled() => false,
    };
    if !finished_in_time {
        let why = if config.stop_now.is_cancelled() {
            "stopping now"
        } else if server_asked {
            "shutdown requested"
        } else {
            "drain grace period over"
        };
        tracing::warn!("{why}: stopping running tasks and handing them back");
        shared.cancel_all(CancelCause::Shutdown);
        drain_wait(&mut tasks).await;
    }
    let _ = slots.acquire_many(all as u32).await;
    if server_asked && config.stay_drained {
        tracing::info!("drained; staying registered until stopped");
        shutdown.cancelled().await;
    }
    stop_heartbeat.cancel();
    let _ = heartbeat.await;
    for _ in 0..3 {
        match api.deregister(&shared.id).await {
            Ok(()) => break,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => {
                tracing::warn!("deregister failed: {e}");
                break;
            }
        }
    }
    let summary = shared.summary.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // As fields, which a reader scans and a log pipeline queries (not a struct's Debug form).
    tracing::info!(
        worker = %shared.id,
        succeeded = summary.succeeded,
        failed = summary.failed,
        canceled = summary.canceled,
        handed_back = summary.handed_back,
        lost = summary.lost,
        abandoned = summary.abandoned,
        unreported = summary.unreported,
        unhealthy = summary.unhealthy,
        "worker stopped"
    );
    Ok(summary)
}

/// How much longer than its long poll a claim under way is awaited when the worker stops.
const CLAIM_ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Give a task this worker was handed but will not start (it turned unhealthy meanwhile)
/// back to the queue: a `WORKER_ERROR`, which uses none of the task's attempts.
async fn hand_back_unstarted(shared: &Shared, work: ClaimedWork, why: &str) {
    let lease = work.claimed.lease;
    tracing::warn!(task = %lease.task_id, "handing a task back unstarted: {why}");
    let report = crate::pipeline::Report::Fail {
        class: ErrorClass::WorkerError,
        message: why.to_owned(),
        retry_after: None,
        result: None,
        worker_fault: false,
    };
    crate::attempt::deliver(
        shared.api.as_ref(),
        &shared.id,
        lease,
        report,
        shared.report_retry_for,
    )
    .await;
}

/// Tell the server this worker drains, so that operators see it, it stops counting on this
/// worker and ends its waiting claim. Best effort: the drain proceeds whether or not the
/// server hears about it.
async fn report_drain(shared: &Shared) {
    if let Err(e) = shared.api.drain(&shared.id).await {
        tracing::warn!("could not report draining to the server: {e}");
    }
}

async fn drain_wait(tasks: &mut tokio::task::JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}
