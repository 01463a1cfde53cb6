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
    // A token that expires: its series exists while it is valid.
    let expiring = agentpool_core::protocol::TokenCreate {
        expires_at: Some(chrono::Utc::now() + chrono::Duration::days(3)),
        ..agentpool_core::protocol::TokenCreate::new("ci-3d", "worker")
    };
    app.admin().create_token(&expiring).await.expect("token");
    let text = scrape(&app.base).await;
    let series = text
        .lines()
        .find(|l| l.starts_with("agentpool_token_expires_in_seconds{"))
        .expect("the token's series");
    assert!(
        series.contains(r#"name="ci-3d""#) && series.contains(r#"role="worker""#),
        "{series}"
    );
    let secs: i64 = series
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!((3 * 86400 - 120..=3 * 86400).contains(&secs), "{series}");
    alerts::assert_group_fits("agentpool", &text);
}
