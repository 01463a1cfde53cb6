//! Prometheus metrics. Each server owns its registry (no global recorder), so several servers
//! can run in one process — the tests do. Gauges of tasks, workers and token expiry are read
//! from the store at scrape time, so every replica reports the same, true numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use agentpool_core::notification::DeliveryState;
use agentpool_core::{ErrorClass, TaskResult, TaskState, Timestamp, WorkerStatus};
use agentpool_store::Store;
use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    tasks: IntGaugeVec,
    workers: IntGaugeVec,
    agents_retired: IntGauge,
    token_expiry: IntGaugeVec,
    claimed: IntCounterVec,
    handed_over: IntCounter,
    rescued: IntCounter,
    schedule_runs: IntCounterVec,
    notification_deliveries: IntCounterVec,
    waiting_beats: IntGauge,
    completed: IntCounterVec,
    failed: IntCounterVec,
    duration: HistogramVec,
    dispatch: Histogram,
    tokens: IntCounterVec,
    cost: CounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `metric`, registered in `registry`: each metric is defined and registered in one step.
fn registered<T: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    match metric.and_then(|m| registry.register(Box::new(m.clone())).map(|()| m)) {
        Ok(m) => m,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let tasks = registered(
            &registry,
            IntGaugeVec::new(Opts::new("agentpool_tasks", "Tasks by state"), &["state"]),
        );
        let workers = registered(
            &registry,
            IntGaugeVec::new(Opts::new("agentpool_workers", "Workers by status"), &["status"]),
        );
        let agents_retired = registered(
            &registry,
            IntGauge::new(
                "agentpool_workers_agent_key_refused",
                "Workers that still claim but stopped running an agent whose provider refused \
                 their own key",
            ),
        );
        let token_expiry = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "agentpool_token_expires_in_seconds",
                    "Seconds until each valid (not revoked) token with an expiry expires; negative \
                     once it has",
                ),
                &["name", "role"],
            ),
        );
        let claimed = registered(
            &registry,
            IntCounterVec::new(
                Opts::new("agentpool_tasks_claimed_total", "Tasks claimed, by agent"),
                &["agent"],
            ),
        );
        let handed_over = registered(
            &registry,
            IntCounter::new(
                "agentpool_tasks_handed_over_total",
                "Tasks claimed by their submit for a waiting long poll (hand-over), counted in \
                 agentpool_tasks_claimed_total too",
            ),
        );
        let rescued = registered(
            &registry,
            IntCounter::new(
                "agentpool_leases_rescued_total",
                "Attempts this server rescued because their lease expired (LEASE_EXPIRED): their \
                 workers died or were cut off while running them",
            ),
        );
        let schedule_runs = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "agentpool_schedule_runs_total",
                    "Runs of schedules this server made, by outcome: submitted (a task), skipped (the \
                     task before unfinished), refused (the task could not be submitted)",
                ),
                &["outcome"],
            ),
        );
        // Every outcome is exported from the start (at 0), so a rate or an increase over it
        // has a series before the first run of that outcome.
        for outcome in ["submitted", "skipped", "refused"] {
            schedule_runs.with_label_values(&[outcome]);
        }
        let notification_deliveries = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "agentpool_notification_deliveries_total",
                    "Attempts at delivering notifications this server made, by outcome: delivered \
                     (2xx), retried (failed, tried again later), failed (failed, given up)",
                ),
                &["outcome"],
            ),
        );
        for outcome in ["delivered", "retried", "failed"] {
            notification_deliveries.with_label_values(&[outcome]);
        }
        let waiting_beats = registered(
            &registry,
            IntGauge::new(
                "agentpool_waiting_heartbeats",
                "Worker heartbeats this server holds open until it has a cancel or a drain to tell",
            ),
        );
        let completed = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "agentpool_tasks_completed_total",
                    "Attempts completed successfully, by agent",
                ),
                &["agent"],
            ),
        );
        let failed = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "agentpool_tasks_failed_total",
                    "Attempts failed, by agent and error class",
                ),
                &["agent", "class"],
            ),
        );
        let duration = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "agentpool_task_duration_seconds",
                    "Time from claim to completion or failure of an attempt",
                )
                .buckets(vec![
                    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                ]),
                &["outcome"],
            ),
        );
        let dispatch = registered(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "agentpool_dispatch_latency_seconds",
                    "Time from a task becoming runnable (enqueue or run_after) to its claim",
                )
                .buckets(vec![
                    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0,
                ]),
            ),
        );
        let tokens = registered(
            &registry,
            IntCounterVec::new(
                Opts::new("agentpool_tokens_total", "Model tokens used by finished attempts"),
                &["kind"],
            ),
        );
        let cost = registered(
            &registry,
            CounterVec::new(
                Opts::new(
                    "agentpool_cost_usd_total",
                    "Model cost reported by finished attempts, USD",
                ),
                &["agent"],
            ),
        );
        Self {
            registry,
            tasks,
            workers,
            agents_retired,
            token_expiry,
            claimed,
            handed_over,
            rescued,
            schedule_runs,
            notification_deliveries,
            waiting_beats,
            completed,
            failed,
            duration,
            dispatch,
            tokens,
            cost,
        }
    }

    pub fn claimed(&self, agent: &str, dispatch_latency: Duration) {
        self.claimed.with_label_values(&[agent]).inc();
        self.dispatch.observe(dispatch_latency.as_secs_f64());
    }

    /// `n` tasks reached a long poll by hand-over (each also counted by [`Self::claimed`]).
    pub fn handed_over(&self, n: usize) {
        self.handed_over.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// `n` attempts rescued, their leases expired.
    pub fn rescued(&self, n: u64) {
        self.rescued.inc_by(n);
    }

    /// A schedule's run ended with `outcome` (`submitted`, `skipped` or `refused`).
    pub fn schedule_run(&self, outcome: &str) {
        self.schedule_runs.with_label_values(&[outcome]).inc();
    }

    /// An attempt at a notification's delivery left it in `state`.
    pub fn notification_delivery(&self, state: DeliveryState) {
        let outcome = match state {
            DeliveryState::Delivered => "delivered",
            DeliveryState::Pending => "retried",
            DeliveryState::Failed => "failed",
        };
        self.notification_deliveries.with_label_values(&[outcome]).inc();
    }

    /// Count a heartbeat held open until the returned guard is dropped.
    pub fn waiting_beat(&self) -> WaitingBeat {
        self.waiting_beats.inc();
        WaitingBeat(self.waiting_beats.clone())
    }

    /// A successful attempt by `agent` (as claimed; see [`agent_label`]).
    pub fn completed(&self, agent: &str, took: Option<Duration>, result: &TaskResult) {
        let agent = agent_label(agent, Some(result));
        self.completed.with_label_values(&[agent]).inc();
        if let Some(d) = took {
            self.duration
                .with_label_values(&["succeeded"])
                .observe(d.as_secs_f64());
        }
        self.usage(agent, result);
    }

    /// A failed attempt by `agent` (as claimed; see [`agent_label`]).
    pub fn failed(
        &self,
        agent: &str,
        class: ErrorClass,
        took: Option<Duration>,
        result: Option<&TaskResult>,
    ) {
        let agent = agent_label(agent, result);
        self.failed.with_label_values(&[agent, class.as_str()]).inc();
        if let Some(d) = took {
            self.duration
                .with_label_values(&["failed"])
                .observe(d.as_secs_f64());
        }
        if let Some(r) = result {
            self.usage(agent, r);
        }
    }

    fn usage(&self, agent: &str, r: &TaskResult) {
        let u = &r.usage;
        for (kind, n) in [
            ("input", u.input_tokens),
            ("output", u.output_tokens),
            ("cache_read", u.cache_read_tokens),
            ("cache_write", u.cache_write_tokens),
        ] {
            if n > 0 {
                self.tokens.with_label_values(&[kind]).inc_by(n);
            }
        }
        if let Some(c) = r.cost_usd
            && c.is_finite()
            && c > 0.0
        {
            self.cost.with_label_values(&[agent]).inc_by(c);
        }
    }

    /// Prometheus text exposition, with the task and worker gauges refreshed from the store.
    pub async fn render(&self, store: &dyn Store) -> String {
        if let Ok(counts) = store.count_by_state().await {
            for s in TaskState::ALL {
                let n = counts.get(&s).copied().unwrap_or(0);
                self.tasks
                    .with_label_values(&[s.as_str()])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        if let Ok(tokens) = store.list_tokens().await {
            // Revoked tokens drop out: the gauge is rebuilt from the table at each scrape.
            self.token_expiry.reset();
            let now = store.time();
            // One series per name and role, which a token and the successor a rotation gave
            // it share during the grace: the later expiry, when the name's users must have
            // moved on; none while a valid token of that name never expires.
            let mut latest: BTreeMap<(&str, &str), Option<Timestamp>> = BTreeMap::new();
            for t in tokens.iter().filter(|t| !t.revoked) {
                let at = latest
                    .entry((t.name.as_str(), t.role.as_str()))
                    .or_insert(t.expires_at);
                *at = at.zip(t.expires_at).map(|(a, b)| a.max(b));
            }
            for ((name, role), at) in latest {
                if let Some(at) = at {
                    self.token_expiry
                        .with_label_values(&[name, role])
                        .set((at - now).num_seconds());
                }
            }
        }
        if let Ok(workers) = store.list_workers().await {
            for st in [
                WorkerStatus::Idle,
                WorkerStatus::Busy,
                WorkerStatus::Draining,
                WorkerStatus::Offline,
                WorkerStatus::Unhealthy,
            ] {
                let n = workers.iter().filter(|w| w.status == st).count();
                self.workers
                    .with_label_values(&[st.as_str()])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            let retired = workers.iter().filter(|w| w.retired_an_agent()).count();
            self.agents_retired
                .set(i64::try_from(retired).unwrap_or(i64::MAX));
        }
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The `agent` label of a finished attempt: the agent its claim named, unless that was
/// `default` (the task named none, so the worker ran its own default) or `unknown` (another
/// replica saw the claim) and the result says which agent ran. Only a well-formed agent name
/// from the result is taken, as a task's own agent is, so a worker cannot add labels of
/// arbitrary text.
pub fn agent_label<'a>(claimed: &'a str, result: Option<&'a TaskResult>) -> &'a str {
    match result.and_then(|r| r.agent.as_deref()) {
        Some(ran)
            if matches!(claimed, "default" | "unknown") && agentpool_core::spec::valid_agent_name(ran) =>
        {
            ran
        }
        _ => claimed,
    }
}

/// A heartbeat held open, counted in `agentpool_waiting_heartbeats` while it lives.
pub struct WaitingBeat(IntGauge);

impl Drop for WaitingBeat {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_counted_under_the_agent_that_ran_it() {
        let ran = |agent: &str| TaskResult {
            agent: Some(agent.to_string()),
            ..TaskResult::default()
        };
        let claude = ran("claude-code");
        // The task named no agent, or this replica did not see the claim: the result says.
        assert_eq!(agent_label("default", Some(&claude)), "claude-code");
        assert_eq!(agent_label("unknown", Some(&claude)), "claude-code");
        // The claim named it: that stands.
        assert_eq!(agent_label("codex", Some(&claude)), "codex");
        assert_eq!(agent_label("command", Some(&claude)), "command");
        // Nothing said, or not an agent name: the claim's.
        assert_eq!(agent_label("default", None), "default");
        assert_eq!(agent_label("default", Some(&TaskResult::default())), "default");
        assert_eq!(agent_label("default", Some(&ran("a b\"c"))), "default");
        assert_eq!(agent_label("default", Some(&ran(&"x".repeat(65)))), "default");
    }
}
