//! State the worker's loops share: the running tasks with their leases and cancel handles,
//! the summary, drain and health.

use super::*;

pub(super) struct Running {
    pub(super) lease: Lease,
    pub(super) cancel: TaskCancel,
    /// Set once the task's outcome is being reported. Its lease is still extended (a report
    /// may be retried for minutes), but a "lost" for it is the report's own doing, since the
    /// server ends the lease when it records the outcome.
    pub(super) reporting: bool,
    /// Set once a heartbeat said the lease is lost: every beat until the task ends says so
    /// again, and it is acted on once.
    pub(super) lost: bool,
}

/// Why a worker stopped claiming.
#[derive(Debug, Clone)]
pub(super) struct Unhealthy {
    pub(super) reason: String,
    /// Whether a check can tell that it is over (git and the agents start again); a refused
    /// key is over only with a new one, which takes a restart.
    pub(super) recheck: bool,
}

pub(super) struct Shared {
    pub(super) api: Arc<dyn WorkerApi>,
    pub(super) id: WorkerId,
    pub(super) pipeline: Pipeline,
    pub(super) running: Mutex<HashMap<TaskId, Running>>,
    pub(super) summary: Mutex<WorkerSummary>,
    pub(super) draining: AtomicBool,
    /// Wakes the heartbeat loop early (status change).
    pub(super) beat_now: Notify,
    /// Milliseconds between heartbeats: the configured interval, shortened when the server's
    /// leases turn out too short for it ([`Shared::fit_beats_to`]).
    pub(super) beat_ms: AtomicU64,
    pub(super) report_retry_for: Duration,
    /// Tasks in a row that failed with `WORKER_ERROR`.
    pub(super) infra_failures: AtomicU32,
    /// Per agent, its tasks in a row whose provider refused this worker's own key (a check
    /// confirmed it, see [`Shared::confirm_refused_key`]): one agent's key says nothing about
    /// another's, so their refusals do not add up.
    pub(super) key_refusals: Mutex<HashMap<String, u32>>,
    /// The agents it no longer runs (their keys were refused), with why (see `retired.rs`).
    pub(super) retired: Mutex<std::collections::BTreeMap<String, String>>,
    /// What it registers with when it registers again: without the retired agents.
    pub(super) registration: Mutex<WorkerRegistration>,
    /// Set while the server has not heard the latest registration.
    pub(super) register_pending: AtomicBool,
    /// Held while a registration is sent: one goes at a time, each with the registration as it
    /// is then, so the server never hears an older one (taken before an agent was retired)
    /// after a newer one.
    pub(super) registering: tokio::sync::Mutex<()>,
    pub(super) unhealthy_after: u32,
    /// Whether an unhealthy worker checks itself and claims again (`recheck_after` > 0).
    pub(super) rechecks: bool,
    /// Set while the worker is unhealthy: it claims nothing, and says why on every beat.
    pub(super) unhealthy: tokio::sync::watch::Sender<Option<Unhealthy>>,
    /// Why the server refused the worker's token, once it has (see [`Shared::refuse`]).
    pub(super) refused: std::sync::OnceLock<String>,
    /// Fires when `refused` is set: the worker stops.
    pub(super) refused_now: CancellationToken,
    pub(super) health: Option<crate::HealthReporter>,
    /// The mirror cache, reported on heartbeats; `None` without one.
    pub(super) cache: Option<crate::cache_stats::CacheMonitor>,
}

impl Shared {
    /// Start holding `lease`: the heartbeats name it from now on. Done before the task's own
    /// task is spawned, so the beat that a claim sets off already names it and a cancel for it
    /// rings that beat.
    pub(super) fn track(&self, lease: Lease) -> TaskCancel {
        let cancel = TaskCancel::new();
        self.lock_running().insert(
            lease.task_id,
            Running {
                lease,
                cancel: cancel.clone(),
                reporting: false,
                lost: false,
            },
        );
        cancel
    }

    /// The time between heartbeats now.
    pub(super) fn beat_interval(&self) -> Duration {
        Duration::from_millis(self.beat_ms.load(Ordering::Relaxed))
    }

    /// Beat often enough to hold the lease of `task`, claimed just now (see
    /// [`crate::api::beats_for_lease`]); says so once when the interval had to be shortened.
    pub(super) fn fit_beats_to(&self, task: &agentpool_core::Task) {
        if let Some(fit) = crate::api::shorter_beats_for_lease(self.beat_interval(), task) {
            self.beat_ms.store(
                u64::try_from(fit.as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            self.beat_now.notify_one();
        }
    }

    pub(super) fn leases(&self) -> Vec<Lease> {
        self.lock_running().values().map(|r| r.lease).collect()
    }

    pub(super) fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn cancel(&self, id: &TaskId, cause: CancelCause) {
        if let Some(r) = self.lock_running().get(id) {
            r.cancel.cancel(cause);
        }
    }

    /// The server refused this worker's token (`e`, a 401 or 403): the worker stops.
    pub(super) fn refuse(&self, e: &ApiError) {
        let _ = self.refused.set(e.to_string());
        self.refused_now.cancel();
    }

    pub(super) fn cancel_all(&self, cause: CancelCause) {
        for r in self.lock_running().values() {
            r.cancel.cancel(cause);
        }
    }

    pub(super) fn status(&self) -> WorkerStatus {
        if self.draining.load(Ordering::SeqCst) {
            WorkerStatus::Draining
        } else if self.is_unhealthy() {
            WorkerStatus::Unhealthy
        } else if self.lock_running().is_empty() {
            WorkerStatus::Idle
        } else {
            WorkerStatus::Busy
        }
    }

    /// What the heartbeats say besides the status: why the worker is unhealthy, else which
    /// agents it no longer runs.
    pub(super) fn status_message(&self) -> Option<String> {
        let unhealthy = self.unhealthy.borrow().as_ref().map(|u| u.reason.clone());
        unhealthy.or_else(|| self.retired_note())
    }

    pub(super) fn is_unhealthy(&self) -> bool {
        self.unhealthy.borrow().is_some()
    }

    /// Returns once the worker is unhealthy (at once if it is).
    pub(super) async fn became_unhealthy(&self) {
        let mut rx = self.unhealthy.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Returns once the worker is healthy again (at once if it is).
    pub(super) async fn recovered(&self) {
        let mut rx = self.unhealthy.subscribe();
        let _ = rx.wait_for(Option::is_none).await;
    }

    /// What made the worker unhealthy is over: it claims again, its streak starts over.
    pub(super) fn recover(&self) {
        self.infra_failures.store(0, Ordering::SeqCst);
        self.lock_refusals().clear();
        self.unhealthy.send_replace(None);
        self.count(|s| s.unhealthy = false);
        if let Some(r) = &self.health {
            r.recover();
        }
    }

    pub(super) fn report_health(&self, h: crate::WorkerHealth) {
        if let Some(r) = &self.health {
            r.set(h);
        }
    }

    /// Count a failure of the worker itself (or the end of a streak); after `unhealthy_after`
    /// in a row the worker turns unhealthy and stops claiming. Its own failures: git or an
    /// agent that cannot be started (`WORKER_ERROR`; it claims again once they start, see
    /// `recheck`), and an agent whose provider refused the key the worker supplied
    /// (`worker_fault`, counted per agent; until it is restarted) — a worker with a bad key
    /// would otherwise fail every task it claims, and claim them fast. A refused key retires
    /// its agent alone while the worker has others that run prompts: then this returns why,
    /// for [`Shared::retire`].
    #[must_use]
    pub(super) fn note_outcome(&self, report: &Report, agent: &str) -> Option<String> {
        match report {
            Report::Fail {
                class: ErrorClass::WorkerError,
                message,
                ..
            } => self.own_failure("git or an agent could not be started", message, true),
            Report::Fail {
                worker_fault: true,
                message,
                ..
            } => {
                if self.is_retired(agent) {
                    // A task that ran while the agent was being retired.
                    return None;
                }
                let n = {
                    let mut counts = self.lock_refusals();
                    let n = counts.entry(agent.to_owned()).or_default();
                    *n += 1;
                    *n
                };
                let what = format!("{agent}'s provider refused this worker's own key");
                if self.unhealthy_after != 0
                    && n >= self.unhealthy_after
                    && !self.is_unhealthy()
                    && self.can_retire(agent)
                {
                    return Some(format!("{what} {n} times in a row; the last: {message}"));
                }
                self.strike(&what, n, message, false);
            }
            Report::Fail {
                class: ErrorClass::Canceled,
                ..
            }
            | Report::Abandon(_) => {}
            Report::Complete(_) | Report::Fail { .. } => {
                self.infra_failures.store(0, Ordering::SeqCst);
                self.lock_refusals().remove(agent);
            }
        }
        None
    }

    fn lock_refusals(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.key_refusals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A task failed because the provider refused the key this worker supplied (`worker_fault`):
    /// before that counts against the worker, check that the provider refuses the key when
    /// nothing of the task's is involved ([`crate::own_key`]). The task chose its endpoint, its
    /// repository and what its agent did; any of them can answer 401 whatever the worker's key.
    /// Not refused then, the task still fails `AUTH_FAILED`, without a strike, and its message
    /// says where the refusal came from.
    pub(super) async fn confirm_refused_key(
        &self,
        report: Report,
        agent: &str,
        work: &ClaimedWork,
    ) -> Report {
        let Report::Fail {
            class,
            message,
            retry_after,
            result,
            worker_fault: true,
        } = report
        else {
            return report;
        };
        let task = work.claimed.lease.task_id;
        let model = work.claimed.task.spec.model.clone();
        let (worker_fault, message) = if self.unhealthy_after == 0 || self.is_unhealthy() {
            // Nothing a strike would change.
            (false, message)
        } else {
            match crate::own_key::check(&self.pipeline, agent, model, task).await {
                crate::own_key::OwnKey::Refused => (true, message),
                crate::own_key::OwnKey::NotRefused(why) => {
                    tracing::info!(
                        %task,
                        %agent,
                        check = %why,
                        "the task's agent was refused its key, but not when this worker checked \
                         it without the task's settings: not counted against the worker"
                    );
                    let message = format!(
                        "{message} (not this worker's fault: its own key is not refused without \
                         the task's settings, so the endpoint or settings the task chose refused it)"
                    );
                    (false, message)
                }
            }
        };
        Report::Fail {
            class,
            message,
            retry_after,
            result,
            worker_fault,
        }
    }
    /// A task that git or its agent could not start for: check at once (the recheck's own
    /// check, for git and that agent, a few milliseconds) whether this worker can start them
    /// at all. If it cannot, it turns unhealthy before the task is handed back, so that it
    /// does not claim the task again itself: one broken worker would otherwise spend all the
    /// hand-backs a task is allowed (three, shared with every worker) before a healthy one got
    /// it. A cause the check cannot see still takes `unhealthy_after` tasks in a row; with
    /// `unhealthy_after` 0 the worker never turns unhealthy, and does not check.
    pub(super) async fn confirm_own_failure(&self, report: &Report, agent: &str) {
        let Report::Fail {
            class: ErrorClass::WorkerError,
            message,
            ..
        } = report
        else {
            return;
        };
        if self.is_unhealthy() || self.unhealthy_after == 0 {
            return;
        }
        if let Err(found) = crate::self_check::self_check(&self.pipeline, Some(agent)).await {
            let until = if self.rechecks {
                "until they start again"
            } else {
                "until it is restarted"
            };
            tracing::error!(
                "git or an agent could not be started ({message}), and this worker's own check \
                 agrees ({found}): it is unhealthy and claims no tasks {until}"
            );
            let reason = format!(
                "git or an agent could not be started, and this worker's own check agrees ({found}); \
                 the last task's error: {message}"
            );
            let reason = agentpool_core::render::clip(&reason, agentpool_core::protocol::MAX_STATUS_MESSAGE);
            self.turn_unhealthy(Unhealthy {
                reason,
                recheck: self.rechecks,
            });
        }
    }

    fn own_failure(&self, what: &str, last: &str, recheck: bool) {
        let n = self.infra_failures.fetch_add(1, Ordering::SeqCst) + 1;
        self.strike(what, n, last, recheck);
    }

    /// The `n`th failure in a row of `what`: unhealthy at `unhealthy_after`.
    fn strike(&self, what: &str, n: u32, last: &str, recheck: bool) {
        if self.unhealthy_after == 0 || n < self.unhealthy_after || self.is_unhealthy() {
            return;
        }
        let recheck = recheck && self.rechecks;
        let until = if recheck {
            "until they start again"
        } else {
            "until it is restarted"
        };
        tracing::error!(
            failures = n,
            "{what} {n} times in a row (the last: {last}); this worker is unhealthy and claims \
             no tasks {until}"
        );
        let reason = format!("{what} {n} times in a row; the last: {last}");
        let reason = agentpool_core::render::clip(&reason, agentpool_core::protocol::MAX_STATUS_MESSAGE);
        self.turn_unhealthy(Unhealthy { reason, recheck });
    }

    /// Stop claiming, for `why`: said on the beats and the local probe.
    pub(super) fn turn_unhealthy(&self, why: Unhealthy) {
        self.count(|s| s.unhealthy = true);
        if let Some(r) = &self.health {
            r.unhealthy(&why.reason);
        }
        self.unhealthy.send_replace(Some(why));
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut WorkerSummary)) {
        f(&mut self.summary.lock().unwrap_or_else(|e| e.into_inner()));
    }
}
