//! The shipped alerting rules for the server (`deploy/prometheus/alerts.yaml`, group
//! `agentpool`) select series the server really exports: a scrape after one task succeeded and
//! another failed `AUTH_FAILED` has every metric, label and label value they name.

use agentpool_core::ErrorClass;
use agentpool_testkit::alerts;
use agentpool_testkit::db::Backend;

use crate::support::{claim_one, command_task, complete, fail, scrape, spawn_app, submit_and_claim};

#[tokio::test]
async fn the_server_s_alerting_rules_select_series_it_exports() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let (sub, wrk, w, _, claimed) = submit_and_claim(&app, "true").await;
    complete(&wrk, &w.id, &claimed).await;
    sub.submit(&command_task("false")).await.expect("submit");
    let claimed = claim_one(&wrk, &w.id).await;
    fail(&wrk, &w.id, &claimed, ErrorClass::AuthFailed, "invalid api key")
        .await
        .expect("fail");
    alerts::assert_group_fits("agentpool", &scrape(&app.base).await);
}
