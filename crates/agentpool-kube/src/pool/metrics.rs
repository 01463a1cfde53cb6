//! The operator's own Prometheus metrics: reconcile passes and their duration, drains it
//! asked for, whether this replica leads, and each pool's sizes and mirror caches as it last
//! saw them.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::crd::WorkerPoolStatus;

pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    duration: HistogramVec,
    pub errors: IntCounter,
    pub drains: IntCounter,
    pub leader: IntGauge,
    pool: IntGaugeVec,
    cache_hit_ratio: GaugeVec,
}

fn must<T>(r: Result<T, prometheus::Error>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    match r {
        Ok(v) => v,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = must(IntCounterVec::new(
            Opts::new(
                "agentpool_operator_reconciles_total",
                "Reconcile passes by result",
            ),
            &["result"],
        ));
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "agentpool_operator_reconcile_duration_seconds",
                "Duration of reconcile passes",
            ),
            &[],
        ));
        let errors = must(IntCounter::new(
            "agentpool_operator_reconcile_errors_total",
            "Reconcile passes that failed and were retried",
        ));
        let drains = must(IntCounter::new(
            "agentpool_operator_drains_total",
            "Workers the operator asked to drain before a scale-down",
        ));
        let leader = must(IntGauge::new(
            "agentpool_operator_leader",
            "1 while this replica holds the leader Lease",
        ));
        let pool = must(IntGaugeVec::new(
            Opts::new(
                "agentpool_workerpool",
                "WorkerPool sizes and load as last reconciled",
            ),
            &["namespace", "pool", "quantity"],
        ));
        let cache_hit_ratio = must(GaugeVec::new(
            Opts::new(
                "agentpool_workerpool_cache_hit_ratio",
                "Share of the pool's tasks that found their repository's mirror on their pod",
            ),
            &["namespace", "pool"],
        ));
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(errors.clone()),
            Box::new(drains.clone()),
            Box::new(leader.clone()),
            Box::new(pool.clone()),
            Box::new(cache_hit_ratio.clone()),
        ] {
            must(registry.register(c));
        }
        Self {
            registry,
            reconciles,
            duration,
            errors,
            drains,
            leader,
            pool,
            cache_hit_ratio,
        }
    }

    pub fn observe_reconcile(&self, took: Duration, ok: bool) {
        self.reconciles
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        self.duration
            .with_label_values(&[] as &[&str])
            .observe(took.as_secs_f64());
    }

    pub fn record_pool(&self, ns: &str, pool: &str, s: &WorkerPoolStatus) {
        for (q, v) in [
            ("replicas", i64::from(s.replicas)),
            ("ready_replicas", i64::from(s.ready_replicas)),
            ("desired_replicas", i64::from(s.desired_replicas)),
            ("busy_workers", i64::from(s.busy_workers)),
            ("idle_workers", i64::from(s.idle_workers)),
            ("draining_workers", i64::from(s.draining_workers)),
            ("unhealthy_workers", i64::from(s.unhealthy_workers)),
            ("queued_tasks", s.queued_tasks),
            ("running_tasks", s.running_tasks),
        ] {
            self.pool.with_label_values(&[ns, pool, q]).set(v);
        }
        for (q, v) in [
            ("runnable_tasks", s.runnable_tasks),
            ("runnable_tasks_no_worker", s.runnable_tasks_no_worker),
        ] {
            if let Some(n) = v {
                self.pool.with_label_values(&[ns, pool, q]).set(n);
            }
        }
        if let Some(c) = &s.cache {
            for (q, v) in [
                ("cache_hits", c.hits),
                ("cache_misses", c.misses),
                ("cache_bytes", c.bytes),
                ("cache_mirrors", i64::from(c.mirrors)),
            ] {
                self.pool.with_label_values(&[ns, pool, q]).set(v);
            }
            if let Some(r) = c.hit_rate {
                self.cache_hit_ratio.with_label_values(&[ns, pool]).set(r);
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("metrics encoding failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
