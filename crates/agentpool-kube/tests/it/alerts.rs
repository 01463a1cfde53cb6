//! The shipped alerting rules for Kubernetes (`deploy/prometheus/alerts.yaml`, group
//! `agentpool-kubernetes`) select series the operator really exports: a scrape after a
//! reconcile of a pool with an unhealthy worker (and a server that counts runnable tasks no
//! worker takes) has every metric, label and label value they name.

use agentpool_core::WorkerStatus;
use agentpool_testkit::alerts;
use serde_json::json;

use crate::pool::{setup, worker};

#[tokio::test]
async fn the_operator_s_alerting_rules_select_series_it_exports() {
    let s = setup(json!({"replicas": 2}));
    s.queue.set(
        0,
        vec![
            worker("agents-0", WorkerStatus::Idle, 0),
            worker("agents-1", WorkerStatus::Unhealthy, 0),
        ],
    );
    s.queue.stats.lock().unwrap().runnable_no_worker = Some(0);
    s.pass().await;
    let scrape = s.ctx.metrics.render();

    alerts::assert_group_fits("agentpool-kubernetes", &scrape);
}
